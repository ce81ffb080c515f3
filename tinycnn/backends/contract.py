"""The op contract as code: ``Backend``, what every backend of the registry implements.

Ops come in pairs, in the style of the classic course code:

    out, cache = X_forward(...)        # cache: what the backward pass needs
    grads      = X_backward(dout, cache)

Arrays are NCHW and of the backend's own kind (``asarray`` makes them: NumPy arrays for
numpy, numpy64, numba and cuda-emu; CuPy arrays for cuda), in ``dtype`` (float32; the
numpy64 reference runs float64). A cache is opaque: pass it back, unchanged, to the
backward pass of the same op on the same backend. Every backend computes what the NumPy
reference (numpy_backend.py) computes: max-pool (numba's gradient where windows do not
overlap), ReLU, dropout and the optimizer updates bit for bit, the sums of conv2d,
dense and the loss up to float32 rounding
(tests/test_parity.py, with the tolerances of tests/op_cases.py). docs/design.md says
why; docs/backprop.md derives each backward pass. tests/test_contract.py checks that
every registered backend has these members with exactly these parameters.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import numpy as np

Array = Any  # an array of the backend: numpy.ndarray, or cupy.ndarray on "cuda"
Cache = Any  # opaque; only X_backward of the same backend reads it

# The step statistics a training loop keeps on the backend (step_stats_update) and
# hands to the optimizer as its guard: float32 entries at these positions (the kernels'
# kernels/step_stats.cuh says the same; kernel_backend.py checks). Step i's loss and correct
# predictions sit at ring entry i % STAT_RING: read at least every STAT_RING steps.
STAT_LAYOUT = {"STAT_STEPS": 0,      # steps counted since the statistics were (re)set
               "STAT_FIRST_BAD": 1,  # the step index of the first non-finite loss, or -1
               "STAT_BAD_LOSS": 2,   # that loss
               "STAT_LOSSES": 3,     # STAT_RING losses
               "STAT_CORRECT": 67,   # STAT_RING counts of correct predictions (first maximum of a row)
               "STAT_RING": 64,
               "STAT_COUNT": 131}
STAT_COUNT = STAT_LAYOUT["STAT_COUNT"]


def new_step_stats() -> np.ndarray:
    """Fresh step statistics, on the host: nothing counted, no bad step."""
    stats = np.zeros(STAT_COUNT, np.float32)
    stats[STAT_LAYOUT["STAT_FIRST_BAD"]] = -1.0
    return stats


class Backend(Protocol):
    """The op contract (see the module docstring)."""

    name: str
    """The registry name: "numpy", "numpy64", "numba", "cuda-emu", "cuda"."""

    dtype: np.dtype
    """The float dtype of the backend's arrays: float32 (float64 on numpy64)."""

    precision: str
    """What the products of conv2d and dense compute (tinycnn/precision.py): 'fp32', or
    'tf32' / 'bf16': both operands rounded to that format, the sums in FP32. Chosen when
    the backend is made (backends.get(name, precision=...)); fixed for its life."""

    precisions: tuple
    """The precision modes this backend runs."""

    # ------------------------------------------------------------------ conv2d
    def conv2d_forward(self, x: Array, w: Array, b: Array, stride: int = 1, pad: int = 0) -> tuple[Array, Cache]:
        """2-D cross-correlation with zero padding.

        x (N, C, H, W), w (F, C, KH, KW), b (F,) -> out (N, F, OH, OW), cache, with
        OH = (H + 2*pad - KH) // stride + 1 (OW alike) and
        out[n, f, i, j] = b[f] + sum_{c,u,v} w[f, c, u, v] * xpad[n, c, i*stride + u, j*stride + v].
        ValueError if C differs between x and w or the output would be empty."""

    def conv2d_backward(self, dout: Array, cache: Cache, need_dx: bool = True) -> tuple[Array, Array, Array]:
        """dout (N, F, OH, OW) -> (dx (N, C, H, W), dw (F, C, KH, KW), db (F,)); dx is None
        when need_dx is False (a first layer, whose input gradient nobody reads)."""

    # -------------------------------------------------------------------- relu
    def relu_forward(self, x: Array) -> tuple[Array, Cache]:
        """out = max(x, 0), any shape; the cache is out."""

    def relu_backward(self, dout: Array, cache: Cache) -> Array:
        """dx = dout where the forward output was > 0, else 0 (the kink at 0 passes 0);
        the shape of dout."""

    # ----------------------------------------------------------------- maxpool
    def maxpool2d_forward(self, x: Array, size: int = 2, stride: int = 2,
                          ceil_mode: bool = True) -> tuple[Array, Cache]:
        """Max over size x size windows.

        x (N, C, H, W) -> out (N, C, OH, OW), cache, with OH = shapes.pool_out_size(H,
        size, stride, ceil_mode) (OW alike). Ceil mode: ceil((H - size) / stride) + 1
        windows, one hanging over the edge takes the max of the pixels it covers
        (125 -> 63); floor mode: (H - size) // stride + 1. The cache records each
        window's winner: the FIRST maximum in row-major window order."""

    def maxpool2d_backward(self, dout: Array, cache: Cache) -> Array:
        """dout (N, C, OH, OW) -> dx (N, C, H, W): each window's gradient goes to its
        winner; overlapping windows (stride < size) that share a winner add."""

    # ------------------------------------------------------------------- dense
    def dense_forward(self, x: Array, w: Array, b: Array) -> tuple[Array, Cache]:
        """y = x @ w + b: x (N, D), w (D, M), b (M,) -> y (N, M), cache.
        ValueError if x and w do not fit."""

    def dense_backward(self, dout: Array, cache: Cache, need_dx: bool = True) -> tuple[Array, Array, Array]:
        """dout (N, M) -> (dx = dout @ w.T (N, D), dw = x.T @ dout (D, M), db = sum_n dout (M,));
        dx is None when need_dx is False."""

    # ----------------------------------------------------------------- dropout
    def dropout_forward(self, x: Array, p: float, seed: int, train: bool = True) -> tuple[Array, Cache]:
        """Inverted dropout, any shape: out = x * keep / (1 - p), where keep of flat element i
        is Philox4x32-10 of (seed, i) (tinycnn/philox.py), the same on every backend;
        p in [0, 1), seed in [0, 2**64). With train=False or p == 0 it is the identity:
        out = x, and the cache is None."""

    def dropout_backward(self, dout: Array, cache: Cache) -> Array:
        """dx = dout * keep / (1 - p), with the forward pass's mask; dout itself when the
        cache is None."""

    # ------------------------------------------------------- the fused block
    def conv2d_relu_maxpool_forward(self, x: Array, w: Array, b: Array, stride: int = 1, pad: int = 0,
                                    ceil_mode: bool = True) -> tuple[Array, Cache]:
        """maxpool2d(relu(conv2d(x, w, b, stride, pad)), size=2, stride=2, ceil_mode), the
        paper's conv block, exactly (values, ties and gradients of the three ops in turn):
        x (N, C, H, W), w (F, C, KH, KW), b (F,) -> out (N, F, PH, PW), cache. The
        kernel backends run it as one kernel that never stores the full-size conv output."""

    def conv2d_relu_maxpool_backward(self, dout: Array, cache: Cache,
                                     need_dx: bool = True) -> tuple[Array, Array, Array]:
        """dout (N, F, PH, PW) -> (dx (N, C, H, W) or None unless need_dx, dw (F, C, KH, KW),
        db (F,)): maxpool2d_backward, relu_backward and conv2d_backward in turn."""

    # -------------------------------------------------------------------- loss
    def softmax_cross_entropy(self, logits: Array, labels) -> tuple[Array, Array]:
        """Mean softmax cross-entropy and its gradient, in one pass (the row max is
        subtracted first).

        logits (N, K), labels (N,) integers in [0, K) (host or backend array) ->
        (loss: a 0-d array of the backend, never a host float, so a step need not wait;
        dlogits (N, K) = (softmax(logits) - onehot(labels)) / N).
        ValueError for host labels of the wrong shape or out of range."""

    def softmax(self, logits: Array) -> Array:
        """Class probabilities (N, K) of logits (N, K), for evaluation."""

    # ---------------------------------------------------------- optimizer steps
    def sgd_update(self, param: Array, grad: Array, velocity: Array, lr: float, momentum: float,
                   weight_decay: float) -> None:
        """In place, on arrays of one shape: g = grad + weight_decay * param;
        velocity = momentum * velocity + g; param -= lr * velocity."""

    def adam_update(self, param: Array, grad: Array, m: Array, v: Array, lr: float, beta1: float,
                    beta2: float, eps: float, weight_decay: float, step: int) -> None:
        """In place Adam with bias correction, step counting from 1: g = grad + weight_decay * param;
        m = beta1*m + (1-beta1)*g; v = beta2*v + (1-beta2)*g*g;
        param -= lr * (m / (1-beta1**step)) / (sqrt(v / (1-beta2**step)) + eps)."""

    def sgd_update_many(self, params: list, grads: list, velocities: list, lr: float, momentum: float,
                        weight_decay: float, guard: Array | None = None) -> None:
        """sgd_update of every (param, grad, velocity) of the lists, in one launch on the
        kernel backends; nothing is updated when `guard` (step statistics) records a
        non-finite loss."""

    def adam_update_many(self, params: list, grads: list, ms: list, vs: list, lr: float, beta1: float,
                         beta2: float, eps: float, weight_decay: float, step: int,
                         guard: Array | None = None) -> None:
        """adam_update of every tensor of the lists, as sgd_update_many."""

    # --------------------------------------------------- the training loop's help
    def step_stats_update(self, stats: Array, loss: Array, logits: Array, labels: Array) -> None:
        """In place, after a step's loss: stats (STAT_COUNT,) float32 (new_step_stats:
        STAT_LAYOUT) counts the step and keeps its loss and correct predictions in its
        ring entry; a non-finite loss is recorded as the first bad step instead, and
        every later step only counts. On the device: a training loop reads it every
        few steps, not every step."""

    def capture(self, step: Callable) -> Callable:
        """A callable running step(*inputs): on the kernel backends recorded once and
        replayed as a CUDA graph (tinycnn/backends/capture.py says what a step may
        do); on the others, step itself."""

    def assign(self, dst: Array, src: np.ndarray) -> None:
        """dst[...] = src, a host array of dst's shape, in place (dst keeps its address)."""

    # ------------------------------------------------------------------ arrays
    def asarray(self, a, dtype=None) -> Array:
        """A host (or backend) array as a C-contiguous array of this backend, in `dtype`;
        without one, float arrays become self.dtype and others keep their dtype."""

    def to_numpy(self, a: Array) -> np.ndarray:
        """A host NumPy array with the values of `a` (a copy from a device)."""

    def zeros(self, shape, dtype=None) -> Array:
        """An array of zeros of this backend, in `dtype` (default self.dtype)."""

    def synchronize(self) -> None:
        """Return when every queued op has finished (host backends: at once)."""

    def device_name(self) -> str:
        """What runs the ops, for logs: e.g. "NVIDIA H100 (CUDA device 0), CuPy 13.3.0"."""

    # ------------------------------------------------------------ its memory
    memory_where: str
    """Where the arrays live, for messages: "this machine" (host memory) or "the GPU"."""

    memory_is_host: bool
    """Whether the arrays take host memory (so host memory left for data shrinks)."""

    def memory_available(self) -> int | None:
        """Bytes free where the arrays live now (None: cannot be told)."""

    def batch_copier(self, slots: int = 6):
        """What moves a data loader's host batches into this backend's memory:
        ``copier(x, y) -> (x, y)`` on the loader's thread, with ``acquire(x)`` /
        ``release(x)`` around the step that reads a batch (tinycnn/backends/staging.py)."""
