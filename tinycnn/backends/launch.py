"""The op contract in terms of kernel launches, shared by "cuda" and "cuda-emu".

``KernelBackend`` implements every op of docs/design.md as "launch kernel K on grid G
with block B and arguments A" for the kernels in ``kernels/*.cu``. A subclass
supplies only what differs between the GPU and the emulator:

    xp                       the array module (cupy or numpy)
    _device_empty(shape, dtype)
                             an uninitialised array
    _device_run(name, grid, block, args)
                             run kernel `name`; grid and block are (x, y, z);
                             args are arrays and NumPy scalars (np.int32,
                             np.uint32, np.float32) in the kernel's parameter order
    _device_copy(dst, src), _device_upload(dst, host), _address(a)
                             device-to-device and host-to-device copies in stream
                             order; an array's address
    _make_graph(launches), _launch_graph(graph)
                             a recorded launch list as one replayable unit (a CUDA
                             graph; the list itself on cuda-emu): tinycnn/backends/capture.py
    asarray, to_numpy, synchronize, device_name

So the grid arithmetic and the argument lists the GPU sees are exactly the ones
the emulator runs in CI, where every argument list is also checked against the
kernel's C signature.

This module also finds the kernel sources (``kernel_sources``): the .cu files, the
``extern "C"`` kernel names in each, and each file with its local #includes
inlined (for NVRTC, which then needs no include path and whose cache key covers
the headers).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.resources
import os
import re

import numpy as np

from ..philox import keep_threshold, seed_to_key
from ..precision import PRECISIONS
from ..precision import choose as choose_precision
from ..shapes import check_dense, check_labels, conv2d_out_hw, conv_out_size, pool_out_size
from .capture import CapturedStep
from .contract import STAT_COUNT, STAT_LAYOUT, new_step_stats

def kernel_dir() -> str:
    """The folder of the .cu sources: the installed package ``tinycnn.kernels`` (a
    wheel, or an editable install, which maps the repository's top-level kernels/
    there); in a source tree used without installing (``PYTHONPATH=.``), that
    top-level kernels/ itself."""
    try:
        return str(importlib.resources.files("tinycnn.kernels"))
    except ModuleNotFoundError:
        return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "kernels")


KERNEL_DIR = kernel_dir()

_DEFINE_RE = re.compile(r"^\s*#\s*define\s+([A-Z][A-Z0-9_]*)\s+(\d+)\b", re.M)


def _defines(*files: str) -> dict:
    """{NAME: value} of every integer ``#define NAME value`` in the given kernel files."""
    out = {}
    for fname in files:
        with open(os.path.join(KERNEL_DIR, fname), encoding="utf-8") as f:
            out.update((name, int(value)) for name, value in _DEFINE_RE.findall(f.read()))
    return out


# The numbers the grids must agree with are read from the kernels' own #defines:
# the C source is their one home.
_C = _defines("gemm_tile.cuh", "conv2d.cu", "softmax_ce.cu", "step_stats.cuh")
# The step statistics' layout is the contract's (contract.STAT_LAYOUT); the kernels'
# step_stats.cuh must say the same, number for number.
if {name: _C.get(name) for name in STAT_LAYOUT} != STAT_LAYOUT:
    raise RuntimeError(f"kernels/step_stats.cuh and tinycnn.backends.contract.STAT_LAYOUT disagree: "
                       f"{ {name: _C.get(name) for name in STAT_LAYOUT} } != {STAT_LAYOUT}")
DYN_SLOTS = 1024  # dynamic scalars (seeds, learning rates) a captured step may use
TILE_M, TILE_N, TILE_K, TILE_THREADS = _C["TILE_M"], _C["TILE_N"], _C["TILE_K"], _C["TILE_THREADS"]
BIAS_THREADS = _C["BIAS_THREADS"]  # conv2d bias gradient (kernels/conv2d.cu)
# conv2d weight gradient for few taps (kernels/conv2d.cu: conv2d_backward_filter_smallk)
SMALLK_TAPS, SMALLK_BLOCK_FILTERS, SMALLK_LANES = _C["SMALLK_TAPS"], _C["SMALLK_BLOCK_FILTERS"], _C["SMALLK_LANES"]
# the fused block's forward pass for as few taps (conv2d_relu_maxpool_smallk)
SMALLK_FWD_FILTERS, SMALLK_FWD_THREADS = _C["SMALLK_FWD_FILTERS"], _C["SMALLK_FWD_THREADS"]
XENT_THREADS = _C["XENT_THREADS"]  # kernels/softmax_ce.cu
# Numbers of the launch alone (the kernels take them as arguments or loop over any grid):
# element-wise kernels: 256 threads, grid-stride loops over at most this many blocks.
ELEMENTWISE_THREADS, MAX_BLOCKS = 256, 4096
# Split-K: aim for this many blocks (about two waves on a 132-SM H100) and give each
# split at least this much of K. Fixed numbers, not the device's: the split, and so
# the order of every addition, depends on the shapes alone.
SPLIT_TARGET_BLOCKS, SPLIT_MIN_K = 264, 256
BIAS_CHUNK = 8192  # output positions per conv2d bias-gradient block
SMALLK_TARGET_BLOCKS = 528  # the few-taps weight gradient: about four blocks per SM of an H100

_KERNEL_RE = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(')
_INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*(?://.*)?$', re.M)
_PRAGMA_ONCE_RE = re.compile(r'^\s*#\s*pragma\s+once\s*$', re.M)

INT32_MAX = 2**31 - 1
# The largest tensor a kernel may index: a grid-stride loop's last step (i += at most
# MAX_BLOCKS * ELEMENTWISE_THREADS) must not pass INT32_MAX and wrap to a negative index.
MAX_ELEMENTS = INT32_MAX - MAX_BLOCKS * ELEMENTWISE_THREADS


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _inline_includes(path: str, seen: set) -> str:
    """The file with each local #include "x" replaced by x's text (once per file)."""
    folder = os.path.dirname(path)
    with open(path, encoding="utf-8") as f:
        text = f.read()

    def repl(m):
        inc = os.path.normpath(os.path.join(folder, m.group(1)))
        if inc in seen:
            return f"// (already included: {m.group(1)})"
        seen.add(inc)
        body = _PRAGMA_ONCE_RE.sub("", _inline_includes(inc, seen))  # the `seen` set does its job now
        return f"// ---- begin {m.group(1)}\n{body}\n// ---- end {m.group(1)}"

    return _INCLUDE_RE.sub(repl, text)


@functools.lru_cache(maxsize=None)
def kernel_sources(kernel_dir: str = KERNEL_DIR) -> dict:
    """{file name: (self-contained source, [kernel names])} for every kernels/*.cu."""
    out = {}
    names_seen = {}
    for fname in sorted(os.listdir(kernel_dir)):
        if not fname.endswith(".cu"):
            continue
        path = os.path.join(kernel_dir, fname)
        source = _inline_includes(path, set())
        names = _KERNEL_RE.findall(source)
        for n in names:
            if n in names_seen:
                raise RuntimeError(f"kernel {n} is defined in both {names_seen[n]} and {fname}")
            names_seen[n] = fname
        out[fname] = (source, names)
    return out


def _grid_1d(n: int, threads: int = ELEMENTWISE_THREADS) -> tuple:
    """Blocks for a grid-stride loop over n items."""
    return (max(1, min(cdiv(n, threads), MAX_BLOCKS)), 1, 1)


def _check_size(*sizes) -> None:
    for s in sizes:
        if s > MAX_ELEMENTS:
            raise ValueError(f"tensor of {s} elements: the kernels index with 32-bit ints (at most {MAX_ELEMENTS})")


@functools.lru_cache(maxsize=None)
def _conv_tiles() -> list:
    """Every (BM, BN) tile shape that kernels/conv2d.cu instantiates, read from its
    kernel names (conv2d_forward_igemm_64x64, ...): each shape must exist for all
    three passes."""
    names = kernel_sources()["conv2d.cu"][1]
    by_pass = {}
    for name in names:
        m = re.fullmatch(r"(conv2d_\w+_igemm)_(\d+)x(\d+)", name)
        if m:
            by_pass.setdefault(m.group(1), set()).add((int(m.group(2)), int(m.group(3))))
    shapes = set.union(*by_pass.values())
    for pass_name, have in by_pass.items():
        if have != shapes:
            raise RuntimeError(f"kernels/conv2d.cu: {pass_name} lacks the tile shapes {sorted(shapes - have)}")
    return sorted(shapes)


def pick_tile(tiles: list, m: int) -> tuple[int, int]:
    """Of (BM, BN) tile shapes, the shortest that covers m rows (few channels leave no
    rows idle), else the tallest."""
    covering = [t for t in tiles if t[0] >= m]
    return min(covering) if covering else max(tiles)


def conv_tile(m: int) -> tuple[int, int, str]:
    """(BM, BN, kernel-name suffix) of the convolution tile for a product with m rows."""
    bm, bn = pick_tile(_conv_tiles(), m)
    return bm, bn, f"_{bm}x{bn}"


def split_k(tiles: int, k: int) -> tuple[int, int]:
    """(splits, k_chunk) for a product with `tiles` output tiles and reduction length k.
    k_chunk is a multiple of TILE_K; splits * k_chunk >= k."""
    if k <= 0:  # an empty sum (a batch of zero): one split, whose loop runs zero times
        return 1, TILE_K
    splits = 1
    if tiles < SPLIT_TARGET_BLOCKS:
        splits = max(1, min(cdiv(SPLIT_TARGET_BLOCKS, tiles), k // SPLIT_MIN_K))
    k_chunk = cdiv(cdiv(k, splits), TILE_K) * TILE_K
    return cdiv(k, k_chunk), k_chunk


i32, u32, f32 = np.int32, np.uint32, np.float32


class KernelBackend:
    """The op contract on top of kernels/*.cu (see the module docstring)."""

    name = "kernels"
    dtype = np.dtype(np.float32)
    xp = None
    #: The precision modes (tinycnn/precision.py): 'fp32' runs every product on the FP32
    #: CUDA cores (gemm.cu, conv2d.cu); 'tf32' and 'bf16' run the convolutions and dense
    #: products on tensor cores (gemm_tc.cu, conv2d_tc.cu) with operands rounded to that
    #: format and FP32 sums. Everything else (bias, ReLU, pooling, dropout, the loss, the
    #: optimizer's update of the FP32 master weights) is FP32 in every mode.
    precisions = PRECISIONS
    precision = "fp32"

    allocations = 0     # arrays the ops allocated (a captured step's replays allocate none)
    _arena = None       # capture.StepArena while a captured step runs
    _recording = None   # a dry pass's launch list: launches are recorded, not run
    _dyn = None         # the dynamic scalars (see _dynamic), on the device and on the host
    _dyn_host = None
    _dyn_next = 0
    _tables = None      # multi-tensor pointer tables, by addresses
    _no_guard = None

    # --------------------------------------------------- supplied by subclasses
    def _device_empty(self, shape, dtype):
        raise NotImplementedError

    def _device_run(self, name: str, grid: tuple, block: tuple, args: list) -> None:
        raise NotImplementedError

    def _device_copy(self, dst, src) -> None:
        raise NotImplementedError

    def _device_upload(self, dst, host: np.ndarray) -> None:
        raise NotImplementedError

    def _address(self, a) -> int:
        raise NotImplementedError

    def _make_graph(self, launches: list):
        raise NotImplementedError

    def _launch_graph(self, graph) -> None:
        raise NotImplementedError

    def asarray(self, a, dtype=None):
        raise NotImplementedError

    def to_numpy(self, a) -> np.ndarray:
        raise NotImplementedError

    def synchronize(self) -> None:
        raise NotImplementedError

    def device_name(self) -> str:
        raise NotImplementedError

    def _set_precision(self, precision: str | None, default: str) -> None:
        self.precision = choose_precision(precision, self.precisions, default, self.name)

    # ------------------------------------------- allocations, launches, capture
    def _allocate(self, shape, dtype=np.float32):
        self.allocations += 1
        return self._device_empty(tuple(shape), np.dtype(dtype))

    def _empty(self, shape, dtype=np.float32):
        """An op's output or workspace: from the arena while a captured step runs."""
        if self._arena is not None:
            return self._arena.take(shape, dtype)
        return self._allocate(shape, dtype)

    def _launch(self, name: str, grid: tuple, block: tuple, args: list) -> None:
        if min(grid) < 1 or min(block) < 1:
            raise ValueError(f"{name}: empty launch grid {grid} / block {block}")
        launch = (name, tuple(int(g) for g in grid), tuple(int(b) for b in block), tuple(args))
        if self._recording is not None:
            self._recording.append(launch)
        else:
            self._run(*launch)

    def _run(self, name, grid, block, args) -> None:
        self._device_run(name, grid, block, args)

    def _copy(self, dst, src) -> None:
        if tuple(dst.shape) != tuple(src.shape) or dst.dtype != src.dtype:
            raise ValueError(f"copy of a {src.dtype} array of shape {tuple(src.shape)} into "
                             f"{dst.dtype} {tuple(dst.shape)}")
        self._device_copy(dst, src)

    @contextlib.contextmanager
    def _stepping(self, arena, launches=None):
        """Inside a captured step: arrays from `arena`; with `launches`, a dry pass
        (launches recorded, dynamic scalars uploaded by the caller afterwards)."""
        saved = self._arena, self._recording
        self._arena, self._recording = arena, launches
        try:
            yield
        finally:
            self._arena, self._recording = saved

    def capture(self, step):
        """step(*inputs), recorded once and replayed as a CUDA graph (capture.py)."""
        return CapturedStep(self, step)

    def _same_launches(self, a: list, b: list) -> bool:
        """Whether two launch lists are the same kernels, grids, arrays and scalars."""
        if len(a) != len(b):
            return False
        for (na, ga, ba, xa), (nb, gb, bb, xb) in zip(a, b):
            if (na, ga, ba) != (nb, gb, bb) or len(xa) != len(xb):
                return False
            for u, v in zip(xa, xb):
                if isinstance(u, np.generic) or isinstance(v, np.generic):
                    if type(u) is not type(v) or u != v:
                        return False
                elif self._address(u) != self._address(v) or tuple(u.shape) != tuple(v.shape):
                    return False
        return True

    def _dynamic(self, *words) -> int:
        """Put 32-bit words (values that change from step to step: seeds, learning
        rates) into the next slots of the dynamic scalars, which kernels read from
        device memory; return the first slot. Uploaded at once, in stream order,
        except in a captured step's dry pass, which uploads them all before the replay."""
        if self._dyn is None:
            self._dyn_host = np.zeros(DYN_SLOTS, np.uint32)
            self._dyn = self._allocate((DYN_SLOTS,), np.uint32)
        n = len(words)
        if self._dyn_next + n > DYN_SLOTS:
            if self._arena is not None:
                raise RuntimeError(f"a captured step needs more than {DYN_SLOTS} dynamic scalars")
            self._dyn_next = 0  # eager: every launch read its slots before this upload runs
        slot = self._dyn_next
        self._dyn_next += n
        self._dyn_host[slot:slot + n] = words
        if self._recording is None:
            self._device_upload(self._dyn[slot:slot + n], self._dyn_host[slot:slot + n])
        return slot

    def _upload_dynamic(self) -> None:
        if self._dyn_next:
            self._device_upload(self._dyn[:self._dyn_next], self._dyn_host[:self._dyn_next])

    def _pointer_table(self, groups: list) -> tuple:
        """(ptrs, starts) for a multi-tensor kernel (kernels/optim.cu): each group's
        arrays' addresses as (low, high) word pairs, and where each group's elements
        start. Cached by the addresses, so a captured step finds the same table."""
        if self._tables is None:
            self._tables = {}
        key = tuple(self._address(a) for g in groups for a in g)
        table = self._tables.get(key)
        if table is None:
            words = np.array([(addr & 0xFFFFFFFF, addr >> 32) for addr in key], np.uint32).reshape(-1)
            starts = np.zeros(len(groups) + 1, np.int64)
            starts[1:] = np.cumsum([g[0].size for g in groups])
            _check_size(int(starts[-1]))
            table = (self._allocate(words.shape, np.uint32), self._allocate(starts.shape, np.int32))
            self._device_upload(table[0], words)
            self._device_upload(table[1], starts.astype(np.int32))
            if len(self._tables) >= 8:  # eager steps bring new gradients: keep a few
                self._tables.pop(next(iter(self._tables)))
            self._tables[key] = table
        return table

    def _guard(self, guard):
        """The optimizer kernels' guard: the given step statistics, or statistics
        that never stop an update."""
        if guard is not None:
            return guard
        if self._no_guard is None:
            self._no_guard = self._allocate((STAT_COUNT,), np.float32)
            self._device_upload(self._no_guard, new_step_stats())
        return self._no_guard

    # ---------------------------------------------------------------- helpers
    def zeros(self, shape, dtype=None):
        return self.xp.zeros(shape, dtype=dtype or self.dtype)

    def assign(self, dst, src) -> None:
        """dst[...] = src (a host array of dst's shape), in place."""
        host = np.ascontiguousarray(src, dtype=dst.dtype)
        if host.shape != tuple(dst.shape):
            raise ValueError(f"assign: a host array of shape {host.shape} into an array of shape {tuple(dst.shape)}")
        self._device_upload(dst, host)

    def _f32(self, a):
        """A C-contiguous float32 array of this backend (host arrays are copied in,
        through the arena inside a captured step)."""
        if self.xp is not np and not hasattr(a, "__cuda_array_interface__"):  # a host array
            a = np.asarray(a)
            buf = self._empty(a.shape)
            self._device_upload(buf, np.ascontiguousarray(a, dtype=np.float32))
            return buf
        a = self.xp.asarray(a)
        if a.dtype != np.float32 or not a.flags.c_contiguous:
            a = self.xp.ascontiguousarray(a, dtype=np.float32)
        return a

    def _elementwise(self, kernel: str, n: int, args: list) -> None:
        if n:
            _check_size(n)
            self._launch(kernel, _grid_1d(n), (ELEMENTWISE_THREADS, 1, 1), args)

    def _reduce_splits(self, out, ws, splits: int, count: int, bias=None, ldn: int = 1) -> None:
        """out[i] = sum_z ws[z, i] (+ bias[i % ldn]), in order (kernels/gemm.cu)."""
        self._launch("split_k_reduce", _grid_1d(count), (ELEMENTWISE_THREADS, 1, 1),
                     [out, ws, bias if bias is not None else ws, i32(splits), i32(count), i32(ldn),
                      i32(bias is not None)])

    def _gemm(self, c, a, b, m: int, n: int, k: int, sam: int, sak: int, sbk: int, sbn: int, bias=None) -> None:
        """c (m, n) = A (m, k) . B (k, n) [+ bias], A[i, l] = a[i*sam + l*sak],
        B[l, j] = b[l*sbk + j*sbn] (kernels/gemm.cu: sgemm_strided)."""
        _check_size(m * n, m * k, k * n)
        if m == 0 or n == 0:
            return
        if k == 0:  # an empty sum: bias only
            self._launch("split_k_reduce", _grid_1d(m * n), (ELEMENTWISE_THREADS, 1, 1),
                         [c, self.xp.zeros((m * n,), np.float32), bias if bias is not None else c, i32(0),
                          i32(m * n), i32(n), i32(bias is not None)])
            return
        if self.precision == "fp32":
            grid_xy = (cdiv(n, TILE_N), cdiv(m, TILE_M))
            splits, k_chunk = split_k(grid_xy[0] * grid_xy[1], k)
            name, grid, block = "sgemm_strided", grid_xy + (splits,), (TILE_THREADS, 1, 1)
        else:  # the same arguments, on tensor cores (kernels/gemm_tc.cu)
            g = tensor_cores.gemm(self.precision, m, n, k)
            name, grid, block, splits, k_chunk = g.name, g.grid, g.block, g.splits, g.k_chunk
        has_bias = bias is not None
        if splits == 1:
            self._launch(name, grid, block,
                         [c, a, b, bias if has_bias else c, i32(m), i32(n), i32(k), i32(sam), i32(sak), i32(sbk),
                          i32(sbn), i32(n), i32(k_chunk), i32(0), i32(has_bias)])
            return
        _check_size(splits * m * n)
        ws = self._empty((splits, m, n))
        self._launch(name, grid, block,
                     [ws, a, b, ws, i32(m), i32(n), i32(k), i32(sam), i32(sak), i32(sbk), i32(sbn), i32(n),
                      i32(k_chunk), i32(m * n), i32(0)])
        self._reduce_splits(c, ws, splits, m * n, bias, n)

    def _precision_suffix(self) -> str:
        """The name suffix of a CUDA-core kernel's variant that rounds its operands as
        this precision mode says (the few-taps kernels): '', '_tf32' or '_bf16'."""
        return "" if self.precision == "fp32" else "_" + self.precision

    def _conv_launch(self, kind: str, m: int, cols: int, k: int | None = None) -> tuple:
        """(kernel, grid, block, splits, k_chunk) of an implicit-GEMM convolution pass
        (kind: forward, relu_maxpool, backward_data, backward_filter) with m rows (filters
        or channels) and `cols` columns, in this backend's precision: conv2d.cu's
        conv2d_<kind>_igemm_<tile> in fp32, conv2d_tc.cu's conv2d_<kind>_<precision>_<tile>
        otherwise (the same arguments). With k (backward_filter: K = output positions),
        split over grid z when the tiles are few."""
        if self.precision != "fp32":
            g = tensor_cores.conv(kind, self.precision, m, cols, k)
            return g.name, g.grid, g.block, g.splits, g.k_chunk
        bm, bn, tile = conv_tile(m)
        grid_xy = (cdiv(cols, bn), cdiv(m, bm))
        splits, k_chunk = (1, 0) if k is None else split_k(grid_xy[0] * grid_xy[1], k)
        return f"conv2d_{kind}_igemm{tile}", grid_xy + (splits,), (TILE_THREADS, 1, 1), splits, k_chunk

    # ------------------------------------------------------------------ conv2d
    def conv2d_forward(self, x, w, b, stride: int = 1, pad: int = 0):
        """x (N, C, H, W), w (F, C, KH, KW), b (F,) -> out (N, F, OH, OW); see kernels/conv2d.cu."""
        x, w, b = self._f32(x), self._f32(w), self._f32(b)
        n, c, h, wd = x.shape
        f, _, kh, kw = w.shape
        if b.shape != (f,):
            raise ValueError(f"conv2d: bias of shape {b.shape} for {f} filters")
        oh, ow = conv2d_out_hw(x.shape, w.shape, stride, pad)
        _check_size(x.size, w.size, n * f * oh * ow)
        out = self._empty((n, f, oh, ow))
        if out.size:
            name, grid, block, _, _ = self._conv_launch("forward", f, n * oh * ow)
            self._launch(name, grid, block,
                         [out, x, w, b, i32(n), i32(c), i32(h), i32(wd), i32(f), i32(kh), i32(kw), i32(oh), i32(ow),
                          i32(stride), i32(pad)])
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
        geometry = [i32(n), i32(c), i32(h), i32(wd), i32(f), i32(kh), i32(kw), i32(oh), i32(ow), i32(stride),
                    i32(pad)]

        dx = self._empty(x.shape) if need_dx else None
        if need_dx and dx.size:
            name, grid, block, _, _ = self._conv_launch("backward_data", c, n * h * wd)
            self._launch(name, grid, block, [dx, dout, w] + geometry)

        kk, p = c * kh * kw, n * oh * ow
        if kk <= SMALLK_TAPS:  # its one pass over dout gives db too
            return dx, *self._conv_filter_grad_smallk(dout, x, w.shape, geometry, p)
        dw = self._empty(w.shape)
        name, grid, block, splits, k_chunk = self._conv_launch("backward_filter", f, kk, p)
        target = dw if splits == 1 else self._empty((splits,) + w.shape)
        _check_size(target.size)
        self._launch(name, grid, block, [target, dout, x] + geometry + [i32(k_chunk)])
        if splits > 1:
            self._reduce_splits(dw, target, splits, dw.size)

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
        chunks = max(1, cdiv(positions, BIAS_CHUNK))
        return db, (db if chunks == 1 else self._empty((chunks, f))), chunks

    # ------------------------------------------------------- the fused block
    def conv2d_relu_maxpool_forward(self, x, w, b, stride: int = 1, pad: int = 0, ceil_mode: bool = True):
        """x (N, C, H, W) -> maxpool2d(relu(conv2d(x, w, b)), 2, 2, ceil_mode) (N, F, PH, PW)
        in one kernel (kernels/conv2d.cu: conv2d_relu_maxpool_igemm_*, or _smallk for at
        most SMALLK_TAPS taps; conv2d_tc.cu in the tensor-core modes): the full-size conv
        output is never stored; the cache keeps the pooled output and each window's winner."""
        x, w, b = self._f32(x), self._f32(w), self._f32(b)
        n, c, h, wd = x.shape
        f, _, kh, kw = w.shape
        if b.shape != (f,):
            raise ValueError(f"conv2d: bias of shape {b.shape} for {f} filters")
        oh, ow = conv2d_out_hw(x.shape, w.shape, stride, pad)
        ph, pw = pool_out_size(oh, 2, 2, ceil_mode), pool_out_size(ow, 2, 2, ceil_mode)
        _check_size(x.size, w.size, n * f * oh * ow, n * ph * pw * 4)
        out = self._empty((n, f, ph, pw))
        arg = self._empty((n, f, ph, pw), np.int32)
        if out.size:
            if c * kh * kw <= SMALLK_TAPS:  # direct loops: a GEMM tile would idle on so short a K
                name = "conv2d_relu_maxpool_smallk" + self._precision_suffix()
                grid = (cdiv(n * ph * pw, SMALLK_FWD_THREADS), cdiv(f, SMALLK_FWD_FILTERS), 1)
                block = (SMALLK_FWD_THREADS, 1, 1)
            else:
                name, grid, block, _, _ = self._conv_launch("relu_maxpool", f, n * ph * pw * 4)
            self._launch(name, grid, block,
                         [out, arg, x, w, b, i32(n), i32(c), i32(h), i32(wd), i32(f), i32(kh), i32(kw), i32(oh),
                          i32(ow), i32(stride), i32(pad), i32(ph), i32(pw)])
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
        fblocks = cdiv(f, SMALLK_BLOCK_FILTERS)
        target = max(1, SMALLK_TARGET_BLOCKS // fblocks)
        chunk = max(SMALLK_LANES, cdiv(cdiv(max(p, 1), target), SMALLK_LANES) * SMALLK_LANES)
        chunks = cdiv(max(p, 1), chunk)
        dw, db = self._empty(w_shape), self._empty((f,))
        part_w = dw if chunks == 1 else self._empty((chunks, f * kk))
        part_b = db if chunks == 1 else self._empty((chunks, f))
        _check_size(part_w.size)
        name = "conv2d_backward_filter_smallk" + self._precision_suffix()
        self._launch(name, (chunks, fblocks, 1), (256, 1, 1),
                     [part_w, part_b, dout, x] + geometry + [i32(chunk)])
        if chunks > 1:
            self._reduce_splits(dw, part_w, chunks, dw.size)
            self._reduce_splits(db, part_b, chunks, f)
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
        _check_size(x.size)
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
            self._launch("bias_grad_rows", _grid_1d(m), (ELEMENTWISE_THREADS, 1, 1), [db, dout, i32(n), i32(m)])
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
        _check_size(logits.size)
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
            self._launch("softmax_rows", _grid_1d(n), (ELEMENTWISE_THREADS, 1, 1), [probs, logits, i32(n), i32(k)])
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
        self._launch("sgd_update", _grid_1d(total), (ELEMENTWISE_THREADS, 1, 1),
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
        self._launch("adam_update", _grid_1d(total), (ELEMENTWISE_THREADS, 1, 1),
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


# Imported last: tensor_cores reads this module's constants when it loads.
from . import tensor_cores  # noqa: E402


def _bits(value: float) -> np.uint32:
    """The 32-bit pattern of float32(value): how a float travels in the dynamic scalars."""
    return np.float32(value).view(np.uint32)
