"""The parity table: every op case the backends are compared on, and what they are held
to. tests/test_parity.py runs backend x case: through helpers.compare_with_reference
(the op's output and every input gradient against the float32 NumPy reference, with the
same inputs and the same upstream gradient, bit for bit or to a tolerance), or, for the
products and the loss on the kernel backends, through helpers.compare_within_sum_bound
(against the exact result of the precision mode, each element within a bound derived
from the arithmetic: tinycnn/verify/).

A case names its op, its inputs (shapes, filled with N(0, 1) float32 numbers, or a
builder for special inputs: kinks, ties, labels), its keyword arguments, why it exists,
and the backends it runs on: all of PARITY_BACKENDS unless it says otherwise (large
shapes run on the GPU only, where they are cheap). Backend tests that need a case
(split-K, chunking) read it from here too: each case is written once.

Cost: cuda-emu runs every CUDA thread of a block as an OpenMP thread, so a barrier of a
256-thread block costs ~1 ms on two cores; a conv2d case with many tiles costs up to a
second there. Keep new cases small, or give them backends=GPU_ONLY.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from helpers import EXACT, IllPosed, compare_with_reference, compare_within_sum_bound
from tinycnn.op_table import OPS, OpSpec
# 'name:precision' is a backend in a tensor-core mode (tests/helpers.py split_name); a bare
# name is its fp32 mode.
TENSOR_CORE_BACKENDS = ("cuda-emu:tf32", "cuda-emu:bf16", "cuda:tf32", "cuda:bf16")
PARITY_BACKENDS = ("numba", "cuda-emu", "cuda") + TENSOR_CORE_BACKENDS
GPU_ONLY = ("cuda", "cuda:tf32", "cuda:bf16")

# softmax has no backward pass, so the gradient-checked op table (op_table.OPS) leaves it
# out; for parity it is a forward-only op.
PARITY_OPS = {**OPS, "softmax": OpSpec("softmax", (), lambda be, a, **kw: (be.softmax(a["logits"]), None),
                                       lambda be, d, c: ())}


def normal(rng, shape) -> np.ndarray:
    """N(0, 1) numbers as float32."""
    return rng.standard_normal(shape).astype(np.float32)


@dataclass(frozen=True)
class Case:
    op: str                        # a key of PARITY_OPS
    name: str                      # unique per op; the test id is BACKEND-OP-NAME
    inputs: dict | Callable        # {input: shape} of N(0, 1) numbers, or rng -> {input: array}
    kw: dict                       # keyword arguments of the forward pass
    why: str                       # what the case covers that the others do not
    backends: tuple[str, ...] = PARITY_BACKENDS
    count_fragile: bool = False    # fused block: count fragile windows instead of redrawing

    @property
    def id(self) -> str:
        return f"{self.op}-{self.name}"

    @property
    def spec(self) -> OpSpec:
        return PARITY_OPS[self.op]

    def arrays(self, rng) -> dict:
        """The host arrays of this case, drawn from rng."""
        if callable(self.inputs):
            return self.inputs(rng)
        return {name: normal(rng, shape) for name, shape in self.inputs.items()}


# ------------------------------------------------------------------ builders
def conv2d(name, x, w, *, why, stride=1, pad=0, backends=PARITY_BACKENDS) -> Case:
    """x (N, C, H, W) * w (F, C, KH, KW), bias (F,)."""
    return Case("conv2d", name, {"x": x, "w": w, "b": (w[0],)}, {"stride": stride, "pad": pad}, why, backends)


def conv_block(name, x, w, *, why, stride=1, pad=0, ceil_mode=True, backends=PARITY_BACKENDS,
               count_fragile=False) -> Case:
    """The fused block maxpool2x2(relu(conv2d(x, w) + b)). count_fragile: the case has so
    many windows that every draw has some whose decision rounding could flip (the paper's
    shapes): held to the bound that counts them (DECISIONS), not redrawn."""
    return Case("conv2d_relu_maxpool", name, {"x": x, "w": w, "b": (w[0],)},
                {"stride": stride, "pad": pad, "ceil_mode": ceil_mode}, why, backends, count_fragile)


def maxpool2d(name, x, size, stride, *, why, ceil_mode=True, backends=PARITY_BACKENDS) -> Case:
    """x: a shape, or a builder (see ties)."""
    inputs = x if callable(x) else {"x": x}
    return Case("maxpool2d", name, inputs, {"size": size, "stride": stride, "ceil_mode": ceil_mode}, why, backends)


def ties(shape):
    """Integers 0..2 (most windows hold several equal maxima) and one whole plane of
    equal values: the first maximum in row-major window order must win."""
    def build(rng):
        x = rng.integers(0, 3, shape).astype(np.float32)
        x[-1, -1] = 1.0
        return {"x": x}
    return build


def relu(name, shape, *, why, backends=PARITY_BACKENDS) -> Case:
    """Every 7th element exactly 0: the kink, which passes no gradient."""
    def build(rng):
        x = normal(rng, shape)
        x.flat[::7] = 0.0
        return {"x": x}
    return Case("relu", name, build, {}, why, backends)


def dense(name, n, d, m, *, why, backends=PARITY_BACKENDS) -> Case:
    """x (N, D) @ w (D, M) + b (M,)."""
    return Case("dense", name, {"x": (n, d), "w": (d, m), "b": (m,)}, {}, why, backends)


def dropout(name, shape, p, seed, *, why, train=True, backends=PARITY_BACKENDS) -> Case:
    return Case("dropout", name, {"x": shape}, {"p": p, "seed": seed, "train": train}, why, backends)


def logits(op, name, n, k, scale, *, why, backends=PARITY_BACKENDS) -> Case:
    """N(0, scale^2) logits (N, K) and, for the loss, labels drawn from [0, K)."""
    def build(rng):
        arrays = {"logits": normal(rng, (n, k)) * np.float32(scale)}
        if op == "softmax_cross_entropy":
            arrays["labels"] = rng.integers(0, k, n)
        return arrays
    return Case(op, name, build, {}, why, backends)


# ------------------------------------------------------------------ the cases
# Tiles of the kernels (kernels/gemm_tile.cuh, conv2d.cu): 64 x 64 x 16 for dense; for
# conv2d the shortest of 16x256, 32x128, 64x64 that covers M = F (forward, filter
# gradient) or M = C (data gradient); test_cuda_emu checks that the cases use each one.
# numba runs a convolution with C*KH*KW <= 32 taps as direct loops, a larger one through
# im2col in chunks of images. Apart from the GPU-only shapes, no size is a multiple of a
# tile.
CASES = [
    # ---- conv2d
    conv2d("3x3_valid", (2, 3, 7, 6), (4, 3, 3, 3),
           why="the plain case, odd sizes; numba: direct loops (27 taps)"),
    conv2d("stride2_pad1", (2, 2, 7, 8), (3, 2, 3, 3), stride=2, pad=1,
           why="stride and padding; numba: direct loops"),
    conv2d("batch1_5x5", (1, 1, 9, 9), (2, 1, 5, 5),
           why="a batch of one, a 5x5 kernel"),
    conv2d("1x1", (2, 5, 9, 11), (7, 5, 1, 1),
           why="a 1x1 kernel; numba: direct loops (5 taps)"),
    conv2d("3x2_stride3_pad2", (1, 3, 10, 9), (5, 3, 3, 2), stride=3, pad=2,
           why="a non-square kernel, stride 3, padding 2"),
    conv2d("c24_f20", (2, 24, 6, 7), (20, 24, 3, 3), pad=1,
           why="16 < C, F <= 32: the middle conv tile shape (32x128) in every pass"),
    conv2d("c67_f70", (1, 67, 6, 5), (70, 67, 3, 3), pad=1,
           why="C, F > 64: two tiles along M in every pass, K = 603 over many TILE_K steps (~0.4 s on cuda-emu)"),
    conv2d("k_over_table", (1, 230, 4, 3), (230, 230, 3, 3),
           why="K = C*KH*KW = F*KH*KW = 2070 taps: more than the kernels' tap tables hold, the digit-carrying "
               "fallback of every pass"),
    conv2d("split_k", (2, 1, 26, 23), (6, 1, 3, 3),
           why="P = 2*24*21 = 1008 output positions: the filter gradient splits K; numba: the first layer's C = 1"),
    conv2d("bias_chunks", (2, 2, 68, 66), (3, 2, 3, 3),
           why="P = 2*66*64 > BIAS_CHUNK (8192): the bias gradient is reduced in chunks (~0.9 s on cuda-emu)"),
    conv2d("im2col_5x5_stride3_pad2", (1, 3, 9, 9), (2, 3, 5, 5), stride=3, pad=2,
           why="numba: im2col (75 taps) with stride and padding, a batch of one"),
    conv2d("im2col_stride2_pad1", (2, 8, 9, 8), (6, 8, 3, 3), stride=2, pad=1,
           why="numba: im2col (72 taps), stride 2 and padding"),
    conv2d("im2col_16_channels", (3, 16, 13, 11), (8, 16, 3, 3),
           why="numba: im2col, three images in one chunk of columns"),
    conv2d("1x1_40_channels", (2, 40, 5, 6), (3, 40, 1, 1),
           why="numba: a 1x1 kernel on the im2col path (40 taps)"),
    conv2d("2x4_stride2_pad1", (2, 5, 8, 10), (7, 5, 2, 4), stride=2, pad=1,
           why="a kernel wider than tall, with stride and padding; numba: im2col (40 taps)"),
    conv2d("five_images_pad1", (5, 6, 9, 7), (4, 6, 3, 3), pad=1,
           why="numba: im2col over five images; test_numba_backend reruns it with one image per chunk"),
    conv2d("f40_tc_64x64", (1, 6, 7, 6), (40, 6, 3, 3), pad=1,
           why="32 < F <= 64: the tensor-core 64x64 tile in the forward pass and the filter gradient"),
    conv2d("16_channels_61x61", (8, 16, 61, 61), (32, 16, 3, 3), backends=GPU_ONLY,
           why="a paper_net-sized layer: many tiles in every direction"),
    conv2d("130x127_stride2_pad1", (4, 3, 130, 127), (16, 3, 3, 3), stride=2, pad=1, backends=GPU_ONLY,
           why="a large input with stride and padding"),

    # ---- the fused conv block (numba runs the three ops in turn)
    conv_block("first_layer_ceil", (2, 1, 20, 19), (16, 1, 3, 3),
               why="the paper's first block: 16x256 tile, 9 taps (few-taps weight gradient), 18x17 output: "
                   "ceil-mode windows hang over the bottom and right"),
    conv_block("pad1_32x128", (2, 3, 13, 12), (20, 3, 3, 3), pad=1,
               why="the 32x128 tile, padding, the bias gradient from the fused backward pass"),
    conv_block("stride2_floor_64x64", (1, 5, 11, 11), (70, 5, 3, 3), stride=2, ceil_mode=False,
               why="two 64-row tiles, stride 2, floor mode: the last conv row and column are in no window"),
    conv_block("few_taps_f20_stride2_pad1", (2, 1, 11, 10), (20, 1, 3, 3), stride=2, pad=1,
               why="the few-taps forward (9 taps) with two filter blocks, stride 2, padding, ceil-mode edges"),
    conv_block("few_taps_2x2_floor", (1, 2, 9, 8), (3, 2, 2, 2), ceil_mode=False,
               why="the few-taps forward with 2 channels of 2x2 taps, 3 filters, floor mode"),
    conv_block("f12_27_taps", (1, 3, 9, 8), (12, 3, 3, 3),
               why="F <= 16 with more taps than the few-taps forward takes: the fp32 16x256 fused tile"),
    conv_block("f40_tc_64x64", (1, 4, 9, 8), (40, 4, 3, 3),
               why="32 < F <= 64: the tensor-core 64x64 tile of the fused block"),
    conv_block("paper_block2_batch8", (8, 16, 127, 127), (32, 16, 3, 3), backends=GPU_ONLY, count_fragile=True,
               why="paper_net's second block (125 -> 63) at batch 8: ~1M windows, some always fragile"),

    # ---- relu
    relu("3d", (3, 5, 7), why="a small odd shape"),
    relu("1000", (1000,), why="more elements than one 256-thread block"),
    relu("4d", (2, 3, 17, 19), why="an NCHW activation"),
    relu("paper_first_conv_batch64", (64, 16, 254, 254), backends=GPU_ONLY,
         why="paper_net's first conv output at batch 64: 66 M elements, the grid-stride loop"),

    # ---- maxpool2d
    maxpool2d("2s2_ceil_7x9", (2, 3, 7, 9), 2, 2,
              why="ceil mode: the last row and column of windows hang over the edge"),
    maxpool2d("2s2_exact_fit", (2, 3, 8, 8), 2, 2,
              why="windows that tile the input exactly"),
    maxpool2d("paper_125x61", (1, 2, 125, 61), 2, 2,
              why="the paper's 125 -> 63 and 61 -> 31"),
    maxpool2d("one_pixel", (2, 2, 1, 1), 2, 2,
              why="a single pixel under a 2x2 window"),
    maxpool2d("floor_7x9", (1, 3, 7, 9), 2, 2, ceil_mode=False,
              why="floor mode drops the last row and column: no gradient reaches them"),
    maxpool2d("3s2_overlap", (2, 2, 8, 7), 3, 2,
              why="overlapping windows: a pixel can win twice, and its gradients add"),
    maxpool2d("2s1_overlap", (2, 1, 5, 6), 2, 1,
              why="stride 1: an interior pixel lies in four windows"),
    maxpool2d("3s3_10x10", (2, 2, 10, 10), 3, 3,
              why="10 -> 4 windows, the last covers one row (the corner one a single pixel): a ragged edge"),
    maxpool2d("2s3_gaps", (2, 2, 9, 7), 2, 3,
              why="stride > size: some pixels lie in no window"),
    maxpool2d("1s3", (1, 2, 5, 5), 1, 3,
              why="a 1x1 window with stride 3: 5 -> 2"),
    maxpool2d("ties_2s2", ties((2, 3, 9, 11)), 2, 2,
              why="ties: the first maximum in row-major window order gets the gradient"),
    maxpool2d("ties_3s2", ties((2, 3, 9, 11)), 3, 2,
              why="ties in overlapping windows"),
    maxpool2d("ties_3s1", ties((2, 3, 9, 11)), 3, 1,
              why="ties in windows that overlap by two thirds"),
    maxpool2d("ties_3s3", ties((2, 3, 9, 11)), 3, 3,
              why="ties in 3x3 windows side by side, a ragged right edge"),
    maxpool2d("paper_first_pool_batch8", (8, 16, 254, 254), 2, 2, backends=GPU_ONLY,
              why="paper_net's first pool at batch 8: 254 -> 127"),

    # ---- dense
    dense("under_one_tile", 5, 7, 3, why="smaller than one tile"),
    dense("batch1_one_output", 1, 13, 1, why="a batch of one, one output"),
    dense("split_k", 3, 600, 70, why="a long K over one row of tiles: split-K"),
    dense("two_tiles_each_way", 70, 130, 67, why="two tiles in every direction"),
    dense("batch66", 66, 17, 65, why="dw = x.T @ dout reduces over the batch: K = 66, M = 17, N = 65"),
    dense("paper_fc1_batch64", 64, 28800, 1024, backends=GPU_ONLY,
          why="the paper's first FC layer (hidden 1024) at batch 64: K = 28800"),
    dense("1024x1024_batch8", 8, 1024, 1024, backends=GPU_ONLY, why="a square hidden layer, a small batch"),

    # ---- dropout (the masks are Philox of (seed, index): every backend draws the same)
    dropout("p0.5", (4, 37), 0.5, 7, why="the plain case, an odd size"),
    dropout("both_key_words", (3, 5, 11), 0.3, (5 << 32) | 9, why="a seed above 2**32: both key words in use"),
    dropout("layer_seed", (3, 1000), 0.1, (12 << 32) | 5,
            why="a layer's seed as the model makes it, (call counter << 32) | layer seed; several blocks"),
    dropout("max_seed_p0.9", (1000,), 0.9, 2**64 - 1, why="the largest seed (every key bit set), p = 0.9"),
    dropout("4d_p0.25", (2, 3, 4, 5), 0.25, 123456789, why="an NCHW activation, p = 0.25"),
    dropout("p0_identity", (2, 3), 0.0, 1, why="p = 0: the identity, no mask"),
    dropout("eval_identity", (3, 4), 0.5, 3, train=False, why="train=False: the identity"),
    dropout("fc_batch64", (64, 1024), 0.5, (3 << 32) | 5, backends=GPU_ONLY,
            why="a hidden layer's activations at batch 64"),

    # ---- the loss (numba runs the reference's own code: not compared, see TOLERANCES)
    logits("softmax_cross_entropy", "6x3", 6, 3, 3.0, why="three classes"),
    logits("softmax_cross_entropy", "300_rows", 300, 2, 1.0,
           why="more rows than the one block's 256 threads: a thread takes several"),
    logits("softmax_cross_entropy", "logits_x100", 4, 10, 100.0,
           why="logits of a few hundred: exp overflows unless the row max is subtracted"),
    logits("softmax_cross_entropy", "1x1", 1, 1, 1.0, why="one row, one class: loss 0 and gradient 0"),
    logits("softmax", "7x5", 7, 5, 10.0, why="class probabilities of large logits"),
]


# ------------------------------------------------------------------ tolerances
class Tol(NamedTuple):
    """Largest relative error (gradcheck.rel_error) of the output and of each input
    gradient against the reference; EXACT (0) means bit for bit."""

    fwd: float
    grad: float


BIT_EXACT = Tol(EXACT, EXACT)
# numba's conv2d sums float32 products in another order than the reference (BLAS blocks
# or chunked float64 sums): rounding differs by a few ulps per sum. Forward outputs are
# sums of at most K = 603 terms here; the gradients are longer sums (over the batch and
# up to 8448 output positions) with more cancellation, hence 10x more room. Measured on
# these cases: forward <= 5e-7, gradients <= 2e-6. (The kernel backends are held to the
# derived bound instead, SUM_BOUND below: their comparisons run on the GPU too, where a
# tolerance measured on the CPU would be a guess.)
FLOAT32_SUMS = Tol(1e-5, 1e-4)

# The derived bounds (helpers.compare_within_sum_bound, tinycnn/verify.py): each element
# of the output and of every gradient against the exact result of the precision mode
# (its float64 reference), within gamma(n) sum|terms| for the products' FP32 sums in any
# order, or the bound of the loss's few operations; no tolerance to choose.
# SUM_BOUND: a fused-block case is redrawn while it has a window whose decision rounding
# could flip. DECISIONS (the cases with count_fragile): such windows are counted
# (at most verify.MAX_FRAGILE_FRACTION of them) and each gradient's bound carries their
# whole contribution.
SUM_BOUND = "the derived bound"
DECISIONS = "the derived bound, fragile windows counted"

# (backend, op) -> Tol, or None: not compared (the backend runs the reference's own code,
# so a parity test would compare numpy with itself; test_numba_backend.py checks the
# delegation instead). "maxpool2d, overlapping" is the tolerance for max-pool cases whose
# windows overlap (stride < size), where one exists.
TOLERANCES = {
    ("numba", "conv2d"): FLOAT32_SUMS,
    ("numba", "relu"): BIT_EXACT,            # the same comparison per element
    ("numba", "conv2d_relu_maxpool"): FLOAT32_SUMS,
    ("numba", "maxpool2d"): BIT_EXACT,       # the same comparisons, one term per pixel in dx
    # A pixel that wins several overlapping windows gets their gradients added window by
    # window on numba, offset by offset on the reference: the same terms in another order
    # (measured: 5e-8).
    ("numba", "maxpool2d, overlapping"): Tol(EXACT, 1e-4),
    ("numba", "dropout"): BIT_EXACT,         # the same Philox words and threshold, one multiply
    ("numba", "dense"): None,
    ("numba", "softmax_cross_entropy"): None,
    ("numba", "softmax"): None,

    # cuda-emu and cuda run the same kernels in the same order; the GPU may fuse a
    # multiply-add and its expf may differ in the last bits, which the derived bounds
    # cover (any sum order; exp and log to verify.ELEMENTARY_ULPS), so the two share them.
    ("cuda-emu", "conv2d"): SUM_BOUND,
    ("cuda-emu", "relu"): BIT_EXACT,
    ("cuda-emu", "conv2d_relu_maxpool"): SUM_BOUND,
    ("cuda-emu", "maxpool2d"): BIT_EXACT,    # dx gathers each pixel's windows in the reference's order
    ("cuda-emu", "dense"): SUM_BOUND,
    ("cuda-emu", "dropout"): BIT_EXACT,
    ("cuda-emu", "softmax_cross_entropy"): SUM_BOUND,
    ("cuda-emu", "softmax"): SUM_BOUND,

    ("cuda", "conv2d"): SUM_BOUND,
    ("cuda", "relu"): BIT_EXACT,
    ("cuda", "conv2d_relu_maxpool"): SUM_BOUND,
    ("cuda", "maxpool2d"): BIT_EXACT,
    ("cuda", "dense"): SUM_BOUND,
    ("cuda", "dropout"): BIT_EXACT,
    ("cuda", "softmax_cross_entropy"): SUM_BOUND,
    ("cuda", "softmax"): SUM_BOUND,
}


# The tensor-core modes: the products of conv2d, dense and the fused block are held to
# the derived bound around the exact result of the mode. Their other ops are the fp32
# mode's kernels, compared there.
PRECISION_OPS = ("conv2d", "dense", "conv2d_relu_maxpool")
for _backend in TENSOR_CORE_BACKENDS:
    for _op in PARITY_OPS:
        TOLERANCES[(_backend, _op)] = SUM_BOUND if _op in PRECISION_OPS else None


def tolerance(backend: str, case: Case) -> Tol | str | None:
    """What `case` is held to on `backend`: a Tol, SUM_BOUND or DECISIONS (the derived
    bounds), or None: not compared there."""
    if case.op == "maxpool2d" and case.kw["stride"] < case.kw["size"]:
        overlapping = TOLERANCES.get((backend, "maxpool2d, overlapping"))
        if overlapping is not None:
            return overlapping
    tol = TOLERANCES[(backend, case.op)]
    return DECISIONS if tol == SUM_BOUND and case.count_fragile else tol


def cases(op: str, backend: str) -> list[Case]:
    """The cases of `op` that run on `backend`."""
    return [c for c in CASES if c.op == op and backend in c.backends]


def case(op: str, name: str) -> Case:
    """The case called `name` of `op`."""
    found = [c for c in CASES if c.op == op and c.name == name]
    assert len(found) == 1, f"{len(found)} cases called {op}-{name}"
    return found[0]


DRAWS = 10  # inputs drawn for a fused-block case until one has no near tie (IllPosed)


def check_case(be, case: Case, tol, rng) -> None:
    """Hold backend `be` to `case` by `tol` (tolerance(): a Tol, SUM_BOUND or DECISIONS),
    on inputs drawn from rng; an AssertionError says what disagrees."""
    import pytest

    from tinycnn.verify import MAX_FRAGILE_FRACTION

    if tol == DECISIONS:
        compare_within_sum_bound(be, case.op, case.arrays(rng), max_fragile_fraction=MAX_FRAGILE_FRACTION, **case.kw)
        return
    if tol == SUM_BOUND:
        for _ in range(DRAWS):
            try:
                return compare_within_sum_bound(be, case.op, case.arrays(rng), **case.kw)
            except IllPosed:
                continue
        pytest.fail(f"{case.id}: {DRAWS} draws of inputs, each with a near tie")
    if not isinstance(tol, Tol):
        raise ValueError(f"{case.id}: unknown tolerance kind {tol!r}")
    compare_with_reference(be, case.spec, case.arrays(rng), fwd_tol=tol.fwd, grad_tol=tol.grad, **case.kw)

