"""Launch geometry of every kernel, in every precision mode: which kernel, on what grid.

A product (a dense layer's GEMM, a convolution pass) runs as one of three families of
kernels that take the SAME argument list:

    fp32   gemm.cu (sgemm_strided) and conv2d.cu (conv2d_<pass>_igemm_<BMxBN>): FP32
           CUDA cores, 64 x 64 x 16 GEMM tiles of 256 threads, conv tiles 16x256,
           32x128, 64x64;
    tf32   gemm_tc.cu (sgemm_tf32_strided) and conv2d_tc.cu
    bf16   (conv2d_<pass>_<precision>_<BMxBN>): tensor cores, 64 x 64 GEMM tiles of 128
           threads, conv tiles 32x128, 64x64, 128x64, k-tiles of 16 (TF32) or 32 (BF16).

So switching a product's precision changes three things only, which ``gemm`` and
``conv`` compute, returning one ``Geometry``: the kernel name, the grid and block (the
tile and its threads), and, for products split along K, the split. The launching code
(kernel_backend.py) has no precision branch. The few-taps kernels of the first layer
(``block_smallk``, ``filter_grad_smallk``) run on CUDA cores in every mode, as
variants that round their operands (name suffix ``_tf32`` / ``_bf16``).

Every number a grid must agree with is read from the kernels' own #defines
(kernel_sources.defines), and split factors depend on the shapes and fixed constants
alone, never on the device: every run adds in the same order (determinism).
"""

from __future__ import annotations

import dataclasses
import functools
import re

import numpy as np

from ..precision import check_precision
from .kernel_sources import defines, kernel_sources

_C = defines("gemm_tile.cuh", "conv2d.cu", "softmax_ce.cu", "tc_tile.cuh", "gemm_tc.cu")

# ---- FP32 CUDA-core tiles (kernels/gemm_tile.cuh; conv2d.cu uses the same K and threads)
TILE_M, TILE_N, TILE_K, TILE_THREADS = _C["TILE_M"], _C["TILE_N"], _C["TILE_K"], _C["TILE_THREADS"]
# ---- tensor-core tiles (kernels/tc_tile.cuh, gemm_tc.cu)
TC_K_WORDS = _C["TC_K_WORDS"]          # 32-bit operand words per k-tile row
TC_WARP_N = _C["TC_WARP_N"]            # columns per warp
TC_GEMM_TILE = _C["TC_GEMM_TILE"]      # the tensor-core GEMM's BM = BN
TC_GEMM_THREADS = _C["TC_GEMM_THREADS"]
#: Elements per operand word: a TF32 word holds one, a BF16 word two K-neighbours.
K_PER_WORD = {"tf32": 1, "bf16": 2}
# ---- the other kernels
BIAS_THREADS = _C["BIAS_THREADS"]      # conv2d bias gradient (kernels/conv2d.cu)
# conv2d weight gradient for few taps (conv2d_backward_filter_smallk)
SMALLK_TAPS, SMALLK_BLOCK_FILTERS, SMALLK_LANES = _C["SMALLK_TAPS"], _C["SMALLK_BLOCK_FILTERS"], _C["SMALLK_LANES"]
SMALLK_THREADS = 256
# the fused block's forward pass for as few taps (conv2d_relu_maxpool_smallk)
SMALLK_FWD_FILTERS, SMALLK_FWD_THREADS = _C["SMALLK_FWD_FILTERS"], _C["SMALLK_FWD_THREADS"]
XENT_THREADS = _C["XENT_THREADS"]      # kernels/softmax_ce.cu

# Numbers of the launch alone (the kernels take them as arguments or loop over any grid):
# element-wise kernels: 256 threads, grid-stride loops over at most this many blocks.
ELEMENTWISE_THREADS, MAX_BLOCKS = 256, 4096
# Split-K: aim for this many blocks (about two waves on a 132-SM H100) and give each
# split at least this much of K. Fixed numbers, not the device's: the split, and so
# the order of every addition, depends on the shapes alone.
SPLIT_TARGET_BLOCKS, SPLIT_MIN_K = 264, 256
BIAS_CHUNK = 8192  # output positions per conv2d bias-gradient block
SMALLK_TARGET_BLOCKS = 528  # the few-taps weight gradient: about four blocks per SM of an H100

INT32_MAX = 2**31 - 1
# The largest tensor a kernel may index: a grid-stride loop's last step (i += at most
# MAX_BLOCKS * ELEMENTWISE_THREADS) must not pass INT32_MAX and wrap to a negative index.
MAX_ELEMENTS = INT32_MAX - MAX_BLOCKS * ELEMENTWISE_THREADS

i32 = np.int32


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def grid_1d(n: int, threads: int = ELEMENTWISE_THREADS) -> tuple:
    """Blocks for a grid-stride loop over n items."""
    return (max(1, min(cdiv(n, threads), MAX_BLOCKS)), 1, 1)


def check_size(*sizes) -> None:
    """Refuse a tensor the kernels' 32-bit indices cannot address."""
    for s in sizes:
        if s > MAX_ELEMENTS:
            raise ValueError(f"tensor of {s} elements: the kernels index with 32-bit ints (at most {MAX_ELEMENTS})")


@dataclasses.dataclass(frozen=True)
class Geometry:
    """One launch: kernel name, grid, block; splits > 1: grid z = splits, the kernel
    writes slice z of a (splits, ...) workspace that split_k_reduce adds in order, each
    split covering k_chunk of the reduction."""
    name: str
    grid: tuple
    block: tuple
    splits: int = 1
    k_chunk: int = 0


def k_tile(precision: str) -> int:
    """k per k-tile (one trip of a product's main loop): TILE_K (16) in fp32, 16 for
    TF32, 32 for BF16 (TC_K_WORDS words of K_PER_WORD elements)."""
    check_precision(precision)
    return TILE_K if precision == "fp32" else TC_K_WORDS * K_PER_WORD[precision]


def split_k(tiles: int, k: int, precision: str = "fp32") -> tuple[int, int]:
    """(splits, k_chunk) for a product with `tiles` output tiles and reduction length k:
    about SPLIT_TARGET_BLOCKS blocks, at least SPLIT_MIN_K per split; k_chunk is a
    multiple of the mode's k-tile (so, in the tensor-core modes, of 4: a chunk starts on
    a 16-byte boundary of a K-contiguous row, which cp.async needs) and
    splits * k_chunk >= k."""
    kt = k_tile(precision)
    if k <= 0:  # an empty sum (a batch of zero): one split, whose loop runs zero times
        return 1, kt
    splits = 1
    if tiles < SPLIT_TARGET_BLOCKS:
        splits = max(1, min(cdiv(SPLIT_TARGET_BLOCKS, tiles), k // SPLIT_MIN_K))
    k_chunk = cdiv(cdiv(k, splits), kt) * kt
    return cdiv(k, k_chunk), k_chunk


# ------------------------------------------------------------------------ tiles
_CONV_TILE_NAME = {
    "fp32": re.compile(r"(conv2d_\w+_igemm)_(\d+)x(\d+)"),
    "tc": re.compile(r"(conv2d_\w+_(?:tf32|bf16))_(\d+)x(\d+)"),
}
_CONV_FILE = {"fp32": "conv2d.cu", "tc": "conv2d_tc.cu"}


@functools.lru_cache(maxsize=None)
def conv_tiles(family: str = "fp32") -> list:
    """Every (BM, BN) tile that a convolution file instantiates, read from its kernel
    names (conv2d_forward_igemm_64x64, conv2d_forward_tf32_32x128, ...): family 'fp32'
    is conv2d.cu, 'tc' conv2d_tc.cu. Each shape must exist for every pass (and mode)."""
    names = kernel_sources()[_CONV_FILE[family]][1]
    by_kind = {}
    for name in names:
        m = _CONV_TILE_NAME[family].fullmatch(name)
        if m:
            by_kind.setdefault(m.group(1), set()).add((int(m.group(2)), int(m.group(3))))
    shapes = set.union(*by_kind.values())
    for kind, have in by_kind.items():
        if have != shapes:
            raise RuntimeError(f"kernels/{_CONV_FILE[family]}: {kind} lacks the tile shapes {sorted(shapes - have)}")
    return sorted(shapes)


def pick_tile(tiles: list, m: int) -> tuple[int, int]:
    """Of (BM, BN) tile shapes, the shortest that covers m rows (few channels leave no
    rows idle), else the tallest."""
    covering = [t for t in tiles if t[0] >= m]
    return min(covering) if covering else max(tiles)


def conv_tile(precision: str, m: int) -> tuple[int, int]:
    """(BM, BN) of the convolution tile for a product with m rows in `precision`."""
    check_precision(precision)
    return pick_tile(conv_tiles("fp32" if precision == "fp32" else "tc"), m)


def tc_threads(bm: int, bn: int) -> int:
    """Threads of a tensor-core BM x BN tile (kernels/tc_tile.cuh, TcShape): BN / 32 warps
    along N and max(BM / 32, 1) along M."""
    return 32 * (bn // TC_WARP_N) * max(bm // 32, 1)


def tile_threads(precision: str, bm: int, bn: int) -> int:
    """Threads of a convolution tile: TILE_THREADS on CUDA cores, tc_threads otherwise."""
    return TILE_THREADS if precision == "fp32" else tc_threads(bm, bn)


# ------------------------------------------------------------------------ GEMM
def gemm(precision: str, m: int, n: int, k: int) -> Geometry:
    """The GEMM C (m, n) = A (m, k) B (k, n): sgemm_strided (fp32) or
    sgemm_<precision>_strided, split along K when the tiles are few."""
    check_precision(precision)
    if precision == "fp32":
        name, (bm, bn), threads = "sgemm_strided", (TILE_M, TILE_N), TILE_THREADS
    else:
        name, (bm, bn), threads = f"sgemm_{precision}_strided", (TC_GEMM_TILE,) * 2, TC_GEMM_THREADS
    grid_xy = (cdiv(n, bn), cdiv(m, bm))
    splits, k_chunk = split_k(grid_xy[0] * grid_xy[1], k, precision)
    return Geometry(name, grid_xy + (splits,), (threads, 1, 1), splits, k_chunk)


def gemm_args(g: Geometry, target, a, b, bias, m: int, n: int, k: int, sam: int, sak: int, sbk: int,
              sbn: int) -> list:
    """The argument list of every GEMM kernel (kernels/gemm.cu: sgemm_strided):
    A[i, l] = a[i*sam + l*sak], B[l, j] = b[l*sbk + j*sbn]; target is C (m, n) when
    unsplit, else the (splits, m, n) workspace (no bias there: split_k_reduce adds it)."""
    if g.splits == 1:
        has_bias = bias is not None
        return [target, a, b, bias if has_bias else target, i32(m), i32(n), i32(k), i32(sam), i32(sak), i32(sbk),
                i32(sbn), i32(n), i32(g.k_chunk), i32(0), i32(has_bias)]
    return [target, a, b, target, i32(m), i32(n), i32(k), i32(sam), i32(sak), i32(sbk), i32(sbn), i32(n),
            i32(g.k_chunk), i32(m * n), i32(0)]


# ----------------------------------------------------------------- convolutions
CONV_PASSES = ("forward", "relu_maxpool", "backward_data", "backward_filter")


def conv(kind: str, precision: str, m: int, cols: int, k: int | None = None) -> Geometry:
    """An implicit-GEMM convolution pass (kind: one of CONV_PASSES) with m rows (filters,
    or channels for backward_data) and `cols` columns: conv2d_<kind>_igemm_<BMxBN> in
    fp32, conv2d_<kind>_<precision>_<BMxBN> otherwise. With k (backward_filter: K = the
    output positions), split over grid z into k_chunk positions each when the tiles are
    few."""
    if kind not in CONV_PASSES:
        raise ValueError(f"convolution pass {kind!r}: expected one of {CONV_PASSES}")
    bm, bn = conv_tile(precision, m)
    grid_xy = (cdiv(cols, bn), cdiv(m, bm))
    splits, k_chunk = (1, 0) if k is None else split_k(grid_xy[0] * grid_xy[1], k, precision)
    family = "igemm" if precision == "fp32" else precision
    return Geometry(f"conv2d_{kind}_{family}_{bm}x{bn}", grid_xy + (splits,),
                    (tile_threads(precision, bm, bn), 1, 1), splits, k_chunk)


def conv2d_forward(precision: str, n: int, f: int, oh: int, ow: int) -> Geometry:
    """M = F filters, N = n oh ow output positions."""
    return conv("forward", precision, f, n * oh * ow)


def conv2d_relu_maxpool(precision: str, n: int, f: int, ph: int, pw: int) -> Geometry:
    """The fused block: its columns are the 4 members of each pooling window."""
    return conv("relu_maxpool", precision, f, n * ph * pw * 4)


def conv2d_backward_data(precision: str, n: int, c: int, h: int, w: int) -> Geometry:
    """M = C channels, N = n h w input pixels."""
    return conv("backward_data", precision, c, n * h * w)


def conv2d_backward_filter(precision: str, f: int, c: int, kh: int, kw: int, positions: int) -> Geometry:
    """M = F, N = c kh kw taps, K = the output positions."""
    return conv("backward_filter", precision, f, c * kh * kw, positions)


def conv_geometry_args(n, c, h, w, f, kh, kw, oh, ow, stride, pad) -> list:
    """The geometry scalars every convolution kernel takes, in order."""
    return [i32(v) for v in (n, c, h, w, f, kh, kw, oh, ow, stride, pad)]


def rounding_suffix(precision: str) -> str:
    """The name suffix of a CUDA-core kernel's variant that rounds its operands as
    `precision` says (the few-taps kernels): '', '_tf32' or '_bf16'."""
    check_precision(precision)
    return "" if precision == "fp32" else "_" + precision


def block_smallk(precision: str, n: int, f: int, ph: int, pw: int) -> Geometry:
    """The fused block's forward pass as direct loops (at most SMALLK_TAPS taps): one
    pooling window per thread, SMALLK_FWD_FILTERS filters per block row."""
    return Geometry("conv2d_relu_maxpool_smallk" + rounding_suffix(precision),
                    (cdiv(n * ph * pw, SMALLK_FWD_THREADS), cdiv(f, SMALLK_FWD_FILTERS), 1),
                    (SMALLK_FWD_THREADS, 1, 1))


def filter_grad_smallk(precision: str, f: int, positions: int) -> Geometry:
    """dw and db of a convolution with at most SMALLK_TAPS taps in one pass over dout:
    chunks of k_chunk output positions (fixed by the shapes alone), one block per chunk
    and SMALLK_BLOCK_FILTERS filters; splits = the chunks, whose partial sums
    split_k_reduce adds in chunk order."""
    fblocks = cdiv(f, SMALLK_BLOCK_FILTERS)
    target = max(1, SMALLK_TARGET_BLOCKS // fblocks)
    p = max(positions, 1)
    chunk = max(SMALLK_LANES, cdiv(cdiv(p, target), SMALLK_LANES) * SMALLK_LANES)
    chunks = cdiv(p, chunk)
    return Geometry("conv2d_backward_filter_smallk" + rounding_suffix(precision), (chunks, fblocks, 1),
                    (SMALLK_THREADS, 1, 1), chunks, chunk)


def bias_chunks(positions: int) -> int:
    """Blocks (one partial each) of a conv bias gradient summed in chunks of BIAS_CHUNK."""
    return max(1, cdiv(positions, BIAS_CHUNK))

