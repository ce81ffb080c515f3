// conv2d_forward v3 (implicit GEMM, 64x64 tile, 4x4 per thread in registers), im2col gathered on the fly.
//
// The convolution as the product w (F, C*KH*KW) . cols (C*KH*KW, N*OH*OW), the im2col operand gathered
// from NCHW straight into the shared-memory tiles of gemm_tile.cuh; no im2col buffer.
//
// This is the 64x64 kernel of kernels/conv2d.cu, included here rather than copied:
// the harness launches conv2d_forward_igemm_64x64 from this file.
// Napkin math: each staged element feeds 64 FMAs of its block (16 per thread); a
// thread does 16 FMAs per 2 shared loads.
#include "../../kernels/conv2d.cu"
