// conv2d.cu: 2-D convolution as implicit GEMM: forward, backward-data,
// backward-filter, and the bias gradient.
// Forward pass = variant v4 of bench/variants/conv2d_forward_v*.cu (v3's 64x64 tile + 16x256).
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
// Threads: a 256-thread block owns a 64 x 64 tile of the product, or 16 x 256 when
// the M side has at most 16 rows (gemm_tile.cuh; each kernel below exists in both
// shapes, named _64x64 and _16x256). Each gathering thread keeps one fixed tile
// column, so the divisions that decode its (n, oh, ow) or (c, u, v) happen once,
// not once per K step.
#include "gemm_tile.cuh"

template <int BM, int BN>
__device__ __forceinline__ void conv2d_forward_tile(float *__restrict__ out, const float *__restrict__ x,
                                                    const float *__restrict__ w, const float *__restrict__ b, int N,
                                                    int C, int H, int W, int F, int KH, int KW, int OH, int OW,
                                                    int stride, int pad) {
    __shared__ float As[TILE_K][BM + TILE_PAD];  // weights  [k][f]
    __shared__ float Bs[TILE_K][BN + TILE_PAD];  // im2col   [k][p]
    const int KHW = KH * KW, KK = C * KHW, OHW = OH * OW, P = N * OHW;
    const int tid = threadIdx.x, tx = tid % (BN / 4), ty = tid / (BN / 4);
    const int f0 = blockIdx.y * BM, p0 = blockIdx.x * BN;

    // This thread gathers column p of every B tile; decode it once.
    const int b_col = tid % BN, b_row = tid / BN;
    const int p = p0 + b_col;
    const bool p_ok = p < P;
    const int pn = p_ok ? p / OHW : 0, pohw = p_ok ? p % OHW : 0;
    const int ih0 = (pohw / OW) * stride - pad, iw0 = (pohw % OW) * stride - pad;
    const float *xn = x + (long long)pn * C * H * W;

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < KK; k0 += TILE_K) {
        // weights: row-major (F, KK), consecutive threads along k
#pragma unroll
        for (int r = 0; r < (BM * TILE_K) / TILE_THREADS; r++) {
            const int e = tid + r * TILE_THREADS;
            const int mm = e / TILE_K, kk = e % TILE_K;
            const int f = f0 + mm, k = k0 + kk;
            As[kk][mm] = (f < F && k < KK) ? w[(long long)f * KK + k] : 0.0f;
        }
        // im2col gather: rows b_row, b_row + TILE_THREADS / BN, ... of the tile
#pragma unroll
        for (int r = 0; r < (TILE_K * BN) / TILE_THREADS; r++) {
            const int kk = b_row + r * (TILE_THREADS / BN);
            const int k = k0 + kk;
            float val = 0.0f;
            if (p_ok && k < KK) {
                const int c = k / KHW, uv = k % KHW;
                const int ih = ih0 + uv / KW, iw = iw0 + uv % KW;
                if (ih >= 0 && ih < H && iw >= 0 && iw < W) val = xn[((long long)c * H + ih) * W + iw];
            }
            Bs[kk][b_col] = val;
        }
        __syncthreads();
        tile_multiply_accumulate<BM, BN>(As, Bs, tx, ty, acc);
        __syncthreads();
    }

#pragma unroll
    for (int j = 0; j < 4; j++) {
        const int pj = p0 + tx + (BN / 4) * j;
        if (pj >= P) continue;
        const int n = pj / OHW, ohw = pj % OHW;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int f = f0 + ty + (BM / 4) * i;
            if (f < F) out[((long long)n * F + f) * OHW + ohw] = acc[i][j] + b[f];
        }
    }
}

template <int BM, int BN>
__device__ __forceinline__ void conv2d_backward_data_tile(float *__restrict__ dx, const float *__restrict__ dout,
                                                          const float *__restrict__ w, int N, int C, int H, int W,
                                                          int F, int KH, int KW, int OH, int OW, int stride,
                                                          int pad) {
    __shared__ float As[TILE_K][BM + TILE_PAD];  // weights  [k = (f, u, v)][c]
    __shared__ float Bs[TILE_K][BN + TILE_PAD];  // dout     [k][q = (n, h, w)]
    const int KHW = KH * KW, KK = F * KHW, HW = H * W, Q = N * HW;
    const int tid = threadIdx.x, tx = tid % (BN / 4), ty = tid / (BN / 4);
    const int c0 = blockIdx.y * BM, q0 = blockIdx.x * BN;

    // This thread gathers column q of every B tile: input pixel (n, h, w).
    const int b_col = tid % BN, b_row = tid / BN;
    const int q = q0 + b_col;
    const bool q_ok = q < Q;
    const int qn = q_ok ? q / HW : 0, qhw = q_ok ? q % HW : 0;
    const int hp = qhw / W + pad, wp = qhw % W + pad;  // in padded coordinates
    const float *dout_n = dout + (long long)qn * F * OH * OW;

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < KK; k0 += TILE_K) {
        // weights w[f, c, u, v] as A[c][k]: consecutive threads along (u, v)
#pragma unroll
        for (int r = 0; r < (BM * TILE_K) / TILE_THREADS; r++) {
            const int e = tid + r * TILE_THREADS;
            const int mm = e / TILE_K, kk = e % TILE_K;
            const int c = c0 + mm, k = k0 + kk;
            float val = 0.0f;
            if (c < C && k < KK) val = w[((long long)(k / KHW) * C + c) * KHW + k % KHW];
            As[kk][mm] = val;
        }
        // dout at the output position whose window put kernel tap (u, v) on this pixel
#pragma unroll
        for (int r = 0; r < (TILE_K * BN) / TILE_THREADS; r++) {
            const int kk = b_row + r * (TILE_THREADS / BN);
            const int k = k0 + kk;
            float val = 0.0f;
            if (q_ok && k < KK) {
                const int f = k / KHW, uv = k % KHW;
                const int th = hp - uv / KW, tw = wp - uv % KW;  // = oh*stride, ow*stride
                if (th >= 0 && tw >= 0 && th % stride == 0 && tw % stride == 0) {
                    const int oh = th / stride, ow = tw / stride;
                    if (oh < OH && ow < OW) val = dout_n[((long long)f * OH + oh) * OW + ow];
                }
            }
            Bs[kk][b_col] = val;
        }
        __syncthreads();
        tile_multiply_accumulate<BM, BN>(As, Bs, tx, ty, acc);
        __syncthreads();
    }

#pragma unroll
    for (int j = 0; j < 4; j++) {
        const int qj = q0 + tx + (BN / 4) * j;
        if (qj >= Q) continue;
        const int n = qj / HW, hw = qj % HW;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int c = c0 + ty + (BM / 4) * i;
            if (c < C) dx[((long long)n * C + c) * HW + hw] = acc[i][j];
        }
    }
}

// dw (F, C*KH*KW) for the chunk [z * k_chunk, (z+1) * k_chunk) of output positions
// p, z = blockIdx.z, written to dw + z * F*C*KH*KW (a workspace slice when split).
template <int BM, int BN>
__device__ __forceinline__ void conv2d_backward_filter_tile(float *__restrict__ dw, const float *__restrict__ dout,
                                                            const float *__restrict__ x, int N, int C, int H, int W,
                                                            int F, int KH, int KW, int OH, int OW, int stride,
                                                            int pad, int k_chunk) {
    __shared__ float As[TILE_K][BM + TILE_PAD];  // dout     [p][f]
    __shared__ float Bs[TILE_K][BN + TILE_PAD];  // im2col   [p][k = (c, u, v)]
    const int KHW = KH * KW, KK = C * KHW, OHW = OH * OW, P = N * OHW;
    const int tid = threadIdx.x, tx = tid % (BN / 4), ty = tid / (BN / 4);
    const int f0 = blockIdx.y * BM, kc0 = blockIdx.x * BN;
    const int p_begin = blockIdx.z * k_chunk;
    const int p_end = P < p_begin + k_chunk ? P : p_begin + k_chunk;

    // A loads: this thread always takes tile row a_p (a position p), filters a_f + 16 r.
    const int a_p = tid % TILE_K, a_f = tid / TILE_K;
    // B loads: this thread always takes tile column b_col (a tap k = (c, u, v)).
    const int b_col = tid % BN, b_row = tid / BN;
    const int kc = kc0 + b_col;
    const bool kc_ok = kc < KK;
    const int kc_c = kc_ok ? kc / KHW : 0, kc_uv = kc_ok ? kc % KHW : 0;
    const int kc_u = kc_uv / KW - pad, kc_v = kc_uv % KW - pad;

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;

    for (int k0 = p_begin; k0 < p_end; k0 += TILE_K) {
        {
            const int pa = k0 + a_p;
            const bool pa_ok = pa < p_end;
            const long long base = pa_ok ? (long long)(pa / OHW) * F * OHW + pa % OHW : 0;
#pragma unroll
            for (int r = 0; r < (BM * TILE_K) / TILE_THREADS; r++) {
                const int mm = a_f + r * (TILE_THREADS / TILE_K);
                const int f = f0 + mm;
                As[a_p][mm] = (pa_ok && f < F) ? dout[base + (long long)f * OHW] : 0.0f;
            }
        }
#pragma unroll
        for (int r = 0; r < (TILE_K * BN) / TILE_THREADS; r++) {
            const int kk = b_row + r * (TILE_THREADS / BN);
            const int pb = k0 + kk;
            float val = 0.0f;
            if (kc_ok && pb < p_end) {
                const int n = pb / OHW, ohw = pb % OHW;
                const int ih = (ohw / OW) * stride + kc_u, iw = (ohw % OW) * stride + kc_v;
                if (ih >= 0 && ih < H && iw >= 0 && iw < W) val = x[(((long long)n * C + kc_c) * H + ih) * W + iw];
            }
            Bs[kk][b_col] = val;
        }
        __syncthreads();
        tile_multiply_accumulate<BM, BN>(As, Bs, tx, ty, acc);
        __syncthreads();
    }

    float *dwz = dw + (long long)blockIdx.z * F * KK;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int f = f0 + ty + (BM / 4) * i;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int k = kc0 + tx + (BN / 4) * j;
            if (f < F && k < KK) dwz[(long long)f * KK + k] = acc[i][j];
        }
    }
}

// The kernels: each pass in two tile shapes. 64 x 64 for wide layers; 16 x 256
// when the M side (filters, or channels for backward-data) is at most 16, where a
// 64-row tile would leave three quarters (or, for the paper's 1-channel input,
// 63/64) of its rows idle. tinycnn/backends/launch.py picks the shape.
extern "C" __global__ void __launch_bounds__(TILE_THREADS)
    conv2d_forward_igemm_64x64(float *__restrict__ out, const float *__restrict__ x, const float *__restrict__ w,
                              const float *__restrict__ b, int N, int C, int H, int W, int F, int KH, int KW, int OH,
                              int OW, int stride, int pad) {
    conv2d_forward_tile<64, 64>(out, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad);
}

extern "C" __global__ void __launch_bounds__(TILE_THREADS)
    conv2d_backward_data_igemm_64x64(float *__restrict__ dx, const float *__restrict__ dout,
                                    const float *__restrict__ w, int N, int C, int H, int W, int F, int KH, int KW,
                                    int OH, int OW, int stride, int pad) {
    conv2d_backward_data_tile<64, 64>(dx, dout, w, N, C, H, W, F, KH, KW, OH, OW, stride, pad);
}

extern "C" __global__ void __launch_bounds__(TILE_THREADS)
    conv2d_backward_filter_igemm_64x64(float *__restrict__ dw, const float *__restrict__ dout,
                                      const float *__restrict__ x, int N, int C, int H, int W, int F, int KH, int KW,
                                      int OH, int OW, int stride, int pad, int k_chunk) {
    conv2d_backward_filter_tile<64, 64>(dw, dout, x, N, C, H, W, F, KH, KW, OH, OW, stride, pad, k_chunk);
}

extern "C" __global__ void __launch_bounds__(TILE_THREADS)
    conv2d_forward_igemm_16x256(float *__restrict__ out, const float *__restrict__ x, const float *__restrict__ w,
                              const float *__restrict__ b, int N, int C, int H, int W, int F, int KH, int KW, int OH,
                              int OW, int stride, int pad) {
    conv2d_forward_tile<16, 256>(out, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad);
}

extern "C" __global__ void __launch_bounds__(TILE_THREADS)
    conv2d_backward_data_igemm_16x256(float *__restrict__ dx, const float *__restrict__ dout,
                                    const float *__restrict__ w, int N, int C, int H, int W, int F, int KH, int KW,
                                    int OH, int OW, int stride, int pad) {
    conv2d_backward_data_tile<16, 256>(dx, dout, w, N, C, H, W, F, KH, KW, OH, OW, stride, pad);
}

extern "C" __global__ void __launch_bounds__(TILE_THREADS)
    conv2d_backward_filter_igemm_16x256(float *__restrict__ dw, const float *__restrict__ dout,
                                      const float *__restrict__ x, int N, int C, int H, int W, int F, int KH, int KW,
                                      int OH, int OW, int stride, int pad, int k_chunk) {
    conv2d_backward_filter_tile<16, 256>(dw, dout, x, N, C, H, W, F, KH, KW, OH, OW, stride, pad, k_chunk);
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
