// sgemm v5 (tensor cores, minimal): mma.sync m16n8k8 on TF32 operands with FP32 sums, fragments read element by element from shared memory.
//
// The first tensor-core step: v2's staging through shared memory, the products moved to
// the tensor cores. Per K step a block stages a 64 x 16 slice of A and a 16 x 64 slice of
// B, rounding each element to TF32 as it stores it (to_tf32, kernels/mma.cuh: the tensor
// core reads only 19 of the 32 bits); each warp then loads its fragments one element at a
// time at the coordinates of the PTX ISA's fragment layouts (frag_tf32_a / frag_tf32_b)
// and issues 2 x 4 mma per 8 k for its 32 x 32 part of the block tile.
//
//   C (M, N) = round(A) (M, K) . round(B) (K, N), row-major; round = round_tf32
//   block V5_THREADS = 128 (2 x 2 warps), grid (ceil(N / 64), ceil(M / 64)); no split-K
// Napkin math, per warp and 8 k: 8 mma (8 x 2048 FLOP) read 16 words per lane with scalar
// LDS, each a 4-way bank conflict (lanes g, g + 2, g + 4, g + 6 of a fragment hit one bank:
// A rows are 16 words apart, B rows 64), so shared memory, not the tensor core, bounds the
// loop; one buffer and two barriers per K step leave the global loads exposed, and the
// rounding is paid on every element. v6 (kernels/gemm_tc.cu) removes each in turn: tiles
// swizzled so that one LDS.128 reads a whole fragment without conflicts, two buffers with
// the next tile's loads in flight during the mma, cp.async for K-contiguous operands.
#include "../../kernels/mma.cuh"

#define V5_TILE 64     // BM = BN
#define V5_K 16        // k per staged slice: two mma k-steps
#define V5_THREADS 128

extern "C" __global__ void __launch_bounds__(V5_THREADS)
    sgemm_v5_tf32_mma(float *__restrict__ C, const float *__restrict__ A, const float *__restrict__ B, int M, int N,
                      int K) {
    __shared__ unsigned As[V5_TILE][V5_K];  // TF32 words: rows of A, k along a row
    __shared__ unsigned Bs[V5_K][V5_TILE];  // TF32 words: k rows of B
    const int tid = (int)threadIdx.x, lane = tid % 32, warp = tid / 32;
    const int m0 = blockIdx.y * V5_TILE, n0 = blockIdx.x * V5_TILE;
    const int wm0 = (warp / 2) * 32, wn0 = (warp % 2) * 32;  // this warp's 32 x 32 of the tile

    float acc[2][4][4];  // [16-row fragment][8-column fragment][accumulator]
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++)
#pragma unroll
            for (int i = 0; i < 4; i++) acc[mi][ni][i] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += V5_K) {
        // Stage: consecutive threads take consecutive k of one row of A (16-element
        // runs) and consecutive columns of one k row of B; zeros past the edges.
#pragma unroll
        for (int r = 0; r < V5_TILE * V5_K / V5_THREADS; r++) {
            const int e = tid + r * V5_THREADS;
            const int i = e / V5_K, ka = e % V5_K, kb = e / V5_TILE, j = e % V5_TILE;
            const int m = m0 + i, n = n0 + j;
            As[i][ka] = to_tf32(m < M && k0 + ka < K ? A[(long long)m * K + k0 + ka] : 0.0f);
            Bs[kb][j] = to_tf32(k0 + kb < K && n < N ? B[(long long)(k0 + kb) * N + n] : 0.0f);
        }
        __syncthreads();
#pragma unroll
        for (int ks = 0; ks < V5_K; ks += 8) {
            unsigned a[2][4], b[4][2];
#pragma unroll
            for (int mi = 0; mi < 2; mi++)
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const FragCoord p = frag_tf32_a(lane, i);
                    a[mi][i] = As[wm0 + 16 * mi + p.row][ks + p.col];
                }
#pragma unroll
            for (int ni = 0; ni < 4; ni++)
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    const FragCoord p = frag_tf32_b(lane, i);
                    b[ni][i] = Bs[ks + p.row][wn0 + 8 * ni + p.col];
                }
#pragma unroll
            for (int mi = 0; mi < 2; mi++)
#pragma unroll
                for (int ni = 0; ni < 4; ni++) mma_tf32_m16n8k8(acc[mi][ni], a[mi], b[ni], acc[mi][ni]);
        }
        __syncthreads();  // the slice is read by every warp before the next one overwrites it
    }

#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const FragCoord p = frag_acc(lane, i);
                const int m = m0 + wm0 + 16 * mi + p.row, n = n0 + wn0 + 8 * ni + p.col;
                if (m < M && n < N) C[(long long)m * N + n] = acc[mi][ni][i];
            }
}
