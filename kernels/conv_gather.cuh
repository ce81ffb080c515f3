// conv_gather.cuh: the index algebra of the implicit-GEMM convolution gathers, one
// element at a time, and the fused block's pooling of one 2x2 window, used by the
// tensor-core convolutions (conv2d_tc.cu): by their general gathers (any padding and
// stride) and epilogues; their fast gathers (pad 0, or stride 1 for backward-data) read
// per-block tables of offsets instead (conv2d_tc.cu). im2col_at, dgrad_gather_at,
// dgrad_weight_at, wgrad_x_at, wgrad_dout_at and relu_pool_window are the expressions
// conv2d.cu's FP32 tiles inline in their loaders and epilogue (same bounds tests, same
// addresses, same tie rule), so conv2d.cu can call them instead (dgrad_gather_at serves
// only that now: conv2d_tc.cu's stride-1 backward-data reads a tap table, and its other
// strides take the walk); the strided backward-data walk (DgradWalk) is new: it would
// also take the four divisions per element out of conv2d.cu's strided gather.
//
//   x (N, C, H, W), w (F, C, KH, KW), dout (N, F, OH, OW); taps k = (c, u, v) or
//   (f, u, v), output positions p = (n, oh, ow), input pixels q = (n, h, w), all moved
//   along K with the carried Digits of gemm_tile.cuh.
// Offsets inside one tensor are int: the launcher refuses tensors of 2^31 elements or more
// (geometry.py: check_size), and 64-bit products per gathered element cost registers.
#pragma once

#include "gemm_tile.cuh"

// Forward and backward-filter operand: cols[k, p] = x[n, c, ih0 + u, iw0 + v] for the
// tap t = (c, u, v) of the window whose corner is (ih0, iw0) = (oh, ow) * stride - pad in
// image xn = x + n C H W; 0 outside the image, past the last tap (c >= C), or where the
// column itself is out of range (ok false).
__device__ __forceinline__ float im2col_at(const float *__restrict__ xn, const Digits &t, int ih0, int iw0, int C,
                                           int H, int W, bool ok) {
    const int ih = ih0 + t.mid, iw = iw0 + t.lo;
    const bool in = ok && t.hi < C && (unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W;
    return in ? xn[(t.hi * H + ih) * W + iw] : 0.0f;
}

// Backward-data operand: dout[n, f, oh, ow] for the input pixel (h, w) of image n
// (hp = h + pad, wp = w + pad, dout_n = dout + n F OH OW) and the tap t = (f, u, v), where
// oh stride = hp - u and ow stride = wp - v: the output whose window put tap (u, v) on the
// pixel, if there is one (a gather, so dx needs no scatter); 0 otherwise.
// UNIT_STRIDE drops the divisions by the stride.
template <bool UNIT_STRIDE>
__device__ __forceinline__ float dgrad_gather_at(const float *__restrict__ dout_n, const Digits &t, int hp, int wp,
                                                 int stride, int F, int OH, int OW, bool ok) {
    const int th = hp - t.mid, tw = wp - t.lo;
    int oh = th, ow = tw;
    bool hit = ok && t.hi < F && th >= 0 && tw >= 0;
    if (!UNIT_STRIDE) {
        hit = hit && th % stride == 0 && tw % stride == 0;
        oh = th / stride;
        ow = tw / stride;
    }
    hit = hit && oh < OH && ow < OW;
    return hit ? dout_n[(t.hi * OH + oh) * OW + ow] : 0.0f;
}

// The same gather for any stride, walked one tap at a time WITHOUT dividing: along the
// taps (f, u, v) of one input pixel, hp - u and wp - v only step down by one (or reset
// at a carry), so their floor quotient and remainder by the stride are carried like the
// digits. dgrad_strided_start divides (once per k-tile), dgrad_strided_at reads,
// dgrad_strided_next steps t and the quotients to the next tap; the value is the one
// dgrad_gather_at<false> gives (tap (u, v) hits when both remainders are 0 and the
// quotients (oh, ow) lie in [0, OH) x [0, OW)).
struct DgradWalk {
    int qh, rh, qw, rw;  // (hp - u) = qh stride + rh, (wp - v) = qw stride + rw, floor division
};

__device__ __forceinline__ void dgrad_divmod(int num, int stride, int &q, int &r) {
    // num >= 0: the quotient and remainder; below 0 no tap can hit until the next reset,
    // and q < 0 says so (stepping down only lowers it)
    q = num >= 0 ? num / stride : -1;
    r = num >= 0 ? num - q * stride : 0;
}

__device__ __forceinline__ DgradWalk dgrad_strided_start(const Digits &t, int hp, int wp, int stride) {
    DgradWalk d;
    dgrad_divmod(hp - t.mid, stride, d.qh, d.rh);
    dgrad_divmod(wp - t.lo, stride, d.qw, d.rw);
    return d;
}

__device__ __forceinline__ float dgrad_strided_at(const float *__restrict__ dout_n, const Digits &t,
                                                  const DgradWalk &d, int F, int OH, int OW, bool ok) {
    const bool hit = ok && t.hi < F && (d.rh | d.rw) == 0 && d.qh >= 0 && d.qw >= 0 && d.qh < OH && d.qw < OW;
    return hit ? dout_n[(t.hi * OH + d.qh) * OW + d.qw] : 0.0f;
}

// t += 1 tap (radices KH, KW), d following it; (qh0, rh0), (qw0, rw0) are the divmods of
// hp and wp themselves (u = 0, v = 0), where a carry resets them.
__device__ __forceinline__ void dgrad_strided_next(Digits &t, DgradWalk &d, int KH, int KW, int stride, int qh0,
                                                   int rh0, int qw0, int rw0) {
    t.lo++;
    if (--d.rw < 0) {
        d.rw += stride;
        d.qw--;
    }
    if (t.lo == KW) {
        t.lo = 0;
        d.qw = qw0;
        d.rw = rw0;
        t.mid++;
        if (--d.rh < 0) {
            d.rh += stride;
            d.qh--;
        }
        if (t.mid == KH) {
            t.mid = 0;
            d.qh = qh0;
            d.rh = rh0;
            t.hi++;
        }
    }
}

// Backward-data weight operand: w[f, c, u, v] as A[c][k = (f, uv)], t = digits (f, 0, uv).
__device__ __forceinline__ float dgrad_weight_at(const float *__restrict__ w, const Digits &t, int c, int C, int F,
                                                 int KHW) {
    return (c < C && t.hi < F) ? w[(t.hi * C + c) * KHW + t.lo] : 0.0f;
}

// Backward-filter x operand: x[n, c, oh stride + u - pad, ow stride + v - pad] for the
// output position pos = (n, oh, ow) and a fixed tap (xc = x + c H W, kc_u = u - pad,
// kc_v = v - pad, x_image = C H W); 0 outside the image or where ok is false.
__device__ __forceinline__ float wgrad_x_at(const float *__restrict__ xc, const Digits &pos, int kc_u, int kc_v,
                                            int stride, int H, int W, int x_image, bool ok) {
    const int ih = pos.mid * stride + kc_u, iw = pos.lo * stride + kc_v;
    const bool in = ok && (unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W;
    return in ? xc[pos.hi * x_image + ih * W + iw] : 0.0f;
}

// Backward-filter dout operand: dout[n, f, ohw] for pos = (n, 0, ohw) (digits_of(p, 1, OHW)).
__device__ __forceinline__ float wgrad_dout_at(const float *__restrict__ dout, const Digits &pos, int f, int F,
                                               int OHW, bool ok) {
    return (ok && f < F) ? dout[(pos.hi * F + f) * OHW + pos.lo] : 0.0f;
}

// The fused block's epilogue for one filter and one 2x2 window: v[j] the conv outputs of
// window member j = 2 dy + dx (row-major), valid[j] false for members hanging over the
// bottom/right edge (ceil mode; member 0 is always inside). relu(v + bias), then the
// FIRST maximum in window order (only a strictly larger value replaces it): the values
// and ties of relu_forward followed by maxpool2d_forward, bit for bit.
__device__ __forceinline__ void relu_pool_window(const float v[4], float bias, const bool valid[4], float &best,
                                                 int &best_k) {
    best = 0.0f;
    best_k = 0;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const float s = v[j] + bias;
        const float r = s > 0.0f ? s : 0.0f;
        if (j == 0)
            best = r;
        else if (valid[j] && r > best) {
            best = r;
            best_k = j;
        }
    }
}
