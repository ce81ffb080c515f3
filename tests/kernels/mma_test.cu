// mma_test.cu: small kernels that exercise kernels/mma.cuh one instruction at a time,
// for tests/test_mma_emu.py: run through the emulator (tinycnn.backends.emulated.load_file)
// against NumPy, and compiled with nvcc and NVRTC for sm_80/sm_90 to read their SASS.
// Not part of the backend. Same CUDA subset as kernels/ (kernels/README.md).
#include "../../kernels/mma.cuh"

// ------------------------------------------------------------------ mma tiles
// Warp w of block b computes tile t = b * (blockDim.x / 32) + w:
//   D[t] (16 x 8) = A[t] (16 x K) B[t] (K x 8) + C[t],   row-major, K a multiple of 8,
// as K / 8 chained mma.sync, fragments loaded from global memory at the coordinates of
// mma.cuh's layout helpers. Warps past the last tile still execute every mma (on zeros):
// the emulator's mma is a block-wide barrier. round_operands = 0 hands the raw float bits
// to the tensor core instead of to_tf32's.
extern "C" __global__ void mma_tf32_tiles(const float *A, const float *B, const float *C, float *D, int K,
                                          int tiles, int round_operands) {
    const int lane = threadIdx.x % 32;
    const int t = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const bool live = t < tiles;
    const long long a0 = (long long)t * 16 * K, b0 = (long long)t * K * 8, c0 = (long long)t * 16 * 8;
    float acc[4];
    for (int i = 0; i < 4; i++) {
        const FragCoord p = frag_acc(lane, i);
        acc[i] = live ? C[c0 + p.row * 8 + p.col] : 0.0f;
    }
    for (int k0 = 0; k0 < K; k0 += 8) {
        unsigned a[4], b[2];
        for (int i = 0; i < 4; i++) {
            const FragCoord p = frag_tf32_a(lane, i);
            const float x = live ? A[a0 + p.row * K + k0 + p.col] : 0.0f;
            a[i] = round_operands ? to_tf32(x) : __float_as_uint(x);
        }
        for (int i = 0; i < 2; i++) {
            const FragCoord p = frag_tf32_b(lane, i);
            const float x = live ? B[b0 + (k0 + p.row) * 8 + p.col] : 0.0f;
            b[i] = round_operands ? to_tf32(x) : __float_as_uint(x);
        }
        mma_tf32_m16n8k8(acc, a, b, acc);
    }
    if (live)
        for (int i = 0; i < 4; i++) {
            const FragCoord p = frag_acc(lane, i);
            D[c0 + p.row * 8 + p.col] = acc[i];
        }
}

// The same with BF16 operands and m16n8k16 (K a multiple of 16).
extern "C" __global__ void mma_bf16_tiles(const float *A, const float *B, const float *C, float *D, int K,
                                          int tiles) {
    const int lane = threadIdx.x % 32;
    const int t = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const bool live = t < tiles;
    const long long a0 = (long long)t * 16 * K, b0 = (long long)t * K * 8, c0 = (long long)t * 16 * 8;
    float acc[4];
    for (int i = 0; i < 4; i++) {
        const FragCoord p = frag_acc(lane, i);
        acc[i] = live ? C[c0 + p.row * 8 + p.col] : 0.0f;
    }
    for (int k0 = 0; k0 < K; k0 += 16) {
        unsigned a[4], b[2];
        for (int r = 0; r < 4; r++) {  // register r: elements 2r (low half) and 2r + 1
            const FragCoord lo = frag_bf16_a(lane, 2 * r), hi = frag_bf16_a(lane, 2 * r + 1);
            a[r] = pack_bf16x2(live ? A[a0 + lo.row * K + k0 + lo.col] : 0.0f,
                               live ? A[a0 + hi.row * K + k0 + hi.col] : 0.0f);
        }
        for (int r = 0; r < 2; r++) {
            const FragCoord lo = frag_bf16_b(lane, 2 * r), hi = frag_bf16_b(lane, 2 * r + 1);
            b[r] = pack_bf16x2(live ? B[b0 + (k0 + lo.row) * 8 + lo.col] : 0.0f,
                               live ? B[b0 + (k0 + hi.row) * 8 + hi.col] : 0.0f);
        }
        mma_bf16_m16n8k16(acc, a, b, acc);
    }
    if (live)
        for (int i = 0; i < 4; i++) {
            const FragCoord p = frag_acc(lane, i);
            D[c0 + p.row * 8 + p.col] = acc[i];
        }
}

// ------------------------------------------------------- layouts, conversions
#define FRAG_SLOTS 22  // tf32 A 4, tf32 B 2, bf16 A 8, bf16 B 4, accumulator 4

// out[lane][slot] = (row, col) of every fragment element, from mma.cuh's helpers. One warp.
extern "C" __global__ void mma_fragment_coords(int *out) {
    const int lane = threadIdx.x % 32;
    FragCoord p[FRAG_SLOTS];
    for (int i = 0; i < 4; i++) p[i] = frag_tf32_a(lane, i);
    for (int i = 0; i < 2; i++) p[4 + i] = frag_tf32_b(lane, i);
    for (int e = 0; e < 8; e++) p[6 + e] = frag_bf16_a(lane, e);
    for (int e = 0; e < 4; e++) p[14 + e] = frag_bf16_b(lane, e);
    for (int i = 0; i < 4; i++) p[18 + i] = frag_acc(lane, i);
    for (int s = 0; s < FRAG_SLOTS; s++) {
        out[(lane * FRAG_SLOTS + s) * 2] = p[s].row;
        out[(lane * FRAG_SLOTS + s) * 2 + 1] = p[s].col;
    }
}

// tf32[i] = to_tf32(x[i]); bf16x2[i] = pack_bf16x2(x[i], -x[i]) (x[i] low, -x[i] high).
extern "C" __global__ void mma_conversions(const float *x, unsigned *tf32, unsigned *bf16x2, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        tf32[i] = to_tf32(x[i]);
        bf16x2[i] = pack_bf16x2(x[i], -x[i]);
    }
}

// ------------------------------------------------------------------- cp.async
#define CP_THREADS 64
#define CP_STAGE (CP_THREADS * 4)  // floats per stage: one 16-byte copy per thread

// out[s][i] = in[s][CP_STAGE - 1 - i] for each stage s < stages: the stages stream
// through two shared buffers, stage s + 1 in flight while stage s is read. Each thread
// reads what OTHER threads copied, so it needs the wait (its own copies landed) and the
// barrier (everybody's). WAIT = false drops the one wait of the loop: the test's
// "forgotten wait", which must read stale shared memory.
template <bool WAIT>
__device__ void reverse_stages(const float *in, float *out, int stages, float (*buf)[CP_STAGE]) {
    const int tid = threadIdx.x;
    cp_async_16(&buf[0][4 * tid], in + 4 * tid);
    cp_async_commit();
    for (int s = 0; s < stages; s++) {
        if (s + 1 < stages) cp_async_16(&buf[(s + 1) & 1][4 * tid], in + (long long)(s + 1) * CP_STAGE + 4 * tid);
        cp_async_commit();  // every step, even empty: wait<1> below always means "stage s landed"
        if (WAIT) cp_async_wait<1>();
        __syncthreads();
        for (int j = 0; j < 4; j++) {
            const int i = 4 * tid + j;
            out[(long long)s * CP_STAGE + i] = buf[s & 1][CP_STAGE - 1 - i];
        }
        __syncthreads();  // buf[s & 1] is the target of the copy issued next step
    }
    cp_async_wait<0>();
}

extern "C" __global__ void __launch_bounds__(CP_THREADS) cp_async_reverse(const float *in, float *out, int stages) {
    __shared__ __align__(16) float buf[2][CP_STAGE];
    reverse_stages<true>(in, out, stages, buf);
}

extern "C" __global__ void __launch_bounds__(CP_THREADS)
    cp_async_reverse_nowait(const float *in, float *out, int stages) {
    __shared__ __align__(16) float buf[2][CP_STAGE];
    reverse_stages<false>(in, out, stages, buf);
}

// The commit/wait rules one thread at a time (32 threads, each on its own 4 floats, so no
// barrier): groups g0 (src[0] -> buf[0]) and g1 (src[1] -> buf[1]) committed, a third copy
// (src[2] -> buf[2]) issued but not committed; snap[j][b] = this thread's part of buf[b]
// at point j: 0 before any wait, 1 after wait<1>, 2 after wait<0>, 3 after a commit and
// wait<0>. buf starts at -1.
extern "C" __global__ void cp_async_groups(const float *src, float *snap) {
    __shared__ __align__(16) float buf[3][128];
    const int tid = threadIdx.x;
    for (int b = 0; b < 3; b++)
        for (int j = 0; j < 4; j++) buf[b][4 * tid + j] = -1.0f;
    cp_async_16(&buf[0][4 * tid], src + 4 * tid);
    cp_async_commit();
    cp_async_16(&buf[1][4 * tid], src + 128 + 4 * tid);
    cp_async_commit();
    cp_async_16(&buf[2][4 * tid], src + 256 + 4 * tid);
    for (int point = 0; point < 4; point++) {
        if (point == 1) cp_async_wait<1>();
        if (point == 2) cp_async_wait<0>();
        if (point == 3) {
            cp_async_commit();
            cp_async_wait<0>();
        }
        for (int b = 0; b < 3; b++)
            for (int j = 0; j < 4; j++) snap[(point * 3 + b) * 128 + 4 * tid + j] = buf[b][4 * tid + j];
    }
}

// A copy to a shared address 4 bytes past alignment: a fault on the GPU and in the emulator.
extern "C" __global__ void cp_async_misaligned(const float *src) {
    __shared__ __align__(16) float buf[8];
    if (threadIdx.x == 0) cp_async_16(&buf[1], src);
    cp_async_commit();
    cp_async_wait<0>();
}
