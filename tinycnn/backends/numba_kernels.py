"""The Numba kernels of the "numba" backend: one compiled function per op pass, on
NumPy arrays, parallel over (image, channel) planes or flat elements.

numba_backend.py decides which kernel runs for which shapes (direct loops or im2col,
chunks of images); the kernels only compute. Each is written to match the reference
(numpy_backend.py): max-pool, ReLU, dropout (Philox4x32-10, the reference's masks),
SGD and Adam bit for bit (the same float32 operations in the same order, no
fastmath); the convolution kernels to float32 rounding (they allow FMA contraction and
reassociated sums, which only changes rounding).

Importing this module picks Numba's threading layer (see numba_backend.py's docstring):
it must happen before Numba first runs a parallel function in the process.
"""

from __future__ import annotations

import os

import numba
import numpy as np
from numba import njit, prange

from ..philox import PHILOX_M0, PHILOX_M1, PHILOX_W0, PHILOX_W1

if "NUMBA_THREADING_LAYER" not in os.environ:
    # Through the environment: Numba re-reads its configuration from it when it compiles.
    os.environ["NUMBA_THREADING_LAYER"] = "workqueue"
    numba.config.THREADING_LAYER = "workqueue"

# Reduction kernels may reorder their sums and fuse multiply-adds: that changes float
# rounding only. Kernels that must match the reference bit for bit use no fastmath.
_SUM_FLAGS = {"reassoc", "contract"}

_U32 = np.uint64(0xFFFFFFFF)
_SH32 = np.uint64(32)
_SH8 = np.uint64(8)
_M0, _M1 = np.uint64(PHILOX_M0), np.uint64(PHILOX_M1)
_W0, _W1 = np.uint64(PHILOX_W0), np.uint64(PHILOX_W1)


# ====================================================================== conv2d
@njit(parallel=True, cache=True)
def im2col(xp, n0, nb, kh, kw, stride, oh, ow, cols):
    """cols[b, (c*KH + u)*KW + v, i*OW + j] = xp[n0 + b, c, i*stride + u, j*stride + v],
    and cols[b, C*KH*KW, :] = 1 (the bias row).
    xp: (N, C, Hp, Wp) already padded; cols: (nb, C*KH*KW + 1, OH*OW)."""
    c = xp.shape[1]
    k = c * kh * kw
    for t in prange(nb * c):
        b = t // c
        ci = t % c
        for u in range(kh):
            for v in range(kw):
                row = cols[b, (ci * kh + u) * kw + v]
                for i in range(oh):
                    src = xp[n0 + b, ci, i * stride + u]
                    base = i * ow
                    if stride == 1:  # unit stride: a plain vectorised copy
                        for j in range(ow):
                            row[base + j] = src[j + v]
                    else:
                        for j in range(ow):
                            row[base + j] = src[j * stride + v]
        if ci == 0:
            cols[b, k, :] = 1


@njit(parallel=True, cache=True)
def col2im(dcols, kh, kw, stride, oh, ow, dxp):
    """The adjoint of im2col: dxp[b, c] = sum over (u, v) of dcols rows scattered back
    to the pixels they were gathered from, in the reference's (u, v) order.
    dcols: (nb, >= C*KH*KW, OH*OW); dxp: (nb, C, Hp, Wp), overwritten."""
    nb, c = dxp.shape[0], dxp.shape[1]
    for t in prange(nb * c):
        b = t // c
        ci = t % c
        plane = dxp[b, ci]
        plane[:, :] = 0
        for u in range(kh):
            for v in range(kw):
                row = dcols[b, (ci * kh + u) * kw + v]
                for i in range(oh):
                    dst = plane[i * stride + u]
                    base = i * ow
                    if stride == 1:
                        for j in range(ow):
                            dst[j + v] += row[base + j]
                    else:
                        for j in range(ow):
                            dst[j * stride + v] += row[base + j]


@njit(cache=True, fastmath=_SUM_FLAGS)
def conv_plane(x_n, w_f, bias, stride, dst):
    """One output plane of a direct convolution:
    dst[i, j] = bias + sum_{c,u,v} w_f[c, u, v] * x_n[c, i*stride + u, j*stride + v].
    Each output row is built in place, one tap at a time, vectorised along the row.
    x_n: (C, Hp, Wp) padded image; w_f: (C, KH, KW) one filter; dst: (OH, OW)."""
    c, kh, kw = w_f.shape
    oh, ow = dst.shape
    for i in range(oh):
        row = dst[i]
        row[:] = bias
        for ci in range(c):
            for u in range(kh):
                src = x_n[ci, i * stride + u]
                for v in range(kw):
                    wv = w_f[ci, u, v]
                    if stride == 1:
                        for j in range(ow):
                            row[j] += wv * src[j + v]
                    else:
                        for j in range(ow):
                            row[j] += wv * src[j * stride + v]


@njit(cache=True, fastmath=_SUM_FLAGS)
def conv_plane_dw(x_n, d, kh, kw, stride, acc):
    """One (image, filter) pair's weight and bias gradients, added to acc (float64):
    acc[(c*KH + u)*KW + v] += sum_{i,j} d[i, j] * x_n[c, i*stride + u, j*stride + v]
    acc[C*KH*KW]           += sum_{i,j} d[i, j]
    It walks the output rows once, summing each row's dot products with its KH input
    rows while they sit in L1 (one pass per tap over the whole plane was 2x slower)."""
    c = x_n.shape[0]
    oh, ow = d.shape
    k = c * kh * kw
    for i in range(oh):
        drow = d[i]
        for ci in range(c):
            for u in range(kh):
                src = x_n[ci, i * stride + u]
                for v in range(kw):
                    s = np.float32(0)
                    if stride == 1:
                        for j in range(ow):
                            s += drow[j] * src[j + v]
                    else:
                        for j in range(ow):
                            s += drow[j] * src[j * stride + v]
                    acc[(ci * kh + u) * kw + v] += s
        s = np.float32(0)
        for j in range(ow):
            s += drow[j]
        acc[k] += s


@njit(cache=True, fastmath=_SUM_FLAGS)
def conv_plane_dx(d_n, w_c, stride, dst):
    """One input-gradient plane: dst[i*stride + u, j*stride + v] += w_c[f, u, v] * d_n[f, i, j],
    summed over f, u, v. d_n: (F, OH, OW); w_c: (F, KH, KW) = w[:, c]; dst: (Hp, Wp)."""
    f, kh, kw = w_c.shape
    oh, ow = d_n.shape[1], d_n.shape[2]
    for fi in range(f):
        for i in range(oh):
            drow = d_n[fi, i]
            for u in range(kh):
                row = dst[i * stride + u]
                for v in range(kw):
                    wv = w_c[fi, u, v]
                    if stride == 1:
                        for j in range(ow):
                            row[j + v] += wv * drow[j]
                    else:
                        for j in range(ow):
                            row[j * stride + v] += wv * drow[j]


@njit(parallel=True, cache=True)
def conv_direct_forward(xp, w, b, stride, out):
    """Direct convolution, one task per (image, filter) plane.
    xp: (N, C, Hp, Wp) padded; out: (N, F, OH, OW)."""
    n, f = out.shape[0], out.shape[1]
    for t in prange(n * f):
        ni = t // f
        fi = t % f
        conv_plane(xp[ni], w[fi], b[fi], stride, out[ni, fi])


@njit(parallel=True, cache=True)
def conv_direct_dw(xp, dout, kh, kw, stride, part):
    """Per-image partial weight and bias gradients, part[n, f] = [dW | db] of image n
    (float64), one task per (image, filter); the caller sums over n."""
    n, f = dout.shape[0], dout.shape[1]
    for t in prange(n * f):
        ni = t // f
        fi = t % f
        part[ni, fi, :] = 0
        conv_plane_dw(xp[ni], dout[ni, fi], kh, kw, stride, part[ni, fi])


@njit(parallel=True, cache=True)
def conv_direct_dx(dout, w, stride, dxp):
    """Input gradient, one task per (image, channel) plane, so no two tasks write the
    same pixel. dxp: (N, C, Hp, Wp), overwritten."""
    n, c = dxp.shape[0], dxp.shape[1]
    for t in prange(n * c):
        ni = t // c
        ci = t % c
        dxp[ni, ci, :, :] = 0
        conv_plane_dx(dout[ni], w[:, ci], stride, dxp[ni, ci])


# ======================================================================= relu
@njit(parallel=True, cache=True)
def relu_forward(x, out):
    """out = max(x, 0) on flat arrays; NaN stays NaN, as with np.maximum."""
    for i in prange(x.size):
        v = x[i]
        out[i] = 0 if v < 0 else v


@njit(parallel=True, cache=True)
def relu_backward(dout, out, dx):
    """dx = dout where out > 0, else 0 (flat arrays)."""
    for i in prange(dout.size):
        dx[i] = dout[i] if out[i] > 0 else 0


# ==================================================================== maxpool
@njit(cache=True)
def pool_plane(xpl, size, stride, opl, apl):
    """Max over each size x size window of one plane (clipped at the bottom/right edge:
    ceil mode), and the offset u*size + v of its FIRST maximum in row-major order (a
    later value wins only if strictly larger)."""
    h, w = xpl.shape
    oh, ow = opl.shape
    if size == 2 and stride == 2:
        # the paper's 2x2/2 windows, the four comparisons written out (same order,
        # same strict >) so the row loop has no inner loops
        full_w = w // 2  # windows lying entirely inside the row
        for i in range(oh):
            top = xpl[2 * i]
            if 2 * i + 1 < h:
                bot = xpl[2 * i + 1]
                for j in range(full_w):
                    best = top[2 * j]
                    k = 0
                    val = top[2 * j + 1]
                    if val > best:
                        best = val
                        k = 1
                    val = bot[2 * j]
                    if val > best:
                        best = val
                        k = 2
                    val = bot[2 * j + 1]
                    if val > best:
                        best = val
                        k = 3
                    opl[i, j] = best
                    apl[i, j] = k
                if full_w < ow:  # the last window hangs over the right edge
                    best = top[2 * full_w]
                    k = 0
                    val = bot[2 * full_w]
                    if val > best:
                        best = val
                        k = 2
                    opl[i, full_w] = best
                    apl[i, full_w] = k
            else:  # the last window row hangs over the bottom edge
                for j in range(ow):
                    best = top[2 * j]
                    k = 0
                    if 2 * j + 1 < w:
                        val = top[2 * j + 1]
                        if val > best:
                            best = val
                            k = 1
                    opl[i, j] = best
                    apl[i, j] = k
    else:
        for i in range(oh):
            r0 = i * stride
            ulim = min(size, h - r0)
            for j in range(ow):
                c0 = j * stride
                vlim = min(size, w - c0)
                best = xpl[r0, c0]
                k = 0
                for u in range(ulim):
                    for v in range(vlim):
                        val = xpl[r0 + u, c0 + v]
                        if val > best:
                            best = val
                            k = u * size + v
                opl[i, j] = best
                apl[i, j] = k


@njit(cache=True)
def unpool_plane(gpl, apl, size, stride, dpl):
    """dpl = zeros, then each window's gradient gpl[i, j] added to the pixel that won
    it. Non-overlapping windows (stride >= size) give one term per pixel: exactly the
    reference's sums."""
    oh, ow = gpl.shape
    dpl[:, :] = 0
    if size == 2 and stride == 2:
        for i in range(oh):
            for j in range(ow):
                k = apl[i, j]
                dpl[2 * i + (k >> 1), 2 * j + (k & 1)] += gpl[i, j]
    else:
        for i in range(oh):
            for j in range(ow):
                k = apl[i, j]
                dpl[i * stride + k // size, j * stride + k % size] += gpl[i, j]


@njit(parallel=True, cache=True)
def maxpool_forward(x, size, stride, out, arg):
    """out[n, c], arg[n, c] = pool_plane of x[n, c], one task per (n, c) plane."""
    n, c = x.shape[0], x.shape[1]
    for t in prange(n * c):
        ni = t // c
        ci = t % c
        pool_plane(x[ni, ci], size, stride, out[ni, ci], arg[ni, ci])


@njit(parallel=True, cache=True)
def maxpool_backward(dout, arg, size, stride, dx):
    """dx[n, c] = unpool_plane of dout[n, c] and arg[n, c], one task per plane; dx is
    overwritten."""
    n, c = dx.shape[0], dx.shape[1]
    for t in prange(n * c):
        ni = t // c
        ci = t % c
        unpool_plane(dout[ni, ci], arg[ni, ci], size, stride, dx[ni, ci])


# ==================================================================== dropout
@njit(inline="always")
def philox_word0(i, k0, k1):
    """First output word of Philox4x32-10 for counter (i lo, i hi, 0, 0) and key
    (k0, k1); every word held in a uint64, as in tinycnn/philox.py."""
    c0 = i & _U32
    c1 = i >> _SH32
    c2 = np.uint64(0)
    c3 = np.uint64(0)
    for r in range(10):
        if r > 0:
            k0 = (k0 + _W0) & _U32
            k1 = (k1 + _W1) & _U32
        p0 = _M0 * c0
        p1 = _M1 * c2
        hi0, lo0 = p0 >> _SH32, p0 & _U32
        hi1, lo1 = p1 >> _SH32, p1 & _U32
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0


@njit(parallel=True, cache=True)
def dropout_forward(x, k0, k1, threshold, scale, out, keep):
    """keep[i] = (philox word 0 of i) >> 8 >= threshold; out = keep ? x * scale : 0."""
    for i in prange(x.size):
        bits = philox_word0(np.uint64(i), k0, k1)
        kept = (bits >> _SH8) >= threshold
        keep[i] = kept
        out[i] = x[i] * scale if kept else 0


@njit(parallel=True, cache=True)
def dropout_backward(dout, keep, scale, dx):
    for i in prange(dout.size):
        dx[i] = dout[i] * scale if keep[i] else 0


# ================================================================== optimizers
@njit(parallel=True, cache=True)
def sgd_update(param, grad, velocity, lr, momentum, weight_decay):
    """The reference's float32 operations, one element at a time, in its order."""
    for i in prange(param.size):
        g = grad[i] + weight_decay * param[i]
        v = velocity[i] * momentum
        v = v + g
        velocity[i] = v
        param[i] = param[i] - lr * v


@njit(parallel=True, cache=True)
def adam_update(param, grad, m, v, lr, beta1, one_minus_beta1, beta2, one_minus_beta2, bias1, bias2, eps,
                 weight_decay):
    """The reference's float32 operations, one element at a time, in its order."""
    for i in prange(param.size):
        p = param[i]
        g = grad[i] + weight_decay * p
        mi = m[i] * beta1
        mi = mi + one_minus_beta1 * g
        vi = v[i] * beta2
        vi = vi + one_minus_beta2 * g * g
        m[i] = mi
        v[i] = vi
        mhat = mi / bias1
        vhat = vi / bias2
        param[i] = p - lr * mhat / (np.sqrt(vhat) + eps)
