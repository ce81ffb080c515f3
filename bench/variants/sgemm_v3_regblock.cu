// sgemm v3 (register-blocked): 64x64 tile, 4x4 outputs per thread in registers, split-K with ordered sums.
//
// K is staged 16 at a time through shared memory (16 FMAs per 8 shared loads); split-K with an
// ordered reduction when the (M, N) grid has few tiles (the dense layer: M = batch, K = 28800).
//
// This is kernels/gemm.cu (gemm_tile.cuh), included here rather than copied: the
// harness launches sgemm_strided and split_k_reduce with the split
// tinycnn/backends/launch.py computes.
#include "../../kernels/gemm.cu"
