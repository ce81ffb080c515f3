// conv2d_tc.cu: the implicit-GEMM convolutions of conv2d.cu on tensor cores (issue 13):
// TF32 or BF16 operands, FP32 accumulation; forward, the fused conv + bias + ReLU +
// 2x2/2 max-pool forward, backward-data and backward-filter, each with the argument list
// of its FP32 counterpart in conv2d.cu (conv2d_forward_igemm_*, ...), so the launcher's
// grids serve both.
//
//   x (N, C, H, W), w (F, C, KH, KW), b (F,), out / dout (N, F, OH, OW)
//   forward         out[f, p] = sum_k w[f, k] cols[k, p] + b[f]     M = F, N = N OH OW, K = C KH KW
//   backward-data   dx[c, q]  = sum_k w[f, c, u, v] dout[...]        M = C, N = N H W,   K = F KH KW
//   backward-filter dw[f, k]  = sum_p dout[f, p] cols[k, p]          M = F, N = C KH KW, K = N OH OW
// (conv2d.cu's header has the index algebra; conv_gather.cuh the per-element gathers,
// written so that conv2d.cu can share them). Every product rounds both operands as the tensor core reads them
// (to_tf32 / pack_bf16x2: tinycnn/precision.py round_tf32 / round_bf16) and sums in FP32.
//
// Tiles: tc_tile.cuh, in three shapes so that the M side fills its tile, as in conv2d.cu:
// 32x128 (M <= 32), 64x64 (<= 64) with 128 threads (4 warps), and 128x64 with 256
// threads (8 warps; 128 filters: conv4 forward and backward-filter), each warp 32 x 32.
// No 16-row tile: at M = 16 (conv1 forward, conv2 backward-data) the 32x128 tile's idle
// half costs 8 HMMA per k-tile and warp, little beside the staging that bounds these
// loops, and each shape is 8 more kernels to compile (nvcc, NVRTC, the tests).
// Named conv2d_<pass>_<tf32|bf16>_<BMxBN>.
//
// Operands reach shared memory through registers (register-prefetch double buffering):
// the im2col / dout gathers have no 16 contiguous bytes to give cp.async (windows cross
// rows and image edges, strides skip), and the weights are small and L2-resident. Each
// thread gathers ONE tile column over a contiguous run of K (taps or positions, kept as
// carried Digits, no division in the loop): 8 (TF32) or 16 (BF16) elements per k-tile
// in the 64x64 tile, twice that in the 128-wide ones. Consecutive threads take
// consecutive columns, so a warp's gathers read neighbouring pixels.
//
// Napkin math (paper_net at batch 64; H100 SXM: 495 TF32 / 990 BF16 TFLOP/s dense, of
// which mma.sync reaches perhaps 2/3; one HMMA.1688.F32.TF32 = 2048 FLOP, one
// HMMA.16816.F32.BF16 = 4096, per warp):
//   conv2 forward 9.2 GFLOP, conv3 8.8, conv4 8.3; backward twice that: ~80 GFLOP per
//   step in the tiled convolutions, ~0.25 ms of TF32 mma at 330 TFLOP/s (FP32 CUDA cores:
//   >1.2 ms at 67 TFLOP/s). The fused block writes a quarter of the conv output (pooled)
//   plus the winners, as in conv2d.cu.
//   Issue slots, from the sm_90 SASS (nvcc 13.0): per k-tile a 64x64 block's 4 warps
//   issue 64 HMMA (64 x 64 x 16 in TF32) inside loops of 408 instructions per warp
//   (forward TF32; BF16 613 for twice the k): 16 HMMA, 8 LDS.128, 4 STS.128; the rest is
//   staging: ~20 instructions per gathered element (digit carries, bounds, a 64-bit
//   address) and 4 per to_tf32. Per 64 x 64 x 16 of work that is ~1.6k warp-instructions
//   (BF16 ~1.2k) against ~3.7k for conv2d_forward_igemm_64x64's FFMA loop: 2-3x fewer
//   issue slots, where the tensor core alone would allow ~8x (TF32) and ~16x (BF16). So
//   the staging bounds these kernels, and what lifts it is cheaper staging: operands
//   written pre-rounded / pre-packed by the producing kernel's epilogue (no conversion,
//   cp.async possible), a per-k-tile table of tap offsets instead of per-thread digit
//   walks, NHWC activations for vector gathers, or larger tiles (128x64 halves the B
//   gather per HMMA where M allows).
#include "conv_gather.cuh"
#include "tc_tile.cuh"

// Compile-time constants of one instantiation.
template <class P, int BM, int BN>
struct TcConv {
    using S = TcShape<BM, BN>;
    static constexpr int T = S::THREADS, KPW = P::K_PER_WORD;
    static constexpr int EPR = 4 * KPW;                 // elements per run (4 words)
    static constexpr int K_TILE = TC_K_WORDS * KPW;     // k per k-tile: 16 or 32
    static constexpr int AU = S::A_PER_THREAD, BU = S::B_PER_THREAD;
    // A units (i, c) of e = tid + r T: (e / 4, e % 4), so all of a thread's A units share
    // c = tid % 4 (one K position to track). B units: column tid % BN, units
    // (tid / BN) BU .. + BU - 1: one contiguous run of K per thread.
    static_assert(T % 4 == 0 && T % BN == 0 && (BU == 1 || T / BN == 1), "unit mapping");
};

// ------------------------------------------------------------------------ forward
// out (N, F, OH, OW) = conv(x, w) + b, or with POOLED the fused block (pooled (N, F, PH,
// PW) and the winners' window offsets arg, as conv2d.cu). POOLED: the tile's columns
// enumerate pooling windows so that a LANE holds whole windows: within every 16
// columns, column c is member (dy, dx) = (c % 16 / 8, c % 2) of window 4 (c / 16) +
// c % 8 / 2. An mma lane owns columns 2t, 2t+1 of both 8-column fragments of a 16-column
// pair, i.e. window t: it pools in registers (no shuffles, no shared memory).
template <class P, int BM, int BN, bool POOLED>
__device__ __forceinline__ void conv2d_forward_tc(float *__restrict__ out, int *__restrict__ arg,
                                                  const float *__restrict__ x, const float *__restrict__ w,
                                                  const float *__restrict__ b, int N, int C, int H, int W, int F,
                                                  int KH, int KW, int OH, int OW, int stride, int pad, int PH,
                                                  int PW) {
    using G = TcConv<P, BM, BN>;
    using S = typename G::S;
    constexpr int EPR = G::EPR, AU = G::AU, BU = G::BU;
    __shared__ __align__(16) unsigned As[2][S::A_WORDS];  // weights, pair-rows of filters
    __shared__ __align__(16) unsigned Bs[2][S::B_WORDS];  // im2col, [column p][k words]
    const int KK = C * KH * KW, OHW = OH * OW, PHW = PH * PW;
    const int P_cols = POOLED ? N * PHW * 4 : N * OHW;
    const int tid = threadIdx.x;
    const int f0 = blockIdx.y * BM, p0 = blockIdx.x * BN;

    // A: w (F, KK) row-major. Filters past F read filter F - 1: they only feed outputs
    // that are not stored.
    const int a_c = tid % 4;
    const float *a_row[AU][2];
#pragma unroll
    for (int r = 0; r < AU; r++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int f = f0 + 2 * ((tid + r * G::T) / 4) + h;
            a_row[r][h] = w + (long long)(f < F ? f : F - 1) * KK;
        }
    int a_k = a_c * EPR;  // this thread's first tap of the k-tile

    // B: this thread's column p = (n, oh, ow), decoded once; taps (c, u, v) as digits.
    const int b_col = tid % BN, b_c0 = (tid / BN) * BU;
    int pn = 0, poh = 0, pow_ = 0;
    bool p_ok;
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
    } else {
        const int p = p0 + b_col;
        p_ok = p < P_cols;
        if (p_ok) {
            pn = p / OHW;
            poh = (p % OHW) / OW;
            pow_ = (p % OHW) % OW;
        }
    }
    const int ih0 = poh * stride - pad, iw0 = pow_ * stride - pad;
    const float *xn = x + (long long)pn * C * H * W;
    Digits tap = digits_of(b_c0 * TC_UNIT_WORDS * G::KPW, KH, KW);
    const Digits one = digits_of(1, KH, KW), tile_step = digits_of(G::K_TILE, KH, KW);

    float a_v[AU][2][EPR], b_v[BU][2][EPR];
    auto load = [&]() {
#pragma unroll
        for (int r = 0; r < AU; r++)
#pragma unroll
            for (int h = 0; h < 2; h++)
#pragma unroll
                for (int j = 0; j < EPR; j++) a_v[r][h][j] = a_k + j < KK ? a_row[r][h][a_k + j] : 0.0f;
        a_k += G::K_TILE;
        Digits t = tap;
#pragma unroll
        for (int u = 0; u < BU; u++)
#pragma unroll
            for (int h = 0; h < 2; h++)
#pragma unroll
                for (int j = 0; j < EPR; j++) {
                    b_v[u][h][j] = im2col_at(xn, t, ih0, iw0, C, H, W, p_ok);
                    if (u + 1 < BU || h + 1 < 2 || j + 1 < EPR) advance(t, one, KH, KW);
                }
        advance(tap, tile_step, KH, KW);
    };
    auto store = [&](int buf) {
#pragma unroll
        for (int r = 0; r < AU; r++)
            if (tid + r * G::T < S::A_UNITS) tc_store_a_unit<P>(As[buf], (tid + r * G::T) / 4, a_c, a_v[r]);
#pragma unroll
        for (int u = 0; u < BU; u++)
            if (tid + u * G::T < S::B_UNITS) tc_store_b_unit<P>(Bs[buf], b_col, b_c0 + u, b_v[u]);
    };

    float acc[S::MI][S::NI][4];
    tc_zero(acc);
    const int steps = (KK + G::K_TILE - 1) / G::K_TILE;
    tc_k_loop<P, S>(As, Bs, steps, load, store, acc);

    int wm0, wn0;
    tc_warp_origin<S>(wm0, wn0);
    const int lane = tid % 32;
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
                if (p >= P_cols) continue;
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

// ------------------------------------------------------------------ backward-data
// dx (N, C, H, W) for the tile (c0, q0) of the (C, N H W) product: a gather over the
// output positions whose windows covered each input pixel (conv_gather.cuh:
// dgrad_gather_at). UNIT_STRIDE compiles the gather without divisions; the kernel picks
// one at run time and hands both instantiations the same shared tiles.
template <class P, int BM, int BN, bool UNIT_STRIDE>
__device__ __forceinline__ void conv2d_backward_data_tc(unsigned (*As)[TcShape<BM, BN>::A_WORDS],
                                                        unsigned (*Bs)[TcShape<BM, BN>::B_WORDS],
                                                        float *__restrict__ dx, const float *__restrict__ dout,
                                                        const float *__restrict__ w, int N, int C, int H, int W,
                                                        int F, int KH, int KW, int OH, int OW, int stride, int pad) {
    using G = TcConv<P, BM, BN>;
    using S = typename G::S;
    constexpr int EPR = G::EPR, AU = G::AU, BU = G::BU;
    const int KHW = KH * KW, KK = F * KHW, HW = H * W, Q = N * HW;
    const int tid = threadIdx.x;
    const int c0 = blockIdx.y * BM, q0 = blockIdx.x * BN;

    // A: w[f, c, u, v] as A[c][k = (f, uv)], rows c0 + 2i + h; k as digits (f, 0, uv).
    const int a_c = tid % 4;
    int a_chan[AU][2];
#pragma unroll
    for (int r = 0; r < AU; r++)
#pragma unroll
        for (int h = 0; h < 2; h++) a_chan[r][h] = c0 + 2 * ((tid + r * G::T) / 4) + h;
    Digits a_tap = digits_of(a_c * EPR, 1, KHW);
    const Digits a_one = digits_of(1, 1, KHW), a_step = digits_of(G::K_TILE, 1, KHW);

    // B: this thread's column q = input pixel (n, h, w); taps (f, u, v) as digits.
    const int b_col = tid % BN, b_c0 = (tid / BN) * BU;
    const int q = q0 + b_col;
    const bool q_ok = q < Q;
    const int qn = q_ok ? q / HW : 0, qhw = q_ok ? q % HW : 0;
    const int hp = qhw / W + pad, wp = qhw % W + pad;  // in padded coordinates
    const float *dout_n = dout + (long long)qn * F * OH * OW;
    Digits tap = digits_of(b_c0 * TC_UNIT_WORDS * G::KPW, KH, KW);
    const Digits one = digits_of(1, KH, KW), tile_step = digits_of(G::K_TILE, KH, KW);
    int qh0 = 0, rh0 = 0, qw0 = 0, rw0 = 0;  // divmods of hp, wp by the stride (strided walk)
    if (!UNIT_STRIDE) {
        dgrad_divmod(hp, stride, qh0, rh0);
        dgrad_divmod(wp, stride, qw0, rw0);
    }

    float a_v[AU][2][EPR], b_v[BU][2][EPR];
    auto load = [&]() {
        Digits ta = a_tap;
#pragma unroll
        for (int j = 0; j < EPR; j++) {
#pragma unroll
            for (int r = 0; r < AU; r++)
#pragma unroll
                for (int h = 0; h < 2; h++) a_v[r][h][j] = dgrad_weight_at(w, ta, a_chan[r][h], C, F, KHW);
            if (j + 1 < EPR) advance(ta, a_one, 1, KHW);
        }
        advance(a_tap, a_step, 1, KHW);
        Digits t = tap;
        if (UNIT_STRIDE) {
#pragma unroll
            for (int u = 0; u < BU; u++)
#pragma unroll
                for (int h = 0; h < 2; h++)
#pragma unroll
                    for (int j = 0; j < EPR; j++) {
                        b_v[u][h][j] = dgrad_gather_at<true>(dout_n, t, hp, wp, stride, F, OH, OW, q_ok);
                        if (u + 1 < BU || h + 1 < 2 || j + 1 < EPR) advance(t, one, KH, KW);
                    }
        } else {  // two divisions per k-tile instead of four per element
            DgradWalk d = dgrad_strided_start(t, hp, wp, stride);
#pragma unroll
            for (int u = 0; u < BU; u++)
#pragma unroll
                for (int h = 0; h < 2; h++)
#pragma unroll
                    for (int j = 0; j < EPR; j++) {
                        b_v[u][h][j] = dgrad_strided_at(dout_n, t, d, F, OH, OW, q_ok);
                        if (u + 1 < BU || h + 1 < 2 || j + 1 < EPR)
                            dgrad_strided_next(t, d, KH, KW, stride, qh0, rh0, qw0, rw0);
                    }
        }
        advance(tap, tile_step, KH, KW);
    };
    auto store = [&](int buf) {
#pragma unroll
        for (int r = 0; r < AU; r++)
            if (tid + r * G::T < S::A_UNITS) tc_store_a_unit<P>(As[buf], (tid + r * G::T) / 4, a_c, a_v[r]);
#pragma unroll
        for (int u = 0; u < BU; u++)
            if (tid + u * G::T < S::B_UNITS) tc_store_b_unit<P>(Bs[buf], b_col, b_c0 + u, b_v[u]);
    };

    float acc[S::MI][S::NI][4];
    tc_zero(acc);
    const int steps = (KK + G::K_TILE - 1) / G::K_TILE;
    tc_k_loop<P, S>(As, Bs, steps, load, store, acc);

    int wm0, wn0;
    tc_warp_origin<S>(wm0, wn0);
    const int lane = tid % 32;
#pragma unroll
    for (int ni = 0; ni < S::NI; ni++)
#pragma unroll
        for (int jc = 0; jc < 2; jc++) {
            const int qj = q0 + tc_acc_col(wn0, ni, lane, jc);
            if (qj >= Q) continue;
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

// ---------------------------------------------------------------- backward-filter
// dw (F, C KH KW) for the chunk [z k_chunk, (z+1) k_chunk) of output positions p,
// z = blockIdx.z, written to dw + z F C KH KW (a workspace slice when split; split_k_reduce
// adds the slices in order, as for conv2d.cu).
template <class P, int BM, int BN>
__device__ __forceinline__ void conv2d_backward_filter_tc(float *__restrict__ dw, const float *__restrict__ dout,
                                                          const float *__restrict__ x, int N, int C, int H, int W,
                                                          int F, int KH, int KW, int OH, int OW, int stride, int pad,
                                                          int k_chunk) {
    using G = TcConv<P, BM, BN>;
    using S = typename G::S;
    constexpr int EPR = G::EPR, AU = G::AU, BU = G::BU;
    __shared__ __align__(16) unsigned As[2][S::A_WORDS];  // dout, pair-rows of filters, [.][p words]
    __shared__ __align__(16) unsigned Bs[2][S::B_WORDS];  // im2col, [tap kc][p words]
    const int KHW = KH * KW, KK = C * KHW, OHW = OH * OW, P_pos = N * OHW;
    const int tid = threadIdx.x;
    const int f0 = blockIdx.y * BM, kc0 = blockIdx.x * BN;
    const int p_begin = blockIdx.z * k_chunk;
    const int p_end = P_pos < p_begin + k_chunk ? P_pos : p_begin + k_chunk;

    // A: dout[n, f, ohw] as A[f][p], rows f0 + 2i + h; p as digits (n, 0, ohw).
    const int a_c = tid % 4;
    int a_filter[AU][2];
#pragma unroll
    for (int r = 0; r < AU; r++)
#pragma unroll
        for (int h = 0; h < 2; h++) a_filter[r][h] = f0 + 2 * ((tid + r * G::T) / 4) + h;
    int pa = p_begin + a_c * EPR;
    Digits a_pos = digits_of(pa, 1, OHW);
    const Digits a_one = digits_of(1, 1, OHW), a_step = digits_of(G::K_TILE, 1, OHW);

    // B: this thread's column kc = tap (c, u, v), fixed; positions (n, oh, ow) as digits.
    const int b_col = tid % BN, b_c0 = (tid / BN) * BU;
    const int kc = kc0 + b_col;
    const bool kc_ok = kc < KK;
    const int kc_c = kc_ok ? kc / KHW : 0, kc_uv = kc_ok ? kc % KHW : 0;
    const int kc_u = kc_uv / KW - pad, kc_v = kc_uv % KW - pad;
    const float *xc = x + (long long)kc_c * H * W;
    const int x_image = C * H * W;
    int pb = p_begin + b_c0 * TC_UNIT_WORDS * G::KPW;
    Digits pos = digits_of(pb, OH, OW);
    const Digits one = digits_of(1, OH, OW), tile_step = digits_of(G::K_TILE, OH, OW);

    float a_v[AU][2][EPR], b_v[BU][2][EPR];
    auto load = [&]() {
        Digits ta = a_pos;
#pragma unroll
        for (int j = 0; j < EPR; j++) {
#pragma unroll
            for (int r = 0; r < AU; r++)
#pragma unroll
                for (int h = 0; h < 2; h++)
                    a_v[r][h][j] = wgrad_dout_at(dout, ta, a_filter[r][h], F, OHW, pa + j < p_end);
            if (j + 1 < EPR) advance(ta, a_one, 1, OHW);
        }
        pa += G::K_TILE;
        advance(a_pos, a_step, 1, OHW);
        Digits t = pos;
#pragma unroll
        for (int u = 0; u < BU; u++)
#pragma unroll
            for (int h = 0; h < 2; h++)
#pragma unroll
                for (int j = 0; j < EPR; j++) {
                    const bool ok = kc_ok && pb + (u * 2 + h) * EPR + j < p_end;
                    b_v[u][h][j] = wgrad_x_at(xc, t, kc_u, kc_v, stride, H, W, x_image, ok);
                    if (u + 1 < BU || h + 1 < 2 || j + 1 < EPR) advance(t, one, OH, OW);
                }
        pb += G::K_TILE;
        advance(pos, tile_step, OH, OW);
    };
    auto store = [&](int buf) {
#pragma unroll
        for (int r = 0; r < AU; r++)
            if (tid + r * G::T < S::A_UNITS) tc_store_a_unit<P>(As[buf], (tid + r * G::T) / 4, a_c, a_v[r]);
#pragma unroll
        for (int u = 0; u < BU; u++)
            if (tid + u * G::T < S::B_UNITS) tc_store_b_unit<P>(Bs[buf], b_col, b_c0 + u, b_v[u]);
    };

    float acc[S::MI][S::NI][4];
    tc_zero(acc);
    const int steps = p_end > p_begin ? (p_end - p_begin + G::K_TILE - 1) / G::K_TILE : 0;
    tc_k_loop<P, S>(As, Bs, steps, load, store, acc);

    int wm0, wn0;
    tc_warp_origin<S>(wm0, wn0);
    const int lane = tid % 32;
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

// ------------------------------------------------------------------------ kernels
// Each pass in both precisions and four tile shapes (launch: the shortest tile that
// covers M, tinycnn/backends/tensor_cores.py). Registers (nvcc -Xptxas -v, no spills on
// sm_80 and sm_90): the 128-thread forward tiles ask for 4 blocks per SM (at most 128
// registers), the backward ones for 3 (168: BF16 32x128 backward-data spills at 128; the
// gathers keep 32 BF16 operands in flight per thread), the 256-thread 128x64 tile for 2.

// 32x128: 4 warps
extern "C" __global__ void __launch_bounds__(128, 4)
    conv2d_forward_tf32_32x128(float *__restrict__ out, const float *__restrict__ x, const float *__restrict__ w,
                               const float *__restrict__ b, int N, int C, int H, int W, int F, int KH, int KW,
                               int OH, int OW, int stride, int pad) {
    conv2d_forward_tc<Tf32, 32, 128, false>(out, nullptr, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, 0,
                                            0);
}

extern "C" __global__ void __launch_bounds__(128, 4)
    conv2d_relu_maxpool_tf32_32x128(float *__restrict__ pooled, int *__restrict__ arg, const float *__restrict__ x,
                                    const float *__restrict__ w, const float *__restrict__ b, int N, int C, int H,
                                    int W, int F, int KH, int KW, int OH, int OW, int stride, int pad, int PH,
                                    int PW) {
    conv2d_forward_tc<Tf32, 32, 128, true>(pooled, arg, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, PH,
                                           PW);
}

extern "C" __global__ void __launch_bounds__(128, 3)
    conv2d_backward_data_tf32_32x128(float *__restrict__ dx, const float *__restrict__ dout,
                                     const float *__restrict__ w, int N, int C, int H, int W, int F, int KH, int KW,
                                     int OH, int OW, int stride, int pad) {
    __shared__ __align__(16) unsigned As[2][TcShape<32, 128>::A_WORDS];
    __shared__ __align__(16) unsigned Bs[2][TcShape<32, 128>::B_WORDS];
    if (stride == 1)
        conv2d_backward_data_tc<Tf32, 32, 128, true>(As, Bs, dx, dout, w, N, C, H, W, F, KH, KW, OH, OW, stride,
                                                     pad);
    else
        conv2d_backward_data_tc<Tf32, 32, 128, false>(As, Bs, dx, dout, w, N, C, H, W, F, KH, KW, OH, OW, stride,
                                                      pad);
}

extern "C" __global__ void __launch_bounds__(128, 3)
    conv2d_backward_filter_tf32_32x128(float *__restrict__ dw, const float *__restrict__ dout,
                                       const float *__restrict__ x, int N, int C, int H, int W, int F, int KH,
                                       int KW, int OH, int OW, int stride, int pad, int k_chunk) {
    conv2d_backward_filter_tc<Tf32, 32, 128>(dw, dout, x, N, C, H, W, F, KH, KW, OH, OW, stride, pad, k_chunk);
}

extern "C" __global__ void __launch_bounds__(128, 4)
    conv2d_forward_bf16_32x128(float *__restrict__ out, const float *__restrict__ x, const float *__restrict__ w,
                               const float *__restrict__ b, int N, int C, int H, int W, int F, int KH, int KW,
                               int OH, int OW, int stride, int pad) {
    conv2d_forward_tc<Bf16, 32, 128, false>(out, nullptr, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, 0,
                                            0);
}

extern "C" __global__ void __launch_bounds__(128, 4)
    conv2d_relu_maxpool_bf16_32x128(float *__restrict__ pooled, int *__restrict__ arg, const float *__restrict__ x,
                                    const float *__restrict__ w, const float *__restrict__ b, int N, int C, int H,
                                    int W, int F, int KH, int KW, int OH, int OW, int stride, int pad, int PH,
                                    int PW) {
    conv2d_forward_tc<Bf16, 32, 128, true>(pooled, arg, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, PH,
                                           PW);
}

extern "C" __global__ void __launch_bounds__(128, 3)
    conv2d_backward_data_bf16_32x128(float *__restrict__ dx, const float *__restrict__ dout,
                                     const float *__restrict__ w, int N, int C, int H, int W, int F, int KH, int KW,
                                     int OH, int OW, int stride, int pad) {
    __shared__ __align__(16) unsigned As[2][TcShape<32, 128>::A_WORDS];
    __shared__ __align__(16) unsigned Bs[2][TcShape<32, 128>::B_WORDS];
    if (stride == 1)
        conv2d_backward_data_tc<Bf16, 32, 128, true>(As, Bs, dx, dout, w, N, C, H, W, F, KH, KW, OH, OW, stride,
                                                     pad);
    else
        conv2d_backward_data_tc<Bf16, 32, 128, false>(As, Bs, dx, dout, w, N, C, H, W, F, KH, KW, OH, OW, stride,
                                                      pad);
}

extern "C" __global__ void __launch_bounds__(128, 3)
    conv2d_backward_filter_bf16_32x128(float *__restrict__ dw, const float *__restrict__ dout,
                                       const float *__restrict__ x, int N, int C, int H, int W, int F, int KH,
                                       int KW, int OH, int OW, int stride, int pad, int k_chunk) {
    conv2d_backward_filter_tc<Bf16, 32, 128>(dw, dout, x, N, C, H, W, F, KH, KW, OH, OW, stride, pad, k_chunk);
}

// 64x64: 4 warps
extern "C" __global__ void __launch_bounds__(128, 4)
    conv2d_forward_tf32_64x64(float *__restrict__ out, const float *__restrict__ x, const float *__restrict__ w,
                              const float *__restrict__ b, int N, int C, int H, int W, int F, int KH, int KW,
                              int OH, int OW, int stride, int pad) {
    conv2d_forward_tc<Tf32, 64, 64, false>(out, nullptr, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, 0, 0);
}

extern "C" __global__ void __launch_bounds__(128, 4)
    conv2d_relu_maxpool_tf32_64x64(float *__restrict__ pooled, int *__restrict__ arg, const float *__restrict__ x,
                                   const float *__restrict__ w, const float *__restrict__ b, int N, int C, int H,
                                   int W, int F, int KH, int KW, int OH, int OW, int stride, int pad, int PH,
                                   int PW) {
    conv2d_forward_tc<Tf32, 64, 64, true>(pooled, arg, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, PH, PW);
}

extern "C" __global__ void __launch_bounds__(128, 3)
    conv2d_backward_data_tf32_64x64(float *__restrict__ dx, const float *__restrict__ dout,
                                    const float *__restrict__ w, int N, int C, int H, int W, int F, int KH, int KW,
                                    int OH, int OW, int stride, int pad) {
    __shared__ __align__(16) unsigned As[2][TcShape<64, 64>::A_WORDS];
    __shared__ __align__(16) unsigned Bs[2][TcShape<64, 64>::B_WORDS];
    if (stride == 1)
        conv2d_backward_data_tc<Tf32, 64, 64, true>(As, Bs, dx, dout, w, N, C, H, W, F, KH, KW, OH, OW, stride,
                                                    pad);
    else
        conv2d_backward_data_tc<Tf32, 64, 64, false>(As, Bs, dx, dout, w, N, C, H, W, F, KH, KW, OH, OW, stride,
                                                     pad);
}

extern "C" __global__ void __launch_bounds__(128, 3)
    conv2d_backward_filter_tf32_64x64(float *__restrict__ dw, const float *__restrict__ dout,
                                      const float *__restrict__ x, int N, int C, int H, int W, int F, int KH,
                                      int KW, int OH, int OW, int stride, int pad, int k_chunk) {
    conv2d_backward_filter_tc<Tf32, 64, 64>(dw, dout, x, N, C, H, W, F, KH, KW, OH, OW, stride, pad, k_chunk);
}

extern "C" __global__ void __launch_bounds__(128, 4)
    conv2d_forward_bf16_64x64(float *__restrict__ out, const float *__restrict__ x, const float *__restrict__ w,
                              const float *__restrict__ b, int N, int C, int H, int W, int F, int KH, int KW,
                              int OH, int OW, int stride, int pad) {
    conv2d_forward_tc<Bf16, 64, 64, false>(out, nullptr, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, 0, 0);
}

extern "C" __global__ void __launch_bounds__(128, 4)
    conv2d_relu_maxpool_bf16_64x64(float *__restrict__ pooled, int *__restrict__ arg, const float *__restrict__ x,
                                   const float *__restrict__ w, const float *__restrict__ b, int N, int C, int H,
                                   int W, int F, int KH, int KW, int OH, int OW, int stride, int pad, int PH,
                                   int PW) {
    conv2d_forward_tc<Bf16, 64, 64, true>(pooled, arg, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, PH, PW);
}

extern "C" __global__ void __launch_bounds__(128, 3)
    conv2d_backward_data_bf16_64x64(float *__restrict__ dx, const float *__restrict__ dout,
                                    const float *__restrict__ w, int N, int C, int H, int W, int F, int KH, int KW,
                                    int OH, int OW, int stride, int pad) {
    __shared__ __align__(16) unsigned As[2][TcShape<64, 64>::A_WORDS];
    __shared__ __align__(16) unsigned Bs[2][TcShape<64, 64>::B_WORDS];
    if (stride == 1)
        conv2d_backward_data_tc<Bf16, 64, 64, true>(As, Bs, dx, dout, w, N, C, H, W, F, KH, KW, OH, OW, stride,
                                                    pad);
    else
        conv2d_backward_data_tc<Bf16, 64, 64, false>(As, Bs, dx, dout, w, N, C, H, W, F, KH, KW, OH, OW, stride,
                                                     pad);
}

extern "C" __global__ void __launch_bounds__(128, 3)
    conv2d_backward_filter_bf16_64x64(float *__restrict__ dw, const float *__restrict__ dout,
                                      const float *__restrict__ x, int N, int C, int H, int W, int F, int KH,
                                      int KW, int OH, int OW, int stride, int pad, int k_chunk) {
    conv2d_backward_filter_tc<Bf16, 64, 64>(dw, dout, x, N, C, H, W, F, KH, KW, OH, OW, stride, pad, k_chunk);
}

// 128x64: 8 warps
extern "C" __global__ void __launch_bounds__(256, 2)
    conv2d_forward_tf32_128x64(float *__restrict__ out, const float *__restrict__ x, const float *__restrict__ w,
                               const float *__restrict__ b, int N, int C, int H, int W, int F, int KH, int KW,
                               int OH, int OW, int stride, int pad) {
    conv2d_forward_tc<Tf32, 128, 64, false>(out, nullptr, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, 0,
                                            0);
}

extern "C" __global__ void __launch_bounds__(256, 2)
    conv2d_relu_maxpool_tf32_128x64(float *__restrict__ pooled, int *__restrict__ arg, const float *__restrict__ x,
                                    const float *__restrict__ w, const float *__restrict__ b, int N, int C, int H,
                                    int W, int F, int KH, int KW, int OH, int OW, int stride, int pad, int PH,
                                    int PW) {
    conv2d_forward_tc<Tf32, 128, 64, true>(pooled, arg, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, PH,
                                           PW);
}

extern "C" __global__ void __launch_bounds__(256, 2)
    conv2d_backward_data_tf32_128x64(float *__restrict__ dx, const float *__restrict__ dout,
                                     const float *__restrict__ w, int N, int C, int H, int W, int F, int KH, int KW,
                                     int OH, int OW, int stride, int pad) {
    __shared__ __align__(16) unsigned As[2][TcShape<128, 64>::A_WORDS];
    __shared__ __align__(16) unsigned Bs[2][TcShape<128, 64>::B_WORDS];
    if (stride == 1)
        conv2d_backward_data_tc<Tf32, 128, 64, true>(As, Bs, dx, dout, w, N, C, H, W, F, KH, KW, OH, OW, stride,
                                                     pad);
    else
        conv2d_backward_data_tc<Tf32, 128, 64, false>(As, Bs, dx, dout, w, N, C, H, W, F, KH, KW, OH, OW, stride,
                                                      pad);
}

extern "C" __global__ void __launch_bounds__(256, 2)
    conv2d_backward_filter_tf32_128x64(float *__restrict__ dw, const float *__restrict__ dout,
                                       const float *__restrict__ x, int N, int C, int H, int W, int F, int KH,
                                       int KW, int OH, int OW, int stride, int pad, int k_chunk) {
    conv2d_backward_filter_tc<Tf32, 128, 64>(dw, dout, x, N, C, H, W, F, KH, KW, OH, OW, stride, pad, k_chunk);
}

extern "C" __global__ void __launch_bounds__(256, 2)
    conv2d_forward_bf16_128x64(float *__restrict__ out, const float *__restrict__ x, const float *__restrict__ w,
                               const float *__restrict__ b, int N, int C, int H, int W, int F, int KH, int KW,
                               int OH, int OW, int stride, int pad) {
    conv2d_forward_tc<Bf16, 128, 64, false>(out, nullptr, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, 0,
                                            0);
}

extern "C" __global__ void __launch_bounds__(256, 2)
    conv2d_relu_maxpool_bf16_128x64(float *__restrict__ pooled, int *__restrict__ arg, const float *__restrict__ x,
                                    const float *__restrict__ w, const float *__restrict__ b, int N, int C, int H,
                                    int W, int F, int KH, int KW, int OH, int OW, int stride, int pad, int PH,
                                    int PW) {
    conv2d_forward_tc<Bf16, 128, 64, true>(pooled, arg, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, PH,
                                           PW);
}

extern "C" __global__ void __launch_bounds__(256, 2)
    conv2d_backward_data_bf16_128x64(float *__restrict__ dx, const float *__restrict__ dout,
                                     const float *__restrict__ w, int N, int C, int H, int W, int F, int KH, int KW,
                                     int OH, int OW, int stride, int pad) {
    __shared__ __align__(16) unsigned As[2][TcShape<128, 64>::A_WORDS];
    __shared__ __align__(16) unsigned Bs[2][TcShape<128, 64>::B_WORDS];
    if (stride == 1)
        conv2d_backward_data_tc<Bf16, 128, 64, true>(As, Bs, dx, dout, w, N, C, H, W, F, KH, KW, OH, OW, stride,
                                                     pad);
    else
        conv2d_backward_data_tc<Bf16, 128, 64, false>(As, Bs, dx, dout, w, N, C, H, W, F, KH, KW, OH, OW, stride,
                                                      pad);
}

extern "C" __global__ void __launch_bounds__(256, 2)
    conv2d_backward_filter_bf16_128x64(float *__restrict__ dw, const float *__restrict__ dout,
                                       const float *__restrict__ x, int N, int C, int H, int W, int F, int KH,
                                       int KW, int OH, int OW, int stride, int pad, int k_chunk) {
    conv2d_backward_filter_tc<Bf16, 128, 64>(dw, dout, x, N, C, H, W, F, KH, KW, OH, OW, stride, pad, k_chunk);
}
