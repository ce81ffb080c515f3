"""The machinery under every kernel op: allocations, launches, captured steps, and the
device-memory plumbing they need. Shared by "cuda" and "cuda-emu".

``KernelLauncher`` is what an op of kernel_backend.py stands on: ``_empty`` (an output
or workspace, from the step arena while a captured step runs), ``_launch`` (run kernel K
on grid G with block B and arguments A, or record it during a captured step's dry
pass), the dynamic scalars (values that change from step to step, read by kernels from
device memory), multi-tensor pointer tables and the optimizer's guard. A subclass
supplies only what differs between the GPU and the emulator:

    xp                       the array module (cupy or numpy)
    _device_empty(shape, dtype)
                             an uninitialised array
    _device_run(name, grid, block, args)
                             run kernel `name`; grid and block are (x, y, z);
                             args are arrays and NumPy scalars (np.int32,
                             np.uint32, np.float32) in the kernel's parameter order
    _device_copy(dst, src), _device_upload(dst, host), _address(a)
                             device-to-device and host-to-device copies of whole
                             C-contiguous arrays in stream order; an array's address
    _make_graph(launches), _launch_graph(graph)
                             a recorded launch list as one replayable unit (a CUDA
                             graph; the list itself on cuda-emu): capture.py
    asarray, to_numpy, synchronize, device_name

So the grid arithmetic and the argument lists the GPU sees are exactly the ones the
emulator runs in CI, where every argument list is also checked against the kernel's C
signature.
"""

from __future__ import annotations

import contextlib

import numpy as np

from ..precision import PRECISIONS
from ..precision import choose as choose_precision
from .capture import CapturedStep
from .contract import STAT_COUNT, new_step_stats
from .geometry import ELEMENTWISE_THREADS, check_size, grid_1d

DYN_SLOTS = 1024  # dynamic scalars (seeds, learning rates) a captured step may use
i32 = np.int32


class KernelLauncher:
    """Allocations, launches and captured steps for the kernel ops (see the module
    docstring); kernel_backend.KernelBackend adds the ops."""

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
            check_size(int(starts[-1]))
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
            check_size(n)
            self._launch(kernel, grid_1d(n), (ELEMENTWISE_THREADS, 1, 1), args)

    def _reduce_splits(self, out, ws, splits: int, count: int, bias=None, ldn: int = 1) -> None:
        """out[i] = sum_z ws[z, i] (+ bias[i % ldn]), in order (kernels/gemm.cu)."""
        self._launch("split_k_reduce", grid_1d(count), (ELEMENTWISE_THREADS, 1, 1),
                     [out, ws, bias if bias is not None else ws, i32(splits), i32(count), i32(ldn),
                      i32(bias is not None)])

