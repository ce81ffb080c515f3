// optim.cu: in-place optimizer updates, element-wise over one parameter tensor.
//
//   sgd_update:  param, grad, velocity (n,)
//       g = grad + wd * param;  v = momentum * v + g;  param -= lr * v
//   adam_update: param, grad, m, v (n,)
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
// Napkin math: SGD reads 3 and writes 2 floats per element (20 B), Adam reads 4
// and writes 3 (28 B); a 29.5 M-parameter paper_net(hidden=1024) step moves
// 0.6 GB for SGD (~0.2 ms at 3 TB/s). Threads: one element per thread per
// grid-stride step, coalesced.

extern "C" __global__ void __launch_bounds__(256)
    sgd_update(float *__restrict__ param, const float *__restrict__ grad, float *__restrict__ velocity, int n,
               float lr, float momentum, float weight_decay) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const float p = param[i];
        const float g = __fadd_rn(grad[i], __fmul_rn(weight_decay, p));
        const float v = __fadd_rn(__fmul_rn(velocity[i], momentum), g);
        velocity[i] = v;
        param[i] = __fsub_rn(p, __fmul_rn(lr, v));
    }
}

extern "C" __global__ void __launch_bounds__(256)
    adam_update(float *__restrict__ param, const float *__restrict__ grad, float *__restrict__ m,
                float *__restrict__ v, int n, float lr, float beta1, float one_minus_beta1, float beta2,
                float one_minus_beta2, float bias_correction1, float bias_correction2, float eps,
                float weight_decay) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const float p = param[i];
        const float g = __fadd_rn(grad[i], __fmul_rn(weight_decay, p));
        const float mi = __fadd_rn(__fmul_rn(m[i], beta1), __fmul_rn(one_minus_beta1, g));
        const float vi = __fadd_rn(__fmul_rn(v[i], beta2), __fmul_rn(__fmul_rn(one_minus_beta2, g), g));
        m[i] = mi;
        v[i] = vi;
        const float mhat = __fdiv_rn(mi, bias_correction1);
        const float vhat = __fdiv_rn(vi, bias_correction2);
        const float step = __fdiv_rn(__fmul_rn(lr, mhat), __fadd_rn(__fsqrt_rn(vhat), eps));
        param[i] = __fsub_rn(p, step);
    }
}
