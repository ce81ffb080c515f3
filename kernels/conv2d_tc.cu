// conv2d_tc.cu: the implicit-GEMM convolutions of conv2d.cu on tensor cores:
// TF32 or BF16 operands, FP32 accumulation; forward, the fused conv + bias + ReLU +
// 2x2/2 max-pool forward, backward-data and backward-filter, each with the argument list
// of its FP32 counterpart in conv2d.cu (conv2d_forward_igemm_*, ...), so the launcher's
// grids serve both.
//
// ENTRY POINTS: conv2d_<pass>_<precision>_<tile>, each cell "threads/min blocks per SM"
// of its __launch_bounds__ (tinycnn/backends/geometry.py picks the tile: the shortest
// that covers M; tests/test_kernel_grid.py holds this table to the definitions below)
//                     tf32                         bf16
//   pass              32x128  64x64   128x64       32x128  64x64   128x64
//   forward           128/4   128/4   256/2        128/4   128/4   256/2
//   relu_maxpool      128/4   128/4   256/2        128/4   128/4   256/2
//   backward_data     128/3   128/3   256/2        128/3   128/3   256/2
//   backward_filter   128/3   128/3   256/2        128/3   128/3   256/2
//
//   x (N, C, H, W), w (F, C, KH, KW), b (F,), out / dout (N, F, OH, OW)
//   forward         out[f, p] = sum_k w[f, k] cols[k, p] + b[f]     M = F, N = N OH OW, K = C KH KW
//   backward-data   dx[c, q]  = sum_k w[f, c, u, v] dout[...]        M = C, N = N H W,   K = F KH KW
//   backward-filter dw[f, k]  = sum_p dout[f, p] cols[k, p]          M = F, N = C KH KW, K = N OH OW
// (conv2d.cu's header has the index algebra; conv_gather.cuh the per-element gathers,
// written so that conv2d.cu can share them). Every product rounds both operands as the
// tensor core reads them (to_tf32 / pack_bf16x2: tinycnn/precision.py round_tf32 /
// round_bf16) and sums in FP32.
//
// Tiles: tc_tile.cuh, in three shapes so that the M side fills its tile, as in conv2d.cu:
// 32x128 (M <= 32), 64x64 (<= 64) with 128 threads (4 warps), and 128x64 with 256
// threads (8 warps; 128 filters: conv4 forward and backward-filter), each warp 32 x 32.
// No 16-row tile: at M = 16 (conv2 backward-data) the 32x128 tile's idle half costs 8
// of a warp's 16 HMMA per k-tile, but each gathered B element feeds only M rows in any
// tile shape, and the gathers bound these loops; each shape is 8 more kernels to compile
// (nvcc, NVRTC, the tests). Named conv2d_<pass>_<tf32|bf16>_<BMxBN>.
//
// STAGING. Operands reach shared memory through registers (register-prefetch double
// buffering, tc_tile.cuh: tc_k_loop_ahead): the im2col / dout gathers have no 16
// contiguous bytes to give cp.async (windows cross rows and image edges, strides skip).
// Each thread gathers ONE tile column over a contiguous run of K (4, 8 or 16 words per
// k-tile in 128x64, 64x64, 32x128) and stages one piece of the other operand (TcConv).
// Consecutive threads take consecutive columns, so a warp's gathers read neighbouring
// pixels. Each pass has two gathers, picked per launch (a uniform branch; they share the
// shared tiles and the epilogue):
//   - FAST, every layer of paper_net: forward and fused block with pad 0, backward-data
//     with stride 1, each with at most TC_PHASES = 32 taps per window; backward-filter
//     with pad 0. The offsets come from block-shared tables: a k-tile's tap offsets
//     relative to its first tap depend only on its phase (first tap % KH KW), so a table
//     per phase, built once per block, serves every k-tile (forward, backward-data);
//     positions have no small period, so K_TILE threads decode each k-tile's into a
//     two-slot ring two k-tiles ahead (backward-filter). A gathered element costs an
//     IMAD.WIDE from a pointer carried across the loop and an LDG, plus a quarter of an
//     LDS.128 of offsets (a broadcast): no digits, no bounds tests (pad 0 keeps every tap
//     inside the image; the K tests live in the peeled last k-tile), except backward-
//     data's test of each tap against the column's mask of the taps that hit (a LOP3 and
//     a predicated LDG). BF16 forward weights come by LDG.128 where rows are 16-byte
//     aligned.
//   - GENERAL, anything else: digits carried per element with bounds tests (forward,
//     backward-filter; conv_gather.cuh) or the division-free strided walk (backward-data).
// Both convert with tc_tf32_word (2 instructions per TF32 element) or pack_bf16x2 (one
// F2FP per two) and keep the shared-memory addresses in loop-carried registers
// (tc_tile.cuh: TcOffsets), which NVVM otherwise recomputes from threadIdx every k-tile.
//
// Napkin math (paper_net at batch 64; H100 SXM: 495 TF32 / 990 BF16 TFLOP/s dense, of
// which mma.sync reaches perhaps 2/3; one HMMA.1688.F32.TF32 = 2048 FLOP, one
// HMMA.16816.F32.BF16 = 4096, per warp):
//   conv2 forward 9.2 GFLOP, conv3 8.8, conv4 8.3; backward twice that: ~80 GFLOP per
//   step in the tiled convolutions, ~0.25 ms of TF32 mma at 330 TFLOP/s (FP32 CUDA cores:
//   >1.2 ms at 67 TFLOP/s). The fused block writes a quarter of the conv output (pooled)
//   plus the winners, as in conv2d.cu.
//   Issue slots, from the sm_90 SASS (nvcc 13.0): per k-tile each warp issues 16 HMMA
//   (its 32 x 32 x 16 in TF32, x 32 in BF16) inside main loops of (fast gathers)
//                        TF32: 32x128  64x64  128x64     BF16: 32x128  64x64  128x64
//     forward / fused           137    114     95                152    113     92
//     backward-data             171    138    116                224    177    136
//     backward-filter           190    173    156                208    187    164
//   instructions (backward-filter: ~35 of them the ring's decoding, in one warp), e.g.
//   forward TF32 64x64: 16 HMMA, 8 + 3 LDS.128 (fragments, offsets), 4 STS.128, 16 LDG,
//   8 IMAD.WIDE, 32 to convert, ~35 of addresses, pointers and loop control. Before
//   (carried digits, bounds tests and 64-bit addresses per element, addresses recomputed
//   per k-tile) these loops took 408-1332; the general gathers now take 192-1535
//   (tests/test_tensor_core_kernels.py holds the fast ones to budgets). At 2/3 of the
//   peak an SM sub-partition needs ~7 clocks per HMMA of either shape, ~110 per 16: the
//   forward loops are about balanced, the backward ones still issue-bound by up to 2x.
//   What would lift them further: vector gathers (NHWC activations, or several columns
//   per thread, whose stride-1 windows read neighbouring pixels) and operands written
//   pre-rounded / pre-packed by the producing kernel (no conversion, cp.async possible).
#include "conv_gather.cuh"
#include "tc_tile.cuh"

// Phases of the tap tables (conv2d_forward_tc_pad0, conv2d_backward_data_tc_table): the taps
// per window they cover, and as many as backward-data's 32-bit masks of taps hold.
#define TC_PHASES 32

// Compile-time constants of one instantiation, and a thread's share of the staging.
//   A: every thread stages one PIECE of the BM x K_TILE operand tile per k-tile: tile rows
//      2 ai, 2 ai + 1 (ai = tid / A_RUNS) over a run of A_RUN consecutive k from
//      a_k0 = (tid % A_RUNS) A_RUN. In 64x64 and 128x64 a piece is a staging unit
//      (tc_tile.cuh: two chunks, A_RUN = 4 words); 32x128 has half as many units as
//      threads, so there a piece is one chunk (A_RUN = 2 words) and every warp takes part.
//   B: column tid % BN, a contiguous run of B_RUN k from b_k0 = (tid / BN) B_RUN: whole
//      staging units in 32x128 (two) and 64x64 (one); in 128x64, with twice as many
//      threads as units, one chunk (4 words), so that every warp gathers.
template <class P, int BM, int BN>
struct TcConv {
    using S = TcShape<BM, BN>;
    static constexpr int T = S::THREADS, KPW = P::K_PER_WORD, COLS = BN;
    static constexpr int EPR = 4 * KPW;              // elements per run of 4 words
    static constexpr int K_TILE = TC_K_WORDS * KPW;  // k per k-tile: 16 or 32
    static constexpr bool A_HALF = 2 * S::A_UNITS == T;
    static constexpr int A_RUN = A_HALF ? EPR / 2 : EPR, A_RUNS = K_TILE / A_RUN;
    static constexpr bool B_HALF = 2 * S::B_UNITS == T;
    static constexpr int B_RUN = B_HALF ? EPR : 2 * EPR * S::B_PER_THREAD;  // a thread's B elements per k-tile
    static_assert(A_HALF || S::A_UNITS == T, "one A piece per thread");
    static_assert(T % BN == 0 && B_RUN * (T / BN) == K_TILE, "B runs tile the k-tile");
    static_assert(K_TILE <= T && B_RUN % 4 == 0, "ring builders, LDS.128 of the tables");
};

// A tap k = (c, u, v) (radices KH, KW), stepped by one: the tap tables' builders walk
// their column with it (one division per thread and block, none per entry).
struct TapWalk {
    int c, u, v;
};
__device__ __forceinline__ TapWalk tap_walk(int k, int KH, int KW) {
    const int uv = k % (KH * KW);
    return TapWalk{k / (KH * KW), uv / KW, uv % KW};
}
__device__ __forceinline__ void tap_next(TapWalk &t, int KH, int KW) {
    if (++t.v == KW) {
        t.v = 0;
        if (++t.u == KH) {
            t.u = 0;
            t.c++;
        }
    }
}

// A block's accumulators (tc_tile.cuh: a lane's MI x NI fragments of 4).
template <int BM, int BN>
using TcAcc = float[TcShape<BM, BN>::MI][TcShape<BM, BN>::NI][4];

template <class G>
__device__ __forceinline__ int tc_a_k0(int tid) {
    return (tid % G::A_RUNS) * G::A_RUN;
}
template <class G>
__device__ __forceinline__ int tc_b_k0(int tid) {
    return (tid / G::COLS) * G::B_RUN;
}

// N consecutive table entries from p as ints: LDS.128 per 4 (p 16-byte aligned then).
template <int N>
__device__ __forceinline__ void tc_entries(const int *p, int (&o)[N]) {
    if constexpr (N % 4 == 0) {
#pragma unroll
        for (int i = 0; i < N; i += 4) {
            const uint4 q = *reinterpret_cast<const uint4 *>(p + i);
            o[i] = (int)q.x;
            o[i + 1] = (int)q.y;
            o[i + 2] = (int)q.z;
            o[i + 3] = (int)q.w;
        }
    } else {
#pragma unroll
        for (int i = 0; i < N; i++) o[i] = p[i];
    }
}

// The carried offsets of a thread's staging (tc_tile.cuh: TcOffsets): the A piece at
// pair-row tid / A_RUNS, chunk tid % A_RUNS (A_HALF) or 2 (tid % A_RUNS); the B run at row
// tid % BN, chunk b_k0 / EPR ...
template <class G>
__device__ __forceinline__ TcOffsets tc_conv_offsets(int tid) {
    const int ac = tid % G::A_RUNS;
    return tc_offsets<typename G::S>(tid / G::A_RUNS, G::A_HALF ? ac : 2 * ac, tid % G::COLS,
                                     tc_b_k0<G>(tid) / G::EPR);
}

// ... and the stores there: chunk c of the B run (its elements c EPR ..) at sb ^ 16 c (the
// run starts at an even chunk or is one chunk: the XOR is the swizzled chunk + c).
template <class P, class G>
__device__ __forceinline__ void tc_conv_store_at(unsigned *A, unsigned *B, int sa, int sb,
                                                 const float (&a_v)[2][G::A_RUN], const float (&b_v)[G::B_RUN]) {
    if constexpr (G::A_HALF)
        tc_store_a_chunk_at<P>(A, sa, a_v);
    else
        tc_store_a_at<P>(A, sa, a_v);
#pragma unroll
    for (int c = 0; c < G::B_RUN / G::EPR; c++) tc_store_b_chunk_at<P>(B, sb ^ (16 * c), &b_v[c * G::EPR]);
}

// ------------------------------------------------------------------------ forward
// out (N, F, OH, OW) = conv(x, w) + b, or with POOLED the fused block (pooled (N, F, PH,
// PW) and the winners' window offsets arg, as conv2d.cu). POOLED: the tile's columns
// enumerate pooling windows so that a LANE holds whole windows: within every 16
// columns, column c is member (dy, dx) = (c % 16 / 8, c % 2) of window 4 (c / 16) +
// c % 8 / 2. An mma lane owns columns 2t, 2t+1 of both 8-column fragments of a 16-column
// pair, i.e. window t: it pools in registers (no shuffles, no shared memory).
//
// Two gathers, picked per launch (uniform over the grid): pad 0 with at most TC_PHASES
// taps per window (every layer of paper_net) takes the tap table
// (conv2d_forward_tc_pad0), anything else carries digits per element
// (conv2d_forward_tc_digits).

// The output position (n, oh, ow) of tile column b_col; false past the last column or,
// POOLED, for a ceil-mode window's member past the edge ((0, 0, 0) then).
template <bool POOLED>
__device__ __forceinline__ bool conv_forward_column(int p0, int b_col, int N, int OH, int OW, int PH, int PW,
                                                    int &pn, int &poh, int &pow_) {
    const int OHW = OH * OW, PHW = PH * PW;
    bool p_ok;
    pn = poh = pow_ = 0;
    if (POOLED) {
        const int cc = b_col % 16;
        const int q = p0 / 4 + 4 * (b_col / 16) + (cc % 8) / 2;  // window (n, ph, pw)
        p_ok = q < N * PHW;
        if (p_ok) {
            pn = q / PHW;
            poh = 2 * ((q % PHW) / PW) + cc / 8;
            pow_ = 2 * ((q % PHW) % PW) + cc % 2;
        }
        p_ok = p_ok && poh < OH && pow_ < OW;  // a ceil-mode window's member past the edge: 0
        if (!p_ok) pn = poh = pow_ = 0;
    } else {
        const int p = p0 + b_col;
        p_ok = p < N * OHW;
        if (p_ok) {
            pn = p / OHW;
            poh = (p % OHW) / OW;
            pow_ = (p % OHW) % OW;
        }
    }
    return p_ok;
}

// The bias, the fused block's ReLU and pooling, and the stores, from the accumulators.
template <class S, bool POOLED>
__device__ __forceinline__ void conv2d_forward_epilogue(const float (&acc)[S::MI][S::NI][4], float *__restrict__ out,
                                                        int *__restrict__ arg, const float *__restrict__ b, int f0,
                                                        int p0, int N, int F, int OH, int OW, int PH, int PW) {
    const int OHW = OH * OW, PHW = PH * PW;
    int wm0, wn0;
    tc_warp_origin<S>(wm0, wn0);
    const int lane = threadIdx.x % 32;
    if constexpr (POOLED) {
#pragma unroll
        for (int pp = 0; pp < S::NI / 2; pp++) {  // fragments 2 pp (dy = 0) and 2 pp + 1 (dy = 1)
            const int q = p0 / 4 + (wn0 + 16 * pp) / 4 + (lane & 3);
            if (q >= N * PHW) continue;  // after the loop's last barrier and mma
            const int n = q / PHW, ph = (q % PHW) / PW, pw = (q % PHW) % PW;
            const bool right = 2 * pw + 1 < OW, below = 2 * ph + 1 < OH;  // ceil-mode windows may hang over
            const bool valid[4] = {true, right, below, right && below};
#pragma unroll
            for (int mi = 0; mi < S::MI; mi++)
#pragma unroll
                for (int hr = 0; hr < 2; hr++) {  // the lane's two rows
                    const int f = f0 + tc_acc_row(wm0, mi, lane, 2 * hr);
                    if (f >= F) continue;
                    const float v[4] = {acc[mi][2 * pp][2 * hr], acc[mi][2 * pp][2 * hr + 1],
                                        acc[mi][2 * pp + 1][2 * hr], acc[mi][2 * pp + 1][2 * hr + 1]};
                    float best;
                    int best_k;
                    relu_pool_window(v, b[f], valid, best, best_k);
                    const long long o = ((long long)n * F + f) * PHW + ph * PW + pw;
                    out[o] = best;
                    arg[o] = best_k;
                }
        }
    } else {
#pragma unroll
        for (int ni = 0; ni < S::NI; ni++)
#pragma unroll
            for (int jc = 0; jc < 2; jc++) {
                const int p = p0 + tc_acc_col(wn0, ni, lane, jc);
                if (p >= N * OHW) continue;
                const int n = p / OHW, ohw = p % OHW;
#pragma unroll
                for (int mi = 0; mi < S::MI; mi++)
#pragma unroll
                    for (int hr = 0; hr < 2; hr++) {
                        const int f = f0 + tc_acc_row(wm0, mi, lane, 2 * hr);
                        if (f < F) out[((long long)n * F + f) * OHW + ohw] = acc[mi][ni][2 * hr + jc] + b[f];
                    }
            }
    }
}

// A: w (F, KK) row-major; this thread's piece reads filters f0 + 2 ai + h at tap a_k0 on.
// Filters past F read filter F - 1: they only feed outputs that are not stored.
template <class G>
__device__ __forceinline__ void conv_weight_rows(const float *__restrict__ w, int f0, int F, int KK, int tid,
                                                 const float *(&a_row)[2]) {
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int f = f0 + 2 * (tid / G::A_RUNS) + h;
        a_row[h] = w + (long long)(f < F ? f : F - 1) * KK + tc_a_k0<G>(tid);
    }
}

// Pad 0: every tap of a column's window lies inside x (ih = oh stride + u <= H - 1), so
// the gather needs no bounds test: cols[k, p] = xt[off(k)] with xt the window's corner
// (xn + oh stride W + ow stride) and off(c, u, v) = (c H + u) W + v, the same for every
// column. A k-tile's offsets RELATIVE TO ITS FIRST TAP k0 = t K_TILE depend only on the
// phase ph = k0 % KHW (tap k0 + j is (c0 + (ph + j) / KHW, (ph + j) % KHW) for
// k0 = (c0, ph)), so a per-block table, built once, holds them for each of the
// KHW <= TC_PHASES phases, with the step to the next k-tile's first tap in entry K_TILE.
// A gathering thread reads its run's offsets with LDS.128 (one per 4 elements, a
// broadcast: a warp's threads share the run) and loads xt[off] (an IMAD.WIDE and an LDG
// per element), then moves xt on by the step. (xt is carried from k-tile to k-tile: from
// a loop-invariant pointer the compiler would fold the column's offset into every
// element's address, four 64-bit instructions per element instead of one IMAD.WIDE.)
// Columns that are not stored (past the end, or a ceil-mode window's member past the
// edge, which the pooling ignores) gather the window of column 0 instead of 0: in bounds,
// and their accumulators are never read. The K tests (taps past KK read 0, in both
// operands) are left to the peeled last k-tile.
template <class P, int BM, int BN, bool POOLED, bool A_VEC>
__device__ __forceinline__ void conv2d_forward_tc_pad0(unsigned (*As)[TcShape<BM, BN>::A_WORDS],
                                                       unsigned (*Bs)[TcShape<BM, BN>::B_WORDS],
                                                       int (*tab)[TC_K_WORDS * P::K_PER_WORD + 4],
                                                       TcAcc<BM, BN> &acc,
                                                       const float *__restrict__ x, const float *__restrict__ w,
                                                       int N, int C, int H, int W, int F, int KH, int KW, int OH,
                                                       int OW, int stride, int PH, int PW) {
    using G = TcConv<P, BM, BN>;
    using S = typename G::S;
    constexpr int KT = G::K_TILE;
    const int KHW = KH * KW, KK = C * KHW;
    const int tid = threadIdx.x;

    const float *a_row[2];  // at this thread's first tap of the next k-tile
    conv_weight_rows<G>(w, blockIdx.y * BM, F, KK, tid, a_row);
    int pn, poh, pow_;
    conv_forward_column<POOLED>(blockIdx.x * BN, tid % BN, N, OH, OW, PH, PW, pn, poh, pow_);
    const float *xt = x + (pn * C * H * W + (poh * W + pow_) * stride);  // the window's corner: tap 0
    const int b_k0 = tc_b_k0<G>(tid);

    // the table: entry j of phase ph = off(tap ph + j) - off(tap ph), j <= KT; thread j
    // walks its column down the phases
    if (tid <= KT) {
        TapWalk m = tap_walk(tid, KH, KW), p = tap_walk(0, KH, KW);  // taps ph + j and ph
        for (int ph = 0; ph < KHW; ph++) {
            tab[ph][tid] = (m.c * H + m.u) * W + m.v - (p.u * W + p.v);
            tap_next(m, KH, KW);
            tap_next(p, KH, KW);
        }
    }
    const int ph_step = KT % KHW;
    int ph = 0, k0 = 0;  // the phase and the first tap of the next k-tile
    auto prep = [](int) {};

    float a_v[2][G::A_RUN], b_v[G::B_RUN];
    auto load = [&](auto full) {
        constexpr bool FULL = decltype(full)::value;
        const int a_k = k0 + tc_a_k0<G>(tid), b_k = k0 + b_k0;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            if constexpr (FULL && A_VEC) {  // LDG.128: the piece's run is 16-byte aligned
#pragma unroll
                for (int j = 0; j < G::A_RUN; j += 4) {
                    const float4 q = *reinterpret_cast<const float4 *>(a_row[h] + j);
                    a_v[h][j] = q.x;
                    a_v[h][j + 1] = q.y;
                    a_v[h][j + 2] = q.z;
                    a_v[h][j + 3] = q.w;
                }
            } else {
#pragma unroll
                for (int j = 0; j < G::A_RUN; j++) a_v[h][j] = (FULL || a_k + j < KK) ? a_row[h][j] : 0.0f;
            }
            a_row[h] += KT;
        }
        const int *rk = tab[ph];
#pragma unroll
        for (int e = 0; e < G::B_RUN; e += 4) {
            int o[4];
            tc_entries(rk + b_k0 + e, o);
#pragma unroll
            for (int i = 0; i < 4; i++) b_v[e + i] = (FULL || b_k + e + i < KK) ? xt[o[i]] : 0.0f;
        }
        xt += rk[KT];
        ph += ph_step;
        if (ph >= KHW) ph -= KHW;
        k0 += KT;
    };
    auto store = [&](int sa, int sb) { tc_conv_store_at<P, G>(&As[0][0], &Bs[0][0], sa, sb, a_v, b_v); };

    tc_zero(acc);
    // the loop's first barrier publishes the table
    tc_k_loop_ahead<P, S>(As, Bs, (KK + KT - 1) / KT, tc_conv_offsets<G>(tid), prep, load, store, acc);
}

// Any padding: each thread carries its run's first tap as digits (c, u, v) and tests
// every element against the image (conv_gather.cuh: im2col_at).
template <class P, int BM, int BN, bool POOLED>
__device__ __forceinline__ void conv2d_forward_tc_digits(unsigned (*As)[TcShape<BM, BN>::A_WORDS],
                                                         unsigned (*Bs)[TcShape<BM, BN>::B_WORDS],
                                                         TcAcc<BM, BN> &acc,
                                                         const float *__restrict__ x, const float *__restrict__ w,
                                                         int N, int C, int H, int W, int F, int KH, int KW, int OH,
                                                         int OW, int stride, int pad, int PH, int PW) {
    using G = TcConv<P, BM, BN>;
    using S = typename G::S;
    constexpr int KT = G::K_TILE;
    const int KK = C * KH * KW;
    const int tid = threadIdx.x;

    const float *a_row[2];  // at this thread's first tap of the next k-tile, a_k
    conv_weight_rows<G>(w, blockIdx.y * BM, F, KK, tid, a_row);
    int a_k = tc_a_k0<G>(tid);

    // B: this thread's column p = (n, oh, ow), decoded once; taps (c, u, v) as digits.
    int pn, poh, pow_;
    const bool p_ok = conv_forward_column<POOLED>(blockIdx.x * BN, tid % BN, N, OH, OW, PH, PW, pn, poh, pow_);
    const int ih0 = poh * stride - pad, iw0 = pow_ * stride - pad;
    const float *xn = x + (long long)pn * C * H * W;
    Digits tap = digits_of(tc_b_k0<G>(tid), KH, KW);
    const Digits one = digits_of(1, KH, KW), tile_step = digits_of(KT, KH, KW);
    auto prep = [](int) {};

    float a_v[2][G::A_RUN], b_v[G::B_RUN];
    auto load = [&](auto full) {
        constexpr bool FULL = decltype(full)::value;
#pragma unroll
        for (int h = 0; h < 2; h++) {
#pragma unroll
            for (int j = 0; j < G::A_RUN; j++) a_v[h][j] = (FULL || a_k + j < KK) ? a_row[h][j] : 0.0f;
            a_row[h] += KT;
        }
        a_k += KT;
        Digits t = tap;
#pragma unroll
        for (int e = 0; e < G::B_RUN; e++) {
            b_v[e] = im2col_at(xn, t, ih0, iw0, C, H, W, p_ok);
            if (e + 1 < G::B_RUN) advance(t, one, KH, KW);
        }
        advance(tap, tile_step, KH, KW);
    };
    auto store = [&](int sa, int sb) { tc_conv_store_at<P, G>(&As[0][0], &Bs[0][0], sa, sb, a_v, b_v); };

    tc_zero(acc);
    tc_k_loop_ahead<P, S>(As, Bs, (KK + KT - 1) / KT, tc_conv_offsets<G>(tid), prep, load, store, acc);
}

// The kernels' body: shared tiles for both gathers, the gather picked by the padding.
template <class P, int BM, int BN, bool POOLED>
__device__ __forceinline__ void conv2d_forward_kernel(float *__restrict__ out, int *__restrict__ arg,
                                                      const float *__restrict__ x, const float *__restrict__ w,
                                                      const float *__restrict__ b, int N, int C, int H, int W, int F,
                                                      int KH, int KW, int OH, int OW, int stride, int pad, int PH,
                                                      int PW) {
    using S = TcShape<BM, BN>;
    __shared__ __align__(16) unsigned As[2][S::A_WORDS];                         // weights, pair-rows of filters
    __shared__ __align__(16) unsigned Bs[2][S::B_WORDS];                         // im2col, [column p][k words]
    __shared__ __align__(16) int tab[TC_PHASES][TC_K_WORDS * P::K_PER_WORD + 4];  // relative tap offsets, step
    float acc[S::MI][S::NI][4];
    // BF16 weights by LDG.128 where the rows allow (TF32 gains nothing: its words would
    // need moves into the interleaved order of the A stores, as many as the loads saved)
    constexpr bool VEC = P::IS_BF16 && TcConv<P, BM, BN>::A_RUN % 4 == 0;
    if (VEC && pad == 0 && KH * KW <= TC_PHASES && (C * KH * KW) % 4 == 0 && ((unsigned long long)w & 15ull) == 0)
        conv2d_forward_tc_pad0<P, BM, BN, POOLED, VEC>(As, Bs, tab, acc, x, w, N, C, H, W, F, KH, KW, OH, OW, stride,
                                                       PH, PW);
    else if (pad == 0 && KH * KW <= TC_PHASES)
        conv2d_forward_tc_pad0<P, BM, BN, POOLED, false>(As, Bs, tab, acc, x, w, N, C, H, W, F, KH, KW, OH, OW,
                                                         stride, PH, PW);
    else
        conv2d_forward_tc_digits<P, BM, BN, POOLED>(As, Bs, acc, x, w, N, C, H, W, F, KH, KW, OH, OW, stride, pad,
                                                    PH, PW);
    conv2d_forward_epilogue<S, POOLED>(acc, out, arg, b, blockIdx.y * BM, blockIdx.x * BN, N, F, OH, OW, PH, PW);
}

// ------------------------------------------------------------------ backward-data
// dx (N, C, H, W) for the tile (c0, q0) of the (C, N H W) product: a gather over the
// output positions whose windows covered each input pixel. Stride 1 with at most
// TC_PHASES taps per window takes the tap table (conv2d_backward_data_tc_table), anything
// else the division-free walk of conv_gather.cuh (conv2d_backward_data_tc_walk).

// The stores of dx from the accumulators.
template <class S>
__device__ __forceinline__ void conv2d_backward_data_epilogue(const float (&acc)[S::MI][S::NI][4],
                                                              float *__restrict__ dx, int c0, int q0, int N, int C,
                                                              int HW) {
    int wm0, wn0;
    tc_warp_origin<S>(wm0, wn0);
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int ni = 0; ni < S::NI; ni++)
#pragma unroll
        for (int jc = 0; jc < 2; jc++) {
            const int qj = q0 + tc_acc_col(wn0, ni, lane, jc);
            if (qj >= N * HW) continue;
            const int n = qj / HW, hw = qj % HW;
#pragma unroll
            for (int mi = 0; mi < S::MI; mi++)
#pragma unroll
                for (int hr = 0; hr < 2; hr++) {
                    const int c = c0 + tc_acc_row(wm0, mi, lane, 2 * hr);
                    if (c < C) dx[((long long)n * C + c) * HW + hw] = acc[mi][ni][2 * hr + jc];
                }
        }
}

// Stride 1: the tap k = (f, u, v) reaches input pixel (h, w) from output (hp - u, wp - v)
// (hp = h + pad, wp = w + pad), so dout[n, f, hp - u, wp - v] = dq[doff(k)] with
// dq = dout_n + hp OW + wp and doff(k) = f OH OW - u OW - v, the same for every column,
// and it exists iff bit u KW + v of the column's mask (the taps whose output lies inside
// dout, found once) is set. The weight w[f, c, u, v] = w_c[woff(k)], w_c = w + c KH KW,
// woff(k) = f C KH KW + u KW + v. As in the forward pass (conv2d_forward_tc_pad0), a
// k-tile's doff and woff relative to its first tap, and the taps' bits, depend only on
// the phase (k-tile K_TILE) % KHW: the per-block table holds the three for each phase,
// and the steps of dq and w_c to the next k-tile in entry K_TILE. An element of dout
// costs half an LDS.128, a LOP3 (the mask test), an IMAD.WIDE and a predicated LDG; a
// weight an IMAD.WIDE and an LDG (its offset read once for the piece's two rows).
// Channels past C read channel C - 1 (their rows are not stored); taps past K read 0 in
// the peeled last k-tile. dq may point outside dout: it is dereferenced only where the
// mask allows.
template <class P, int BM, int BN>
__device__ __forceinline__ void conv2d_backward_data_tc_table(unsigned (*As)[TcShape<BM, BN>::A_WORDS],
                                                              unsigned (*Bs)[TcShape<BM, BN>::B_WORDS],
                                                              int (*tab)[TC_PHASES][TC_K_WORDS * P::K_PER_WORD + 4],
                                                              TcAcc<BM, BN> &acc,
                                                              const float *__restrict__ dout,
                                                              const float *__restrict__ w, int N, int C, int H, int W,
                                                              int F, int KH, int KW, int OH, int OW, int pad) {
    using G = TcConv<P, BM, BN>;
    using S = typename G::S;
    constexpr int KT = G::K_TILE;
    const int KHW = KH * KW, KK = F * KHW, HW = H * W, OHW = OH * OW;
    const int tid = threadIdx.x;

    // A: w_c for the piece's channels c0 + 2 ai + h, then + woff of the k-tile's first tap.
    const float *a_row[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int c = blockIdx.y * BM + 2 * (tid / G::A_RUNS) + h;
        a_row[h] = w + (c < C ? c : C - 1) * KHW;
    }
    const int a_k0 = tc_a_k0<G>(tid);

    // B: this thread's column q = input pixel (n, h, w) and its mask of taps that hit.
    const int q = blockIdx.x * BN + tid % BN;
    const bool q_ok = q < N * HW;
    const int qn = q_ok ? q / HW : 0, qhw = q_ok ? q % HW : 0;
    const int hp = qhw / W + pad, wp = qhw % W + pad;
    unsigned mask = 0;
    if (q_ok)
        for (int u = 0; u < KH; u++)
            for (int v = 0; v < KW; v++)
                if ((unsigned)(hp - u) < (unsigned)OH && (unsigned)(wp - v) < (unsigned)OW) mask |= 1u << (u * KW + v);
    const float *dq = dout + (qn * F * OHW + hp * OW + wp);  // then + doff of the k-tile's first tap
    const int b_k0 = tc_b_k0<G>(tid);

    // the table: [0] doff, [1] the tap's bit, [2] woff of tap ph + j relative to tap ph,
    // j <= KT; thread j walks its column down the phases
    if (tid <= KT) {
        TapWalk m = tap_walk(tid, KH, KW), p = tap_walk(0, KH, KW);  // taps ph + j = (f, u, v) and ph
        for (int ph = 0; ph < KHW; ph++) {
            const int uv = m.u * KW + m.v;
            tab[0][ph][tid] = m.c * OHW - m.u * OW - m.v + p.u * OW + p.v;
            tab[1][ph][tid] = (int)(1u << uv);
            tab[2][ph][tid] = m.c * C * KHW + uv - ph;
            tap_next(m, KH, KW);
            tap_next(p, KH, KW);
        }
    }
    const int ph_step = KT % KHW;
    int ph = 0, k0 = 0;  // the phase and the first tap of the next k-tile
    auto prep = [](int) {};

    float a_v[2][G::A_RUN], b_v[G::B_RUN];
    auto load = [&](auto full) {
        constexpr bool FULL = decltype(full)::value;
        int wo[G::A_RUN];
        tc_entries(&tab[2][ph][a_k0], wo);
#pragma unroll
        for (int h = 0; h < 2; h++) {
#pragma unroll
            for (int j = 0; j < G::A_RUN; j++)
                a_v[h][j] = (FULL || k0 + a_k0 + j < KK) ? a_row[h][wo[j]] : 0.0f;
            a_row[h] += tab[2][ph][KT];
        }
#pragma unroll
        for (int e = 0; e < G::B_RUN; e += 4) {
            int o[4], bit[4];
            tc_entries(&tab[0][ph][b_k0 + e], o);
            tc_entries(&tab[1][ph][b_k0 + e], bit);
#pragma unroll
            for (int i = 0; i < 4; i++)
                b_v[e + i] =
                    ((FULL || k0 + b_k0 + e + i < KK) && (mask & (unsigned)bit[i])) ? dq[o[i]] : 0.0f;
        }
        dq += tab[0][ph][KT];
        ph += ph_step;
        if (ph >= KHW) ph -= KHW;
        k0 += KT;
    };
    auto store = [&](int sa, int sb) { tc_conv_store_at<P, G>(&As[0][0], &Bs[0][0], sa, sb, a_v, b_v); };

    tc_zero(acc);
    // the loop's first barrier publishes the table
    tc_k_loop_ahead<P, S>(As, Bs, (KK + KT - 1) / KT, tc_conv_offsets<G>(tid), prep, load, store, acc);
}

// Any stride: each thread walks its run of taps with carried digits and the quotients of
// hp - u and wp - v by the stride (conv_gather.cuh: DgradWalk; two divisions per k-tile).
template <class P, int BM, int BN>
__device__ __forceinline__ void conv2d_backward_data_tc_walk(unsigned (*As)[TcShape<BM, BN>::A_WORDS],
                                                             unsigned (*Bs)[TcShape<BM, BN>::B_WORDS],
                                                             TcAcc<BM, BN> &acc,
                                                             const float *__restrict__ dout,
                                                             const float *__restrict__ w, int N, int C, int H, int W,
                                                             int F, int KH, int KW, int OH, int OW, int stride,
                                                             int pad) {
    using G = TcConv<P, BM, BN>;
    using S = typename G::S;
    constexpr int KT = G::K_TILE;
    const int KHW = KH * KW, KK = F * KHW, HW = H * W;
    const int tid = threadIdx.x;

    // A: w[f, c, u, v] as A[c][k = (f, uv)], rows c0 + 2 ai + h; k as digits (f, 0, uv).
    int a_chan[2];
#pragma unroll
    for (int h = 0; h < 2; h++) a_chan[h] = blockIdx.y * BM + 2 * (tid / G::A_RUNS) + h;
    Digits a_tap = digits_of(tc_a_k0<G>(tid), 1, KHW);
    const Digits a_one = digits_of(1, 1, KHW), a_step = digits_of(KT, 1, KHW);

    // B: this thread's column q = input pixel (n, h, w); taps (f, u, v) as digits.
    const int q = blockIdx.x * BN + tid % BN;
    const bool q_ok = q < N * HW;
    const int qn = q_ok ? q / HW : 0, qhw = q_ok ? q % HW : 0;
    const int hp = qhw / W + pad, wp = qhw % W + pad;  // in padded coordinates
    const float *dout_n = dout + (long long)qn * F * OH * OW;
    Digits tap = digits_of(tc_b_k0<G>(tid), KH, KW);
    const Digits tile_step = digits_of(KT, KH, KW);
    int qh0, rh0, qw0, rw0;  // divmods of hp, wp by the stride
    dgrad_divmod(hp, stride, qh0, rh0);
    dgrad_divmod(wp, stride, qw0, rw0);
    auto prep = [](int) {};

    float a_v[2][G::A_RUN], b_v[G::B_RUN];
    auto load = [&](auto) {
        Digits ta = a_tap;
#pragma unroll
        for (int j = 0; j < G::A_RUN; j++) {
#pragma unroll
            for (int h = 0; h < 2; h++) a_v[h][j] = dgrad_weight_at(w, ta, a_chan[h], C, F, KHW);
            if (j + 1 < G::A_RUN) advance(ta, a_one, 1, KHW);
        }
        advance(a_tap, a_step, 1, KHW);
        Digits t = tap;
        DgradWalk d = dgrad_strided_start(t, hp, wp, stride);  // two divisions per k-tile
#pragma unroll
        for (int e = 0; e < G::B_RUN; e++) {
            b_v[e] = dgrad_strided_at(dout_n, t, d, F, OH, OW, q_ok);
            if (e + 1 < G::B_RUN) dgrad_strided_next(t, d, KH, KW, stride, qh0, rh0, qw0, rw0);
        }
        advance(tap, tile_step, KH, KW);
    };
    auto store = [&](int sa, int sb) { tc_conv_store_at<P, G>(&As[0][0], &Bs[0][0], sa, sb, a_v, b_v); };

    tc_zero(acc);
    tc_k_loop_ahead<P, S>(As, Bs, (KK + KT - 1) / KT, tc_conv_offsets<G>(tid), prep, load, store, acc);
}

template <class P, int BM, int BN>
__device__ __forceinline__ void conv2d_backward_data_kernel(float *__restrict__ dx, const float *__restrict__ dout,
                                                            const float *__restrict__ w, int N, int C, int H, int W,
                                                            int F, int KH, int KW, int OH, int OW, int stride,
                                                            int pad) {
    using S = TcShape<BM, BN>;
    __shared__ __align__(16) unsigned As[2][S::A_WORDS];  // weights, pair-rows of channels
    __shared__ __align__(16) unsigned Bs[2][S::B_WORDS];  // dout gathered, [pixel q][k words]
    __shared__ __align__(16) int tab[3][TC_PHASES][TC_K_WORDS * P::K_PER_WORD + 4];  // doff, bit, woff; steps
    float acc[S::MI][S::NI][4];
    if (stride == 1 && KH * KW <= TC_PHASES)
        conv2d_backward_data_tc_table<P, BM, BN>(As, Bs, tab, acc, dout, w, N, C, H, W, F, KH, KW, OH, OW, pad);
    else
        conv2d_backward_data_tc_walk<P, BM, BN>(As, Bs, acc, dout, w, N, C, H, W, F, KH, KW, OH, OW, stride, pad);
    conv2d_backward_data_epilogue<S>(acc, dx, blockIdx.y * BM, blockIdx.x * BN, N, C, H * W);
}

// ---------------------------------------------------------------- backward-filter
// dw (F, C KH KW) for the chunk [z k_chunk, (z+1) k_chunk) of output positions p,
// z = blockIdx.z, written to dw + z F C KH KW (a workspace slice when split; split_k_reduce
// adds the slices in order, as for conv2d.cu). Pad 0 takes the position ring
// (conv2d_backward_filter_tc_pad0), any other padding carries digits
// (conv2d_backward_filter_tc_digits).

template <class S>
__device__ __forceinline__ void conv2d_backward_filter_epilogue(const float (&acc)[S::MI][S::NI][4],
                                                                float *__restrict__ dw, int f0, int kc0, int F,
                                                                int KK) {
    int wm0, wn0;
    tc_warp_origin<S>(wm0, wn0);
    const int lane = threadIdx.x % 32;
    float *dwz = dw + (long long)blockIdx.z * F * KK;
#pragma unroll
    for (int mi = 0; mi < S::MI; mi++)
#pragma unroll
        for (int ni = 0; ni < S::NI; ni++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int f = f0 + tc_acc_row(wm0, mi, lane, i), k = kc0 + tc_acc_col(wn0, ni, lane, i);
                if (f < F && k < KK) dwz[(long long)f * KK + k] = acc[mi][ni][i];
            }
}

// Pad 0: the position p = (n, oh, ow) and the tap kc = (c, u, v) of a column separate:
// x[n, c, oh stride + u, ow stride + v] = x_kc[xoff(p)] with x_kc = x + (c H + u) W + v
// and xoff(p) = n C H W + (oh W + ow) stride, always inside x; dout[n, f, oh, ow] =
// dout_f[doff(p)] with dout_f = dout + f OH OW and doff(p) = n F OH OW + oh OW + ow. The
// positions of a k-tile have no small period, so a RING (tc_k_loop_ahead's prep) holds
// them per k-tile instead of a table: thread j < K_TILE carries the digits of position
// p0 + j of k-tile t (p0 = p_begin + t K_TILE) and writes doff - p0 and xoff - p0 stride
// two k-tiles ahead; the gather pointers carry the drifts p0 and p0 stride, so they move
// on by constants. An element costs a quarter of an LDS.128 (a dout offset serves the
// piece's two rows), an IMAD.WIDE and an LDG. Filters past F read filter F - 1 and taps
// past KK read tap 0 (not stored); positions past the chunk read 0, in the peeled last
// k-tile.
template <class P, int BM, int BN>
__device__ __forceinline__ void conv2d_backward_filter_tc_pad0(unsigned (*As)[TcShape<BM, BN>::A_WORDS],
                                                               unsigned (*Bs)[TcShape<BM, BN>::B_WORDS],
                                                               int (*ring)[2][TC_K_WORDS * P::K_PER_WORD],
                                                               TcAcc<BM, BN> &acc,
                                                               const float *__restrict__ dout,
                                                               const float *__restrict__ x, int N, int C, int H,
                                                               int W, int F, int KH, int KW, int OH, int OW,
                                                               int stride, int k_chunk) {
    using G = TcConv<P, BM, BN>;
    using S = typename G::S;
    constexpr int KT = G::K_TILE;
    const int KHW = KH * KW, KK = C * KHW, OHW = OH * OW, P_pos = N * OHW;
    const int tid = threadIdx.x;
    const int p_begin = blockIdx.z * k_chunk;
    const int p_end = P_pos < p_begin + k_chunk ? P_pos : p_begin + k_chunk;

    // A: dout_f of the piece's filters f0 + 2 ai + h, plus the drift p0.
    const float *a_row[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int f = blockIdx.y * BM + 2 * (tid / G::A_RUNS) + h;
        a_row[h] = dout + ((f < F ? f : F - 1) * OHW + p_begin);
    }
    const int a_k0 = tc_a_k0<G>(tid);

    // B: this thread's column kc = tap (c, u, v), fixed, plus the drift p0 stride.
    const int kc = blockIdx.x * BN + tid % BN;
    const int kcc = kc < KK ? kc : 0;
    const int kc_c = kcc / KHW, kc_uv = kcc % KHW;
    const float *xk = x + ((kc_c * H + kc_uv / KW) * W + kc_uv % KW + p_begin * stride);
    const int b_k0 = tc_b_k0<G>(tid);

    // the ring builder: thread j < KT, position p = p0 + j of k-tile t
    Digits pos = digits_of(p_begin + tid, OH, OW);
    const Digits tile_step = digits_of(KT, OH, OW);
    int pos_p = p_begin + tid;
    auto prep = [&](int t) {
        if (tid < KT) {
            const bool in = pos_p < p_end;
            const int p0 = pos_p - tid;
            ring[t & 1][0][tid] = in ? pos.hi * F * OHW + pos.mid * OW + pos.lo - p0 : 0;
            ring[t & 1][1][tid] = in ? pos.hi * C * H * W + (pos.mid * W + pos.lo - p0) * stride : 0;
            advance(pos, tile_step, OH, OW);
            pos_p += KT;
        }
    };

    int lt = 0, k0 = p_begin;  // the k-tile the next load reads, and its first position
    float a_v[2][G::A_RUN], b_v[G::B_RUN];
    auto load = [&](auto full) {
        constexpr bool FULL = decltype(full)::value;
        const int(*rk)[KT] = ring[lt & 1];
        int o[G::A_RUN];
        tc_entries(&rk[0][a_k0], o);
#pragma unroll
        for (int h = 0; h < 2; h++) {
#pragma unroll
            for (int j = 0; j < G::A_RUN; j++) a_v[h][j] = (FULL || k0 + a_k0 + j < p_end) ? a_row[h][o[j]] : 0.0f;
            a_row[h] += KT;
        }
#pragma unroll
        for (int e = 0; e < G::B_RUN; e += 4) {
            int ob[4];
            tc_entries(&rk[1][b_k0 + e], ob);
#pragma unroll
            for (int i = 0; i < 4; i++)
                b_v[e + i] = (FULL || k0 + b_k0 + e + i < p_end) ? xk[ob[i]] : 0.0f;
        }
        xk += KT * stride;
        k0 += KT;
        lt++;
    };
    auto store = [&](int sa, int sb) { tc_conv_store_at<P, G>(&As[0][0], &Bs[0][0], sa, sb, a_v, b_v); };

    tc_zero(acc);
    const int steps = p_end > p_begin ? (p_end - p_begin + KT - 1) / KT : 0;
    tc_k_loop_ahead<P, S>(As, Bs, steps, tc_conv_offsets<G>(tid), prep, load, store, acc);
}

// Any padding: positions as carried digits per thread, each element tested against the
// image (conv_gather.cuh: wgrad_x_at, wgrad_dout_at).
template <class P, int BM, int BN>
__device__ __forceinline__ void conv2d_backward_filter_tc_digits(unsigned (*As)[TcShape<BM, BN>::A_WORDS],
                                                                 unsigned (*Bs)[TcShape<BM, BN>::B_WORDS],
                                                                 TcAcc<BM, BN> &acc,
                                                                 const float *__restrict__ dout,
                                                                 const float *__restrict__ x, int N, int C, int H,
                                                                 int W, int F, int KH, int KW, int OH, int OW,
                                                                 int stride, int pad, int k_chunk) {
    using G = TcConv<P, BM, BN>;
    using S = typename G::S;
    constexpr int KT = G::K_TILE;
    const int KHW = KH * KW, KK = C * KHW, OHW = OH * OW, P_pos = N * OHW;
    const int tid = threadIdx.x;
    const int p_begin = blockIdx.z * k_chunk;
    const int p_end = P_pos < p_begin + k_chunk ? P_pos : p_begin + k_chunk;

    // A: dout[n, f, ohw] as A[f][p], rows f0 + 2 ai + h; p as digits (n, 0, ohw).
    int a_filter[2];
#pragma unroll
    for (int h = 0; h < 2; h++) a_filter[h] = blockIdx.y * BM + 2 * (tid / G::A_RUNS) + h;
    int pa = p_begin + tc_a_k0<G>(tid);
    Digits a_pos = digits_of(pa, 1, OHW);
    const Digits a_one = digits_of(1, 1, OHW), a_step = digits_of(KT, 1, OHW);

    // B: this thread's column kc = tap (c, u, v), fixed; positions (n, oh, ow) as digits.
    const int kc = blockIdx.x * BN + tid % BN;
    const bool kc_ok = kc < KK;
    const int kc_c = kc_ok ? kc / KHW : 0, kc_uv = kc_ok ? kc % KHW : 0;
    const int kc_u = kc_uv / KW - pad, kc_v = kc_uv % KW - pad;
    const float *xc = x + (long long)kc_c * H * W;
    const int x_image = C * H * W;
    int pb = p_begin + tc_b_k0<G>(tid);
    Digits pos = digits_of(pb, OH, OW);
    const Digits one = digits_of(1, OH, OW), tile_step = digits_of(KT, OH, OW);
    auto prep = [](int) {};

    float a_v[2][G::A_RUN], b_v[G::B_RUN];
    auto load = [&](auto) {
        Digits ta = a_pos;
#pragma unroll
        for (int j = 0; j < G::A_RUN; j++) {
#pragma unroll
            for (int h = 0; h < 2; h++) a_v[h][j] = wgrad_dout_at(dout, ta, a_filter[h], F, OHW, pa + j < p_end);
            if (j + 1 < G::A_RUN) advance(ta, a_one, 1, OHW);
        }
        pa += KT;
        advance(a_pos, a_step, 1, OHW);
        Digits t = pos;
#pragma unroll
        for (int e = 0; e < G::B_RUN; e++) {
            b_v[e] = wgrad_x_at(xc, t, kc_u, kc_v, stride, H, W, x_image, kc_ok && pb + e < p_end);
            if (e + 1 < G::B_RUN) advance(t, one, OH, OW);
        }
        pb += KT;
        advance(pos, tile_step, OH, OW);
    };
    auto store = [&](int sa, int sb) { tc_conv_store_at<P, G>(&As[0][0], &Bs[0][0], sa, sb, a_v, b_v); };

    tc_zero(acc);
    const int steps = p_end > p_begin ? (p_end - p_begin + KT - 1) / KT : 0;
    tc_k_loop_ahead<P, S>(As, Bs, steps, tc_conv_offsets<G>(tid), prep, load, store, acc);
}

template <class P, int BM, int BN>
__device__ __forceinline__ void conv2d_backward_filter_kernel(float *__restrict__ dw, const float *__restrict__ dout,
                                                              const float *__restrict__ x, int N, int C, int H,
                                                              int W, int F, int KH, int KW, int OH, int OW,
                                                              int stride, int pad, int k_chunk) {
    using S = TcShape<BM, BN>;
    __shared__ __align__(16) unsigned As[2][S::A_WORDS];                   // dout, pair-rows of filters, [.][p words]
    __shared__ __align__(16) unsigned Bs[2][S::B_WORDS];                   // im2col, [tap kc][p words]
    __shared__ __align__(16) int ring[2][2][TC_K_WORDS * P::K_PER_WORD];  // doff, xoff per position
    float acc[S::MI][S::NI][4];
    if (pad == 0)
        conv2d_backward_filter_tc_pad0<P, BM, BN>(As, Bs, ring, acc, dout, x, N, C, H, W, F, KH, KW, OH, OW, stride,
                                                  k_chunk);
    else
        conv2d_backward_filter_tc_digits<P, BM, BN>(As, Bs, acc, dout, x, N, C, H, W, F, KH, KW, OH, OW, stride,
                                                    pad, k_chunk);
    conv2d_backward_filter_epilogue<S>(acc, dw, blockIdx.y * BM, blockIdx.x * BN, F, C * KH * KW);
}

// ------------------------------------------------------------------------ kernels
// Each pass in both precisions and three tile shapes (launch: the shortest tile that
// covers M, tinycnn/backends/geometry.py). Registers (nvcc -Xptxas -v, no spills on
// sm_80 and sm_90): the 128-thread forward tiles ask for 4 blocks per SM (at most 128
// registers), the backward ones for 3 (168), the 256-thread 128x64 tile for 2 (128; its
// BF16 kernels use all of them: a change there may spill, test_nvcc.py says so).

// 32x128: 4 warps
extern "C" __global__ void __launch_bounds__(128, 4)
    conv2d_forward_tf32_32x128(float *__restrict__ out, const float *__restrict__ x, const float *__restrict__ w,
                              const float *__restrict__ b, int N, int C, int H, int W, int F, int KH, int KW,
                              int OH, int OW, int stride, int pad) {
    conv2d_forward_kernel<Tf32, 32, 128, false>(out, nullptr, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, 0,
                                            0);
}

extern "C" __global__ void __launch_bounds__(128, 4)
    conv2d_relu_maxpool_tf32_32x128(float *__restrict__ pooled, int *__restrict__ arg, const float *__restrict__ x,
                                    const float *__restrict__ w, const float *__restrict__ b, int N, int C, int H,
                                    int W, int F, int KH, int KW, int OH, int OW, int stride, int pad, int PH,
                                    int PW) {
    conv2d_forward_kernel<Tf32, 32, 128, true>(pooled, arg, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, PH,
                                           PW);
}

extern "C" __global__ void __launch_bounds__(128, 3)
    conv2d_backward_data_tf32_32x128(float *__restrict__ dx, const float *__restrict__ dout,
                                     const float *__restrict__ w, int N, int C, int H, int W, int F, int KH, int KW,
                                     int OH, int OW, int stride, int pad) {
    conv2d_backward_data_kernel<Tf32, 32, 128>(dx, dout, w, N, C, H, W, F, KH, KW, OH, OW, stride, pad);
}

extern "C" __global__ void __launch_bounds__(128, 3)
    conv2d_backward_filter_tf32_32x128(float *__restrict__ dw, const float *__restrict__ dout,
                                       const float *__restrict__ x, int N, int C, int H, int W, int F, int KH,
                                       int KW, int OH, int OW, int stride, int pad, int k_chunk) {
    conv2d_backward_filter_kernel<Tf32, 32, 128>(dw, dout, x, N, C, H, W, F, KH, KW, OH, OW, stride, pad, k_chunk);
}
extern "C" __global__ void __launch_bounds__(128, 4)
    conv2d_forward_bf16_32x128(float *__restrict__ out, const float *__restrict__ x, const float *__restrict__ w,
                              const float *__restrict__ b, int N, int C, int H, int W, int F, int KH, int KW,
                              int OH, int OW, int stride, int pad) {
    conv2d_forward_kernel<Bf16, 32, 128, false>(out, nullptr, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, 0,
                                            0);
}

extern "C" __global__ void __launch_bounds__(128, 4)
    conv2d_relu_maxpool_bf16_32x128(float *__restrict__ pooled, int *__restrict__ arg, const float *__restrict__ x,
                                    const float *__restrict__ w, const float *__restrict__ b, int N, int C, int H,
                                    int W, int F, int KH, int KW, int OH, int OW, int stride, int pad, int PH,
                                    int PW) {
    conv2d_forward_kernel<Bf16, 32, 128, true>(pooled, arg, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, PH,
                                           PW);
}

extern "C" __global__ void __launch_bounds__(128, 3)
    conv2d_backward_data_bf16_32x128(float *__restrict__ dx, const float *__restrict__ dout,
                                     const float *__restrict__ w, int N, int C, int H, int W, int F, int KH, int KW,
                                     int OH, int OW, int stride, int pad) {
    conv2d_backward_data_kernel<Bf16, 32, 128>(dx, dout, w, N, C, H, W, F, KH, KW, OH, OW, stride, pad);
}

extern "C" __global__ void __launch_bounds__(128, 3)
    conv2d_backward_filter_bf16_32x128(float *__restrict__ dw, const float *__restrict__ dout,
                                       const float *__restrict__ x, int N, int C, int H, int W, int F, int KH,
                                       int KW, int OH, int OW, int stride, int pad, int k_chunk) {
    conv2d_backward_filter_kernel<Bf16, 32, 128>(dw, dout, x, N, C, H, W, F, KH, KW, OH, OW, stride, pad, k_chunk);
}

// 64x64: 4 warps
extern "C" __global__ void __launch_bounds__(128, 4)
    conv2d_forward_tf32_64x64(float *__restrict__ out, const float *__restrict__ x, const float *__restrict__ w,
                              const float *__restrict__ b, int N, int C, int H, int W, int F, int KH, int KW,
                              int OH, int OW, int stride, int pad) {
    conv2d_forward_kernel<Tf32, 64, 64, false>(out, nullptr, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, 0,
                                            0);
}

extern "C" __global__ void __launch_bounds__(128, 4)
    conv2d_relu_maxpool_tf32_64x64(float *__restrict__ pooled, int *__restrict__ arg, const float *__restrict__ x,
                                    const float *__restrict__ w, const float *__restrict__ b, int N, int C, int H,
                                    int W, int F, int KH, int KW, int OH, int OW, int stride, int pad, int PH,
                                    int PW) {
    conv2d_forward_kernel<Tf32, 64, 64, true>(pooled, arg, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, PH,
                                           PW);
}

extern "C" __global__ void __launch_bounds__(128, 3)
    conv2d_backward_data_tf32_64x64(float *__restrict__ dx, const float *__restrict__ dout,
                                     const float *__restrict__ w, int N, int C, int H, int W, int F, int KH, int KW,
                                     int OH, int OW, int stride, int pad) {
    conv2d_backward_data_kernel<Tf32, 64, 64>(dx, dout, w, N, C, H, W, F, KH, KW, OH, OW, stride, pad);
}

extern "C" __global__ void __launch_bounds__(128, 3)
    conv2d_backward_filter_tf32_64x64(float *__restrict__ dw, const float *__restrict__ dout,
                                       const float *__restrict__ x, int N, int C, int H, int W, int F, int KH,
                                       int KW, int OH, int OW, int stride, int pad, int k_chunk) {
    conv2d_backward_filter_kernel<Tf32, 64, 64>(dw, dout, x, N, C, H, W, F, KH, KW, OH, OW, stride, pad, k_chunk);
}
extern "C" __global__ void __launch_bounds__(128, 4)
    conv2d_forward_bf16_64x64(float *__restrict__ out, const float *__restrict__ x, const float *__restrict__ w,
                              const float *__restrict__ b, int N, int C, int H, int W, int F, int KH, int KW,
                              int OH, int OW, int stride, int pad) {
    conv2d_forward_kernel<Bf16, 64, 64, false>(out, nullptr, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, 0,
                                            0);
}

extern "C" __global__ void __launch_bounds__(128, 4)
    conv2d_relu_maxpool_bf16_64x64(float *__restrict__ pooled, int *__restrict__ arg, const float *__restrict__ x,
                                    const float *__restrict__ w, const float *__restrict__ b, int N, int C, int H,
                                    int W, int F, int KH, int KW, int OH, int OW, int stride, int pad, int PH,
                                    int PW) {
    conv2d_forward_kernel<Bf16, 64, 64, true>(pooled, arg, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, PH,
                                           PW);
}

extern "C" __global__ void __launch_bounds__(128, 3)
    conv2d_backward_data_bf16_64x64(float *__restrict__ dx, const float *__restrict__ dout,
                                     const float *__restrict__ w, int N, int C, int H, int W, int F, int KH, int KW,
                                     int OH, int OW, int stride, int pad) {
    conv2d_backward_data_kernel<Bf16, 64, 64>(dx, dout, w, N, C, H, W, F, KH, KW, OH, OW, stride, pad);
}

extern "C" __global__ void __launch_bounds__(128, 3)
    conv2d_backward_filter_bf16_64x64(float *__restrict__ dw, const float *__restrict__ dout,
                                       const float *__restrict__ x, int N, int C, int H, int W, int F, int KH,
                                       int KW, int OH, int OW, int stride, int pad, int k_chunk) {
    conv2d_backward_filter_kernel<Bf16, 64, 64>(dw, dout, x, N, C, H, W, F, KH, KW, OH, OW, stride, pad, k_chunk);
}

// 128x64: 8 warps
extern "C" __global__ void __launch_bounds__(256, 2)
    conv2d_forward_tf32_128x64(float *__restrict__ out, const float *__restrict__ x, const float *__restrict__ w,
                              const float *__restrict__ b, int N, int C, int H, int W, int F, int KH, int KW,
                              int OH, int OW, int stride, int pad) {
    conv2d_forward_kernel<Tf32, 128, 64, false>(out, nullptr, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, 0,
                                            0);
}

extern "C" __global__ void __launch_bounds__(256, 2)
    conv2d_relu_maxpool_tf32_128x64(float *__restrict__ pooled, int *__restrict__ arg, const float *__restrict__ x,
                                    const float *__restrict__ w, const float *__restrict__ b, int N, int C, int H,
                                    int W, int F, int KH, int KW, int OH, int OW, int stride, int pad, int PH,
                                    int PW) {
    conv2d_forward_kernel<Tf32, 128, 64, true>(pooled, arg, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, PH,
                                           PW);
}

extern "C" __global__ void __launch_bounds__(256, 2)
    conv2d_backward_data_tf32_128x64(float *__restrict__ dx, const float *__restrict__ dout,
                                     const float *__restrict__ w, int N, int C, int H, int W, int F, int KH, int KW,
                                     int OH, int OW, int stride, int pad) {
    conv2d_backward_data_kernel<Tf32, 128, 64>(dx, dout, w, N, C, H, W, F, KH, KW, OH, OW, stride, pad);
}

extern "C" __global__ void __launch_bounds__(256, 2)
    conv2d_backward_filter_tf32_128x64(float *__restrict__ dw, const float *__restrict__ dout,
                                       const float *__restrict__ x, int N, int C, int H, int W, int F, int KH,
                                       int KW, int OH, int OW, int stride, int pad, int k_chunk) {
    conv2d_backward_filter_kernel<Tf32, 128, 64>(dw, dout, x, N, C, H, W, F, KH, KW, OH, OW, stride, pad, k_chunk);
}
extern "C" __global__ void __launch_bounds__(256, 2)
    conv2d_forward_bf16_128x64(float *__restrict__ out, const float *__restrict__ x, const float *__restrict__ w,
                              const float *__restrict__ b, int N, int C, int H, int W, int F, int KH, int KW,
                              int OH, int OW, int stride, int pad) {
    conv2d_forward_kernel<Bf16, 128, 64, false>(out, nullptr, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, 0,
                                            0);
}

extern "C" __global__ void __launch_bounds__(256, 2)
    conv2d_relu_maxpool_bf16_128x64(float *__restrict__ pooled, int *__restrict__ arg, const float *__restrict__ x,
                                    const float *__restrict__ w, const float *__restrict__ b, int N, int C, int H,
                                    int W, int F, int KH, int KW, int OH, int OW, int stride, int pad, int PH,
                                    int PW) {
    conv2d_forward_kernel<Bf16, 128, 64, true>(pooled, arg, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, PH,
                                           PW);
}

extern "C" __global__ void __launch_bounds__(256, 2)
    conv2d_backward_data_bf16_128x64(float *__restrict__ dx, const float *__restrict__ dout,
                                     const float *__restrict__ w, int N, int C, int H, int W, int F, int KH, int KW,
                                     int OH, int OW, int stride, int pad) {
    conv2d_backward_data_kernel<Bf16, 128, 64>(dx, dout, w, N, C, H, W, F, KH, KW, OH, OW, stride, pad);
}

extern "C" __global__ void __launch_bounds__(256, 2)
    conv2d_backward_filter_bf16_128x64(float *__restrict__ dw, const float *__restrict__ dout,
                                       const float *__restrict__ x, int N, int C, int H, int W, int F, int KH,
                                       int KW, int OH, int OW, int stride, int pad, int k_chunk) {
    conv2d_backward_filter_kernel<Bf16, 128, 64>(dw, dout, x, N, C, H, W, F, KH, KW, OH, OW, stride, pad, k_chunk);
}
