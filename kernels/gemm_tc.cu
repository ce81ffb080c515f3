// gemm_tc.cu: the dense-layer SGEMM on tensor cores (issue 13): TF32 or BF16 operands,
// FP32 accumulation, with the argument list of sgemm_strided (gemm.cu), so kernel_backend.py's
// grid, split-K workspace and split_k_reduce serve it unchanged.
//
//   sgemm_tf32_strided / sgemm_bf16_strided:
//       C (M, N) = round(A) (M, K) . round(B) (K, N) [+ bias (N,)], FP32 sums, with
//       A[m, k] = A_ptr[m*sam + k*sak], B[k, n] = B_ptr[k*sbk + n*sbn] (the strides
//       express the transposes of the three products of a dense layer, see gemm.cu), and
//       round = to_tf32 (cvt.rna.tf32.f32) or BF16 round-to-nearest-even
//       (tinycnn/precision.py: round_tf32, round_bf16).
//       blockIdx.z takes K chunk [z k_chunk, (z+1) k_chunk) and writes C + z c_split_stride.
//
// Tile: one 64 x 64 block tile of C per 128 threads, 2 x 2 warps of 32 x 32 (tc_tile.cuh:
// operand words, K permutation, XOR-swizzled K-contiguous tiles, LDS.128 fragments).
// Not 128 x 64: M is the batch (64) in the forward and dX products, and the dW product
// (M = D) is bound by writing dW, not by the tile's reuse.
//
// Staging: the orientation of each operand picks one of four instantiations at run time
// (uniform over the grid), so that the loads' offsets are constants or one stride:
//   - K-contiguous (sak == 1 / sbk == 1) with 16-byte-aligned rows: cp.async. Each thread
//     copies its two runs per operand (16 bytes each in TF32, 32 in BF16) of k-tile s + 1
//     into a landing buffer of its own while the warps multiply tile s, then waits for its own
//     copies, converts them to operand words and stores them into the tile (cp.async
//     cannot convert: what it buys is that no registers are held across the math). Runs
//     that cross the end of K take the register path.
//   - otherwise (a transposed operand: rows contiguous): register prefetch; consecutive
//     threads take consecutive rows of one k, so the loads are coalesced, and the
//     transposing store is conflict-free thanks to the swizzle.
//   Both end in one barrier per k-tile. Rows past M (columns past N) read the last row:
//   they feed only outputs that are not stored. k_chunk must keep chunks 16-byte aligned
//   for cp.async (a multiple of 4; tensor_cores.split_k gives multiples of the k-tile).
//
// Napkin math (paper_net hidden 1024, batch 64, first dense layer; H100 SXM: 495 TF32 /
// 990 BF16 TFLOP/s dense, of which mma.sync reaches perhaps 2/3; 3.35 TB/s):
//   forward y = x W: 2 * 64 * 28800 * 1024 = 3.8 GFLOP, ~11 us of TF32 mma at 330
//   TFLOP/s, but W (118 MB in FP32) is streamed once: ~35 us of HBM. Bandwidth-bound:
//   BF16 gains nothing here while the weights stay FP32 in memory. 16 tiles, split-K
//   by ~17 (launch.split_k) for 264 blocks.
//   Per k-tile, per warp: 16 mma (TF32: 16 x 2048 FLOP; BF16: 16 x 4096) against
//   8 LDS.128; per thread: 8 (TF32) or 16 (BF16) operand elements loaded, converted
//   and stored with 4 STS.128. Shared memory: 16 KB of tiles + 8 / 16 KB landing.
//   SASS (sm_90): loops of 208-234 (TF32) / 252-281 (BF16) instructions per warp and
//   k-tile for 16 HMMA, by orientation; per 64 x 64 x 16 of work ~0.9k / ~0.5k
//   warp-instructions against ~3.6k for sgemm_strided: 4x / 7x fewer issue slots.
#include "tc_tile.cuh"

#define TC_GEMM_TILE 64      // BM = BN
#define TC_GEMM_THREADS 128  // TcShape<64, 64>::THREADS: one A unit and one B unit per thread

// One run of a strided operand for the current k-tile: the EPR elements src[j * s_k],
// j < lim (the rest of K), 0 beyond. KFAST (s_k == 1) and `async` (16-byte-aligned
// rows): a run wholly inside K goes to `landing` (EPR / 4 copies of 16 bytes, `stride`
// floats apart) by cp.async and the function returns true; otherwise v gets the values.
template <int EPR, bool KFAST>
__device__ __forceinline__ bool gemm_tc_fetch(const float *__restrict__ src, long long s_k, int lim, bool async,
                                              float *landing, int stride, float (&v)[EPR]) {
    if (KFAST) {
        if (async && lim >= EPR) {
#pragma unroll
            for (int h = 0; h < EPR / 4; h++) cp_async_16(landing + h * stride, src + 4 * h);
            return true;
        }
#pragma unroll
        for (int j = 0; j < EPR; j++) v[j] = j < lim ? src[j] : 0.0f;
    } else {
        const float *p = src;  // a running pointer: one 64-bit add per element, no multiply
#pragma unroll
        for (int j = 0; j < EPR; j++) {
            v[j] = j < lim ? *p : 0.0f;
            p += s_k;
        }
    }
    return false;
}

// v from the landing buffer, after this thread's cp_async_wait.
template <int EPR>
__device__ __forceinline__ void gemm_tc_landed(const float *landing, int stride, float (&v)[EPR]) {
#pragma unroll
    for (int h = 0; h < EPR / 4; h++) {
        const float4 q = *reinterpret_cast<const float4 *>(landing + h * stride);
        v[4 * h] = q.x;
        v[4 * h + 1] = q.y;
        v[4 * h + 2] = q.z;
        v[4 * h + 3] = q.w;
    }
}

// The tile for one orientation of each operand (A_KFAST: sak == 1, B_KFAST: sbk == 1),
// fixed at compile time so that the loads' offsets are constants or one stride; the
// shared arrays come from the kernel (one copy for the four instantiations).
// landing[run][piece][thread][4]: each thread's cp.async destinations, its own alone.
template <class P, bool A_KFAST, bool B_KFAST>
__device__ __forceinline__ void sgemm_tc_tile(unsigned (*As)[TC_GEMM_TILE * TC_K_WORDS],
                                              unsigned (*Bs)[TC_GEMM_TILE * TC_K_WORDS],
                                              float (*a_land)[P::K_PER_WORD][TC_GEMM_THREADS][4],
                                              float (*b_land)[P::K_PER_WORD][TC_GEMM_THREADS][4],
                                              float *__restrict__ C, const float *__restrict__ A,
                                              const float *__restrict__ B, const float *__restrict__ bias, int M,
                                              int N, int K, int sam, int sak, int sbk, int sbn, int ldc, int k_chunk,
                                              int c_split_stride, int has_bias) {
    using S = TcShape<TC_GEMM_TILE, TC_GEMM_TILE>;
    constexpr int T = S::THREADS, KPW = P::K_PER_WORD;
    constexpr int EPR = 4 * KPW;                 // elements per run: 4 (TF32) or 8 (BF16)
    constexpr int K_TILE = TC_K_WORDS * KPW;      // k per k-tile: 16 or 32
    static_assert(T == TC_GEMM_THREADS && S::A_UNITS == T && S::B_UNITS == T, "one unit per thread");

    const int tid = threadIdx.x;
    const int m0 = blockIdx.y * TC_GEMM_TILE, n0 = blockIdx.x * TC_GEMM_TILE;
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = K < k_begin + k_chunk ? K : k_begin + k_chunk;
    const bool a_async = A_KFAST && sam % 4 == 0 && k_begin % 4 == 0 && ((unsigned long long)A & 15ull) == 0;
    const bool b_async = B_KFAST && sbn % 4 == 0 && k_begin % 4 == 0 && ((unsigned long long)B & 15ull) == 0;

    // This thread's units. K-contiguous operand: A unit (tid / 4, tid % 4), B unit
    // (tid / 2, tid % 2): a few threads read one row's contiguous run; row-contiguous
    // operand: A (tid % 32, tid / 32), B (tid % 64, tid / 64): consecutive threads on
    // consecutive rows of one k (coalesced), the transposing store made conflict-free by
    // the swizzle. Rows past the matrix read its last row instead: they only feed rows
    // (columns) of C that are not stored.
    const int a_i = A_KFAST ? tid / 4 : tid % (TC_GEMM_TILE / 2), a_c = A_KFAST ? tid % 4 : tid / (TC_GEMM_TILE / 2);
    const int b_r = B_KFAST ? tid / 2 : tid % TC_GEMM_TILE, b_c = B_KFAST ? tid % 2 : tid / TC_GEMM_TILE;
    const float *a_src[2];  // runs: rows 2 a_i and 2 a_i + 1 at k = 4 a_c KPW
    const float *b_src[2];  // runs: row b_r at k = 8 b_c KPW and 8 b_c KPW + EPR
    int a_lim[2], b_lim[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int m = m0 + 2 * a_i + h < M ? m0 + 2 * a_i + h : M - 1;
        const int ka = k_begin + 4 * a_c * KPW;
        a_src[h] = A + (long long)m * sam + (long long)ka * sak;
        a_lim[h] = k_end - ka;
        const int n = n0 + b_r < N ? n0 + b_r : N - 1;
        const int kb = k_begin + 8 * b_c * KPW + h * EPR;
        b_src[h] = B + (long long)n * sbn + (long long)kb * sbk;  // B[k, n]: rows of the tile are n
        b_lim[h] = k_end - kb;
    }

    float a_v[2][EPR], b_v[2][EPR];
    bool a_landed[2], b_landed[2];
    const long long a_step = (long long)K_TILE * sak, b_step = (long long)K_TILE * sbk;
    auto load = [&]() {  // the next k-tile; the run pointers and the rest of K move on
#pragma unroll
        for (int h = 0; h < 2; h++) {
            a_landed[h] = gemm_tc_fetch<EPR, A_KFAST>(a_src[h], sak, a_lim[h], a_async, &a_land[h][0][tid][0],
                                                      T * 4, a_v[h]);
            b_landed[h] = gemm_tc_fetch<EPR, B_KFAST>(b_src[h], sbk, b_lim[h], b_async, &b_land[h][0][tid][0],
                                                      T * 4, b_v[h]);
            a_src[h] += a_step;
            b_src[h] += b_step;
            a_lim[h] -= K_TILE;
            b_lim[h] -= K_TILE;
        }
        cp_async_commit();  // every k-tile, possibly empty: wait<0> below always means "this tile"
    };
    auto store = [&](int buf) {
        cp_async_wait<0>();  // this thread's copies have landed (it alone reads them)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            if (a_landed[h]) gemm_tc_landed<EPR>(&a_land[h][0][tid][0], T * 4, a_v[h]);
            if (b_landed[h]) gemm_tc_landed<EPR>(&b_land[h][0][tid][0], T * 4, b_v[h]);
        }
        tc_store_a_unit<P>(As[buf], a_i, a_c, a_v);
        tc_store_b_unit<P>(Bs[buf], b_r, b_c, b_v);
    };

    float acc[S::MI][S::NI][4];
    tc_zero(acc);
    const int steps = k_end > k_begin ? (k_end - k_begin + K_TILE - 1) / K_TILE : 0;
    tc_k_loop<P, S>(As, Bs, steps, load, store, acc);

    int wm0, wn0;
    tc_warp_origin<S>(wm0, wn0);
    const int lane = tid % 32;
    float *Cz = C + (long long)blockIdx.z * c_split_stride;
#pragma unroll
    for (int mi = 0; mi < S::MI; mi++)
#pragma unroll
        for (int ni = 0; ni < S::NI; ni++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int m = m0 + tc_acc_row(wm0, mi, lane, i), n = n0 + tc_acc_col(wn0, ni, lane, i);
                if (m < M && n < N) Cz[(long long)m * ldc + n] = acc[mi][ni][i] + (has_bias ? bias[n] : 0.0f);
            }
}

// The orientation of both operands, once per launch (uniform over the grid).
template <class P>
__device__ __forceinline__ void sgemm_tc(unsigned (*As)[TC_GEMM_TILE * TC_K_WORDS],
                                         unsigned (*Bs)[TC_GEMM_TILE * TC_K_WORDS],
                                         float (*a_land)[P::K_PER_WORD][TC_GEMM_THREADS][4],
                                         float (*b_land)[P::K_PER_WORD][TC_GEMM_THREADS][4], float *__restrict__ C,
                                         const float *__restrict__ A, const float *__restrict__ B,
                                         const float *__restrict__ bias, int M, int N, int K, int sam, int sak,
                                         int sbk, int sbn, int ldc, int k_chunk, int c_split_stride, int has_bias) {
    if (sak == 1) {
        if (sbk == 1)
            sgemm_tc_tile<P, true, true>(As, Bs, a_land, b_land, C, A, B, bias, M, N, K, sam, sak, sbk, sbn, ldc,
                                         k_chunk, c_split_stride, has_bias);
        else
            sgemm_tc_tile<P, true, false>(As, Bs, a_land, b_land, C, A, B, bias, M, N, K, sam, sak, sbk, sbn, ldc,
                                          k_chunk, c_split_stride, has_bias);
    } else {
        if (sbk == 1)
            sgemm_tc_tile<P, false, true>(As, Bs, a_land, b_land, C, A, B, bias, M, N, K, sam, sak, sbk, sbn, ldc,
                                          k_chunk, c_split_stride, has_bias);
        else
            sgemm_tc_tile<P, false, false>(As, Bs, a_land, b_land, C, A, B, bias, M, N, K, sam, sak, sbk, sbn, ldc,
                                           k_chunk, c_split_stride, has_bias);
    }
}

// Four blocks per SM cap the registers at 128 (no spills, nvcc -Xptxas -v for sm_80 and
// sm_90); shared memory (24 KB TF32, 32 KB BF16) allows more.
extern "C" __global__ void __launch_bounds__(TC_GEMM_THREADS, 4)
    sgemm_tf32_strided(float *__restrict__ C, const float *__restrict__ A, const float *__restrict__ B,
                       const float *__restrict__ bias, int M, int N, int K, int sam, int sak, int sbk, int sbn,
                       int ldc, int k_chunk, int c_split_stride, int has_bias) {
    __shared__ __align__(16) unsigned As[2][TC_GEMM_TILE * TC_K_WORDS];  // A pair-rows, swizzled
    __shared__ __align__(16) unsigned Bs[2][TC_GEMM_TILE * TC_K_WORDS];  // [n][k words], swizzled
    __shared__ __align__(16) float a_land[2][1][TC_GEMM_THREADS][4];      // cp.async, per thread
    __shared__ __align__(16) float b_land[2][1][TC_GEMM_THREADS][4];
    sgemm_tc<Tf32>(As, Bs, a_land, b_land, C, A, B, bias, M, N, K, sam, sak, sbk, sbn, ldc, k_chunk, c_split_stride,
                   has_bias);
}

extern "C" __global__ void __launch_bounds__(TC_GEMM_THREADS, 4)
    sgemm_bf16_strided(float *__restrict__ C, const float *__restrict__ A, const float *__restrict__ B,
                       const float *__restrict__ bias, int M, int N, int K, int sam, int sak, int sbk, int sbn,
                       int ldc, int k_chunk, int c_split_stride, int has_bias) {
    __shared__ __align__(16) unsigned As[2][TC_GEMM_TILE * TC_K_WORDS];
    __shared__ __align__(16) unsigned Bs[2][TC_GEMM_TILE * TC_K_WORDS];
    __shared__ __align__(16) float a_land[2][2][TC_GEMM_THREADS][4];
    __shared__ __align__(16) float b_land[2][2][TC_GEMM_THREADS][4];
    sgemm_tc<Bf16>(As, Bs, a_land, b_land, C, A, B, bias, M, N, K, sam, sak, sbk, sbn, ldc, k_chunk, c_split_stride,
                   has_bias);
}
