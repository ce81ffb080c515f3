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

Only the op contract and the choice of kernel live here; the kernels are in
numba_kernels.py. A fused conv + ReLU + max-pool experiment built on
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
numba_kernels.py picks Numba's "workqueue" layer (threads sleep when idle) unless the user
chose a layer with NUMBA_THREADING_LAYER; it must happen before Numba first runs a
parallel function in the process, else Numba keeps the layer it already started.
(workqueue does not allow two Python threads in parallel kernels at once; set
NUMBA_THREADING_LAYER=omp or tbb for that.)
"""

from __future__ import annotations

import numba
import numpy as np

from ..philox import keep_threshold, seed_to_key
from ..precision import choose as choose_precision
from ..shapes import conv2d_out_hw, pool_out_size
from . import numba_kernels as kern
from .numpy_backend import ComposedBlocks, HostArrays, NumpyBackend

# Convolutions with at most this many taps per output (C*KH*KW) run as direct loops.
DIRECT_MAX_K = 32
# Budget for one chunk of im2col columns: a few MiB stays in the last-level cache.
CHUNK_BYTES = 8 << 20


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
            kern.im2col(xp, n0, nb, kh, kw, stride, oh, ow, cols)
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
            kern.conv_direct_forward(xp, w, b, stride, out)
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
            kern.conv_direct_dw(xp, dout, kh, kw, stride, part)
            if need_dx:
                kern.conv_direct_dx(dout, w, stride, dxp)
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
                kern.col2im(dcols[:nb], kh, kw, stride, oh, ow, dxp[n0 : n0 + nb])
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
        kern.relu_forward(x.reshape(-1), out.reshape(-1))
        return out, out

    def relu_backward(self, dout, cache):
        """dx = dout where the output was positive, else 0."""
        out = cache
        dout = np.ascontiguousarray(dout, dtype=out.dtype)
        dx = np.empty_like(dout)
        kern.relu_backward(dout.reshape(-1), out.reshape(-1), dx.reshape(-1))
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
        kern.maxpool_forward(x, size, stride, out, arg)
        return out, (x.shape, arg, size, stride)

    def maxpool2d_backward(self, dout, cache):
        """dout: (N, C, OH, OW) -> dx: (N, C, H, W); each window's gradient goes to
        its winner (overlapping windows add)."""
        x_shape, arg, size, stride = cache
        dout = np.ascontiguousarray(dout)
        dx = np.empty(x_shape, dtype=dout.dtype)
        kern.maxpool_backward(dout, arg, size, stride, dx)
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
        kern.dropout_forward(x.reshape(-1), np.uint64(k0), np.uint64(k1), threshold, scale, out.reshape(-1),
                         keep.reshape(-1))
        return out, (keep, scale)

    def dropout_backward(self, dout, cache):
        """dx = dout * keep / (1 - p): the forward pass's mask and scale."""
        if cache is None:
            return dout
        keep, scale = cache
        dout = np.ascontiguousarray(dout)
        dx = np.empty_like(dout)
        kern.dropout_backward(dout.reshape(-1), keep.reshape(-1), dout.dtype.type(scale), dx.reshape(-1))
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
        kern.sgd_update(*flat, t(lr), t(momentum), t(weight_decay))

    def adam_update(self, param, grad, m, v, lr: float, beta1: float, beta2: float, eps: float,
                    weight_decay: float, step: int):
        """In-place Adam with bias correction, as the reference (step counts from 1)."""
        flat = self._flat_views(param, grad, m, v)
        if flat is None:
            return self._ref.adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step)
        t = param.dtype.type
        kern.adam_update(*flat, t(lr), t(beta1), t(1 - beta1), t(beta2), t(1 - beta2), t(1 - beta1**step),
                     t(1 - beta2**step), t(eps), t(weight_decay))
