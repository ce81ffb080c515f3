// sgemm v6 (tensor-core tile): v5's mma with swizzled shared tiles read one fragment per LDS.128, double buffering, cp.async and split-K.
//
// What changes from v5: operands stored as words in a K-permuted, XOR-swizzled layout so
// that each lane's fragment is one conflict-free 128-bit load (8 LDS.128 for 16 mma per
// warp and k-tile instead of v5's 32 scalar loads); the next k-tile's loads issued before the
// mma and stored after it (two buffers, one barrier per k-tile); K-contiguous operands
// copied by cp.async into per-thread landing buffers; the strided orientations of the
// dense layer's three products handled at run time; split-K with the ordered reduction
// for the few-tile products (the dense layer's M = batch). kernels/tc_tile.cuh and
// kernels/gemm_tc.cu's headers have the layouts and the napkin math.
//
// This is kernels/gemm_tc.cu as the backend launches it in tf32 (sgemm_tf32_strided,
// tinycnn/backends/geometry.py's geometry), included rather than copied, with
// kernels/gemm.cu for split_k_reduce.
#include "../../kernels/gemm.cu"
#include "../../kernels/gemm_tc.cu"
