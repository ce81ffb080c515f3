// optim.cu: in-place optimizer updates of every parameter tensor in one launch.
//
//   sgd_update:  param, grad, velocity
//       g = grad + wd * param;  v = momentum * v + g;  param -= lr * v
//   adam_update: param, grad, m, v
//       g = grad + wd * param
//       m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g
//       param -= lr * (m / bc1) / (sqrt(v / bc2) + eps),  bc1 = 1-b1^t, bc2 = 1-b2^t
//
// The same formulas, in the same order of operations, as NumpyBackend.sgd_update /
// adam_update. The host rounds every constant (1-b1, bc1, ...) to float32 exactly
// as the reference does, and each operation here is an explicitly rounded
// intrinsic (__fmul_rn, __fadd_rn, ...), which the compiler may not fuse into an
// FMA: updates are bit-identical to the NumPy backend's, not merely close.
//
// Multi-tensor: `count` tensors, tensor t owning the flat elements [starts[t],
// starts[t+1]); `ptrs` holds, per tensor, the addresses of its arrays (param, grad,
// and the optimizer's state) as (low, high) 32-bit word pairs. One launch updates a
// whole network (paper_net: 10 tensors, 29.5 M elements), where one launch per
// tensor cost a launch each and left the small tensors' grids nearly empty.
//
// Scalars that change between steps (the learning rate; Adam's bias corrections)
// are read from `dyn`, the backend's array of dynamic scalars, at the slots given:
// a recorded step (a CUDA graph, or cuda-emu's launch list) is replayed with the
// new values written to dyn, not re-recorded. `guard` is the training loop's step
// statistics (softmax_ce.cu: train_stats): when it says a non-finite loss was seen
// (guard[STAT_FIRST_BAD] >= 0), nothing is updated, so the parameters stay those
// of the last good step until the host reads the statistics and stops.
//
// Napkin math: SGD reads 3 and writes 2 floats per element (20 B), Adam reads 4
// and writes 3 (28 B); a 29.5 M-parameter paper_net(hidden=1024) step moves
// 0.6 GB for SGD (~0.2 ms at 3 TB/s). Threads: one element per thread per
// grid-stride step, coalesced; finding an element's tensor is a short binary search
// in `starts` (uniform across a warp but at tensor boundaries).
#include "step_stats.cuh"

__device__ __forceinline__ float *tensor_ptr(const unsigned int *ptrs, int slot) {
    return (float *)(((unsigned long long)ptrs[2 * slot + 1] << 32) | ptrs[2 * slot]);
}

// The tensor t with starts[t] <= i < starts[t + 1].
__device__ __forceinline__ int tensor_of(const int *starts, int count, int i) {
    int lo = 0, hi = count - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (starts[mid] <= i) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

// ptrs per tensor: param, grad, velocity.
extern "C" __global__ void __launch_bounds__(256)
    sgd_update(const unsigned int *__restrict__ ptrs, const int *__restrict__ starts, int count,
               const unsigned int *__restrict__ dyn, int lr_slot, float momentum, float weight_decay,
               const float *__restrict__ guard) {
    if (guard[STAT_FIRST_BAD] >= 0.0f) return;  // no barrier in this kernel
    const float lr = __int_as_float((int)dyn[lr_slot]);
    const int total = starts[count];
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        const int t = tensor_of(starts, count, i), e = i - starts[t];
        float *param = tensor_ptr(ptrs, 3 * t), *grad = tensor_ptr(ptrs, 3 * t + 1),
              *velocity = tensor_ptr(ptrs, 3 * t + 2);
        const float p = param[e];
        const float g = __fadd_rn(grad[e], __fmul_rn(weight_decay, p));
        const float v = __fadd_rn(__fmul_rn(velocity[e], momentum), g);
        velocity[e] = v;
        param[e] = __fsub_rn(p, __fmul_rn(lr, v));
    }
}

// ptrs per tensor: param, grad, m, v. dyn slots: lr, then bc1 = 1 - b1^t, then bc2 = 1 - b2^t.
extern "C" __global__ void __launch_bounds__(256)
    adam_update(const unsigned int *__restrict__ ptrs, const int *__restrict__ starts, int count,
                const unsigned int *__restrict__ dyn, int slots, float beta1, float one_minus_beta1, float beta2,
                float one_minus_beta2, float eps, float weight_decay, const float *__restrict__ guard) {
    if (guard[STAT_FIRST_BAD] >= 0.0f) return;
    const float lr = __int_as_float((int)dyn[slots]);
    const float bias_correction1 = __int_as_float((int)dyn[slots + 1]);
    const float bias_correction2 = __int_as_float((int)dyn[slots + 2]);
    const int total = starts[count];
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        const int t = tensor_of(starts, count, i), e = i - starts[t];
        float *param = tensor_ptr(ptrs, 4 * t), *grad = tensor_ptr(ptrs, 4 * t + 1), *m = tensor_ptr(ptrs, 4 * t + 2),
              *v = tensor_ptr(ptrs, 4 * t + 3);
        const float p = param[e];
        const float g = __fadd_rn(grad[e], __fmul_rn(weight_decay, p));
        const float mi = __fadd_rn(__fmul_rn(m[e], beta1), __fmul_rn(one_minus_beta1, g));
        const float vi = __fadd_rn(__fmul_rn(v[e], beta2), __fmul_rn(__fmul_rn(one_minus_beta2, g), g));
        m[e] = mi;
        v[e] = vi;
        const float mhat = __fdiv_rn(mi, bias_correction1);
        const float vhat = __fdiv_rn(vi, bias_correction2);
        const float step = __fdiv_rn(__fmul_rn(lr, mhat), __fadd_rn(__fsqrt_rn(vhat), eps));
        param[e] = __fsub_rn(p, step);
    }
}
