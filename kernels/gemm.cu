// gemm.cu: tiled SGEMM for the dense layer, the split-K reduction, and the
// deterministic bias gradient.
// sgemm_strided (+ split_k_reduce) = variant v3 of bench/variants/sgemm_v*.cu.
//
//   sgemm_strided: C (M, N) = A (M, K) . B (K, N) [+ bias (N,)]
//       A[m, k] = A_ptr[m*sam + k*sak], B[k, n] = B_ptr[k*sbk + n*sbn]: the strides
//       express transposes, so one kernel serves the three products of a dense layer:
//         forward   y  = x W     (N, D) . (D, M)    A = x,      B = W
//         backward  dX = dY W^T  (N, M) . (M, D)    A = dY,     B = W viewed (M, D)
//         backward  dW = X^T dY  (D, N) . (N, M)    A = x^T,    B = dY
//   split_k_reduce: C[i] = sum_z ws[z, i] (+ bias[i % ldn]), z in order
//   bias_grad_rows: db (M,) = sum_n dY[n, :], rows in order
//
// Split-K: when M x N gives few tiles but K is long (the first dense layer: M is the
// batch, K = 28800), blockIdx.z takes one chunk of K and writes its partial product
// to a workspace slice; split_k_reduce adds the slices in a fixed order. No float
// atomics anywhere: the same shapes give the same bits on every run.
//
// Napkin math (paper_net hidden 1024, batch 64, first dense layer):
//   forward 2 * 64 * 28800 * 1024 = 3.8 GFLOP; W is 118 MB and read once per tile row
//   (1 row of tiles at batch 64), so ~120 MB: ~40 us of bandwidth, ~0.2 ms of FMA at
//   a modest 20 TFLOP/s. With 16 tiles in the (M, N) grid, split-K by ~17 gives the
//   132 SMs enough blocks. dW = X^T dY is 3.8 GFLOP more and writes 118 MB.
// Threads: see gemm_tile.cuh (64 x 64 tile per 256-thread block, 4 x 4 per thread).
// Loads pick their thread-to-element mapping from the strides so that consecutive
// threads read consecutive addresses whichever operand is transposed.
#include "gemm_tile.cuh"

// Left to itself ptxas gives this kernel 128 registers: 2 blocks (25% occupancy) per
// SM, so split-K's ~264 blocks would take two and a bit waves on 132 SMs. A minimum of
// 4 blocks per SM caps it at 64 registers, the conv tiles' budget, with no spills
// (nvcc -Xptxas -v, sm_80 and sm_90). Its effect on time is not measured yet.
extern "C" __global__ void __launch_bounds__(TILE_THREADS, 4)
    sgemm_strided(float *__restrict__ C, const float *__restrict__ A, const float *__restrict__ B,
                  const float *__restrict__ bias, int M, int N, int K, int sam, int sak, int sbk, int sbn, int ldc,
                  int k_chunk, int c_split_stride, int has_bias) {
    __shared__ float As[TILE_K][TILE_M + TILE_PAD];
    __shared__ float Bs[TILE_K][TILE_N + TILE_PAD];
    const int tid = threadIdx.x;
    const int tx = tid % 16, ty = tid / 16;
    const int m0 = blockIdx.y * TILE_M, n0 = blockIdx.x * TILE_N;
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = K < k_begin + k_chunk ? K : k_begin + k_chunk;
    // which operand index runs along consecutive threads (uniform over the block)
    const bool a_k_fast = sak == 1;
    const bool b_n_fast = sbn == 1;

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;

    for (int k0 = k_begin; k0 < k_end; k0 += TILE_K) {
#pragma unroll
        for (int r = 0; r < (TILE_M * TILE_K) / TILE_THREADS; r++) {
            const int e = tid + r * TILE_THREADS;
            const int mm = a_k_fast ? e / TILE_K : e % TILE_M;
            const int kk = a_k_fast ? e % TILE_K : e / TILE_M;
            const int m = m0 + mm, k = k0 + kk;
            As[kk][mm] = (m < M && k < k_end) ? A[(long long)m * sam + (long long)k * sak] : 0.0f;
        }
#pragma unroll
        for (int r = 0; r < (TILE_K * TILE_N) / TILE_THREADS; r++) {
            const int e = tid + r * TILE_THREADS;
            const int nn = b_n_fast ? e % TILE_N : e / TILE_K;
            const int kk = b_n_fast ? e / TILE_N : e % TILE_K;
            const int n = n0 + nn, k = k0 + kk;
            Bs[kk][nn] = (n < N && k < k_end) ? B[(long long)k * sbk + (long long)n * sbn] : 0.0f;
        }
        __syncthreads();
        tile_multiply_accumulate<TILE_M, TILE_N>(As, Bs, tx, ty, acc);
        __syncthreads();
    }

    float *Cz = C + (long long)blockIdx.z * c_split_stride;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int m = m0 + ty + 16 * i;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int n = n0 + tx + 16 * j;
            if (m < M && n < N) Cz[(long long)m * ldc + n] = acc[i][j] + (has_bias ? bias[n] : 0.0f);
        }
    }
}

// ws holds `splits` partial results of `count` elements each; C[i] is their sum in
// order z = 0, 1, ... . Also reused for other fixed-order two-stage reductions.
extern "C" __global__ void __launch_bounds__(256)
    split_k_reduce(float *__restrict__ C, const float *__restrict__ ws, const float *__restrict__ bias, int splits,
                   int count, int ldn, int has_bias) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < count; i += gridDim.x * blockDim.x) {
        float s = ws[i];
        for (int z = 1; z < splits; z++) s += ws[(long long)z * count + i];
        C[i] = s + (has_bias ? bias[i % ldn] : 0.0f);
    }
}

// db[m] = sum_n dY[n, m]: one thread per column, rows added in order. Consecutive
// threads read consecutive columns of a row, so every step is coalesced.
extern "C" __global__ void __launch_bounds__(256)
    bias_grad_rows(float *__restrict__ db, const float *__restrict__ dY, int N, int M) {
    for (int m = blockIdx.x * blockDim.x + threadIdx.x; m < M; m += gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int n = 0; n < N; n++) s += dY[(long long)n * M + m];
        db[m] = s;
    }
}
