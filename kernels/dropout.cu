// dropout.cu: inverted dropout, forward and backward, with masks from Philox.
//
//   dropout_forward:  x (n,) -> out (n,)     out = keep(i) ? x * scale : 0
//   dropout_backward: dout (n,) -> dx (n,)   dx  = keep(i) ? dout * scale : 0
//
// keep(i) is a pure function of (seed, i) (philox.cuh), so the backward pass
// recomputes the mask instead of storing it: 40 integer ops per element are
// cheaper than writing and re-reading a mask, and nothing is cached but the seed.
// The seed's high word changes every step (the layer's call counter), so it is read
// from dyn[seed_slot], the backend's array of dynamic scalars: a recorded step is
// replayed with new seeds written there (optim.cu says more).
// scale = float32(1 / (1 - p)) is computed on the host exactly as the NumPy
// reference does, so outputs are bit-identical to it.
//
// Napkin math: ~10 rounds x 4 integer ops per element against 8 bytes moved; at
// H100 integer throughput the kernel stays memory bound. Threads: one element per
// thread per grid-stride step, coalesced.
#include "philox.cuh"

extern "C" __global__ void __launch_bounds__(256)
    dropout_forward(float *__restrict__ out, const float *__restrict__ x, int n, unsigned int seed_lo,
                    const unsigned int *__restrict__ dyn, int seed_slot, unsigned int threshold, float scale) {
    const unsigned int seed_hi = dyn[seed_slot];
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        out[i] = dropout_keep((unsigned long long)i, seed_lo, seed_hi, threshold) ? x[i] * scale : 0.0f;
    }
}

extern "C" __global__ void __launch_bounds__(256)
    dropout_backward(float *__restrict__ dx, const float *__restrict__ dout, int n, unsigned int seed_lo,
                     const unsigned int *__restrict__ dyn, int seed_slot, unsigned int threshold, float scale) {
    const unsigned int seed_hi = dyn[seed_slot];
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        dx[i] = dropout_keep((unsigned long long)i, seed_lo, seed_hi, threshold) ? dout[i] * scale : 0.0f;
    }
}
