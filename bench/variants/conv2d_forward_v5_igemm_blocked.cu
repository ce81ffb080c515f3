// conv2d_forward v5 (implicit GEMM, second generation): blocked 4x4 micro-tile read with LDS.128, double buffering, no division.
//
// v4's tiles plus 32x128 (17-32 filters); a thread owns 4 consecutive rows and columns, so each k step
// reads its operands with two 128-bit shared loads; two shared buffers with the next tile's global loads
// issued before the math (one barrier per step); the gather keeps (c, u, v) as digits moved on with
// carries, so the main loop holds no integer division.
//
// This is kernels/conv2d.cu as the backend launches it, included rather than copied.
#include "../../kernels/conv2d.cu"
