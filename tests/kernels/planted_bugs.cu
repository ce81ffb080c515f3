// planted_bugs.cu: kernels with one bug each, of the kinds a GPU shows and the plain
// emulator hides, for tests/test_emu_checks.py: each emulator check
// (tinycnn/backends/cuda_emu_checks.py) must catch its bug, and the plain emulator must
// not. Not part of the backend; the bugs are on purpose. Same CUDA subset as kernels/
// (kernels/README.md) otherwise.

// order: a running sum across blocks, one block per element. Block b reads block b-1's
// result from global memory in the same launch: right when blocks run in order (the
// plain emulator), a race between blocks on a GPU.
extern "C" __global__ void bug_sum_across_blocks(float *out, const float *x, int n) {
    const int b = blockIdx.x;
    if (threadIdx.x == 0 && b < n) out[b] = x[b] + (b > 0 ? out[b - 1] : 0.0f);
}

// init (shared memory): a block sum that adds every slot of its shared array although
// only the first n were written. The slots past n are never written by any launch, so
// under the plain emulator they keep the zeros of a fresh static; on a GPU they hold
// whatever the last block there left.
extern "C" __global__ void bug_sum_unwritten_shared(float *out, const float *x, int n) {
    __shared__ float part[64];
    const int t = threadIdx.x;
    if (t < n) part[t] = x[t];
    __syncthreads();
    if (t == 0) {
        float sum = 0.0f;
        for (int i = 0; i < 64; i++) sum += part[i];
        out[blockIdx.x] = sum;
    }
}

// The same bug in a shared array of a function template (as the tensor-core kernels
// keep theirs): the compiler places such statics differently, and the check must find
// them too.
template <int SLOTS>
__device__ float sum_of_slots(const float *x, int n) {
    __shared__ float part[SLOTS];
    const int t = threadIdx.x;
    if (t < n) part[t] = x[t];
    __syncthreads();
    float sum = 0.0f;
    for (int i = 0; i < SLOTS; i++) sum += part[i];
    return sum;
}

extern "C" __global__ void bug_sum_unwritten_shared_in_template(float *out, const float *x, int n) {
    const float sum = sum_of_slots<64>(x, n);
    if (threadIdx.x == 0) out[blockIdx.x] = sum;
}

// init (device memory): adds into its output as if it started at zero. A fresh device
// array is not zeroed (cudaMalloc); NumPy's memory often is.
extern "C" __global__ void bug_accumulate_into_output(float *out, const float *x, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) out[i] += x[i];
}

// bounds (read): each thread loads the element after its own, and uses it only where
// there is one; the last thread's load reads one past the end. The result is right
// wherever the read does not fault (the volatile keeps the compiler from dropping it).
extern "C" __global__ void bug_read_one_past_the_end(float *out, const float *x, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        const volatile float *vx = x;
        const float next = vx[i + 1];
        out[i] = i + 1 < n ? x[i] + next : x[i];
    }
}

// bounds (read, before the start): the same with the element before.
extern "C" __global__ void bug_read_one_before_the_start(float *out, const float *x, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        const volatile float *vx = x;
        const float prev = vx[i - 1];
        out[i] = i > 0 ? x[i] + prev : x[i];
    }
}

// bounds (write): a loop bound off by one, `<=` for `<`: writes out[n].
extern "C" __global__ void bug_write_one_past_the_end(float *out, float value, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i <= n; i += blockDim.x * gridDim.x) out[i] = value;
}

// race: thread 0 writes a value that the other threads of the block read, with a
// __syncthreads between only when `sync` is set (every thread agrees on it: the same
// kernel, right and wrong). Each reader first spins for a while (the loop's result
// picks the slot and the load is volatile, so the load cannot move before the loop; it
// is always slot 0). Without the barrier a reader finds thread 0's value or the last
// launch's, as the threads happen to be scheduled.
extern "C" __global__ void bug_read_without_barrier(float *out, const float *x, int spin, int sync) {
    __shared__ float value[2];
    const int t = threadIdx.x;
    if (t == 0) value[0] = x[blockIdx.x];
    if (sync) __syncthreads();
    float acc = 0.0f;
    for (int i = 0; i < spin; i++) acc = acc * 0.5f + 1.0f;  // tends to 2
    const volatile float *v = value;
    out[blockIdx.x * blockDim.x + t] = v[acc > 4.0f ? 1 : 0];
}

// race, the other way round: the 31 other threads each write a slot that thread 0 adds
// up, with no barrier between unless `sync`. On the plain emulator thread 0 (the OpenMP
// master) wakes the team before it runs its own share, so the slots are usually written
// by then; reversed turns run thread 0 last too, and only a shuffled order shows it.
extern "C" __global__ void bug_gather_without_barrier(float *out, const float *x, int spin, int sync) {
    __shared__ float part[33];
    const int t = threadIdx.x;
    if (t > 0) part[t] = x[t];
    if (sync) __syncthreads();
    if (t == 0) {
        float acc = 0.0f;
        for (int i = 0; i < spin; i++) acc = acc * 0.5f + 1.0f;  // tends to 2
        const volatile float *p = part;
        float sum = 0.0f;
        for (int i = 1; i < 32; i++) sum += p[i + (acc > 4.0f ? 1 : 0)];
        out[blockIdx.x] = sum;
    }
}

// init + bounds: a gather through an index array that nothing wrote. The poison as an
// int is a huge index, so the load lands far from any array.
extern "C" __global__ void bug_gather_unwritten_index(float *out, const float *x, const int *idx, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = x[idx[i]];
}
