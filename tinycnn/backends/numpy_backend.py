"""The NumPy reference backend: the oracle every other backend is held to.

Every op is a pair in the style of the classic course code:

    out, cache = X_forward(...)        # cache holds what the backward pass needs
    grads      = X_backward(dout, cache)

Arrays are NCHW. float32 by default; float64 works too (the gradient checks use it).
The code is kept plain on purpose: vectorised NumPy, no tricks. The math behind each
backward pass is derived step by step in docs/backprop.md, with the same names.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..philox import dropout_keep_mask
from ..precision import PRECISIONS, round_operands
from ..precision import choose as choose_precision
from ..shapes import check_dense, check_labels, conv2d_out_hw, pool_out_size
from . import host_memory
from .contract import STAT_LAYOUT
from .staging import HostCopier


def _windows(xp: np.ndarray, kh: int, kw: int, stride: int, oh: int, ow: int, axes=(1, 2)) -> np.ndarray:
    """Every (kh, kw) window over the two spatial `axes` of an array, as a strided
    view (no copy). For NHWC xp (N, Hp, Wp, C) and axes (1, 2): (N, OH, OW, C, KH, KW),
    element [n, i, j, c, u, v] is xp[n, i*stride + u, j*stride + v, c]."""
    win = sliding_window_view(xp, (kh, kw), axis=axes)
    index = [slice(None)] * win.ndim
    index[axes[0]] = slice(0, (oh - 1) * stride + 1, stride)
    index[axes[1]] = slice(0, (ow - 1) * stride + 1, stride)
    return win[tuple(index)]


class HostArrays:
    """Array handling for the backends whose arrays are NumPy arrays in host memory
    (numpy, numpy64, numba, cuda-emu): float arrays take the backend's dtype."""

    dtype = np.dtype(np.float32)
    xp = np

    def asarray(self, a, dtype=None) -> np.ndarray:
        """A host array as this backend's C-contiguous array."""
        a = np.asarray(a)
        if dtype is None:
            dtype = self.dtype if a.dtype.kind == "f" else a.dtype
        return np.ascontiguousarray(a, dtype=dtype)

    def to_numpy(self, a) -> np.ndarray:
        return np.asarray(a)

    def zeros(self, shape, dtype=None) -> np.ndarray:
        return np.zeros(shape, dtype=dtype or self.dtype)

    def synchronize(self) -> None:
        """Every op returns when its work is done; present so callers treat every backend alike."""

    memory_where = "this machine"
    memory_is_host = True

    def memory_available(self) -> int | None:
        return host_memory.available_bytes()

    def batch_copier(self, slots: int = 6) -> HostCopier:
        return HostCopier(self)


class ComposedBlocks:
    """The contract's compound ops as the ops they are made of: the fused conv block
    as conv2d, relu and maxpool2d in turn; the multi-tensor optimizer updates as one
    update per tensor; the step statistics; capture (nothing to record on the host).
    Their definitions, and what a backend without kernels of its own runs."""

    def conv2d_relu_maxpool_forward(self, x, w, b, stride: int = 1, pad: int = 0, ceil_mode: bool = True):
        """x (N, C, H, W) -> maxpool2d(relu(conv2d(x)), 2, 2, ceil_mode) (N, F, PH, PW)."""
        conv, conv_cache = self.conv2d_forward(x, w, b, stride=stride, pad=pad)
        act, relu_cache = self.relu_forward(conv)
        out, pool_cache = self.maxpool2d_forward(act, 2, 2, ceil_mode)
        return out, (conv_cache, relu_cache, pool_cache)

    def conv2d_relu_maxpool_backward(self, dout, cache, need_dx: bool = True):
        """dout (N, F, PH, PW) -> (dx or None, dw, db), through the three backward passes."""
        conv_cache, relu_cache, pool_cache = cache
        dact = self.maxpool2d_backward(dout, pool_cache)
        dconv = self.relu_backward(dact, relu_cache)
        return self.conv2d_backward(dconv, conv_cache, need_dx)

    def sgd_update_many(self, params, grads, velocities, lr: float, momentum: float, weight_decay: float,
                        guard=None):
        """sgd_update of each tensor, unless the step statistics `guard` saw a non-finite loss."""
        if guard is not None and guard[STAT_LAYOUT["STAT_FIRST_BAD"]] >= 0:
            return
        for param, grad, velocity in zip(params, grads, velocities):
            self.sgd_update(param, grad, velocity, lr, momentum, weight_decay)

    def adam_update_many(self, params, grads, ms, vs, lr: float, beta1: float, beta2: float, eps: float,
                         weight_decay: float, step: int, guard=None):
        """adam_update of each tensor, unless the step statistics `guard` saw a non-finite loss."""
        if guard is not None and guard[STAT_LAYOUT["STAT_FIRST_BAD"]] >= 0:
            return
        for param, grad, m, v in zip(params, grads, ms, vs):
            self.adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step)

    def step_stats_update(self, stats, loss, logits, labels) -> None:
        """stats (STAT_COUNT,) float32, in place: the step counted, its loss and correct
        predictions in its ring entry; or the first non-finite loss and its step."""
        s = STAT_LAYOUT
        step = int(stats[s["STAT_STEPS"]])
        stats[s["STAT_STEPS"]] = step + 1
        if stats[s["STAT_FIRST_BAD"]] >= 0:
            return
        loss = np.float32(loss)
        if not np.isfinite(loss):
            stats[s["STAT_FIRST_BAD"]], stats[s["STAT_BAD_LOSS"]] = step, loss
            return
        ring = step % s["STAT_RING"]
        stats[s["STAT_LOSSES"] + ring] = loss
        stats[s["STAT_CORRECT"] + ring] = np.count_nonzero(np.argmax(logits, axis=1) == np.asarray(labels))

    def capture(self, step):
        """step itself: host ops have nothing to record."""
        return step

    def assign(self, dst, src) -> None:
        """dst[...] = src, in place."""
        dst[...] = src


class NumpyBackend(ComposedBlocks, HostArrays):
    """Reference implementation of the op contract (docs/design.md)."""

    name = "numpy"
    precisions = PRECISIONS
    precision = "fp32"

    def __init__(self, dtype=np.float32, precision: str | None = None):
        """precision (tinycnn/precision.py): 'fp32' (default), or 'tf32' / 'bf16': both
        operands of every convolution and dense product rounded as the tensor cores
        round them (``_operand``), the products and everything else in `dtype`: what
        the cuda backend computes in that mode, up to the order of its sums."""
        self.dtype = np.dtype(dtype)
        self.precision = choose_precision(precision, self.precisions, "fp32", self.name)

    def __repr__(self) -> str:
        return f"NumpyBackend(dtype={self.dtype.name}, precision={self.precision!r})"

    def _operand(self, a: np.ndarray) -> np.ndarray:
        """An operand of a product, as this precision mode reads it."""
        return round_operands(a, self.precision)

    def device_name(self) -> str:
        import platform

        return f"CPU ({platform.processor() or platform.machine()}), NumPy {np.__version__}"

    # ------------------------------------------------------------------ conv2d
    def conv2d_forward(self, x, w, b, stride: int = 1, pad: int = 0):
        """2-D convolution (cross-correlation, as every CNN library does it).

        x: (N, C, H, W), w: (F, C, KH, KW), b: (F,)
        out: (N, F, OH, OW) with OH = (H + 2*pad - KH) // stride + 1 (same for OW)

        out[n, f, i, j] = b[f] + sum_{c,u,v} w[f, c, u, v] * xp[n, c, i*stride + u, j*stride + v]

        im2col: gather every receptive field into a row of `cols`
        (N*OH*OW, KH*KW*C), then one matrix product with the filters as
        wmat (F, KH*KW*C). The columns are ordered (u, v, c) and gathered from an
        NHWC copy of the input, so each copied run is C contiguous numbers.
        """
        n, c, h, wd = x.shape
        f, _, kh, kw = w.shape
        oh, ow = conv2d_out_hw(x.shape, w.shape, stride, pad)
        xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
        xp = xp.transpose(0, 2, 3, 1)                                   # (N, Hp, Wp, C), a view
        win = _windows(xp, kh, kw, stride, oh, ow, axes=(1, 2))         # (N, OH, OW, C, KH, KW)
        cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(n * oh * ow, kh * kw * c)  # copy
        cols = self._operand(cols)                                      # (rounded in tf32 / bf16)
        wmat = self._operand(w.transpose(0, 2, 3, 1).reshape(f, kh * kw * c))  # (F, KH*KW*C)
        out = cols @ wmat.T + b                                         # (N*OH*OW, F)
        out = out.reshape(n, oh, ow, f).transpose(0, 3, 1, 2)           # (N, F, OH, OW)
        cache = (x.shape, w, cols, stride, pad)
        return np.ascontiguousarray(out), cache

    def conv2d_backward(self, dout, cache, need_dx: bool = True):
        """Gradients of conv2d.

        dout: (N, F, OH, OW) -> dx (N, C, H, W), dw (F, C, KH, KW), db (F,); dx is
        None when need_dx is False (a network's first layer: nothing uses the
        gradient with respect to its input, and it is a third of the layer's work).

        With out = cols @ wmat.T + b and dout as the matrix d (N*OH*OW, F):
        dw = d.T @ cols (as (F, KH, KW, C), then back to (F, C, KH, KW)),
        db = sum of d over rows,  dcols = d @ wmat; then col2im
        adds each row of dcols back onto the input pixels its receptive field came
        from (a pixel in several windows gets the sum of their contributions).
        """
        x_shape, w, cols, stride, pad = cache
        n, c, h, wd = x_shape
        f, _, kh, kw = w.shape
        oh, ow = dout.shape[2], dout.shape[3]
        d = dout.transpose(0, 2, 3, 1).reshape(n * oh * ow, f)         # (N*OH*OW, F)
        db = d.sum(axis=0)                                              # (F,)
        d = self._operand(d)                                            # cols is rounded already
        wmat = self._operand(w.transpose(0, 2, 3, 1).reshape(f, kh * kw * c))  # (F, KH*KW*C)
        dw = (d.T @ cols).reshape(f, kh, kw, c).transpose(0, 3, 1, 2)   # (F, C, KH, KW)
        if not need_dx:
            return None, np.ascontiguousarray(dw), db
        dcols = (d @ wmat).reshape(n, oh, ow, kh, kw, c)                # (N, OH, OW, KH, KW, C)
        # col2im, in NHWC: loop over the KH*KW kernel offsets (not over pixels); each
        # slice below touches distinct pixels, so += is an exact scatter-add.
        dxp = np.zeros((n, h + 2 * pad, wd + 2 * pad, c), dtype=dout.dtype)
        for u in range(kh):
            for v in range(kw):
                dxp[:, u : u + stride * oh : stride, v : v + stride * ow : stride, :] += dcols[:, :, :, u, v, :]
        dx = dxp[:, pad : pad + h, pad : pad + wd, :].transpose(0, 3, 1, 2)  # (N, C, H, W)
        return np.ascontiguousarray(dx), np.ascontiguousarray(dw), db

    # -------------------------------------------------------------------- relu
    def relu_forward(self, x):
        """out = max(x, 0). x: any shape -> out: same shape."""
        out = np.maximum(x, 0)
        return out, out

    def relu_backward(self, dout, cache):
        """dx = dout where the output was positive, else 0 (the kink at 0 gets 0)."""
        out = cache
        return dout * (out > 0)

    # ----------------------------------------------------------------- maxpool
    def maxpool2d_forward(self, x, size: int = 2, stride: int = 2, ceil_mode: bool = True):
        """Max-pool over size x size windows.

        x: (N, C, H, W) -> out: (N, C, OH, OW), OH = pool_out_size(H, size, stride, ceil_mode)

        In ceil mode the last window may hang over the bottom/right edge; padding
        with -inf makes it take the max of the pixels it does cover. The cache keeps
        the argmax inside each window, as the offset k = u*size + v: the FIRST maximum
        in row-major window order, which is the one that gets the gradient on ties
        (offsets are visited in that order and only a strictly larger value wins).
        """
        n, c, h, wd = x.shape
        oh, ow = pool_out_size(h, size, stride, ceil_mode), pool_out_size(wd, size, stride, ceil_mode)
        hp, wp = (oh - 1) * stride + size, (ow - 1) * stride + size
        xp = x
        if hp > h or wp > wd:
            xp = np.pad(x, ((0, 0), (0, 0), (0, max(hp - h, 0)), (0, max(wp - wd, 0))), constant_values=-np.inf)
        out = arg = None
        for u in range(size):
            for v in range(size):
                xs = xp[:, :, u : u + stride * oh : stride, v : v + stride * ow : stride]  # (N, C, OH, OW)
                if out is None:
                    out, arg = xs.copy(), np.zeros(xs.shape, dtype=np.int32)
                    continue
                better = xs > out
                np.copyto(out, xs, where=better)
                np.copyto(arg, u * size + v, where=better)
        cache = (x.shape, arg, size, stride)
        return out, cache

    def maxpool2d_backward(self, dout, cache):
        """dx: each output's gradient goes to the one input pixel that won its window.

        dout: (N, C, OH, OW) -> dx: (N, C, H, W). Overlapping windows (stride < size)
        may pick the same pixel; their gradients add.
        """
        x_shape, arg, size, stride = cache
        n, c, h, wd = x_shape
        oh, ow = dout.shape[2], dout.shape[3]
        # windows may hang over the edge (ceil mode) or leave it uncovered (floor mode)
        hp, wp = max(h, (oh - 1) * stride + size), max(wd, (ow - 1) * stride + size)
        dxp = np.zeros((n, c, hp, wp), dtype=dout.dtype)
        for u in range(size):
            for v in range(size):
                won = arg == u * size + v
                dxp[:, :, u : u + stride * oh : stride, v : v + stride * ow : stride] += dout * won
        return np.ascontiguousarray(dxp[:, :, :h, :wd])

    # ------------------------------------------------------------------- dense
    def dense_forward(self, x, w, b):
        """y = x @ w + b.   x: (N, D), w: (D, M), b: (M,) -> y: (N, M)."""
        check_dense(x.shape, w.shape)
        x, w = self._operand(x), self._operand(w)
        return x @ w + b, (x, w)

    def dense_backward(self, dout, cache, need_dx: bool = True):
        """dout: (N, M) -> dx = dout @ w.T (N, D) (None unless need_dx), dw = x.T @ dout (D, M),
        db = sum_n dout (M,)."""
        x, w = cache  # rounded in tf32 / bf16 by the forward pass
        d = self._operand(dout)
        return (d @ w.T if need_dx else None), x.T @ d, dout.sum(axis=0)

    # ----------------------------------------------------------------- dropout
    def dropout_forward(self, x, p: float, seed: int, train: bool = True):
        """Inverted dropout: keep each element with probability 1-p and scale it by 1/(1-p).

        x: any shape -> out: same shape. The keep-mask of flat element i is a
        function of (seed, i) only (Philox4x32-10, see tinycnn/philox.py), so every
        backend draws the same mask. At test time (train=False) it is the identity.
        """
        if not train or p == 0.0:
            return x, None
        keep = dropout_keep_mask(x.size, seed, p).reshape(x.shape)
        scale = x.dtype.type(1.0 / (1.0 - p))
        return np.where(keep, x * scale, x.dtype.type(0)), (keep, scale)

    def dropout_backward(self, dout, cache):
        """dx = dout * keep / (1 - p): the same mask and scale as the forward pass."""
        if cache is None:
            return dout
        keep, scale = cache
        return np.where(keep, dout * scale, dout.dtype.type(0))

    # -------------------------------------------------------------- softmax CE
    def softmax_cross_entropy(self, logits, labels):
        """Mean softmax cross-entropy and its gradient, in one pass.

        logits: (N, K), labels: (N,) integers in [0, K)
        loss = mean_n [ logsumexp(logits[n]) - logits[n, labels[n]] ]   (0-d array)
        dlogits = (softmax(logits) - onehot(labels)) / N                 (N, K)

        The row max is subtracted first so exp never overflows.
        """
        n, k = logits.shape
        labels = np.asarray(labels).astype(np.int64, copy=False)
        check_labels(labels, n, k)
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        sumexp = exp.sum(axis=1, keepdims=True)
        rows = np.arange(n)
        loss = (np.log(sumexp[:, 0]) - shifted[rows, labels]).mean()
        dlogits = exp / sumexp
        dlogits[rows, labels] -= 1
        dlogits /= n
        return np.asarray(loss, dtype=logits.dtype), dlogits

    def softmax(self, logits):
        """Class probabilities (N, K), for evaluation."""
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=1, keepdims=True)

    # ---------------------------------------------------------- optimizer steps
    def sgd_update(self, param, grad, velocity, lr: float, momentum: float, weight_decay: float):
        """In-place SGD with momentum and L2 weight decay (PyTorch's convention):

        g = grad + weight_decay * param;  v = momentum * v + g;  param -= lr * v
        """
        g = grad + param.dtype.type(weight_decay) * param
        velocity *= velocity.dtype.type(momentum)
        velocity += g
        param -= param.dtype.type(lr) * velocity

    def adam_update(self, param, grad, m, v, lr: float, beta1: float, beta2: float, eps: float,
                    weight_decay: float, step: int):
        """In-place Adam (Kingma & Ba 2015) with bias correction; step counts from 1.

        g = grad + weight_decay * param
        m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2
        param -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
        """
        t = param.dtype.type
        g = grad + t(weight_decay) * param
        m *= t(beta1)
        m += t(1 - beta1) * g
        v *= t(beta2)
        v += t(1 - beta2) * g * g
        mhat = m / t(1 - beta1**step)
        vhat = v / t(1 - beta2**step)
        param -= t(lr) * mhat / (np.sqrt(vhat) + t(eps))


def NumpyBackend64(precision: str | None = None) -> NumpyBackend:
    """The reference in float64 (registered as "numpy64"), for gradient checks; with a
    tensor-core precision, the exact products of rounded operands."""
    backend = NumpyBackend(np.float64, precision)
    backend.name = "numpy64"
    return backend
