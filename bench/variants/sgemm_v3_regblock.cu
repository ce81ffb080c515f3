// sgemm v3 (register-blocked): 64x64 tile, 4x4 outputs per thread in registers, split-K with ordered sums.
//
// K is staged 16 at a time through shared memory (16 FMAs per 8 shared loads); split-K with an
// ordered reduction when the (M, N) grid has few tiles (the dense layer: M = batch, K = 28800).
//
// Self-contained: kernels/gemm.cu's sgemm_strided and split_k_reduce as they were before v4 (with
// their gemm_tile.cuh); the harness launches them with the split tinycnn/backends/geometry.py computes.

#define TILE_M 64
#define TILE_N 64
#define TILE_K 16
#define TILE_THREADS 256  // (TILE_M / 4) * (TILE_N / 4)
#define TILE_PAD 1

// The same scheme for other tile shapes BM x BN with BM * BN = 16 * TILE_THREADS
// (4 x 4 per thread): the convolutions also use 16 x 256, so that a layer with few
// channels (the paper's first conv has 1 input and 16 output channels) does not
// leave most of a 64-row tile idle. Thread (tx, ty) = (tid % (BN/4), tid / (BN/4))
// owns rows ty + (BM/4) i and columns tx + (BN/4) j.
//
// acc[i][j] += sum_kk As[kk][ty + (BM/4) i] * Bs[kk][tx + (BN/4) j]
template <int BM, int BN>
__device__ __forceinline__ void tile_multiply_accumulate(const float (*As)[BM + TILE_PAD],
                                                         const float (*Bs)[BN + TILE_PAD], int tx, int ty,
                                                         float acc[4][4]) {
#pragma unroll
    for (int kk = 0; kk < TILE_K; kk++) {
        float a[4], b[4];
#pragma unroll
        for (int i = 0; i < 4; i++) a[i] = As[kk][ty + (BM / 4) * i];
#pragma unroll
        for (int j = 0; j < 4; j++) b[j] = Bs[kk][tx + (BN / 4) * j];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];
    }
}

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

