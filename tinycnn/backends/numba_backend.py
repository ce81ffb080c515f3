"""A fast CPU backend: the op contract compiled with Numba, plus BLAS where BLAS wins.

Same names, signatures and semantics as the NumPy reference (numpy_backend.py); the
arrays are plain NumPy arrays (float32 by default). What differs is how the work is
done:

- conv2d, im2col path (C*KH*KW > DIRECT_MAX_K): the classic per-image im2col of Caffe,
  cols (C*KH*KW + 1, OH*OW) in (c, u, v) row order, so that W.reshape(F, -1) @ cols is
  already the NCHW output plane: no transposes. The extra row of ones carries the bias
  through the product (and gives db for free in the backward pass). Images go through
  in chunks whose columns stay small (CHUNK_BYTES), so the full (N*OH*OW, C*KH*KW)
  matrix of the reference is never built; the backward pass rebuilds each chunk's
  columns instead of caching them (im2col is a copy, cheap next to the products).
  The products are NumPy matmul, i.e. multi-threaded BLAS.
- conv2d, direct path (small C*KH*KW, e.g. the first layer with C=1: a GEMM with K=9
  is all memory traffic): plain loops over output rows, vectorised along the row.
- relu, max-pool, dropout (Philox4x32-10, bit-identical masks), SGD and Adam: one
  parallel Numba pass each, parallel over (image, channel) planes or flat elements.
- dense and the loss: BLAS / the reference code (tiny, or already BLAS-bound).

Only the op contract lives here. A fused conv + ReLU + max-pool experiment built on
these helpers (it did not make the whole step faster: bench/RESULTS.md) lives in
bench/numba_fused.py.

Parity: max-pool, relu, dropout, SGD and Adam match the reference bit for bit (same
float32 operations in the same order; no fastmath in them). conv2d and dense match to
float32 rounding (BLAS sums in its own order; conv kernels allow FMA contraction and
reassociated sums, which only changes rounding).

Threads: Numba's prange uses NUMBA_NUM_THREADS (default: all cores); the matmuls use
BLAS's own pool (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS). The two pools take turns,
op by op and chunk by chunk, so a pool must not keep spinning on the cores once its
work is done: with Numba's OpenMP layer (GNU OpenMP spins after each parallel region)
the BLAS products ran at half speed on a 2-core machine, and conv2d 2-7x slower. So
this module picks Numba's "workqueue" layer (threads sleep when idle) unless the user
chose a layer with NUMBA_THREADING_LAYER; it must happen before Numba first runs a
parallel function in the process, else Numba keeps the layer it already started.
(workqueue does not allow two Python threads in parallel kernels at once; set
NUMBA_THREADING_LAYER=omp or tbb for that.)
"""

from __future__ import annotations

import os

import numba
import numpy as np
from numba import njit, prange

from ..philox import PHILOX_M0, PHILOX_M1, PHILOX_W0, PHILOX_W1, keep_threshold, seed_to_key
from ..precision import choose as choose_precision
from ..shapes import conv2d_out_hw, pool_out_size
from .numpy_backend import ComposedBlocks, HostArrays, NumpyBackend

if "NUMBA_THREADING_LAYER" not in os.environ:
    # Through the environment: Numba re-reads its configuration from it when it compiles.
    os.environ["NUMBA_THREADING_LAYER"] = "workqueue"
    numba.config.THREADING_LAYER = "workqueue"

# Convolutions with at most this many taps per output (C*KH*KW) run as direct loops.
DIRECT_MAX_K = 32
# Budget for one chunk of im2col columns: a few MiB stays in the last-level cache.
CHUNK_BYTES = 8 << 20

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
def _im2col(xp, n0, nb, kh, kw, stride, oh, ow, cols):
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
def _col2im(dcols, kh, kw, stride, oh, ow, dxp):
    """The adjoint of _im2col: dxp[b, c] = sum over (u, v) of dcols rows scattered back
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
def _conv_plane(x_n, w_f, bias, stride, dst):
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
def _conv_plane_dw(x_n, d, kh, kw, stride, acc):
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
def _conv_plane_dx(d_n, w_c, stride, dst):
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
def _conv_direct_forward(xp, w, b, stride, out):
    """Direct convolution, one task per (image, filter) plane.
    xp: (N, C, Hp, Wp) padded; out: (N, F, OH, OW)."""
    n, f = out.shape[0], out.shape[1]
    for t in prange(n * f):
        ni = t // f
        fi = t % f
        _conv_plane(xp[ni], w[fi], b[fi], stride, out[ni, fi])


@njit(parallel=True, cache=True)
def _conv_direct_dw(xp, dout, kh, kw, stride, part):
    """Per-image partial weight and bias gradients, part[n, f] = [dW | db] of image n
    (float64), one task per (image, filter); the caller sums over n."""
    n, f = dout.shape[0], dout.shape[1]
    for t in prange(n * f):
        ni = t // f
        fi = t % f
        part[ni, fi, :] = 0
        _conv_plane_dw(xp[ni], dout[ni, fi], kh, kw, stride, part[ni, fi])


@njit(parallel=True, cache=True)
def _conv_direct_dx(dout, w, stride, dxp):
    """Input gradient, one task per (image, channel) plane, so no two tasks write the
    same pixel. dxp: (N, C, Hp, Wp), overwritten."""
    n, c = dxp.shape[0], dxp.shape[1]
    for t in prange(n * c):
        ni = t // c
        ci = t % c
        dxp[ni, ci, :, :] = 0
        _conv_plane_dx(dout[ni], w[:, ci], stride, dxp[ni, ci])


# ======================================================================= relu
@njit(parallel=True, cache=True)
def _relu_forward(x, out):
    """out = max(x, 0) on flat arrays; NaN stays NaN, as with np.maximum."""
    for i in prange(x.size):
        v = x[i]
        out[i] = 0 if v < 0 else v


@njit(parallel=True, cache=True)
def _relu_backward(dout, out, dx):
    """dx = dout where out > 0, else 0 (flat arrays)."""
    for i in prange(dout.size):
        dx[i] = dout[i] if out[i] > 0 else 0


# ==================================================================== maxpool
@njit(cache=True)
def _pool_plane(xpl, size, stride, opl, apl):
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
def _unpool_plane(gpl, apl, size, stride, dpl):
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
def _maxpool_forward(x, size, stride, out, arg):
    """out[n, c], arg[n, c] = _pool_plane of x[n, c], one task per (n, c) plane."""
    n, c = x.shape[0], x.shape[1]
    for t in prange(n * c):
        ni = t // c
        ci = t % c
        _pool_plane(x[ni, ci], size, stride, out[ni, ci], arg[ni, ci])


@njit(parallel=True, cache=True)
def _maxpool_backward(dout, arg, size, stride, dx):
    """dx[n, c] = _unpool_plane of dout[n, c] and arg[n, c], one task per plane; dx is
    overwritten."""
    n, c = dx.shape[0], dx.shape[1]
    for t in prange(n * c):
        ni = t // c
        ci = t % c
        _unpool_plane(dout[ni, ci], arg[ni, ci], size, stride, dx[ni, ci])


# ==================================================================== dropout
@njit(inline="always")
def _philox_word0(i, k0, k1):
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
def _dropout_forward(x, k0, k1, threshold, scale, out, keep):
    """keep[i] = (philox word 0 of i) >> 8 >= threshold; out = keep ? x * scale : 0."""
    for i in prange(x.size):
        bits = _philox_word0(np.uint64(i), k0, k1)
        kept = (bits >> _SH8) >= threshold
        keep[i] = kept
        out[i] = x[i] * scale if kept else 0


@njit(parallel=True, cache=True)
def _dropout_backward(dout, keep, scale, dx):
    for i in prange(dout.size):
        dx[i] = dout[i] * scale if keep[i] else 0


# ================================================================== optimizers
@njit(parallel=True, cache=True)
def _sgd_update(param, grad, velocity, lr, momentum, weight_decay):
    """The reference's float32 operations, one element at a time, in its order."""
    for i in prange(param.size):
        g = grad[i] + weight_decay * param[i]
        v = velocity[i] * momentum
        v = v + g
        velocity[i] = v
        param[i] = param[i] - lr * v


@njit(parallel=True, cache=True)
def _adam_update(param, grad, m, v, lr, beta1, one_minus_beta1, beta2, one_minus_beta2, bias1, bias2, eps,
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


# ==================================================================== backend
def _chunk(per_image_bytes: int, n: int) -> int:
    """Images per chunk so that one chunk's columns fit CHUNK_BYTES (at least one)."""
    return max(1, min(n, CHUNK_BYTES // max(1, per_image_bytes)))


def _pad(x, pad):
    return np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x


def _arg_dtype(size: int):
    return np.int8 if size * size <= 127 else np.int32


class NumbaBackend(ComposedBlocks, HostArrays):
    """The op contract of docs/design.md compiled for the CPU with Numba (see the module
    docstring for how each op is done)."""

    name = "numba"
    precisions = ("fp32",)  # the tensor-core modes run on cuda, cuda-emu and numpy
    precision = "fp32"

    def __init__(self, dtype=np.float32, precision: str | None = None):
        self.dtype = np.dtype(dtype)
        self.precision = choose_precision(precision, self.precisions, "fp32", self.name)
        self._ref = NumpyBackend(dtype)  # dense (one BLAS product) and the tiny ops reuse its code

    def __repr__(self) -> str:
        return f"NumbaBackend(dtype={self.dtype.name})"

    def device_name(self) -> str:
        import platform

        return (f"CPU ({platform.processor() or platform.machine()}), Numba {numba.__version__}, "
                f"{numba.get_num_threads()} threads")

    # ------------------------------------------------------------------ conv2d
    def _conv_prepare(self, x, w, b, stride, pad):
        x = np.ascontiguousarray(x)
        w = np.ascontiguousarray(w, dtype=x.dtype)
        b = np.ascontiguousarray(b, dtype=x.dtype)
        oh, ow = conv2d_out_hw(x.shape, w.shape, stride, pad)
        return x, w, b, oh, ow

    @staticmethod
    def _wmat(w, b):
        """[W | b]: (F, C*KH*KW + 1), the weights beside the bias, for cols' row of ones."""
        f = w.shape[0]
        return np.concatenate([w.reshape(f, -1), b.reshape(f, 1)], axis=1)

    def _conv_col_chunks(self, xp, kh, kw, stride, oh, ow):
        """Yield (n0, nb, cols) chunk by chunk: cols (nb, C*KH*KW + 1, OH*OW) holds the
        chunk's columns and a last row of ones (the bias's input); it is overwritten
        by the next chunk."""
        n, c = xp.shape[0], xp.shape[1]
        k = c * kh * kw
        nb_max = _chunk((k + 1) * oh * ow * xp.itemsize, n)
        cols = np.empty((nb_max, k + 1, oh * ow), dtype=xp.dtype)
        for n0 in range(0, n, nb_max):
            nb = min(nb_max, n - n0)
            _im2col(xp, n0, nb, kh, kw, stride, oh, ow, cols)
            yield n0, nb, cols[:nb]

    def conv2d_forward(self, x, w, b, stride: int = 1, pad: int = 0):
        """2-D convolution; x (N, C, H, W), w (F, C, KH, KW), b (F,) -> (N, F, OH, OW).

        Direct loops when C*KH*KW <= DIRECT_MAX_K, else per-chunk im2col and
        out[n] = [W | b] @ [cols[n]; 1] (BLAS). The cache keeps the padded input."""
        stride, pad = int(stride), int(pad)
        x, w, b, oh, ow = self._conv_prepare(x, w, b, stride, pad)
        n, f = x.shape[0], w.shape[0]
        xp = np.ascontiguousarray(_pad(x, pad))
        out = np.empty((n, f, oh, ow), dtype=x.dtype)
        if w[0].size <= DIRECT_MAX_K:
            _conv_direct_forward(xp, w, b, stride, out)
        else:
            wmat = self._wmat(w, b)
            for n0, nb, cols in self._conv_col_chunks(xp, *w.shape[2:], stride, oh, ow):
                np.matmul(wmat, cols, out=out[n0 : n0 + nb].reshape(nb, f, oh * ow))
        return out, (x.shape, xp, w, stride, pad)

    def conv2d_backward(self, dout, cache, need_dx: bool = True):
        """dout (N, F, OH, OW) -> dx (N, C, H, W) (None unless need_dx), dw (F, C, KH, KW), db (F,).

        im2col path, per chunk: [dW | db] += dout[n] @ [cols[n]; 1].T and
        dcols = W.T @ dout[n], scattered back onto the input by col2im."""
        x_shape, xp, w, stride, pad = cache
        dout = np.ascontiguousarray(dout, dtype=xp.dtype)
        f, oh, ow = dout.shape[1], dout.shape[2], dout.shape[3]
        return self._conv_backward(x_shape, xp, w, stride, pad, oh, ow,
                                   lambda n0, nb: dout[n0 : n0 + nb].reshape(nb, f, oh * ow), need_dx)

    def _conv_backward(self, x_shape, xp, w, stride, pad, oh, ow, dout_chunk, need_dx: bool = True):
        """conv2d's backward pass, with the output gradient of images n0 .. n0+nb-1 as
        dout_chunk(n0, nb) -> (nb, F, OH*OW) (all images at once on the direct path), so
        that a caller can build it chunk by chunk rather than whole (bench/numba_fused.py
        does)."""
        n, c, h, wd = x_shape
        f, _, kh, kw = w.shape
        k = c * kh * kw
        dxp = np.empty(xp.shape, dtype=xp.dtype) if need_dx else None
        if k <= DIRECT_MAX_K:
            dout = dout_chunk(0, n).reshape(n, f, oh, ow)
            part = np.empty((n, f, k + 1), dtype=np.float64)
            _conv_direct_dw(xp, dout, kh, kw, stride, part)
            if need_dx:
                _conv_direct_dx(dout, w, stride, dxp)
            grad = part.sum(axis=0)
        else:
            grad = np.zeros((f, k + 1), dtype=np.float64)
            wmat_t = np.ascontiguousarray(w.reshape(f, k).T)  # (K, F)
            dcols = None
            for n0, nb, cols in self._conv_col_chunks(xp, kh, kw, stride, oh, ow):
                d = dout_chunk(n0, nb)
                grad += np.matmul(d, cols.transpose(0, 2, 1)).sum(axis=0)  # [dW | db]: the ones row gives db
                if not need_dx:
                    continue
                if dcols is None:
                    dcols = np.empty((cols.shape[0], k, oh * ow), dtype=xp.dtype)
                np.matmul(wmat_t, d, out=dcols[:nb])
                _col2im(dcols[:nb], kh, kw, stride, oh, ow, dxp[n0 : n0 + nb])
        dw = grad[:, :k].reshape(f, c, kh, kw).astype(xp.dtype)
        db = grad[:, k].astype(xp.dtype)
        if not need_dx:
            return None, dw, db
        dx = np.ascontiguousarray(dxp[:, :, pad : pad + h, pad : pad + wd]) if pad else dxp
        return dx, dw, db

    # -------------------------------------------------------------------- relu
    def relu_forward(self, x):
        """out = max(x, 0). x: any shape -> out: same shape."""
        x = np.ascontiguousarray(x)
        out = np.empty_like(x)
        _relu_forward(x.reshape(-1), out.reshape(-1))
        return out, out

    def relu_backward(self, dout, cache):
        """dx = dout where the output was positive, else 0."""
        out = cache
        dout = np.ascontiguousarray(dout, dtype=out.dtype)
        dx = np.empty_like(dout)
        _relu_backward(dout.reshape(-1), out.reshape(-1), dx.reshape(-1))
        return dx

    # ----------------------------------------------------------------- maxpool
    def maxpool2d_forward(self, x, size: int = 2, stride: int = 2, ceil_mode: bool = True):
        """Max-pool (ceil mode by default; first maximum wins ties), as the reference.
        x: (N, C, H, W) -> out: (N, C, OH, OW)."""
        size, stride = int(size), int(stride)
        x = np.ascontiguousarray(x)
        n, c, h, wd = x.shape
        oh, ow = pool_out_size(h, size, stride, ceil_mode), pool_out_size(wd, size, stride, ceil_mode)
        out = np.empty((n, c, oh, ow), dtype=x.dtype)
        arg = np.empty((n, c, oh, ow), dtype=_arg_dtype(size))
        _maxpool_forward(x, size, stride, out, arg)
        return out, (x.shape, arg, size, stride)

    def maxpool2d_backward(self, dout, cache):
        """dout: (N, C, OH, OW) -> dx: (N, C, H, W); each window's gradient goes to
        its winner (overlapping windows add)."""
        x_shape, arg, size, stride = cache
        dout = np.ascontiguousarray(dout)
        dx = np.empty(x_shape, dtype=dout.dtype)
        _maxpool_backward(dout, arg, size, stride, dx)
        return dx

    # ------------------------------------------------------------------- dense
    def dense_forward(self, x, w, b):
        """y = x @ w + b.   x: (N, D), w: (D, M), b: (M,) -> y: (N, M). The reference's
        code: it is one BLAS product already, nothing for Numba to add."""
        return self._ref.dense_forward(x, w, b)

    def dense_backward(self, dout, cache, need_dx: bool = True):
        """dout: (N, M) -> dx = dout @ w.T (None unless need_dx), dw = x.T @ dout, db = sum_n dout
        (the reference's)."""
        return self._ref.dense_backward(dout, cache, need_dx)

    # ----------------------------------------------------------------- dropout
    def dropout_forward(self, x, p: float, seed: int, train: bool = True):
        """Inverted dropout with the reference's Philox mask, bit for bit.
        x: any shape -> out: same shape; identity when not training or p == 0."""
        if not train or p == 0.0:
            return x, None
        x = np.ascontiguousarray(x)
        k0, k1 = seed_to_key(seed)
        threshold = np.uint64(keep_threshold(p))
        scale = x.dtype.type(1.0 / (1.0 - p))
        out = np.empty_like(x)
        keep = np.empty(x.shape, dtype=np.bool_)
        _dropout_forward(x.reshape(-1), np.uint64(k0), np.uint64(k1), threshold, scale, out.reshape(-1),
                         keep.reshape(-1))
        return out, (keep, scale)

    def dropout_backward(self, dout, cache):
        """dx = dout * keep / (1 - p): the forward pass's mask and scale."""
        if cache is None:
            return dout
        keep, scale = cache
        dout = np.ascontiguousarray(dout)
        dx = np.empty_like(dout)
        _dropout_backward(dout.reshape(-1), keep.reshape(-1), dout.dtype.type(scale), dx.reshape(-1))
        return dx

    # -------------------------------------------------------------- softmax CE
    def softmax_cross_entropy(self, logits, labels):
        """Mean softmax cross-entropy and its gradient: (N, K) logits are tiny, so
        this is the reference's code."""
        return self._ref.softmax_cross_entropy(logits, labels)

    def softmax(self, logits):
        return self._ref.softmax(logits)

    # ---------------------------------------------------------- optimizer steps
    @staticmethod
    def _flat_views(*arrays):
        """1-D views of in-place buffers, or None when one cannot be viewed flat."""
        if not all(isinstance(a, np.ndarray) and a.flags.c_contiguous for a in arrays):
            return None
        if len({a.dtype for a in arrays}) != 1:
            return None
        return [a.reshape(-1) for a in arrays]

    def sgd_update(self, param, grad, velocity, lr: float, momentum: float, weight_decay: float):
        """In-place SGD with momentum and L2 weight decay, as the reference:
        g = grad + weight_decay * param;  v = momentum * v + g;  param -= lr * v."""
        flat = self._flat_views(param, grad, velocity)
        if flat is None:
            return self._ref.sgd_update(param, grad, velocity, lr, momentum, weight_decay)
        t = param.dtype.type
        _sgd_update(*flat, t(lr), t(momentum), t(weight_decay))

    def adam_update(self, param, grad, m, v, lr: float, beta1: float, beta2: float, eps: float,
                    weight_decay: float, step: int):
        """In-place Adam with bias correction, as the reference (step counts from 1)."""
        flat = self._flat_views(param, grad, m, v)
        if flat is None:
            return self._ref.adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step)
        t = param.dtype.type
        _adam_update(*flat, t(lr), t(beta1), t(1 - beta1), t(beta2), t(1 - beta2), t(1 - beta1**step),
                     t(1 - beta2**step), t(eps), t(weight_decay))
