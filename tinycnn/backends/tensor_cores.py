"""Launch geometry of the tensor-core kernels (issue 13): kernels/gemm_tc.cu and
kernels/conv2d_tc.cu, for a precision switch on ``launch.KernelBackend``.

Every tensor-core kernel takes the argument list of its FP32 counterpart (gemm.cu,
conv2d.cu), so switching a product to 'tf32' or 'bf16' changes three things only: the
kernel name, the grid and block (the tile shape and its threads), and, for the products
split along K, the split. This module computes them; the backend keeps its own array
allocation, workspaces and ``split_k_reduce``. A sketch of the use in launch.py:

    if self.precision == "fp32":
        ... today's code ...
    else:
        g = tensor_cores.conv2d_forward(self.precision, n, c, h, w, f, kh, kw, oh, ow)
        self._launch(g.name, g.grid, g.block, [out, x, w, b] + geometry)      # same args

    g = tensor_cores.gemm(self.precision, m, n, k)
    target = c if g.splits == 1 else self._empty((g.splits, m, n))
    self._launch(g.name, g.grid, g.block, tensor_cores.gemm_args(g, target, a, b, bias, m, n, k, sam, sak, sbk, sbn))
    if g.splits > 1: self._reduce_splits(c, target, g.splits, m * n, bias, n)

(``*_args`` build the full argument lists, the same as launch.py's, for tests and for
callers that want them.) Split factors depend on the shapes and fixed constants alone,
as in launch.py, so every run adds in the same order (determinism).

What each mode computes: D = round(A) round(B) (+ C) with FP32 accumulation, round =
tinycnn.precision.round_tf32 or round_bf16; the order of the FP32 additions inside an
mma is the hardware's (bound: tinycnn.precision.fp32_sum_error_bound).

For bench.gpu_model: ``HMMA_FLOPS`` (FLOPs of one warp-level HMMA instruction, by SASS
opcode), ``k_tiles`` (trips of a kernel's main loop for one block) and ``hmma_per_trip``
(HMMA instructions per warp per trip), see the notes there.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import numpy as np

from . import launch

from ..precision import PRECISIONS, TENSOR_CORE_PRECISIONS  # noqa: F401  (re-exported)

# Read from the kernels' own #defines (their one home), as launch.py does.
_C = launch._defines("tc_tile.cuh", "gemm_tc.cu")
K_WORDS = _C["TC_K_WORDS"]          # 32-bit operand words per k-tile row
WARP_N = _C["TC_WARP_N"]            # columns per warp
GEMM_TILE = _C["TC_GEMM_TILE"]      # the GEMM's BM = BN
GEMM_THREADS = _C["TC_GEMM_THREADS"]
#: Elements per operand word: a TF32 word holds one, a BF16 word two K-neighbours.
K_PER_WORD = {"tf32": 1, "bf16": 2}

#: FLOPs of one warp-level tensor-core instruction (2 M N K of its shape), by the SASS
#: opcode cuobjdump prints for mma.sync on sm_80 / sm_90: m16n8k8 TF32 and m16n8k16 BF16.
HMMA_FLOPS = {"HMMA.1688.F32.TF32": 2 * 16 * 8 * 8, "HMMA.16816.F32.BF16": 2 * 16 * 8 * 16}
#: Dense tensor-core peaks (TFLOP/s, NVIDIA's H100 SXM / H200 data sheets, without
#: sparsity); warp-level mma.sync reaches a part of it on Hopper (wgmma the rest).
PEAK_TFLOPS = {"tf32": 494.7, "bf16": 989.4}

i32 = np.int32


def _check(precision: str) -> None:
    if precision not in TENSOR_CORE_PRECISIONS:
        raise ValueError(f"tensor-core precision {precision!r}: expected one of {TENSOR_CORE_PRECISIONS}")


def k_tile(precision: str) -> int:
    """k per k-tile (one trip of the main loop): 16 for TF32, 32 for BF16."""
    _check(precision)
    return K_WORDS * K_PER_WORD[precision]


def threads(bm: int, bn: int) -> int:
    """Threads of a BM x BN tile (kernels/tc_tile.cuh, TcShape): BN / 32 warps along N and
    max(BM / 32, 1) along M."""
    return 32 * (bn // WARP_N) * max(bm // 32, 1)


def hmma_per_trip(bm: int, bn: int) -> int:
    """HMMA instructions per warp and k-tile: 2 k halves x (WM / 16) x (32 / 8)."""
    wm = bm // max(bm // 32, 1)
    return 2 * (wm // 16) * (WARP_N // 8)


@functools.lru_cache(maxsize=None)
def conv_tiles() -> list:
    """Every (BM, BN) tile of kernels/conv2d_tc.cu, read from its kernel names
    (conv2d_forward_tf32_64x64, ...); each must exist for every pass and precision."""
    names = launch.kernel_sources()["conv2d_tc.cu"][1]
    by_kind = {}
    for name in names:
        m = re.fullmatch(r"(conv2d_\w+_(?:tf32|bf16))_(\d+)x(\d+)", name)
        if m:
            by_kind.setdefault(m.group(1), set()).add((int(m.group(2)), int(m.group(3))))
    shapes = set.union(*by_kind.values())
    for kind, have in by_kind.items():
        if have != shapes:
            raise RuntimeError(f"kernels/conv2d_tc.cu: {kind} lacks the tile shapes {sorted(shapes - have)}")
    return sorted(shapes)


def conv_tile(m: int) -> tuple[int, int]:
    """(BM, BN) for a convolution product with m rows: the shortest tile that covers m
    (32x128, 64x64), else the tallest (128x64)."""
    return launch.pick_tile(conv_tiles(), m)


def split_k(tiles: int, k: int, precision: str) -> tuple[int, int]:
    """(splits, k_chunk) as launch.split_k (the same targets: about SPLIT_TARGET_BLOCKS
    blocks, at least SPLIT_MIN_K per split), with k_chunk a multiple of the k-tile (and so
    of 4: a chunk starts on a 16-byte boundary of a K-contiguous row, which cp.async needs)."""
    kt = k_tile(precision)
    if k <= 0:
        return 1, kt
    splits = 1
    if tiles < launch.SPLIT_TARGET_BLOCKS:
        splits = max(1, min(launch.cdiv(launch.SPLIT_TARGET_BLOCKS, tiles), k // launch.SPLIT_MIN_K))
    k_chunk = launch.cdiv(launch.cdiv(k, splits), kt) * kt
    return launch.cdiv(k, k_chunk), k_chunk


@dataclasses.dataclass(frozen=True)
class Geometry:
    """One launch: kernel name, grid, block; splits > 1: grid z = splits, the kernel
    writes slice z of a (splits, ...) workspace that split_k_reduce adds in order."""
    name: str
    grid: tuple
    block: tuple
    splits: int = 1
    k_chunk: int = 0


# ------------------------------------------------------------------------ GEMM
def gemm(precision: str, m: int, n: int, k: int) -> Geometry:
    """sgemm_{tf32,bf16}_strided for C (m, n) = A (m, k) B (k, n): 64 x 64 tiles, 128
    threads, split-K like sgemm_strided's."""
    _check(precision)
    grid_xy = (launch.cdiv(n, GEMM_TILE), launch.cdiv(m, GEMM_TILE))
    splits, k_chunk = split_k(grid_xy[0] * grid_xy[1], k, precision)
    return Geometry(f"sgemm_{precision}_strided", grid_xy + (splits,), (GEMM_THREADS, 1, 1), splits, k_chunk)


def gemm_args(g: Geometry, target, a, b, bias, m: int, n: int, k: int, sam: int, sak: int, sbk: int,
              sbn: int) -> list:
    """sgemm_strided's argument list: target is C (m, n) when unsplit, else the
    (splits, m, n) workspace (no bias there: split_k_reduce adds it)."""
    if g.splits == 1:
        has_bias = bias is not None
        return [target, a, b, bias if has_bias else target, i32(m), i32(n), i32(k), i32(sam), i32(sak), i32(sbk),
                i32(sbn), i32(n), i32(g.k_chunk), i32(0), i32(has_bias)]
    return [target, a, b, target, i32(m), i32(n), i32(k), i32(sam), i32(sak), i32(sbk), i32(sbn), i32(n),
            i32(g.k_chunk), i32(m * n), i32(0)]


# ----------------------------------------------------------------- convolutions
def conv(kind: str, precision: str, m: int, cols: int, k: int | None = None) -> Geometry:
    """conv2d_<kind>_<precision>_<BMxBN> for a product with m rows (filters or channels)
    and `cols` columns; with k (the backward-filter pass: K = output positions), split
    over grid z into k_chunk positions each when the tiles are few."""
    _check(precision)
    bm, bn = conv_tile(m)
    grid_xy = (launch.cdiv(cols, bn), launch.cdiv(m, bm))
    splits, k_chunk = (1, 0) if k is None else split_k(grid_xy[0] * grid_xy[1], k, precision)
    return Geometry(f"conv2d_{kind}_{precision}_{bm}x{bn}", grid_xy + (splits,), (threads(bm, bn), 1, 1), splits,
                    k_chunk)


def conv2d_forward(precision: str, n: int, c: int, h: int, w: int, f: int, kh: int, kw: int, oh: int,
                   ow: int) -> Geometry:
    """conv2d_forward_<precision>_<tile>: M = F filters, N = n oh ow output positions."""
    return conv("forward", precision, f, n * oh * ow)


def conv2d_relu_maxpool(precision: str, n: int, f: int, ph: int, pw: int) -> Geometry:
    """The fused block: its columns are the 4 members of each pooling window."""
    return conv("relu_maxpool", precision, f, n * ph * pw * 4)


def conv2d_backward_data(precision: str, n: int, c: int, h: int, w: int) -> Geometry:
    """conv2d_backward_data_<precision>_<tile>: M = C channels, N = n h w input pixels."""
    return conv("backward_data", precision, c, n * h * w)


def conv2d_backward_filter(precision: str, f: int, c: int, kh: int, kw: int, positions: int) -> Geometry:
    """conv2d_backward_filter_<precision>_<tile>: M = F, N = c kh kw taps, K = the output
    positions, split over grid z (k_chunk positions each) when the taps give few tiles."""
    return conv("backward_filter", precision, f, c * kh * kw, positions)


def conv_geometry_args(n, c, h, w, f, kh, kw, oh, ow, stride, pad) -> list:
    """The geometry scalars every convolution kernel takes, in order (as launch.py)."""
    return [i32(v) for v in (n, c, h, w, f, kh, kw, oh, ow, stride, pad)]


# ------------------------------------------------------------ bench.gpu_model
def k_tiles(kernel: str, args: list) -> int:
    """Trips of a tensor-core kernel's main loop for one block (0: not one of them), from
    its argument list: ceil(K of this block / k_tile). The loop body holds
    hmma_per_trip(BM, BN) HMMA per warp (the backward branch with the most HMMA in the
    SASS), each of HMMA_FLOPS[opcode] FLOPs."""
    m = re.fullmatch(r"(sgemm|conv2d_\w+?)_(tf32|bf16)_(strided|\d+x\d+)", kernel)
    if not m:
        return 0
    kind, kt = m.group(1), k_tile(m.group(2))
    if kind == "sgemm":
        k, k_chunk = int(args[6]), int(args[12])
        return launch.cdiv(min(k, k_chunk), kt)
    scalars = [int(v) for v in args if isinstance(v, np.generic)]  # N, C, H, W, F, KH, KW, OH, OW, ...
    n, c, _, _, f, kh, kw, oh, ow = scalars[:9]
    if kind in ("conv2d_forward", "conv2d_relu_maxpool"):
        return launch.cdiv(c * kh * kw, kt)
    if kind == "conv2d_backward_data":
        return launch.cdiv(f * kh * kw, kt)
    if kind == "conv2d_backward_filter":
        return launch.cdiv(min(scalars[11], n * oh * ow), kt)  # k_chunk
    return 0
