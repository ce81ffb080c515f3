// sgemm v4 (double-buffered, blocked micro-tile): v3's tiles with 128-bit shared loads and the next K tile in flight.
//
// A thread owns 4 consecutive rows and columns (two LDS.128 per 16 FMAs instead of eight scalar loads);
// two shared buffers, the next tile's global loads issued before the math, one barrier per K step.
//
// This is kernels/gemm.cu (gemm_tile.cuh), included rather than copied: the harness launches
// sgemm_strided and split_k_reduce with the split tinycnn/backends/geometry.py computes.
#include "../../kernels/gemm.cu"
