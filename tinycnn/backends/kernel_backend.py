"""The op contract in terms of kernel launches, shared by "cuda" and "cuda-emu".

``KernelBackend`` implements every op of docs/design.md as "launch kernel K on grid G
with block B and arguments A" for the kernels in ``kernels/*.cu``: which kernel and
which grid come from geometry.py (one ``Geometry`` per launch, in every precision
mode), the launching and the device memory from kernel_launcher.py, and the device
itself from the subclass (cuda_backend.py, cuda_emu.py).

Each op checks its shapes, allocates its outputs, packs each kernel's argument list in
the kernel's parameter order and launches; no op reads a device value on the host.
"""

from __future__ import annotations

import numpy as np

from ..philox import keep_threshold, seed_to_key
from ..shapes import check_dense, check_labels, conv2d_out_hw, conv_out_size, pool_out_size
from . import geometry as geo
from .contract import STAT_LAYOUT
from .geometry import BIAS_CHUNK, BIAS_THREADS, ELEMENTWISE_THREADS, SMALLK_TAPS, XENT_THREADS, check_size, grid_1d
from .kernel_launcher import KernelLauncher
from .kernel_sources import defines

# The step statistics' layout is the contract's (contract.STAT_LAYOUT); the kernels'
# step_stats.cuh must say the same, number for number.
_STATS = defines("step_stats.cuh")
if {name: _STATS.get(name) for name in STAT_LAYOUT} != STAT_LAYOUT:
    raise RuntimeError(f"kernels/step_stats.cuh and tinycnn.backends.contract.STAT_LAYOUT disagree: "
                       f"{ {name: _STATS.get(name) for name in STAT_LAYOUT} } != {STAT_LAYOUT}")

i32, u32, f32 = np.int32, np.uint32, np.float32


class KernelBackend(KernelLauncher):
    """The op contract on top of kernels/*.cu (see the module docstring)."""

    name = "kernels"

    def _launch_geometry(self, g: geo.Geometry, args: list) -> None:
        self._launch(g.name, g.grid, g.block, args)

    def _gemm(self, c, a, b, m: int, n: int, k: int, sam: int, sak: int, sbk: int, sbn: int, bias=None) -> None:
        """c (m, n) = A (m, k) . B (k, n) [+ bias], A[i, l] = a[i*sam + l*sak],
        B[l, j] = b[l*sbk + j*sbn] (kernels/gemm.cu: sgemm_strided, or its tensor-core
        twin in gemm_tc.cu), split along K into a workspace when the tiles are few."""
        check_size(m * n, m * k, k * n)
        if m == 0 or n == 0:
            return
        if k == 0:  # an empty sum: bias only
            self._launch("split_k_reduce", grid_1d(m * n), (ELEMENTWISE_THREADS, 1, 1),
                         [c, self.xp.zeros((m * n,), np.float32), bias if bias is not None else c, i32(0),
                          i32(m * n), i32(n), i32(bias is not None)])
            return
        g = geo.gemm(self.precision, m, n, k)
        check_size(g.splits * m * n)
        target = c if g.splits == 1 else self._empty((g.splits, m, n))
        self._launch_geometry(g, geo.gemm_args(g, target, a, b, bias, m, n, k, sam, sak, sbk, sbn))
        if g.splits > 1:
            self._reduce_splits(c, target, g.splits, m * n, bias, n)

    # ------------------------------------------------------------------ conv2d
    def _conv_operands(self, x, w, b, stride: int, pad: int) -> tuple:
        """x, w, b as float32 arrays of this backend, with the convolution's sizes
        (N, C, H, W, F, KH, KW, OH, OW); a bias that does not fit is a ValueError."""
        x, w, b = self._f32(x), self._f32(w), self._f32(b)
        n, c, h, wd = x.shape
        f, _, kh, kw = w.shape
        if b.shape != (f,):
            raise ValueError(f"conv2d: bias of shape {b.shape} for {f} filters")
        oh, ow = conv2d_out_hw(x.shape, w.shape, stride, pad)
        return x, w, b, (n, c, h, wd, f, kh, kw, oh, ow)

    def conv2d_forward(self, x, w, b, stride: int = 1, pad: int = 0):
        """x (N, C, H, W), w (F, C, KH, KW), b (F,) -> out (N, F, OH, OW); see kernels/conv2d.cu."""
        x, w, b, (n, c, h, wd, f, kh, kw, oh, ow) = self._conv_operands(x, w, b, stride, pad)
        check_size(x.size, w.size, n * f * oh * ow)
        out = self._empty((n, f, oh, ow))
        if out.size:
            self._launch_geometry(geo.conv2d_forward(self.precision, n, f, oh, ow),
                                  [out, x, w, b] + geo.conv_geometry_args(n, c, h, wd, f, kh, kw, oh, ow, stride, pad))
        return out, (x, w, stride, pad)

    def conv2d_backward(self, dout, cache, need_dx: bool = True):
        """dout (N, F, OH, OW) -> dx (N, C, H, W) (None unless need_dx), dw (F, C, KH, KW), db (F,)."""
        return self._conv2d_backward(self._f32(dout), cache, need_dx)

    def _conv2d_backward(self, dout, cache, need_dx: bool, db=None):
        """conv2d_backward on a float32 dout; a given db (the fused block's) skips the
        bias-gradient pass."""
        x, w, stride, pad = cache
        n, c, h, wd = x.shape
        f, _, kh, kw = w.shape
        oh, ow = dout.shape[2], dout.shape[3]
        if dout.shape != (n, f, oh, ow) or (oh, ow) != (conv_out_size(h, kh, stride, pad),
                                                        conv_out_size(wd, kw, stride, pad)):
            raise ValueError(f"conv2d_backward: dout of shape {dout.shape} does not fit the forward pass")
        geometry = geo.conv_geometry_args(n, c, h, wd, f, kh, kw, oh, ow, stride, pad)

        dx = self._empty(x.shape) if need_dx else None
        if need_dx and dx.size:
            self._launch_geometry(geo.conv2d_backward_data(self.precision, n, c, h, wd), [dx, dout, w] + geometry)

        kk, p = c * kh * kw, n * oh * ow
        if kk <= SMALLK_TAPS:  # its one pass over dout gives db too
            return dx, *self._conv_filter_grad_smallk(dout, x, w.shape, geometry, p)
        dw = self._empty(w.shape)
        g = geo.conv2d_backward_filter(self.precision, f, c, kh, kw, p)
        target = dw if g.splits == 1 else self._empty((g.splits,) + w.shape)
        check_size(target.size)
        self._launch_geometry(g, [target, dout, x] + geometry + [i32(g.k_chunk)])
        if g.splits > 1:
            self._reduce_splits(dw, target, g.splits, dw.size)

        if db is None:
            db, part, chunks = self._bias_partials(n * oh * ow, f)
            self._launch("conv2d_bias_grad_partial", (chunks, f, 1), (BIAS_THREADS, 1, 1),
                         [part, dout, i32(n), i32(f), i32(oh * ow), i32(BIAS_CHUNK)])
            if chunks > 1:
                self._reduce_splits(db, part, chunks, f)
        return dx, dw, db

    def _bias_partials(self, positions: int, f: int):
        """(db, its partial sums, chunks): a conv bias gradient summed in chunks of
        BIAS_CHUNK positions, one partial per chunk and filter (db itself when one)."""
        db = self._empty((f,))
        chunks = geo.bias_chunks(positions)
        return db, (db if chunks == 1 else self._empty((chunks, f))), chunks

    # ------------------------------------------------------- the fused block
    def conv2d_relu_maxpool_forward(self, x, w, b, stride: int = 1, pad: int = 0, ceil_mode: bool = True):
        """x (N, C, H, W) -> maxpool2d(relu(conv2d(x, w, b)), 2, 2, ceil_mode) (N, F, PH, PW)
        in one kernel (kernels/conv2d.cu: conv2d_relu_maxpool_igemm_*, or _smallk for at
        most SMALLK_TAPS taps; conv2d_tc.cu in the tensor-core modes): the full-size conv
        output is never stored; the cache keeps the pooled output and each window's winner."""
        x, w, b, (n, c, h, wd, f, kh, kw, oh, ow) = self._conv_operands(x, w, b, stride, pad)
        ph, pw = pool_out_size(oh, 2, 2, ceil_mode), pool_out_size(ow, 2, 2, ceil_mode)
        check_size(x.size, w.size, n * f * oh * ow, n * ph * pw * 4)
        out = self._empty((n, f, ph, pw))
        arg = self._empty((n, f, ph, pw), np.int32)
        if out.size:
            # few taps: direct loops, since a GEMM tile would idle on so short a K
            g = (geo.block_smallk(self.precision, n, f, ph, pw) if c * kh * kw <= SMALLK_TAPS else
                 geo.conv2d_relu_maxpool(self.precision, n, f, ph, pw))
            self._launch_geometry(g, [out, arg, x, w, b] + geo.conv_geometry_args(n, c, h, wd, f, kh, kw, oh, ow,
                                                                                   stride, pad) + [i32(ph), i32(pw)])
        return out, ((x, w, stride, pad), out, arg, (oh, ow))

    def conv2d_relu_maxpool_backward(self, dout, cache, need_dx: bool = True):
        """dout (N, F, PH, PW) -> (dx or None, dw, db): one pass gives the conv output's
        gradient (pool backward and the ReLU mask) and the bias partials
        (conv2d_relu_maxpool_backward), then the conv's own backward kernels."""
        conv_cache, pooled, arg, (oh, ow) = cache
        dout = self._f32(dout)
        if dout.shape != pooled.shape:
            raise ValueError(f"conv2d_relu_maxpool_backward: dout of shape {dout.shape}, "
                             f"the forward output was {pooled.shape}")
        x, w = conv_cache[0], conv_cache[1]
        n, f, ph, pw = pooled.shape
        dconv = self._empty((n, f, oh, ow))
        db, part, chunks = self._bias_partials(n * oh * ow, f)
        # The few-taps weight gradient sums db in its own pass over dconv: the same bits
        # as the unfused path, and no partials to add here.
        with_bias = x.shape[1] * w.shape[2] * w.shape[3] > SMALLK_TAPS
        if f:
            self._launch("conv2d_relu_maxpool_backward", (chunks, f, 1), (BIAS_THREADS, 1, 1),
                         [dconv, part, dout, pooled, arg, i32(n), i32(f), i32(oh), i32(ow), i32(ph), i32(pw),
                          i32(BIAS_CHUNK), i32(with_bias)])
        if with_bias and chunks > 1:
            self._reduce_splits(db, part, chunks, f)
        return self._conv2d_backward(dconv, conv_cache, need_dx, db if with_bias else None)

    def _conv_filter_grad_smallk(self, dout, x, w_shape, geometry, p: int):
        """dw, db of a convolution with at most SMALLK_TAPS taps (C*KH*KW), in one pass
        over dout: position chunks of a fixed size (the shapes alone decide it), each
        block's partial sums added in chunk order by split_k_reduce."""
        f, kk = w_shape[0], w_shape[1] * w_shape[2] * w_shape[3]
        g = geo.filter_grad_smallk(self.precision, f, p)
        dw, db = self._empty(w_shape), self._empty((f,))
        part_w = dw if g.splits == 1 else self._empty((g.splits, f * kk))
        part_b = db if g.splits == 1 else self._empty((g.splits, f))
        check_size(part_w.size)
        self._launch_geometry(g, [part_w, part_b, dout, x] + geometry + [i32(g.k_chunk)])
        if g.splits > 1:
            self._reduce_splits(dw, part_w, g.splits, dw.size)
            self._reduce_splits(db, part_b, g.splits, f)
        return dw, db

    # -------------------------------------------------------------------- relu
    def relu_forward(self, x):
        """out = max(x, 0); the cache is out."""
        x = self._f32(x)
        out = self._empty(x.shape)
        self._elementwise("relu_forward", x.size, [out, x, i32(x.size)])
        return out, out

    def relu_backward(self, dout, cache):
        """dout (any shape) -> dx = dout where the forward output was > 0, else 0."""
        out = cache
        dout = self._f32(dout)
        dx = self._empty(dout.shape)
        self._elementwise("relu_backward", dout.size, [dx, dout, out, i32(dout.size)])
        return dx

    # ----------------------------------------------------------------- maxpool
    def maxpool2d_forward(self, x, size: int = 2, stride: int = 2, ceil_mode: bool = True):
        """x (N, C, H, W) -> out (N, C, OH, OW); the cache keeps the winner's window offset."""
        x = self._f32(x)
        n, c, h, wd = x.shape
        oh, ow = pool_out_size(h, size, stride, ceil_mode), pool_out_size(wd, size, stride, ceil_mode)
        out = self._empty((n, c, oh, ow))
        arg = self._empty((n, c, oh, ow), np.int32)
        check_size(x.size)
        self._elementwise("maxpool2d_forward", out.size,
                          [out, arg, x, i32(n * c), i32(h), i32(wd), i32(oh), i32(ow), i32(size), i32(stride)])
        return out, (x.shape, arg, size, stride)

    def maxpool2d_backward(self, dout, cache):
        """dout (N, C, OH, OW) -> dx (N, C, H, W): each window's gradient to its winner."""
        x_shape, arg, size, stride = cache
        dout = self._f32(dout)
        n, c, h, wd = x_shape
        oh, ow = arg.shape[2], arg.shape[3]
        if dout.shape != arg.shape:
            raise ValueError(f"maxpool2d_backward: dout of shape {dout.shape}, the forward output was {arg.shape}")
        dx = self._empty(x_shape)
        self._elementwise("maxpool2d_backward", dx.size,
                          [dx, dout, arg, i32(n * c), i32(h), i32(wd), i32(oh), i32(ow), i32(size), i32(stride)])
        return dx

    # ------------------------------------------------------------------- dense
    def dense_forward(self, x, w, b):
        """y (N, M) = x (N, D) @ w (D, M) + b (M,)."""
        x, w, b = self._f32(x), self._f32(w), self._f32(b)
        check_dense(x.shape, w.shape)
        n, d = x.shape
        m = w.shape[1]
        y = self._empty((n, m))
        self._gemm(y, x, w, n, m, d, sam=d, sak=1, sbk=m, sbn=1, bias=b)
        return y, (x, w)

    def dense_backward(self, dout, cache, need_dx: bool = True):
        """dout (N, M) -> dx = dout @ w.T (N, D) (None unless need_dx), dw = x.T @ dout (D, M),
        db = sum_n dout (M,)."""
        x, w = cache
        dout = self._f32(dout)
        n, d = x.shape
        m = w.shape[1]
        if dout.shape != (n, m):
            raise ValueError(f"dense_backward: dout of shape {dout.shape}, expected {(n, m)}")
        dx = None
        if need_dx:
            dx = self._empty((n, d))
            self._gemm(dx, dout, w, n, d, m, sam=m, sak=1, sbk=1, sbn=m)  # B[j, i] = w[i, j]
        dw = self._empty((d, m))
        self._gemm(dw, x, dout, d, m, n, sam=1, sak=d, sbk=m, sbn=1)      # A[i, r] = x[r, i]
        db = self._empty((m,))
        if m:
            self._launch("bias_grad_rows", grid_1d(m), (ELEMENTWISE_THREADS, 1, 1), [db, dout, i32(n), i32(m)])
        return dx, dw, db

    # ----------------------------------------------------------------- dropout
    def dropout_forward(self, x, p: float, seed: int, train: bool = True):
        """Inverted dropout; the mask of flat element i is Philox(seed, i) (kernels/philox.cuh).
        No mask is stored: the cache is the seed and the kernel's constants, from which
        the backward kernel recomputes the mask. The seed's high word (the layer's call
        counter) goes through the dynamic scalars: it changes every step."""
        x = self._f32(x)
        if not train or p == 0.0:
            return x, None
        seed_lo, seed_hi = seed_to_key(seed)
        scale = f32(1.0 / (1.0 - p))  # as the reference: float64 quotient, rounded once
        cache = (x.size, seed_lo, seed_hi, u32(keep_threshold(p)), scale)
        out = self._empty(x.shape)
        self._elementwise("dropout_forward", x.size, [out, x] + self._dropout_args(cache))
        return out, cache

    def dropout_backward(self, dout, cache):
        """dout (any shape) -> dx = keep * dout * scale, the mask recomputed from the seed."""
        dout = self._f32(dout)
        if cache is None:
            return dout
        if cache[0] != dout.size:
            raise ValueError(f"dropout_backward: dout has {dout.size} elements, the forward pass had {cache[0]}")
        dx = self._empty(dout.shape)
        self._elementwise("dropout_backward", dout.size, [dx, dout] + self._dropout_args(cache))
        return dx

    def _dropout_args(self, cache) -> list:
        """The dropout kernels' trailing arguments: n, seed_lo, dyn, seed_slot, threshold, scale."""
        size, seed_lo, seed_hi, threshold, scale = cache
        return [i32(size), u32(seed_lo), self._dyn_array(), i32(self._dynamic(seed_hi)), threshold, scale]

    def _dyn_array(self):
        if self._dyn is None:
            self._dynamic()  # allocates it
        return self._dyn

    # -------------------------------------------------------------- softmax CE
    def _labels(self, labels, n: int, k: int):
        """Labels as an int32 array of this backend. Host labels are checked on the
        host (no device sync); labels already on the device are trusted (an
        out-of-range one makes the loss NaN)."""
        if isinstance(labels, np.ndarray) or not hasattr(labels, "__cuda_array_interface__"):
            host = np.asarray(labels)
            check_labels(host, n, k)
            buf = self._empty((n,), np.int32)
            self._device_upload(buf, np.ascontiguousarray(host, dtype=np.int32))
            return buf
        if tuple(labels.shape) != (n,):
            raise ValueError(f"softmax_cross_entropy: labels of shape {tuple(labels.shape)} for {n} logits rows")
        if labels.dtype != np.int32 or not labels.flags.c_contiguous:
            labels = self.xp.ascontiguousarray(labels, dtype=np.int32)
        return labels

    def softmax_cross_entropy(self, logits, labels):
        """logits (N, K), labels (N,) -> (loss, a 0-d array on this backend; dlogits (N, K))."""
        logits = self._f32(logits)
        n, k = logits.shape
        labels = self._labels(labels, n, k)
        loss = self._empty(())
        dlogits = self._empty((n, k))
        check_size(logits.size)
        if n == 0 or k == 0:
            raise ValueError(f"softmax_cross_entropy: empty logits of shape {(n, k)}")
        self._launch("softmax_xent", (1, 1, 1), (XENT_THREADS, 1, 1), [loss, dlogits, logits, labels, i32(n), i32(k)])
        return loss, dlogits

    def softmax(self, logits):
        """Class probabilities (N, K)."""
        logits = self._f32(logits)
        n, k = logits.shape
        probs = self._empty((n, k))
        if n and k:
            self._launch("softmax_rows", grid_1d(n), (ELEMENTWISE_THREADS, 1, 1), [probs, logits, i32(n), i32(k)])
        return probs

    # ---------------------------------------------------------- optimizer steps
    def _check_params(self, *lists) -> None:
        for group in zip(*lists):
            param = group[0]
            for a in group:
                if a.dtype != np.float32 or not a.flags.c_contiguous or a.shape != param.shape:
                    raise ValueError("optimizer buffers must be C-contiguous float32 arrays of the parameter's shape")

    def sgd_update(self, param, grad, velocity, lr: float, momentum: float, weight_decay: float):
        """In place: g = grad + wd * param; v = momentum * v + g; param -= lr * v."""
        self.sgd_update_many([param], [grad], [velocity], lr, momentum, weight_decay)

    def sgd_update_many(self, params, grads, velocities, lr: float, momentum: float, weight_decay: float,
                        guard=None):
        """sgd_update of every tensor in one launch (kernels/optim.cu), skipped when the
        step statistics `guard` saw a non-finite loss."""
        grads = [self._f32(g) for g in grads]
        self._check_params(params, grads, velocities)
        total = sum(p.size for p in params)
        if not total:
            return
        ptrs, starts = self._pointer_table(list(zip(params, grads, velocities)))
        self._launch("sgd_update", grid_1d(total), (ELEMENTWISE_THREADS, 1, 1),
                     [ptrs, starts, i32(len(params)), self._dyn_array(), i32(self._dynamic(_bits(lr))),
                      f32(momentum), f32(weight_decay), self._guard(guard)])

    def adam_update(self, param, grad, m, v, lr: float, beta1: float, beta2: float, eps: float,
                    weight_decay: float, step: int):
        """In place Adam with bias correction (step counts from 1); constants rounded as the reference does."""
        self.adam_update_many([param], [grad], [m], [v], lr, beta1, beta2, eps, weight_decay, step)

    def adam_update_many(self, params, grads, ms, vs, lr: float, beta1: float, beta2: float, eps: float,
                         weight_decay: float, step: int, guard=None):
        """adam_update of every tensor in one launch; lr and the bias corrections (which
        change every step) through the dynamic scalars."""
        grads = [self._f32(g) for g in grads]
        self._check_params(params, grads, ms, vs)
        total = sum(p.size for p in params)
        if not total:
            return
        ptrs, starts = self._pointer_table(list(zip(params, grads, ms, vs)))
        slots = self._dynamic(_bits(lr), _bits(1 - beta1**step), _bits(1 - beta2**step))
        self._launch("adam_update", grid_1d(total), (ELEMENTWISE_THREADS, 1, 1),
                     [ptrs, starts, i32(len(params)), self._dyn_array(), i32(slots), f32(beta1), f32(1 - beta1),
                      f32(beta2), f32(1 - beta2), f32(eps), f32(weight_decay), self._guard(guard)])

    # ------------------------------------------------------ step statistics
    def step_stats_update(self, stats, loss, logits, labels) -> None:
        """After a step's loss: add it to the statistics, or record a non-finite one
        (kernels/softmax_ce.cu: train_stats); no host round-trip."""
        logits = self._f32(logits)
        n, k = logits.shape
        self._launch("train_stats", (1, 1, 1), (1, 1, 1), [stats, loss, logits, self._labels(labels, n, k),
                                                          i32(n), i32(k)])


def _bits(value: float) -> np.uint32:
    """The 32-bit pattern of float32(value): how a float travels in the dynamic scalars."""
    return np.float32(value).view(np.uint32)
