// conv2d.cu: 2-D convolution as implicit GEMM: forward, backward-data,
// backward-filter, and the bias gradient.
// Forward pass = variant v5 of bench/variants/conv2d_forward_v*.cu (v4's tiles plus
// 32 x 128, with v5's main loop: 4 x 4 blocked micro-tile read with LDS.128, double-
// buffered shared memory with the next tile's global loads in flight during the math,
// and gathers that decode their indices by carrying digits instead of dividing).
//
// ENTRY POINTS: conv2d_<pass>_igemm_<tile>, FP32 tiles, each cell "threads/min blocks
// per SM" of its __launch_bounds__ (tinycnn/backends/geometry.py picks the tile: the
// shortest that covers M; conv2d_tc.cu has the same passes on tensor cores;
// tests/test_kernel_grid.py holds these tables to the definitions below)
//   pass              16x256  32x128  64x64
//   forward           256/2   256/2   256/2
//   relu_maxpool      256/2   256/2   256/2
//   backward_data     256/2   256/2   256/2
//   backward_filter   256/2   256/2   256/2
//
// ENTRY POINTS: conv2d_<pass>_smallk_<precision>, at most SMALLK_TAPS taps (the first
// layer): direct loops on CUDA cores in every mode, rounding operands as the mode says
//   pass              fp32    tf32    bf16
//   relu_maxpool      256/2   256/2   256/2
//   backward_filter   256/2   256/2   256/2
//
// ENTRY POINTS: conv2d_<pass>, FP32 in every mode: the bias gradient's partial sums and
// the fused block's backward pass (pool routing, ReLU mask, bias partials)
//   pass                    any
//   bias_grad_partial       128/-
//   relu_maxpool_backward   128/4
//
//   x (N, C, H, W), w (F, C, KH, KW), b (F,), out / dout (N, F, OH, OW)
//   OH = (H + 2 pad - KH) / stride + 1 (tinycnn/shapes.py), same for OW
//
// Each pass is a matrix product whose operands are gathered on the fly from the
// NCHW tensors straight into the shared-memory tiles of gemm_tile.cuh: im2col
// without the im2col buffer (the "implicit GEMM" of cuDNN and CUTLASS; written
// here from the index algebra, see docs/backprop.md for the math):
//
//   forward         out[f, p]  = sum_k  w[f, k]        * cols[k, p]     + b[f]
//                   M = F, N = P = N*OH*OW, K = C*KH*KW
//   backward-data   dx[c, q]   = sum_k  w[f, c, u, v]  * dout[n, f, oh, ow]
//                   M = C, N = N*H*W, K = F*KH*KW, k = (f, u, v); the (oh, ow)
//                   with oh*stride + u - pad = h, ow*stride + v - pad = w, if any
//   backward-filter dw[f, k]   = sum_p  dout[f, p]     * cols[k, p]
//                   M = F, N = C*KH*KW, K = P (long: split over blockIdx.z)
//   bias            db[f]      = sum_{n, oh, ow} dout[n, f, oh, ow]
//
// with k = (c, u, v), p = (n, oh, ow), q = (n, h, w) and
// cols[k, p] = x[n, c, oh*stride + u - pad, ow*stride + v - pad] (0 outside).
//
// Backward-data is a gather over the output positions each input pixel touched,
// so every dx element is written once by one thread: no scatter, no atomics.
// Backward-filter and the bias gradient write per-chunk partial sums that
// split_k_reduce (gemm.cu) adds in a fixed order: bitwise reproducible.
//
// Napkin math (paper_net at batch 64; FLOPs = 2 M N K per pass):
//   conv1 (1 -> 16, 256^2 -> 254^2):   forward 1.2 GFLOP, writes 264 MB: memory bound
//   conv2 (16 -> 32, 127^2 -> 125^2):  forward 9.2 GFLOP, reads 66 MB, writes 128 MB
//   conv3 (32 -> 64, 63^2 -> 61^2):    forward 8.8 GFLOP
//   conv4 (64 -> 128, 31^2 -> 29^2):   forward 8.3 GFLOP
//   backward = 2x forward. ~80 GFLOP per step in the convolutions: ~8 ms at a
//   modest 10 TFLOP/s. Each staged element feeds 64 FMAs of its block (16 per
//   thread-row/column), so global traffic is a small multiple of the tensors' size.
// Threads: a 256-thread block owns a 64 x 64, 32 x 128 or 16 x 256 tile of the
// product, the shortest that covers the M side (gemm_tile.cuh; each kernel below
// exists in the three shapes, named _64x64, _32x128 and _16x256). Each gathering
// thread keeps one fixed tile column, decoded once; the index along K that changes
// every step, (c, u, v) or (n, oh, ow), is decoded without a division in the main loop:
// - forward and (stride 1) backward-data: a per-block table in shared memory gives each
//   tap's offset and a bit that the column's mask of in-bounds taps tests (one LDS.128
//   per 4 rows, then a LOP3 and an IMAD.WIDE per element), built once per block;
// - backward-filter with pad 0: threads 0-15 decode each tile's 16 positions once for
//   the block, into a small ring in shared memory, two tiles ahead;
// - otherwise (taps over 32 per window, K past the table, other strides or padding):
//   the index is kept as digits (gemm_tile.cuh: Digits) and moved with carries.
// The K loop (gemm_tile.cuh: tile_main_loop) is unrolled by two. Every path gathers the
// same values and adds each output's K terms in the same order: the same bits.
#include "gemm_tile.cuh"
// mma.cuh: round_operand, for the precision modes of the few-taps weight gradient
#include "mma.cuh"

// Entries of the per-block tables of K indices (conv2d_forward_tile,
// conv2d_backward_data_tile), per tile shape: what the 48 KB of static shared memory
// leaves beside the tiles (the 16 x 256 tiles take 35 KB).
#define CONV_TAB(BN) ((BN) == 256 ? 1024 : 2048)

// A table covers kk taps (rounded up to whole tiles) and its bit masks khw taps per window.
__device__ __forceinline__ bool conv_table_fits(int kk, int khw, int entries) {
    return khw <= 32 && (kk + TILE_K - 1) / TILE_K * TILE_K <= entries;
}

// out (N, F, OH, OW) = conv(x, w) + b, for the tile (f0, p0) of the (F, N*OH*OW) product.
//
// POOLED (the fused block conv + bias + ReLU + 2x2/2 max-pool): the tile's columns
// enumerate (n, ph, pw, dy, dx) instead of (n, oh, ow), the 2x2 window of pooled
// output (ph, pw) in four consecutive columns: the 4 columns a thread owns are one
// window, so the thread pools its 4 x 4 block into 4 outputs in registers and writes
// only pooled (N, F, PH, PW) and the winner's window offset arg (as maxpool.cu does);
// the full-size conv output never reaches memory. Columns of a ceil-mode window that
// hang over the edge (oh >= OH or ow >= OW) are gathered as 0 and left out of the max.
template <int BM, int BN, bool POOLED, bool TABLE>
__device__ __forceinline__ void conv2d_forward_tile(float (*As)[TILE_K][BM + TILE_PAD],
                                                    float (*Bs)[TILE_K][BN + TILE_PAD], float *tab_off,
                                                    float *tab_bit, float *tab_step, float *__restrict__ out, int *__restrict__ arg,
                                                    const float *__restrict__ x, const float *__restrict__ w,
                                                    const float *__restrict__ b, int N, int C, int H, int W, int F,
                                                    int KH, int KW, int OH, int OW, int stride, int pad, int PH,
                                                    int PW) {
    constexpr int A_LOADS = BM * TILE_K / TILE_THREADS;  // weights per thread per step: 4, 2 or 1
    constexpr int B_LOADS = TILE_K * BN / TILE_THREADS;  // im2col elements per thread per step: 4, 8 or 16
    constexpr int B_ROWS = TILE_THREADS / BN;            // tile rows between them: 4, 2 or 1
    const int KHW = KH * KW, KK = C * KHW, OHW = OH * OW, PHW = PH * PW;
    const int P = POOLED ? N * PHW * 4 : N * OHW;  // columns of the product
    const int steps = (KK + TILE_K - 1) / TILE_K;
    const int tid = threadIdx.x, tx = tid % (BN / 4), ty = tid / (BN / 4);
    const int f0 = blockIdx.y * BM, p0 = blockIdx.x * BN;

    // A: w (F, KK) row-major; this thread loads tap a_kk = k0 + a_k of filters
    // f0 + a_f + 16 r, at wa + 16 r KK (wa moves on by TILE_K per tile).
    const int a_k = tid % TILE_K, a_f = tid / TILE_K;
    const float *wa = w + (long long)(f0 + a_f) * KK + a_k;
    const int wa_rows = (TILE_THREADS / TILE_K) * KK;
    int a_kk = a_k;
    // B: this thread gathers tile column p = (n, oh, ow), rows b_row + B_ROWS r.
    const int b_col = tid % BN, b_row = tid / BN;
    const int p = p0 + b_col;
    int pn = 0, poh = 0, pow_ = 0;
    if (p < P) {
        if (POOLED) {  // p = ((n * PH + ph) * PW + pw) * 4 + 2 dy + dx
            const int q = p / 4, win = p % 4;
            pn = q / PHW;
            poh = 2 * ((q % PHW) / PW) + win / 2;
            pow_ = 2 * ((q % PHW) % PW) + win % 2;
        } else {
            pn = p / OHW;
            poh = (p % OHW) / OW;
            pow_ = (p % OHW) % OW;
        }
    }
    const bool p_ok = p < P && poh < OH && pow_ < OW;
    const int ih0 = poh * stride - pad, iw0 = pow_ * stride - pad;
    const float *xn = x + (long long)pn * C * H * W;
    // TABLE: tap k = (c, u, v) of tile t (k = 16 t + kk) is at xt[tab_off[k]], where xt
    // points at the tile's first tap in this column's window (it starts at the window's
    // corner and moves on by tab_step[t] per tile: one IMAD.WIDE per tap in the loop),
    // and inside x iff its bit tab_bit[k] = 1 << (u KW + v) is in this column's mask of
    // the taps that land inside x (0 for a column past the edge; tab_bit = 0 past KK).
    // The table lists each tile's 16 taps in the order the threads read them: a thread's
    // B_LOADS rows b_row + B_ROWS r at 4-aligned slots b_row B_LOADS + r (one LDS.128 per
    // 4). Built once per block (divisions here, none in the main loop). Otherwise the tap
    // of the first row is kept as digits (c, u, v).
    // (xt may point outside x where the window hangs over the edge; it is dereferenced
    // only at taps inside x.)
    const float *xt = x + (pn * C * H * W + ih0 * W + iw0);
    unsigned mask = 0;
    int slot = b_row * B_LOADS;
    if (TABLE) {
        if (p_ok)
            for (int u = 0; u < KH; u++)
                for (int v = 0; v < KW; v++)
                    if ((unsigned)(ih0 + u) < (unsigned)H && (unsigned)(iw0 + v) < (unsigned)W)
                        mask |= 1u << (u * KW + v);
        auto offset = [&](int k) {  // of tap k from the window's corner
            const int c = k / KHW, uv = k % KHW;
            return c * H * W + (uv / KW) * W + uv % KW;
        };
        for (int k = tid; k < steps * TILE_K; k += TILE_THREADS) {
            const int kk = k % TILE_K, at = (k - kk) + (kk % B_ROWS) * B_LOADS + kk / B_ROWS;
            const int first = offset(k - kk);  // the tile's first tap (k - kk < KK)
            tab_off[at] = __int_as_float(k < KK ? offset(k) - first : 0);
            tab_bit[at] = __uint_as_float(k < KK ? 1u << (k % KHW) : 0u);
            if (kk == 0) tab_step[k / TILE_K] = __int_as_float(k + TILE_K < KK ? offset(k + TILE_K) - first : 0);
        }
        __syncthreads();  // TABLE is uniform over the block
    }
    Digits tap = digits_of(b_row, KH, KW);
    const Digits row_step = digits_of(B_ROWS, KH, KW), tile_step = digits_of(TILE_K, KH, KW);

    float a_next[A_LOADS], b_next[B_LOADS];
    auto load = [&]() {  // the next tile into registers; the indices move on to the one after
#pragma unroll
        for (int r = 0; r < A_LOADS; r++) {
            const int f = f0 + a_f + (TILE_THREADS / TILE_K) * r;
            a_next[r] = (f < F && a_kk < KK) ? wa[r * wa_rows] : 0.0f;
        }
        wa += TILE_K;
        a_kk += TILE_K;
        if constexpr (TABLE) {
#pragma unroll
            for (int r = 0; r < B_LOADS; r += 4) {
                const float4 o = *reinterpret_cast<const float4 *>(&tab_off[slot + r]);
                const float4 m = *reinterpret_cast<const float4 *>(&tab_bit[slot + r]);
                b_next[r + 0] = (mask & __float_as_uint(m.x)) ? xt[(int)__float_as_uint(o.x)] : 0.0f;
                b_next[r + 1] = (mask & __float_as_uint(m.y)) ? xt[(int)__float_as_uint(o.y)] : 0.0f;
                b_next[r + 2] = (mask & __float_as_uint(m.z)) ? xt[(int)__float_as_uint(o.z)] : 0.0f;
                b_next[r + 3] = (mask & __float_as_uint(m.w)) ? xt[(int)__float_as_uint(o.w)] : 0.0f;
            }
            xt += (int)__float_as_uint(tab_step[slot / TILE_K]);
            slot += TILE_K;
        } else {
            Digits t = tap;  // (c, u, v)
#pragma unroll
            for (int r = 0; r < B_LOADS; r++) {
                const int ih = ih0 + t.mid, iw = iw0 + t.lo;
                const bool in = p_ok && t.hi < C && (unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W;
                b_next[r] = in ? xn[(t.hi * H + ih) * W + iw] : 0.0f;
                if (r + 1 < B_LOADS) advance(t, row_step, KH, KW);
            }
            advance(tap, tile_step, KH, KW);
        }
    };
    auto store = [&](int buf) {
#pragma unroll
        for (int r = 0; r < A_LOADS; r++) As[buf][a_k][a_f + (TILE_THREADS / TILE_K) * r] = a_next[r];
#pragma unroll
        for (int r = 0; r < B_LOADS; r++) Bs[buf][b_row + B_ROWS * r][b_col] = b_next[r];
    };

    float acc[4][4];
    zero(acc);
    load();
    store(0);
    __syncthreads();
    tile_main_loop<BM, BN>(As, Bs, steps, tx, ty, acc, load, store);

    if constexpr (POOLED) {
        const int q = p0 / 4 + tx;  // this thread's 4 columns: the window of pooled output q
        if (q >= N * PHW) return;  // after the loop's last barrier: no barrier skipped
        const int n = q / PHW, ph = (q % PHW) / PW, pw = (q % PHW) % PW;
        const bool right = 2 * pw + 1 < OW, below = 2 * ph + 1 < OH;  // ceil-mode windows may hang over
        const bool valid[4] = {true, right, below, right && below};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int f = f0 + 4 * ty + i;
            if (f >= F) continue;
            // relu(conv + b), then the FIRST maximum in row-major window order (only a
            // strictly larger value replaces it): the values and ties of relu_forward
            // followed by maxpool2d_forward, bit for bit
            float best = 0.0f;
            int best_k = 0;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const float v = acc[i][j] + b[f];
                const float r = v > 0.0f ? v : 0.0f;
                if (j == 0) best = r;
                else if (valid[j] && r > best) {
                    best = r;
                    best_k = j;
                }
            }
            const long long o = ((long long)n * F + f) * PHW + ph * PW + pw;
            out[o] = best;
            arg[o] = best_k;
        }
    } else {
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int pj = p0 + 4 * tx + j;
            if (pj >= P) continue;
            const int n = pj / OHW, ohw = pj % OHW;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int f = f0 + 4 * ty + i;
                if (f < F) out[((long long)n * F + f) * OHW + ohw] = acc[i][j] + b[f];
            }
        }
    }
}

// dx (N, C, H, W) for the tile (c0, q0) of the (C, N*H*W) product: a gather over the
// output positions whose windows covered each input pixel. GATHER picks how: BWD_TABLE
// (stride 1, the taps in a per-block table as in conv2d_forward_tile), BWD_UNIT (stride 1,
// digits) or BWD_ANY (any stride: digits and divisions by the stride); the kernel picks
// one at run time and passes each the same shared arrays: As[2][TILE_K][BM + TILE_PAD]
// (weights [k = (f, u, v)][c]), Bs (dout [k][q = (n, h, w)]) and the tables.
#define BWD_ANY 0
#define BWD_UNIT 1
#define BWD_TABLE 2
template <int BM, int BN, int GATHER>
__device__ __forceinline__ void conv2d_backward_data_tile(float (*As)[TILE_K][BM + TILE_PAD],
                                                          float (*Bs)[TILE_K][BN + TILE_PAD], float *tab_off,
                                                          float *tab_bit, float *tab_w, float *tab_step,
                                                          float *__restrict__ dx,
                                                          const float *__restrict__ dout,
                                                          const float *__restrict__ w, int N, int C, int H, int W,
                                                          int F, int KH, int KW, int OH, int OW, int stride,
                                                          int pad) {
    constexpr bool UNIT_STRIDE = GATHER != BWD_ANY, TABLE = GATHER == BWD_TABLE;
    constexpr int A_LOADS = BM * TILE_K / TILE_THREADS;
    constexpr int B_LOADS = TILE_K * BN / TILE_THREADS;
    constexpr int B_ROWS = TILE_THREADS / BN;
    const int KHW = KH * KW, KK = F * KHW, HW = H * W, Q = N * HW;
    const int steps = (KK + TILE_K - 1) / TILE_K;
    const int tid = threadIdx.x, tx = tid % (BN / 4), ty = tid / (BN / 4);
    const int c0 = blockIdx.y * BM, q0 = blockIdx.x * BN;

    // A: w[f, c, u, v] as A[c][k]; this thread loads k = k0 + a_k = (f, uv) of
    // channels c0 + a_c + 16 r, (f, uv) kept as digits (TABLE: w[tab_w[k] + c KHW]).
    const int a_k = tid % TILE_K, a_c = tid / TILE_K;
    Digits a_tap = digits_of(a_k, 1, KHW);
    const Digits a_step = digits_of(TILE_K, 1, KHW);
    int a_kk = a_k, a_slot = (a_k % B_ROWS) * B_LOADS + a_k / B_ROWS;
    // B: this thread gathers tile column q = input pixel (n, h, w), rows b_row + B_ROWS r.
    const int b_col = tid % BN, b_row = tid / BN;
    const int q = q0 + b_col;
    const bool q_ok = q < Q;
    const int qn = q_ok ? q / HW : 0, qhw = q_ok ? q % HW : 0;
    const int hp = qhw / W + pad, wp = qhw % W + pad;  // in padded coordinates
    const float *dout_n = dout + (long long)qn * F * OH * OW;
    // TABLE (stride 1): tap k = (f, u, v) reaches this pixel from output (hp - u, wp - v),
    // at dout_n + f OH OW + (hp - u) OW + wp - v, when its bit tab_bit[k] = 1 << (u KW + v)
    // is in the pixel's mask of taps whose output exists. As in conv2d_forward_tile, tile
    // t's taps are at dt[tab_off[k]], dt moving on by tab_step[t] per tile (tab_w: the
    // weights' offsets, in the same slots).
    // (dt may point outside dout; it is dereferenced only at taps that exist.)
    const float *dt = dout_n + (hp * OW + wp);
    unsigned mask = 0;
    int slot = b_row * B_LOADS;
    if (TABLE) {
        if (q_ok)
            for (int u = 0; u < KH; u++)
                for (int v = 0; v < KW; v++)
                    if ((unsigned)(hp - u) < (unsigned)OH && (unsigned)(wp - v) < (unsigned)OW)
                        mask |= 1u << (u * KW + v);
        auto offset = [&](int k) {  // of tap k's output from the pixel's (hp, wp)
            const int f = k / KHW, uv = k % KHW;
            return f * OH * OW - (uv / KW) * OW - uv % KW;
        };
        for (int k = tid; k < steps * TILE_K; k += TILE_THREADS) {
            const int kk = k % TILE_K, at = (k - kk) + (kk % B_ROWS) * B_LOADS + kk / B_ROWS;
            const int first = offset(k - kk);  // the tile's first tap (k - kk < KK)
            tab_off[at] = __int_as_float(k < KK ? offset(k) - first : 0);
            tab_bit[at] = __uint_as_float(k < KK ? 1u << (k % KHW) : 0u);
            tab_w[at] = __int_as_float(k < KK ? (k / KHW) * C * KHW + k % KHW : 0);
            if (kk == 0) tab_step[k / TILE_K] = __int_as_float(k + TILE_K < KK ? offset(k + TILE_K) - first : 0);
        }
        __syncthreads();  // TABLE is uniform over the block
    }
    Digits tap = digits_of(b_row, KH, KW);  // (f, u, v)
    const Digits row_step = digits_of(B_ROWS, KH, KW), tile_step = digits_of(TILE_K, KH, KW);

    float a_next[A_LOADS], b_next[B_LOADS];
    auto load = [&]() {
        if constexpr (TABLE) {
            const int woff = (int)__float_as_uint(tab_w[a_slot]);
#pragma unroll
            for (int r = 0; r < A_LOADS; r++) {
                const int c = c0 + a_c + (TILE_THREADS / TILE_K) * r;
                a_next[r] = (c < C && a_kk < KK) ? w[woff + c * KHW] : 0.0f;
            }
            a_kk += TILE_K;
            a_slot += TILE_K;
#pragma unroll
            for (int r = 0; r < B_LOADS; r += 4) {
                const float4 o = *reinterpret_cast<const float4 *>(&tab_off[slot + r]);
                const float4 m = *reinterpret_cast<const float4 *>(&tab_bit[slot + r]);
                b_next[r + 0] = (mask & __float_as_uint(m.x)) ? dt[(int)__float_as_uint(o.x)] : 0.0f;
                b_next[r + 1] = (mask & __float_as_uint(m.y)) ? dt[(int)__float_as_uint(o.y)] : 0.0f;
                b_next[r + 2] = (mask & __float_as_uint(m.z)) ? dt[(int)__float_as_uint(o.z)] : 0.0f;
                b_next[r + 3] = (mask & __float_as_uint(m.w)) ? dt[(int)__float_as_uint(o.w)] : 0.0f;
            }
            dt += (int)__float_as_uint(tab_step[slot / TILE_K]);
            slot += TILE_K;
        } else {
#pragma unroll
            for (int r = 0; r < A_LOADS; r++) {
                const int c = c0 + a_c + (TILE_THREADS / TILE_K) * r;
                a_next[r] = (c < C && a_tap.hi < F) ? w[((long long)a_tap.hi * C + c) * KHW + a_tap.lo] : 0.0f;
            }
            advance(a_tap, a_step, 1, KHW);
            Digits t = tap;
#pragma unroll
            for (int r = 0; r < B_LOADS; r++) {
                // the output position whose window put tap (u, v) on this pixel:
                // oh * stride = hp - u, ow * stride = wp - v
                const int th = hp - t.mid, tw = wp - t.lo;
                int oh = th, ow = tw;
                bool hit = q_ok && t.hi < F && th >= 0 && tw >= 0;
                if (!UNIT_STRIDE) {
                    hit = hit && th % stride == 0 && tw % stride == 0;
                    oh = th / stride;
                    ow = tw / stride;
                }
                hit = hit && oh < OH && ow < OW;
                b_next[r] = hit ? dout_n[(t.hi * OH + oh) * OW + ow] : 0.0f;
                if (r + 1 < B_LOADS) advance(t, row_step, KH, KW);
            }
            advance(tap, tile_step, KH, KW);
        }
    };
    auto store = [&](int buf) {
#pragma unroll
        for (int r = 0; r < A_LOADS; r++) As[buf][a_k][a_c + (TILE_THREADS / TILE_K) * r] = a_next[r];
#pragma unroll
        for (int r = 0; r < B_LOADS; r++) Bs[buf][b_row + B_ROWS * r][b_col] = b_next[r];
    };

    float acc[4][4];
    zero(acc);
    load();
    store(0);
    __syncthreads();
    tile_main_loop<BM, BN>(As, Bs, steps, tx, ty, acc, load, store);

#pragma unroll
    for (int j = 0; j < 4; j++) {
        const int qj = q0 + 4 * tx + j;
        if (qj >= Q) continue;
        const int n = qj / HW, hw = qj % HW;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int c = c0 + 4 * ty + i;
            if (c < C) dx[((long long)n * C + c) * HW + hw] = acc[i][j];
        }
    }
}

// dw (F, C*KH*KW) for the chunk [z * k_chunk, (z+1) * k_chunk) of output positions
// p, z = blockIdx.z, written to dw + z * F*C*KH*KW (a workspace slice when split).
template <int BM, int BN, bool VALID>
__device__ __forceinline__ void conv2d_backward_filter_tile(float (*As)[TILE_K][BM + TILE_PAD],
                                                            float (*Bs)[TILE_K][BN + TILE_PAD],
                                                            float (*pos_x)[TILE_K], float (*pos_d)[TILE_K],
                                                            float *__restrict__ dw, const float *__restrict__ dout,
                                                            const float *__restrict__ x, int N, int C, int H, int W,
                                                            int F, int KH, int KW, int OH, int OW, int stride,
                                                            int pad, int k_chunk) {
    constexpr int A_LOADS = BM * TILE_K / TILE_THREADS;
    constexpr int B_LOADS = TILE_K * BN / TILE_THREADS;
    constexpr int B_ROWS = TILE_THREADS / BN;
    const int KHW = KH * KW, KK = C * KHW, OHW = OH * OW, P = N * OHW;
    const int tid = threadIdx.x, tx = tid % (BN / 4), ty = tid / (BN / 4);
    const int f0 = blockIdx.y * BM, kc0 = blockIdx.x * BN;
    const int p_begin = blockIdx.z * k_chunk;
    const int p_end = P < p_begin + k_chunk ? P : p_begin + k_chunk;
    const int steps = (p_end - p_begin + TILE_K - 1) / TILE_K;

    // A: dout[n, f, ohw] as A[p][f]; this thread loads position p_begin + a_p (+ TILE_K
    // per step), kept as digits (n, ohw), of filters f0 + a_f + 16 r.
    const int a_p = tid % TILE_K, a_f = tid / TILE_K;
    int pa = p_begin + a_p;
    Digits a_pos = digits_of(pa, 1, OHW);
    const Digits a_step = digits_of(TILE_K, 1, OHW);
    // B: this thread gathers tile column kc = tap (c, u, v), fixed; rows pb = b_row +
    // B_ROWS r, positions (n, oh, ow) kept as digits.
    const int b_col = tid % BN, b_row = tid / BN;
    const int kc = kc0 + b_col;
    const bool kc_ok = kc < KK;
    const int kc_c = kc_ok ? kc / KHW : 0, kc_uv = kc_ok ? kc % KHW : 0;
    const int kc_u = kc_uv / KW - pad, kc_v = kc_uv % KW - pad;
    const float *xc = x + (long long)kc_c * H * W;
    const long long x_image = (long long)C * H * W;
    int pb = p_begin + b_row;
    Digits pos = digits_of(pb, OH, OW);
    const Digits row_step = digits_of(B_ROWS, OH, OW), tile_step = digits_of(TILE_K, OH, OW);
    // VALID (pad == 0: every tap of every window is inside x): the positions of each tile
    // are decoded once per block, not once per thread and row. Threads 0-15 write, for
    // tile t + 2 while the block loads tile t, position p_t + i's offsets into slot
    // (t + 2) % 4 of two small rings: pos_x (of x[n, 0, oh stride, ow stride], in the
    // order the B rows are read: row i at (i % B_ROWS) B_LOADS + i / B_ROWS) and pos_d (of
    // dout[n, 0, oh, ow]); -1 past the chunk. Column kc reads x[pos_x + its tap's offset]
    // (a column past KK reads tap 0 and is never written). The slot a thread writes was
    // last read two barriers earlier, and is read after the next one.
    const int col = kc_ok ? kc_c * H * W + kc_uv / KW * W + kc_uv % KW : 0;
    const int w_at = (a_p % B_ROWS) * B_LOADS + a_p / B_ROWS;  // writer a_p's pos_x slot
    int t_read = 0;  // the tile load() reads next
    int pw = p_begin + 2 * TILE_K + a_p;  // writer a_p's position in the tile it writes next
    Digits wpos = digits_of(pw < P ? pw : 0, OH, OW);
    if (VALID) {
        if (tid < TILE_K) {  // tiles 0 and 1 (divisions: once)
#pragma unroll
            for (int t = 0; t < 2; t++) {
                const int pt = p_begin + t * TILE_K + a_p;
                const Digits d = digits_of(pt < P ? pt : 0, OH, OW);
                const bool ok = pt < p_end;
                pos_x[t][w_at] = __int_as_float(ok ? d.hi * C * H * W + d.mid * stride * W + d.lo * stride : -1);
                pos_d[t][a_p] = __int_as_float(ok ? d.hi * F * OHW + d.mid * OW + d.lo : -1);
            }
        }
        __syncthreads();  // VALID is uniform over the block
    }

    float a_next[A_LOADS], b_next[B_LOADS];
    auto load = [&]() {
        if constexpr (VALID) {
            const int ring = t_read % 4;
            const int pd = (int)__float_as_uint(pos_d[ring][a_p]);
#pragma unroll
            for (int r = 0; r < A_LOADS; r++) {
                const int f = f0 + a_f + (TILE_THREADS / TILE_K) * r;
                a_next[r] = (pd >= 0 && f < F) ? dout[pd + f * OHW] : 0.0f;
            }
#pragma unroll
            for (int r = 0; r < B_LOADS; r += 4) {
                const float4 o = *reinterpret_cast<const float4 *>(&pos_x[ring][b_row * B_LOADS + r]);
                const int o0 = (int)__float_as_uint(o.x), o1 = (int)__float_as_uint(o.y);
                const int o2 = (int)__float_as_uint(o.z), o3 = (int)__float_as_uint(o.w);
                b_next[r + 0] = o0 >= 0 ? x[col + o0] : 0.0f;
                b_next[r + 1] = o1 >= 0 ? x[col + o1] : 0.0f;
                b_next[r + 2] = o2 >= 0 ? x[col + o2] : 0.0f;
                b_next[r + 3] = o3 >= 0 ? x[col + o3] : 0.0f;
            }
            if (tid < TILE_K) {  // tile t_read + 2 (no barrier in here)
                const int w_ring = (t_read + 2) % 4;
                const bool ok = pw < p_end;
                pos_x[w_ring][w_at] =
                    __int_as_float(ok ? wpos.hi * C * H * W + wpos.mid * stride * W + wpos.lo * stride : -1);
                pos_d[w_ring][a_p] = __int_as_float(ok ? wpos.hi * F * OHW + wpos.mid * OW + wpos.lo : -1);
                pw += TILE_K;
                advance(wpos, tile_step, OH, OW);
            }
            t_read++;
        } else {
            const long long a_base = ((long long)a_pos.hi * F) * OHW + a_pos.lo;
#pragma unroll
            for (int r = 0; r < A_LOADS; r++) {
                const int f = f0 + a_f + (TILE_THREADS / TILE_K) * r;
                a_next[r] = (pa < p_end && f < F) ? dout[a_base + (long long)f * OHW] : 0.0f;
            }
            pa += TILE_K;
            advance(a_pos, a_step, 1, OHW);
            Digits t = pos;  // (n, oh, ow)
#pragma unroll
            for (int r = 0; r < B_LOADS; r++) {
                const int ih = t.mid * stride + kc_u, iw = t.lo * stride + kc_v;
                const bool in =
                    kc_ok && pb + B_ROWS * r < p_end && (unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W;
                b_next[r] = in ? xc[t.hi * x_image + ih * W + iw] : 0.0f;
                if (r + 1 < B_LOADS) advance(t, row_step, OH, OW);
            }
            pb += TILE_K;
            advance(pos, tile_step, OH, OW);
        }
    };
    auto store = [&](int buf) {
#pragma unroll
        for (int r = 0; r < A_LOADS; r++) As[buf][a_p][a_f + (TILE_THREADS / TILE_K) * r] = a_next[r];
#pragma unroll
        for (int r = 0; r < B_LOADS; r++) Bs[buf][b_row + B_ROWS * r][b_col] = b_next[r];
    };

    float acc[4][4];
    zero(acc);
    if (steps > 0) {
        load();
        store(0);
    }
    __syncthreads();
    tile_main_loop<BM, BN>(As, Bs, steps, tx, ty, acc, load, store);

    float *dwz = dw + (long long)blockIdx.z * F * KK;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int f = f0 + 4 * ty + i;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int k = kc0 + 4 * tx + j;
            if (f < F && k < KK) dwz[(long long)f * KK + k] = acc[i][j];
        }
    }
}

// The kernels: each pass in three tile shapes, so that the M side (filters, or
// channels for backward-data) fills its tile: 64 x 64 for wide layers, 32 x 128 for
// 17-32 rows and 16 x 256 for at most 16 (the paper's first conv has 1 input and 16
// output channels; a 64-row tile would leave 3/4 of its rows idle, or 63/64).
// tinycnn/backends/geometry.py picks the shortest tile that covers M.
extern "C" __global__ void __launch_bounds__(TILE_THREADS, 2)
    conv2d_forward_igemm_64x64(float *__restrict__ out, const float *__restrict__ x, const float *__restrict__ w,
                              const float *__restrict__ b, int N, int C, int H, int W, int F, int KH, int KW, int OH,
                              int OW, int stride, int pad) {
    __shared__ __align__(16) float As[2][TILE_K][64 + TILE_PAD];
    __shared__ __align__(16) float Bs[2][TILE_K][64 + TILE_PAD];
    __shared__ __align__(16) float tab_off[CONV_TAB(64)], tab_bit[CONV_TAB(64)], tab_step[CONV_TAB(64) / TILE_K];
    if (conv_table_fits(C * KH * KW, KH * KW, CONV_TAB(64)))
        conv2d_forward_tile<64, 64, false, true>(As, Bs, tab_off, tab_bit, tab_step, out, nullptr, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, 0, 0);
    else
        conv2d_forward_tile<64, 64, false, false>(As, Bs, tab_off, tab_bit, tab_step, out, nullptr, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, 0, 0);
}

// The fused block: pooled (N, F, PH, PW) = maxpool2x2(relu(conv(x, w) + b)), arg the
// winners' window offsets (see conv2d_forward_tile, POOLED).
extern "C" __global__ void __launch_bounds__(TILE_THREADS, 2)
    conv2d_relu_maxpool_igemm_64x64(float *__restrict__ pooled, int *__restrict__ arg, const float *__restrict__ x,
                                    const float *__restrict__ w, const float *__restrict__ b, int N, int C, int H,
                                    int W, int F, int KH, int KW, int OH, int OW, int stride, int pad, int PH, int PW) {
    __shared__ __align__(16) float As[2][TILE_K][64 + TILE_PAD];
    __shared__ __align__(16) float Bs[2][TILE_K][64 + TILE_PAD];
    __shared__ __align__(16) float tab_off[CONV_TAB(64)], tab_bit[CONV_TAB(64)], tab_step[CONV_TAB(64) / TILE_K];
    if (conv_table_fits(C * KH * KW, KH * KW, CONV_TAB(64)))
        conv2d_forward_tile<64, 64, true, true>(As, Bs, tab_off, tab_bit, tab_step, pooled, arg, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, PH, PW);
    else
        conv2d_forward_tile<64, 64, true, false>(As, Bs, tab_off, tab_bit, tab_step, pooled, arg, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, PH, PW);
}

extern "C" __global__ void __launch_bounds__(TILE_THREADS, 2)
    conv2d_backward_data_igemm_64x64(float *__restrict__ dx, const float *__restrict__ dout,
                                    const float *__restrict__ w, int N, int C, int H, int W, int F, int KH, int KW,
                                    int OH, int OW, int stride, int pad) {
    __shared__ __align__(16) float As[2][TILE_K][64 + TILE_PAD];
    __shared__ __align__(16) float Bs[2][TILE_K][64 + TILE_PAD];
    __shared__ __align__(16) float tab_off[CONV_TAB(64)], tab_bit[CONV_TAB(64)], tab_w[CONV_TAB(64)], tab_step[CONV_TAB(64) / TILE_K];
    if (stride == 1 && conv_table_fits(F * KH * KW, KH * KW, CONV_TAB(64)))
        conv2d_backward_data_tile<64, 64, BWD_TABLE>(As, Bs, tab_off, tab_bit, tab_w, tab_step, dx, dout, w, N, C, H, W, F,
                                                        KH, KW, OH, OW, stride, pad);
    else if (stride == 1)
        conv2d_backward_data_tile<64, 64, BWD_UNIT>(As, Bs, tab_off, tab_bit, tab_w, tab_step, dx, dout, w, N, C, H, W, F,
                                                       KH, KW, OH, OW, stride, pad);
    else
        conv2d_backward_data_tile<64, 64, BWD_ANY>(As, Bs, tab_off, tab_bit, tab_w, tab_step, dx, dout, w, N, C, H, W, F,
                                                      KH, KW, OH, OW, stride, pad);
}

extern "C" __global__ void __launch_bounds__(TILE_THREADS, 2)
    conv2d_backward_filter_igemm_64x64(float *__restrict__ dw, const float *__restrict__ dout,
                                      const float *__restrict__ x, int N, int C, int H, int W, int F, int KH, int KW,
                                      int OH, int OW, int stride, int pad, int k_chunk) {
    __shared__ __align__(16) float As[2][TILE_K][64 + TILE_PAD];  // dout     [p][f]
    __shared__ __align__(16) float Bs[2][TILE_K][64 + TILE_PAD];  // im2col   [p][k = (c, u, v)]
    __shared__ __align__(16) float pos_x[4][TILE_K], pos_d[4][TILE_K];
    if (pad == 0)
        conv2d_backward_filter_tile<64, 64, true>(As, Bs, pos_x, pos_d, dw, dout, x, N, C, H, W, F, KH, KW, OH,
                                                     OW, stride, pad, k_chunk);
    else
        conv2d_backward_filter_tile<64, 64, false>(As, Bs, pos_x, pos_d, dw, dout, x, N, C, H, W, F, KH, KW, OH,
                                                      OW, stride, pad, k_chunk);
}

extern "C" __global__ void __launch_bounds__(TILE_THREADS, 2)
    conv2d_forward_igemm_32x128(float *__restrict__ out, const float *__restrict__ x, const float *__restrict__ w,
                              const float *__restrict__ b, int N, int C, int H, int W, int F, int KH, int KW, int OH,
                              int OW, int stride, int pad) {
    __shared__ __align__(16) float As[2][TILE_K][32 + TILE_PAD];
    __shared__ __align__(16) float Bs[2][TILE_K][128 + TILE_PAD];
    __shared__ __align__(16) float tab_off[CONV_TAB(128)], tab_bit[CONV_TAB(128)], tab_step[CONV_TAB(128) / TILE_K];
    if (conv_table_fits(C * KH * KW, KH * KW, CONV_TAB(128)))
        conv2d_forward_tile<32, 128, false, true>(As, Bs, tab_off, tab_bit, tab_step, out, nullptr, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, 0, 0);
    else
        conv2d_forward_tile<32, 128, false, false>(As, Bs, tab_off, tab_bit, tab_step, out, nullptr, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, 0, 0);
}

// The fused block: pooled (N, F, PH, PW) = maxpool2x2(relu(conv(x, w) + b)), arg the
// winners' window offsets (see conv2d_forward_tile, POOLED).
extern "C" __global__ void __launch_bounds__(TILE_THREADS, 2)
    conv2d_relu_maxpool_igemm_32x128(float *__restrict__ pooled, int *__restrict__ arg, const float *__restrict__ x,
                                    const float *__restrict__ w, const float *__restrict__ b, int N, int C, int H,
                                    int W, int F, int KH, int KW, int OH, int OW, int stride, int pad, int PH, int PW) {
    __shared__ __align__(16) float As[2][TILE_K][32 + TILE_PAD];
    __shared__ __align__(16) float Bs[2][TILE_K][128 + TILE_PAD];
    __shared__ __align__(16) float tab_off[CONV_TAB(128)], tab_bit[CONV_TAB(128)], tab_step[CONV_TAB(128) / TILE_K];
    if (conv_table_fits(C * KH * KW, KH * KW, CONV_TAB(128)))
        conv2d_forward_tile<32, 128, true, true>(As, Bs, tab_off, tab_bit, tab_step, pooled, arg, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, PH, PW);
    else
        conv2d_forward_tile<32, 128, true, false>(As, Bs, tab_off, tab_bit, tab_step, pooled, arg, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, PH, PW);
}

extern "C" __global__ void __launch_bounds__(TILE_THREADS, 2)
    conv2d_backward_data_igemm_32x128(float *__restrict__ dx, const float *__restrict__ dout,
                                    const float *__restrict__ w, int N, int C, int H, int W, int F, int KH, int KW,
                                    int OH, int OW, int stride, int pad) {
    __shared__ __align__(16) float As[2][TILE_K][32 + TILE_PAD];
    __shared__ __align__(16) float Bs[2][TILE_K][128 + TILE_PAD];
    __shared__ __align__(16) float tab_off[CONV_TAB(128)], tab_bit[CONV_TAB(128)], tab_w[CONV_TAB(128)], tab_step[CONV_TAB(128) / TILE_K];
    if (stride == 1 && conv_table_fits(F * KH * KW, KH * KW, CONV_TAB(128)))
        conv2d_backward_data_tile<32, 128, BWD_TABLE>(As, Bs, tab_off, tab_bit, tab_w, tab_step, dx, dout, w, N, C, H, W, F,
                                                        KH, KW, OH, OW, stride, pad);
    else if (stride == 1)
        conv2d_backward_data_tile<32, 128, BWD_UNIT>(As, Bs, tab_off, tab_bit, tab_w, tab_step, dx, dout, w, N, C, H, W, F,
                                                       KH, KW, OH, OW, stride, pad);
    else
        conv2d_backward_data_tile<32, 128, BWD_ANY>(As, Bs, tab_off, tab_bit, tab_w, tab_step, dx, dout, w, N, C, H, W, F,
                                                      KH, KW, OH, OW, stride, pad);
}

extern "C" __global__ void __launch_bounds__(TILE_THREADS, 2)
    conv2d_backward_filter_igemm_32x128(float *__restrict__ dw, const float *__restrict__ dout,
                                      const float *__restrict__ x, int N, int C, int H, int W, int F, int KH, int KW,
                                      int OH, int OW, int stride, int pad, int k_chunk) {
    __shared__ __align__(16) float As[2][TILE_K][32 + TILE_PAD];  // dout     [p][f]
    __shared__ __align__(16) float Bs[2][TILE_K][128 + TILE_PAD];  // im2col   [p][k = (c, u, v)]
    __shared__ __align__(16) float pos_x[4][TILE_K], pos_d[4][TILE_K];
    if (pad == 0)
        conv2d_backward_filter_tile<32, 128, true>(As, Bs, pos_x, pos_d, dw, dout, x, N, C, H, W, F, KH, KW, OH,
                                                     OW, stride, pad, k_chunk);
    else
        conv2d_backward_filter_tile<32, 128, false>(As, Bs, pos_x, pos_d, dw, dout, x, N, C, H, W, F, KH, KW, OH,
                                                      OW, stride, pad, k_chunk);
}

extern "C" __global__ void __launch_bounds__(TILE_THREADS, 2)
    conv2d_forward_igemm_16x256(float *__restrict__ out, const float *__restrict__ x, const float *__restrict__ w,
                              const float *__restrict__ b, int N, int C, int H, int W, int F, int KH, int KW, int OH,
                              int OW, int stride, int pad) {
    __shared__ __align__(16) float As[2][TILE_K][16 + TILE_PAD];
    __shared__ __align__(16) float Bs[2][TILE_K][256 + TILE_PAD];
    __shared__ __align__(16) float tab_off[CONV_TAB(256)], tab_bit[CONV_TAB(256)], tab_step[CONV_TAB(256) / TILE_K];
    if (conv_table_fits(C * KH * KW, KH * KW, CONV_TAB(256)))
        conv2d_forward_tile<16, 256, false, true>(As, Bs, tab_off, tab_bit, tab_step, out, nullptr, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, 0, 0);
    else
        conv2d_forward_tile<16, 256, false, false>(As, Bs, tab_off, tab_bit, tab_step, out, nullptr, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, 0, 0);
}

// The fused block: pooled (N, F, PH, PW) = maxpool2x2(relu(conv(x, w) + b)), arg the
// winners' window offsets (see conv2d_forward_tile, POOLED).
extern "C" __global__ void __launch_bounds__(TILE_THREADS, 2)
    conv2d_relu_maxpool_igemm_16x256(float *__restrict__ pooled, int *__restrict__ arg, const float *__restrict__ x,
                                    const float *__restrict__ w, const float *__restrict__ b, int N, int C, int H,
                                    int W, int F, int KH, int KW, int OH, int OW, int stride, int pad, int PH, int PW) {
    __shared__ __align__(16) float As[2][TILE_K][16 + TILE_PAD];
    __shared__ __align__(16) float Bs[2][TILE_K][256 + TILE_PAD];
    __shared__ __align__(16) float tab_off[CONV_TAB(256)], tab_bit[CONV_TAB(256)], tab_step[CONV_TAB(256) / TILE_K];
    if (conv_table_fits(C * KH * KW, KH * KW, CONV_TAB(256)))
        conv2d_forward_tile<16, 256, true, true>(As, Bs, tab_off, tab_bit, tab_step, pooled, arg, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, PH, PW);
    else
        conv2d_forward_tile<16, 256, true, false>(As, Bs, tab_off, tab_bit, tab_step, pooled, arg, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, PH, PW);
}

extern "C" __global__ void __launch_bounds__(TILE_THREADS, 2)
    conv2d_backward_data_igemm_16x256(float *__restrict__ dx, const float *__restrict__ dout,
                                    const float *__restrict__ w, int N, int C, int H, int W, int F, int KH, int KW,
                                    int OH, int OW, int stride, int pad) {
    __shared__ __align__(16) float As[2][TILE_K][16 + TILE_PAD];
    __shared__ __align__(16) float Bs[2][TILE_K][256 + TILE_PAD];
    __shared__ __align__(16) float tab_off[CONV_TAB(256)], tab_bit[CONV_TAB(256)], tab_w[CONV_TAB(256)], tab_step[CONV_TAB(256) / TILE_K];
    if (stride == 1 && conv_table_fits(F * KH * KW, KH * KW, CONV_TAB(256)))
        conv2d_backward_data_tile<16, 256, BWD_TABLE>(As, Bs, tab_off, tab_bit, tab_w, tab_step, dx, dout, w, N, C, H, W, F,
                                                        KH, KW, OH, OW, stride, pad);
    else if (stride == 1)
        conv2d_backward_data_tile<16, 256, BWD_UNIT>(As, Bs, tab_off, tab_bit, tab_w, tab_step, dx, dout, w, N, C, H, W, F,
                                                       KH, KW, OH, OW, stride, pad);
    else
        conv2d_backward_data_tile<16, 256, BWD_ANY>(As, Bs, tab_off, tab_bit, tab_w, tab_step, dx, dout, w, N, C, H, W, F,
                                                      KH, KW, OH, OW, stride, pad);
}

extern "C" __global__ void __launch_bounds__(TILE_THREADS, 2)
    conv2d_backward_filter_igemm_16x256(float *__restrict__ dw, const float *__restrict__ dout,
                                      const float *__restrict__ x, int N, int C, int H, int W, int F, int KH, int KW,
                                      int OH, int OW, int stride, int pad, int k_chunk) {
    __shared__ __align__(16) float As[2][TILE_K][16 + TILE_PAD];  // dout     [p][f]
    __shared__ __align__(16) float Bs[2][TILE_K][256 + TILE_PAD];  // im2col   [p][k = (c, u, v)]
    __shared__ __align__(16) float pos_x[4][TILE_K], pos_d[4][TILE_K];
    if (pad == 0)
        conv2d_backward_filter_tile<16, 256, true>(As, Bs, pos_x, pos_d, dw, dout, x, N, C, H, W, F, KH, KW, OH,
                                                     OW, stride, pad, k_chunk);
    else
        conv2d_backward_filter_tile<16, 256, false>(As, Bs, pos_x, pos_d, dw, dout, x, N, C, H, W, F, KH, KW, OH,
                                                      OW, stride, pad, k_chunk);
}


// Weight and bias gradients of a convolution with few taps (C*KH*KW <= SMALLK_TAPS,
// the paper's first layer: 1 channel, 3x3): a product with M = F rows, N = 9 columns
// and K = N*OH*OW = 4.1 M positions at batch 64, on which a GEMM tile of 64 or 256
// columns would waste 7/8 or more of its work. Here a thread owns SMALLK_FILTERS
// filters of one position lane and sums, over its share of the positions,
// dout[n, f, oh, ow] * x[n, c, oh*stride + u - pad, ow*stride + v - pad] for every tap
// (c, u, v), and dout itself (the bias gradient: dout is read once for both).
//
//   grid (chunks, ceil(F / SMALLK_BLOCK_FILTERS)), 256 threads = 4 filter groups x 64 lanes;
//   block (s, fb) takes positions [s * chunk, (s+1) * chunk), lane l the positions
//   s * chunk + l + 64 i; consecutive lanes read consecutive positions (coalesced).
//   part_w[s, f, k] and part_b[s, f]: the block's sums, each added over the 64 lanes
//   in lane order; split_k_reduce then adds the chunks in order. Deterministic.
//   __launch_bounds__(256, 2): at most 128 registers, so two blocks (16 warps) share an
//   SM and one's loads hide behind the other's FMAs; geometry.py's ~4 blocks per SM of
//   an H100 then run in two rounds, not four.
//
// Napkin math (conv1, batch 64): dout is 264 MB, read once (~80 us of H100 DRAM);
// 9 taps x 4 filters = 36 FMAs per 9 + 4 loads per position and thread.
#define SMALLK_TAPS 16
#define SMALLK_FILTERS 4          // filters per thread
#define SMALLK_LANES 64           // position lanes per block
#define SMALLK_BLOCK_FILTERS 16   // SMALLK_FILTERS * (256 / SMALLK_LANES)

//
// PREC (mma.cuh round_operand): 0 FP32; 1 TF32, 2 BF16 round dout and x before each
// product, as the tensor-core kernels round their operands, so that a precision mode
// computes what it says in every pass (the bias gradient sums dout itself).
template <int PREC>
__device__ __forceinline__ void conv2d_backward_filter_smallk_tile(float *__restrict__ part_w,
                                                                   float *__restrict__ part_b,
                                                                   const float *__restrict__ dout,
                                                                   const float *__restrict__ x, int N, int C, int H,
                                                                   int W, int F, int KH, int KW, int OH, int OW,
                                                                   int stride, int pad, int chunk) {
    __shared__ float lanes[SMALLK_BLOCK_FILTERS][SMALLK_LANES];
    const int KHW = KH * KW, KK = C * KHW, OHW = OH * OW, P = N * OHW, HW = H * W;
    const int lane = threadIdx.x % SMALLK_LANES, group = threadIdx.x / SMALLK_LANES;
    const int f0 = blockIdx.y * SMALLK_BLOCK_FILTERS + group * SMALLK_FILTERS;
    const int begin = blockIdx.x * chunk;
    const int end = P < begin + chunk ? P : begin + chunk;

    float acc[SMALLK_FILTERS][SMALLK_TAPS + 1];  // [.][SMALLK_TAPS]: the bias gradient
#pragma unroll
    for (int j = 0; j < SMALLK_FILTERS; j++)
#pragma unroll
        for (int k = 0; k <= SMALLK_TAPS; k++) acc[j][k] = 0.0f;

    // Offset of each tap (c, u, v) from its window's corner, computed once per block by
    // its first SMALLK_TAPS threads: in a per-thread array the 16 divisions' temporaries
    // pushed the kernel to 147-163 registers (one block per SM); from shared memory it fits
    // the 128 of __launch_bounds__(256, 2) without spills. Same sums, same bits.
    __shared__ int tap_offset[SMALLK_TAPS];
    if (threadIdx.x < SMALLK_TAPS) {
        const int k = threadIdx.x;
        const Digits t = digits_of(k < KK ? k : 0, KH, KW);
        tap_offset[k] = t.hi * HW + t.mid * W + t.lo;
    }
    __syncthreads();

    int p = begin + lane;
    Digits pos = digits_of(p < P ? p : 0, OH, OW);  // (n, oh, ow)
    const Digits lane_step = digits_of(SMALLK_LANES, OH, OW);
    for (; p < end; p += SMALLK_LANES) {
        const int ih0 = pos.mid * stride - pad, iw0 = pos.lo * stride - pad;
        const float *xn = x + (long long)pos.hi * C * HW;
        float d[SMALLK_FILTERS];
#pragma unroll
        for (int j = 0; j < SMALLK_FILTERS; j++) {
            const int f = f0 + j;
            const float dv = f < F ? dout[((long long)pos.hi * F + f) * OHW + pos.mid * OW + pos.lo] : 0.0f;
            acc[j][SMALLK_TAPS] += dv;
            d[j] = round_operand<PREC>(dv);
        }
        if (pad == 0) {  // a valid convolution: every tap of every window is inside x
            const float *corner = xn + ih0 * W + iw0;
#pragma unroll
            for (int k = 0; k < SMALLK_TAPS; k++) {
                if (k < KK) {
                    const float xv = round_operand<PREC>(corner[tap_offset[k]]);
#pragma unroll
                    for (int j = 0; j < SMALLK_FILTERS; j++) acc[j][k] += d[j] * xv;
                }
            }
        } else {
            Digits tap = {0, 0, 0};  // (c, u, v), moved on by one per tap
            const Digits one = {0, 0, 1};
#pragma unroll
            for (int k = 0; k < SMALLK_TAPS; k++) {
                if (k < KK) {
                    const int ih = ih0 + tap.mid, iw = iw0 + tap.lo;
                    const float xv = round_operand<PREC>(((unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W)
                                                             ? xn[tap.hi * HW + ih * W + iw] : 0.0f);
#pragma unroll
                    for (int j = 0; j < SMALLK_FILTERS; j++) acc[j][k] += d[j] * xv;
                    advance(tap, one, KH, KW);
                }
            }
        }
        advance(pos, lane_step, OH, OW);
    }

    // Per tap: the 64 lanes' sums added in lane order by one thread per filter.
    float *pw = part_w + (long long)blockIdx.x * F * KK;
    float *pb = part_b + (long long)blockIdx.x * F;
#pragma unroll
    for (int k = 0; k <= SMALLK_TAPS; k++) {
        if (k < KK || k == SMALLK_TAPS) {  // uniform over the block
#pragma unroll
            for (int j = 0; j < SMALLK_FILTERS; j++) lanes[group * SMALLK_FILTERS + j][lane] = acc[j][k];
            __syncthreads();
            if (threadIdx.x < SMALLK_BLOCK_FILTERS) {
                const int f = blockIdx.y * SMALLK_BLOCK_FILTERS + threadIdx.x;
                float s = 0.0f;
                for (int l = 0; l < SMALLK_LANES; l++) s += lanes[threadIdx.x][l];
                if (f < F) {
                    if (k == SMALLK_TAPS) pb[f] = s;
                    else pw[(long long)f * KK + k] = s;
                }
            }
            __syncthreads();
        }
    }
}

extern "C" __global__ void __launch_bounds__(256, 2)
    conv2d_backward_filter_smallk(float *__restrict__ part_w, float *__restrict__ part_b, const float *__restrict__ dout,
                                  const float *__restrict__ x, int N, int C, int H, int W, int F, int KH, int KW, int OH,
                                  int OW, int stride, int pad, int chunk) {
    conv2d_backward_filter_smallk_tile<0>(part_w, part_b, dout, x, N, C, H, W, F, KH, KW, OH, OW, stride, pad,
                                          chunk);
}

extern "C" __global__ void __launch_bounds__(256, 2)
    conv2d_backward_filter_smallk_tf32(float *__restrict__ part_w, float *__restrict__ part_b, const float *__restrict__ dout,
                                       const float *__restrict__ x, int N, int C, int H, int W, int F, int KH, int KW, int OH,
                                       int OW, int stride, int pad, int chunk) {
    conv2d_backward_filter_smallk_tile<1>(part_w, part_b, dout, x, N, C, H, W, F, KH, KW, OH, OW, stride, pad,
                                          chunk);
}

extern "C" __global__ void __launch_bounds__(256, 2)
    conv2d_backward_filter_smallk_bf16(float *__restrict__ part_w, float *__restrict__ part_b, const float *__restrict__ dout,
                                       const float *__restrict__ x, int N, int C, int H, int W, int F, int KH, int KW, int OH,
                                       int OW, int stride, int pad, int chunk) {
    conv2d_backward_filter_smallk_tile<2>(part_w, part_b, dout, x, N, C, H, W, F, KH, KW, OH, OW, stride, pad,
                                          chunk);
}

// The fused block's forward pass for few taps (C*KH*KW <= SMALLK_TAPS: the paper's
// first layer, 1 channel, 3x3), as direct loops: pooled, arg as
// conv2d_relu_maxpool_igemm_* (the same sums in the same order, the same ReLU and
// first-maximum rule, so the same bits), without a GEMM tile. A tile would spend a
// whole k-tile (16 taps, or a tensor core's 16 / 32) on 9 taps and stage every
// operand through shared memory for one trip; here a thread owns one pooling window:
// it reads the window's taps once (a 4x4 patch of x for 3x3 stride 1, through L1),
// rounded once in a tensor-core precision mode, and multiplies them by the block's
// SMALLK_FWD_FILTERS filters, whose weights sit in shared memory (every thread reads
// the same word: a broadcast).
//
//   grid (ceil(N*PH*PW / SMALLK_FWD_THREADS), ceil(F / SMALLK_FWD_FILTERS)); thread q of
//   the grid's x: pooled output (n, ph, pw) = q, consecutive threads along pw
//   (coalesced stores of each filter's plane).
//
// Napkin math (conv1 at batch 64: 1.03 M windows, 16 filters): per window 36 loads and
// 16 x 4 x 9 = 576 FFMA: ~30 M warp-instructions, ~30 us of an H100's issue; the
// outputs (pooled and arg, 132 MB) ~40 us of DRAM. The 16x256 GEMM tile spends most of
// its time staging and in its epilogue (bench.gpu_model: ~450-480 us).
#define SMALLK_FWD_FILTERS 16
#define SMALLK_FWD_THREADS 256

template <int PREC>
__device__ __forceinline__ void conv2d_relu_maxpool_smallk_tile(float *__restrict__ pooled, int *__restrict__ arg,
                                                                const float *__restrict__ x,
                                                                const float *__restrict__ w,
                                                                const float *__restrict__ b, int N, int C, int H,
                                                                int W, int F, int KH, int KW, int OH, int OW,
                                                                int stride, int pad, int PH, int PW) {
    // This block's filters, rounded, zero past the KK taps (as the GEMM tile's padding),
    // and each tap (c, u, v): its offset c H W + u W + v from the window's corner, u, v.
    __shared__ __align__(16) float ws[SMALLK_FWD_FILTERS][SMALLK_TAPS];
    __shared__ float bs[SMALLK_FWD_FILTERS];
    __shared__ int tap_off[SMALLK_TAPS], tap_u[SMALLK_TAPS], tap_v[SMALLK_TAPS];
    const int KHW = KH * KW, KK = C * KHW, HW = H * W, PHW = PH * PW;
    const int f0 = blockIdx.y * SMALLK_FWD_FILTERS;
    for (int i = threadIdx.x; i < SMALLK_FWD_FILTERS * SMALLK_TAPS; i += SMALLK_FWD_THREADS) {
        const int j = i / SMALLK_TAPS, k = i % SMALLK_TAPS;
        ws[j][k] = (f0 + j < F && k < KK) ? round_operand<PREC>(w[(long long)(f0 + j) * KK + k]) : 0.0f;
    }
    if (threadIdx.x < SMALLK_FWD_FILTERS) bs[threadIdx.x] = f0 + threadIdx.x < F ? b[f0 + threadIdx.x] : 0.0f;
    if (threadIdx.x < SMALLK_TAPS) {
        const int k = threadIdx.x < KK ? threadIdx.x : 0;
        const int u = (k % KHW) / KW, v = k % KW;
        tap_off[threadIdx.x] = (k / KHW) * HW + u * W + v;
        tap_u[threadIdx.x] = u;
        tap_v[threadIdx.x] = v;
    }
    __syncthreads();
    const int q = blockIdx.x * SMALLK_FWD_THREADS + threadIdx.x;
    if (q >= N * PHW) return;  // after the block's only barrier
    const int n = q / PHW, ph = (q % PHW) / PW, pw = q % PW;
    const float *xn = x + (long long)n * C * HW;

    // The window's members (dy, dx) in row-major order; in ceil mode the window may hang
    // over the conv output's bottom or right edge, and such a member takes no part. Its
    // taps: one load each where the member's receptive field lies inside x, bounds checked
    // per tap at the edges (corner may point outside x there; only taps inside are read).
    const bool right = 2 * pw + 1 < OW, below = 2 * ph + 1 < OH;
    const bool valid[4] = {true, right, below, right && below};
    int off[SMALLK_TAPS];
#pragma unroll
    for (int k = 0; k < SMALLK_TAPS; k++) off[k] = tap_off[k];
    float xv[4][SMALLK_TAPS];
#pragma unroll
    for (int m = 0; m < 4; m++) {
        const int ih0 = (2 * ph + m / 2) * stride - pad, iw0 = (2 * pw + m % 2) * stride - pad;
        const float *corner = xn + ih0 * W + iw0;
        if (valid[m] && ih0 >= 0 && iw0 >= 0 && ih0 + KH <= H && iw0 + KW <= W) {
#pragma unroll
            for (int k = 0; k < SMALLK_TAPS; k++) xv[m][k] = k < KK ? round_operand<PREC>(corner[off[k]]) : 0.0f;
        } else {
#pragma unroll
            for (int k = 0; k < SMALLK_TAPS; k++) {
                const bool in = valid[m] && k < KK && (unsigned)(ih0 + tap_u[k]) < (unsigned)H &&
                                (unsigned)(iw0 + tap_v[k]) < (unsigned)W;
                xv[m][k] = in ? round_operand<PREC>(corner[off[k]]) : 0.0f;
            }
        }
    }

    for (int j = 0; j < SMALLK_FWD_FILTERS && f0 + j < F; j++) {  // uniform over the block
        float wk[SMALLK_TAPS];  // the filter's taps: broadcast 128-bit reads
#pragma unroll
        for (int h = 0; h < SMALLK_TAPS / 4; h++) {
            const float4 t = *reinterpret_cast<const float4 *>(&ws[j][4 * h]);
            wk[4 * h] = t.x, wk[4 * h + 1] = t.y, wk[4 * h + 2] = t.z, wk[4 * h + 3] = t.w;
        }
        // relu(conv + b), then the FIRST maximum in row-major window order: as
        // conv2d_forward_tile's POOLED epilogue, which also adds all 16 taps of its one
        // k-tile in order from 0 (zeros past KK), then b
        float best = 0.0f;
        int best_k = 0;
#pragma unroll
        for (int m = 0; m < 4; m++) {
            float acc = 0.0f;
#pragma unroll
            for (int k = 0; k < SMALLK_TAPS; k++) acc += wk[k] * xv[m][k];
            const float v = acc + bs[j];
            const float r = v > 0.0f ? v : 0.0f;
            if (m == 0) best = r;
            else if (valid[m] && r > best) {
                best = r;
                best_k = m;
            }
        }
        const long long o = ((long long)n * F + f0 + j) * PHW + ph * PW + pw;
        pooled[o] = best;
        arg[o] = best_k;
    }
}

extern "C" __global__ void __launch_bounds__(SMALLK_FWD_THREADS, 2)
    conv2d_relu_maxpool_smallk(float *__restrict__ pooled, int *__restrict__ arg, const float *__restrict__ x,
                               const float *__restrict__ w, const float *__restrict__ b, int N, int C, int H, int W, int F,
                               int KH, int KW, int OH, int OW, int stride, int pad, int PH, int PW) {
    conv2d_relu_maxpool_smallk_tile<0>(pooled, arg, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, PH, PW);
}

extern "C" __global__ void __launch_bounds__(SMALLK_FWD_THREADS, 2)
    conv2d_relu_maxpool_smallk_tf32(float *__restrict__ pooled, int *__restrict__ arg, const float *__restrict__ x,
                                    const float *__restrict__ w, const float *__restrict__ b, int N, int C, int H, int W, int F,
                                    int KH, int KW, int OH, int OW, int stride, int pad, int PH, int PW) {
    conv2d_relu_maxpool_smallk_tile<1>(pooled, arg, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, PH, PW);
}

extern "C" __global__ void __launch_bounds__(SMALLK_FWD_THREADS, 2)
    conv2d_relu_maxpool_smallk_bf16(float *__restrict__ pooled, int *__restrict__ arg, const float *__restrict__ x,
                                    const float *__restrict__ w, const float *__restrict__ b, int N, int C, int H, int W, int F,
                                    int KH, int KW, int OH, int OW, int stride, int pad, int PH, int PW) {
    conv2d_relu_maxpool_smallk_tile<2>(pooled, arg, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad, PH, PW);
}

// Partial bias gradients: block (s, f) sums dout[n, f, :, :] over the flat positions
// i = n*OHW + ohw in [s * chunk, (s+1) * chunk) into part[s * F + f]. Thread t takes
// i = start + t, start + t + 128, ... in order; a fixed tree adds the 128 sums.
// split_k_reduce then adds the S partials of each filter in order.
#define BIAS_THREADS 128

extern "C" __global__ void __launch_bounds__(BIAS_THREADS)
    conv2d_bias_grad_partial(float *__restrict__ part, const float *__restrict__ dout, int N, int F, int OHW,
                             int chunk) {
    __shared__ float sums[BIAS_THREADS];
    const int s = blockIdx.x, f = blockIdx.y, t = threadIdx.x;
    const int total = N * OHW;
    const int begin = s * chunk;
    const int end = total < begin + chunk ? total : begin + chunk;
    float acc = 0.0f;
    for (int i = begin + t; i < end; i += BIAS_THREADS) acc += dout[((long long)(i / OHW) * F + f) * OHW + i % OHW];
    sums[t] = acc;
    __syncthreads();
    for (int half = BIAS_THREADS / 2; half > 0; half /= 2) {
        if (t < half) sums[t] += sums[t + half];
        __syncthreads();
    }
    if (t == 0) part[(long long)s * F + f] = sums[0];
}

// The fused block's backward pass up to the convolution, in one pass over its output:
// max-pool backward (the gradient goes to each 2x2 window's winner), the ReLU mask
// (it passes where the pooled value is positive: the winner's ReLU output) and the
// bias gradient's partial sums.
//
//   dconv (N, F, OH, OW) = dpooled[n, f, oh/2, ow/2] where (oh, ow) won its window
//                          and pooled > 0, else 0 (also outside every window)
//   part[s * F + f]      = sum of dconv[n, f, :, :] over the flat positions of chunk s
//
// Block (s, f) and its threads walk the positions exactly as conv2d_bias_grad_partial
// does (same chunks, same thread stride, same tree), so the bias gradient has the bits
// of the unfused path; with_bias = 0 skips the sums (the few-taps weight gradient
// computes them itself). Windows do not overlap (2x2, stride 2), so every dconv element
// is one window's gradient or 0, as maxpool2d_backward + relu_backward give.
// Napkin math (conv1 at batch 64): reads dpooled + pooled + arg (3 x 66 MB, each value
// by 4 threads through L1), writes dconv (264 MB): ~0.14 ms of H100 DRAM, against
// relu_backward + maxpool2d_backward + the bias pass (~0.36 ms) unfused.
// (A minimum of 4 blocks per SM: left to itself ptxas picks 32 registers and spills.)
extern "C" __global__ void __launch_bounds__(BIAS_THREADS, 4)
    conv2d_relu_maxpool_backward(float *__restrict__ dconv, float *__restrict__ part,
                                 const float *__restrict__ dpooled, const float *__restrict__ pooled,
                                 const int *__restrict__ arg, int N, int F, int OH, int OW, int PH, int PW, int chunk,
                                 int with_bias) {
    __shared__ float sums[BIAS_THREADS];
    const int s = blockIdx.x, f = blockIdx.y, t = threadIdx.x;
    const int OHW = OH * OW, total = N * OHW;
    const int begin = s * chunk;
    const int end = total < begin + chunk ? total : begin + chunk;
    int i = begin + t;
    Digits pos = digits_of(i < total ? i : 0, OH, OW);  // (n, oh, ow)
    const Digits step = digits_of(BIAS_THREADS, OH, OW);
    float acc = 0.0f;
    for (; i < end; i += BIAS_THREADS) {
        const int ph = pos.mid / 2, pw = pos.lo / 2;
        float g = 0.0f;
        if (ph < PH && pw < PW) {
            const long long o = ((long long)pos.hi * F + f) * PH * PW + ph * PW + pw;
            if (arg[o] == 2 * (pos.mid % 2) + pos.lo % 2 && pooled[o] > 0.0f) g = dpooled[o];
        }
        dconv[((long long)pos.hi * F + f) * OHW + pos.mid * OW + pos.lo] = g;
        acc += g;
        advance(pos, step, OH, OW);
    }
    if (with_bias) {  // uniform over the block
        sums[t] = acc;
        __syncthreads();
        for (int half = BIAS_THREADS / 2; half > 0; half /= 2) {
            if (t < half) sums[t] += sums[t + half];
            __syncthreads();
        }
        if (t == 0) part[(long long)s * F + f] = sums[0];
    }
}
