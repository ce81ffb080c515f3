// gemm.cu: tiled SGEMM for the dense layer, the split-K reduction, and the
// deterministic bias gradient.
// sgemm_strided (+ split_k_reduce) = variant v4 of bench/variants/sgemm_v*.cu (v3's
// tiles with the main loop of gemm_tile.cuh: blocked micro-tile, double buffering).
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

// A minimum of 4 blocks per SM caps the registers at 64 (no spills, nvcc -Xptxas -v
// for sm_80 and sm_90): split-K's ~264 blocks then fit in one wave on 132 SMs.
extern "C" __global__ void __launch_bounds__(TILE_THREADS, 4)
    sgemm_strided(float *__restrict__ C, const float *__restrict__ A, const float *__restrict__ B,
                  const float *__restrict__ bias, int M, int N, int K, int sam, int sak, int sbk, int sbn, int ldc,
                  int k_chunk, int c_split_stride, int has_bias) {
    constexpr int LOADS = TILE_M * TILE_K / TILE_THREADS;  // elements of A (and of B) per thread per step: 4
    __shared__ __align__(16) float As[2][TILE_K][TILE_M + TILE_PAD];
    __shared__ __align__(16) float Bs[2][TILE_K][TILE_N + TILE_PAD];
    const int tid = threadIdx.x;
    const int tx = tid % (TILE_N / 4), ty = tid / (TILE_N / 4);
    const int m0 = blockIdx.y * TILE_M, n0 = blockIdx.x * TILE_N;
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = K < k_begin + k_chunk ? K : k_begin + k_chunk;
    // Which index runs along consecutive threads, so that they read consecutive
    // addresses whichever operand is transposed (uniform over the block). This thread's
    // element r of A sits at tile row a_m + r a_dm, tile k a_k + r a_dk: one of the two
    // steps is 0 (rows 16 apart along k-fast A, k 4 apart otherwise); B likewise.
    const bool a_k_fast = sak == 1;
    const bool b_n_fast = sbn == 1;
    const int a_m = a_k_fast ? tid / TILE_K : tid % TILE_M, a_k = a_k_fast ? tid % TILE_K : tid / TILE_M;
    const int a_dm = a_k_fast ? TILE_THREADS / TILE_K : 0, a_dk = a_k_fast ? 0 : TILE_THREADS / TILE_M;
    const int b_n = b_n_fast ? tid % TILE_N : tid / TILE_K, b_k = b_n_fast ? tid / TILE_N : tid % TILE_K;
    const int b_dn = b_n_fast ? 0 : TILE_THREADS / TILE_K, b_dk = b_n_fast ? TILE_THREADS / TILE_N : 0;
    // Offsets from the tile's corner (A_t, B_t: they move on by TILE_K along k per tile).
    const int a_off = a_m * sam + a_k * sak, a_doff = a_dm * sam + a_dk * sak;
    const int b_off = b_k * sbk + b_n * sbn, b_doff = b_dk * sbk + b_dn * sbn;
    const float *A_t = A + (long long)m0 * sam + (long long)k_begin * sak;
    const float *B_t = B + (long long)k_begin * sbk + (long long)n0 * sbn;
    const long long a_tile = (long long)TILE_K * sak, b_tile = (long long)TILE_K * sbk;
    // Shared-memory slots of the stores, [k][m] and [k][n].
    const int a_st = a_k * (TILE_M + TILE_PAD) + a_m, a_dst = a_dk * (TILE_M + TILE_PAD) + a_dm;
    const int b_st = b_k * (TILE_N + TILE_PAD) + b_n, b_dst = b_dk * (TILE_N + TILE_PAD) + b_dn;
    int kt = k_begin;  // the k of the next tile to load

    float a_next[LOADS], b_next[LOADS];
    auto load = [&]() {
#pragma unroll
        for (int r = 0; r < LOADS; r++) {
            const bool a_in = m0 + a_m + r * a_dm < M && kt + a_k + r * a_dk < k_end;
            a_next[r] = a_in ? A_t[a_off + r * a_doff] : 0.0f;
            const bool b_in = n0 + b_n + r * b_dn < N && kt + b_k + r * b_dk < k_end;
            b_next[r] = b_in ? B_t[b_off + r * b_doff] : 0.0f;
        }
        A_t += a_tile;
        B_t += b_tile;
        kt += TILE_K;
    };
    auto store = [&](int buf) {
#pragma unroll
        for (int r = 0; r < LOADS; r++) {
            (&As[buf][0][0])[a_st + r * a_dst] = a_next[r];
            (&Bs[buf][0][0])[b_st + r * b_dst] = b_next[r];
        }
    };

    float acc[4][4];
    zero(acc);
    const int steps = (k_end - k_begin + TILE_K - 1) / TILE_K;
    if (steps > 0) {
        load();
        store(0);
    }
    __syncthreads();
    for (int s = 0; s < steps; s++) {
        if (s + 1 < steps) load();  // in flight during the math below
        tile_multiply_accumulate<TILE_M, TILE_N>(As[s & 1], Bs[s & 1], tx, ty, acc);
        if (s + 1 < steps) store((s + 1) & 1);
        __syncthreads();
    }

    float *Cz = C + (long long)blockIdx.z * c_split_stride;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int m = m0 + 4 * ty + i;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int n = n0 + 4 * tx + j;
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
