// conv2d_forward v4 (implicit GEMM, tile by width): v3 plus a 16x256 tile when there are <= 16 filters.
//
// The paper's first conv has 1 -> 16 channels, where a 64-row tile would leave 3/4 of its rows idle.
//
// This is kernels/conv2d.cu as the backend launches it (tinycnn/backends/launch.py:
// conv_tile picks 16x256 when F <= 16, else 64x64): the harness does the same.
#include "../../kernels/conv2d.cu"
