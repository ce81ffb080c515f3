"""An experiment, kept out of the library: conv2d + bias + ReLU + max-pool fused into one
op on the Numba backend, and a layer that runs a network's conv blocks through it.

    out, cache = conv_relu_pool_forward(x, w, b, stride, pad, pool_size, pool_stride, ceil_mode)
    dx, dw, db = conv_relu_pool_backward(dout, cache)
    net = fuse_conv_blocks(paper_net(backend="numba"))   # ConvReluPool layers, same parameters

What it does: the values of ``maxpool2d(relu(conv2d(x, w, b)))`` and its backward
pass (same window winners, same tie rule), without ever storing the full-resolution
conv output, the ReLU output or their gradients. Direct convolutions (C*KH*KW <=
DIRECT_MAX_K) pool each (image, filter) plane as soon as it is computed; im2col
convolutions run chunk by chunk and pool each chunk while it is still in cache. The
cache keeps the padded input, the pooled output and the window winners; the backward
pass rebuilds the conv-output gradient from them (a window whose maximum was <= 0
passes nothing: the ReLU), chunk by chunk on the im2col path.

What was measured (bench/RESULTS.md, ``python -m bench.bench_step_cpu``, 2 vCPUs,
2026-11-25): on its own the first block of paper_net got faster (15 + 36 ms forward +
backward, against 42 + 54 ms for conv, ReLU and max-pool in turn), the others gained
little, since their ReLU and max-pool are already cheap; over a whole training step
at batch 32 it did not come out faster (0.636 s against 0.632 s for the three ops in
one run, 0.903 s against 0.659 s in another). Its other gain is memory.

Why it is not in the library: no step got faster, it exists on one backend only, and
a layer would need a second code path (the three ops elsewhere). So it lives here,
built on the library's private Numba helpers (tinycnn/backends/numba_backend.py):
the conv planes, im2col chunks and conv backward pass, the pooling planes and the
relu kernels are the library's own, imported, not copied. What is added is only the
fusion: a ReLU clamp after each pooled plane and a ReLU gate before each unpooled
one. bench/test_numba_fused.py holds it to the three reference ops.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from tinycnn import backends
from tinycnn.backends.numba_backend import DIRECT_MAX_K, NumbaBackend, _arg_dtype, _pad
from tinycnn.backends.numba_kernels import conv_plane as _conv_plane
from tinycnn.backends.numba_kernels import conv_plane_dw as _conv_plane_dw
from tinycnn.backends.numba_kernels import conv_plane_dx as _conv_plane_dx
from tinycnn.backends.numba_kernels import maxpool_backward as _maxpool_backward
from tinycnn.backends.numba_kernels import maxpool_forward as _maxpool_forward
from tinycnn.backends.numba_kernels import pool_plane as _pool_plane
from tinycnn.backends.numba_kernels import relu_backward as _relu_backward
from tinycnn.backends.numba_kernels import relu_forward as _relu_forward
from tinycnn.backends.numba_kernels import unpool_plane as _unpool_plane
from tinycnn.layers import Conv2D, Layer, MaxPool2D, ReLU
from tinycnn.model import Sequential
from tinycnn.shapes import pool_out_size


# ------------------------------------------------------------ direct path kernels
@njit(cache=True)
def _relu_plane(pl):
    """pl = max(pl, 0) in place, as relu_forward (NaN stays NaN). Applied to a pooled
    plane it gives maxpool(relu(x)), since relu is monotone."""
    for i in range(pl.shape[0]):
        for j in range(pl.shape[1]):
            if pl[i, j] < 0:
                pl[i, j] = 0


@njit(parallel=True, cache=True)
def _conv_direct_relu_pool_forward(xp, w, b, stride, oh, ow, size, pstride, out, arg):
    """maxpool(relu(direct conv)) one (image, filter) plane at a time: the conv plane
    lives in a per-task buffer (in L2) and is pooled at once, never stored whole."""
    n, f = out.shape[0], out.shape[1]
    for t in prange(n * f):
        ni = t // f
        fi = t % f
        plane = np.empty((oh, ow), dtype=xp.dtype)
        _conv_plane(xp[ni], w[fi], b[fi], stride, plane)
        _pool_plane(plane, size, pstride, out[ni, fi], arg[ni, fi])
        _relu_plane(out[ni, fi])


@njit(parallel=True, cache=True)
def _conv_direct_relu_pool_backward(xp, w, stride, dout, pooled, arg, size, pstride, oh, ow, part, dxp):
    """The fused op's backward pass on the direct path, one task per image: rebuild
    that image's conv-output gradient (F, OH, OW) from the pooled output and the
    winners (the ReLU gate, then unpooling), then its [dW | db] partial (part[n],
    float64) and its input gradient dxp[n] (overwritten)."""
    n, f = dout.shape[0], dout.shape[1]
    c = dxp.shape[1]
    kh, kw = w.shape[2], w.shape[3]
    ph, pw = dout.shape[2], dout.shape[3]
    for ni in prange(n):
        dconv = np.empty((f, oh, ow), dtype=xp.dtype)
        gated = np.empty((ph, pw), dtype=dout.dtype)
        for fi in range(f):
            g, p = dout[ni, fi], pooled[ni, fi]
            for i in range(ph):  # relu_backward at the pooled resolution
                for j in range(pw):
                    gated[i, j] = g[i, j] if p[i, j] > 0 else 0
            _unpool_plane(gated, arg[ni, fi], size, pstride, dconv[fi])
            part[ni, fi, :] = 0
            _conv_plane_dw(xp[ni], dconv[fi], kh, kw, stride, part[ni, fi])
        for ci in range(c):
            dxp[ni, ci, :, :] = 0
            _conv_plane_dx(dconv, w[:, ci], stride, dxp[ni, ci])


# ---------------------------------------------------------------------- the op
def _backend() -> NumbaBackend:
    """The shared numba backend, for its conv helpers (they take dtypes from the arrays)."""
    return backends.get("numba")


def conv_relu_pool_forward(x, w, b, stride: int = 1, pad: int = 0, pool_size: int = 2, pool_stride: int = 2,
                           ceil_mode: bool = True):
    """maxpool2d(relu(conv2d(x, w, b))) in one op, without storing the conv output.

    x: (N, C, H, W), w: (F, C, KH, KW), b: (F,) -> out: (N, F, PH, PW), and the cache
    for conv_relu_pool_backward. Same values as the three ops of the numba backend."""
    be = _backend()
    stride, pad, pool_size, pool_stride = int(stride), int(pad), int(pool_size), int(pool_stride)
    x, w, b, oh, ow = be._conv_prepare(x, w, b, stride, pad)
    n, f = x.shape[0], w.shape[0]
    ph = pool_out_size(oh, pool_size, pool_stride, ceil_mode)
    pw = pool_out_size(ow, pool_size, pool_stride, ceil_mode)
    xp = np.ascontiguousarray(_pad(x, pad))
    out = np.empty((n, f, ph, pw), dtype=x.dtype)
    arg = np.empty((n, f, ph, pw), dtype=_arg_dtype(pool_size))
    if w[0].size <= DIRECT_MAX_K:
        _conv_direct_relu_pool_forward(xp, w, b, stride, oh, ow, pool_size, pool_stride, out, arg)
    else:
        conv, wmat = None, be._wmat(w, b)
        for n0, nb, cols in be._conv_col_chunks(xp, *w.shape[2:], stride, oh, ow):
            if conv is None:  # sized by the first (largest) chunk
                conv = np.empty((cols.shape[0], f, oh, ow), dtype=x.dtype)
            np.matmul(wmat, cols, out=conv[:nb].reshape(nb, f, oh * ow))
            pooled = out[n0 : n0 + nb]
            _maxpool_forward(conv[:nb], pool_size, pool_stride, pooled, arg[n0 : n0 + nb])
            _relu_forward(pooled.reshape(-1), pooled.reshape(-1))  # in place, while in cache
    return out, (x.shape, xp, w, stride, pad, out, arg, pool_size, pool_stride, (oh, ow))


def conv_relu_pool_backward(dout, cache, need_dx: bool = True):
    """dout: (N, F, PH, PW) -> dx (N, C, H, W), dw (F, C, KH, KW), db (F,).
    The conv output's gradient is rebuilt from the pooled output and the window
    winners, chunk by chunk on the im2col path."""
    be = _backend()
    x_shape, xp, w, stride, pad, pooled, arg, pool_size, pool_stride, (oh, ow) = cache
    dout = np.ascontiguousarray(dout, dtype=xp.dtype)
    f = w.shape[0]
    if w[0].size <= DIRECT_MAX_K:
        n, c, h, wd = x_shape
        k = w[0].size
        part = np.empty((n, f, k + 1), dtype=np.float64)
        dxp = np.empty(xp.shape, dtype=xp.dtype)
        _conv_direct_relu_pool_backward(xp, w, stride, dout, pooled, arg, pool_size, pool_stride, oh, ow, part,
                                        dxp)
        grad = part.sum(axis=0)
        dx = np.ascontiguousarray(dxp[:, :, pad : pad + h, pad : pad + wd]) if pad else dxp
        return dx, grad[:, :k].reshape(w.shape).astype(xp.dtype), grad[:, k].astype(xp.dtype)
    scratch = []

    def dconv_chunk(n0, nb):
        if not scratch:  # sized by the first (largest) chunk
            scratch.append((np.empty((nb,) + dout.shape[1:], dtype=xp.dtype),
                            np.empty((nb, f, oh, ow), dtype=xp.dtype)))
        gated, dconv = scratch[0][0][:nb], scratch[0][1][:nb]
        _relu_backward(dout[n0 : n0 + nb].reshape(-1), pooled[n0 : n0 + nb].reshape(-1), gated.reshape(-1))
        _maxpool_backward(gated, arg[n0 : n0 + nb], pool_size, pool_stride, dconv)
        return dconv.reshape(nb, f, oh * ow)

    return be._conv_backward(x_shape, xp, w, stride, pad, oh, ow, dconv_chunk, need_dx)


# ------------------------------------------------------------------- the layer
class ConvReluPool(Layer):
    """Conv2D + ReLU + MaxPool2D as one layer over the fused op (numba backend only):
    what a fused layer in tinycnn could look like. Shares the Conv2D's parameters."""

    def __init__(self, conv: Conv2D, pool: MaxPool2D):
        super().__init__()
        self.conv, self.pool = conv, pool
        self.params = conv.params

    def forward(self, x, train=False):
        if not isinstance(self.backend, NumbaBackend):
            raise TypeError(f"ConvReluPool runs on the numba backend only, not {self.backend!r}")
        c, p = self.conv, self.pool
        out, self.cache = conv_relu_pool_forward(x, self.params["w"].value, self.params["b"].value, c.stride, c.pad,
                                                 p.size, p.stride, p.ceil_mode)
        return out

    def backward(self, dy, need_dx=True):
        dx, self.params["w"].grad, self.params["b"].grad = conv_relu_pool_backward(dy, self.cache, need_dx)
        self.cache = None
        return dx

    def output_shape(self, in_shape):
        return self.pool.output_shape(self.conv.output_shape(in_shape))


def fuse_conv_blocks(net) -> Sequential:
    """The same network (same parameter objects) with every conv, ReLU, max-pool run
    replaced by one ConvReluPool layer."""
    layers, i = [], 0
    while i < len(net.layers):
        block = net.layers[i : i + 3]
        if (len(block) == 3 and isinstance(block[0], Conv2D) and isinstance(block[1], ReLU)
                and isinstance(block[2], MaxPool2D)):
            layers.append(ConvReluPool(block[0], block[2]))
            i += 3
        else:
            layers.append(net.layers[i])
            i += 1
    return Sequential(layers, net.input_shape, backend=net.backend)
