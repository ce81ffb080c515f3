// relu.cu: ReLU forward and backward, element-wise.
//
//   relu_forward:  x (n,) -> out (n,)          out = max(x, 0)
//   relu_backward: dout, out (n,) -> dx (n,)   dx = out > 0 ? dout : 0
//
// Napkin math: no arithmetic to speak of; forward moves 8 bytes per element,
// backward 12, so both are bound by memory bandwidth (e.g. 66 M elements, the
// first conv of paper_net at batch 64: 0.5 GB forward, ~0.17 ms at 3 TB/s).
// Threads: one element per thread per step of a grid-stride loop; consecutive
// threads touch consecutive floats, so every warp access is one 128-byte line.

extern "C" __global__ void __launch_bounds__(256) relu_forward(float *__restrict__ out, const float *__restrict__ x,
                                                               int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const float v = x[i];
        out[i] = v > 0.0f ? v : 0.0f;
    }
}

// The cache is the forward output: where it is positive the input was too.
extern "C" __global__ void __launch_bounds__(256) relu_backward(float *__restrict__ dx, const float *__restrict__ dout,
                                                                const float *__restrict__ out, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        dx[i] = out[i] > 0.0f ? dout[i] : 0.0f;
    }
}
