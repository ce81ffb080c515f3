"""The emulator as a sanitizer: cuda-emu launches under checks that make GPU-only bugs
show on the CPU (TINYCNN_EMU_CHECK, or ``EmulatedBackend(checks=...)``).

The plain emulator runs the blocks of a grid in order, one at a time, on memory that
NumPy allocated; a kernel that reads another block's output, reads memory before
writing it, or runs past the end of an array often gets the right answer there and
the wrong one (or an illegal-address error) on a GPU. Each check takes one of those
comforts away:

    order     blocks run in reversed order (``order``) or shuffled (``order=SEED``):
              a result that depends on the order of blocks is a race between blocks
    init      fresh device arrays are filled with poison (EMU_POISON, 0x7FC17FC1: a
              float NaN, a BF16 NaN in each half, as an int a huge index), and the
              shared arrays are poisoned when each block starts: a read before a write
              gives NaNs or a wild index
    bounds    every device array ends where a PROT_NONE guard page begins (its end at
              most 15 bytes before it, so that arrays stay 16-byte aligned for float4
              loads and cp.async) and starts after one; an access to a guard page
              stops the launch with an EmuCheckError that names the kernel, the
              argument and how far off it was. Arrays passed in from outside the
              backend (a caller's NumPy arrays) are copied into guarded memory for the
              launch and back. The few bytes between an array and its guard pages are
              poisoned and checked after the launch, so a write there is caught too (a
              read there gets poison)
    race      between two barriers the threads of a block run one at a time, in
              reversed order (``race``) or shuffled (``race=SEED``): a block whose
              result depends on the order its threads run in (a thread reads or
              overwrites shared memory that another thread writes in the same barrier
              interval) gives another result

order, init and race do not report anything themselves: they change what a buggy kernel
computes, and the comparison with the NumPy reference (tests/test_parity.py) fails. A
correct kernel gives the same bits under every check. bounds reports by itself.

How bounds works: kernels/emu/cuda_emu.h installs a SIGSEGV handler for the launch; a
fault on a guard page is recorded and the page opened so that the thread goes on (it
reads zeros there), a fault on unmapped memory (a wild index) gets a scratch page the
same way, and after the launch the pages are closed again and the first fault is
reported. It catches accesses up to a page past either end of a device array; farther ones
may land in other memory and go unseen, and shared arrays (statics side by side) have
no guards. (AddressSanitizer would need the Python interpreter itself built or
preloaded with it, and stops the process on the first error.)

race runs each barrier interval's threads one at a time, so it finds results that
depend on the order of threads; a lost update (two threads adding to one shared word
without atomics) comes out right in every such order and needs another tool.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import weakref

import numpy as np

from .cuda_emu_library import (CHECK_BOUNDS, CHECK_INIT, CHECK_ORDER, CHECK_RACE, FAULT_GUARD_PAGE,
                               STATUS_OUT_OF_BOUNDS, EmuCheckConfig, EmuKernel, shared_arrays)

ENV = "TINYCNN_EMU_CHECK"
CHECKS = {"order": CHECK_ORDER, "init": CHECK_INIT, "bounds": CHECK_BOUNDS, "race": CHECK_RACE}
SEEDED = ("order", "race")  # checks that take a seed: order=7
POISON = 0x7FC17FC1  # the header's EMU_POISON
ALIGNMENT = 16       # of every guarded array's start (float4, cp.async)
PAGE = mmap.PAGESIZE


class EmuCheckError(RuntimeError):
    """A check of the emulator caught a kernel at something a GPU would not forgive."""


class EmuChecks:
    """A set of checks (see the module docstring), parsed from a spec such as
    ``"order,init,bounds"``, ``"order=7,race"`` or ``("order", "init")``."""

    def __init__(self, spec=None, where: str = "checks"):
        if isinstance(spec, EmuChecks):
            spec = str(spec)
        items = spec.split(",") if isinstance(spec, str) else list(spec or ())
        self.names: list[str] = []
        self.seeds = {"order": 0, "race": 0}  # 0: reversed
        for item in (str(i).strip() for i in items):
            if not item:
                continue
            name, _, seed = item.partition("=")
            name = name.strip()
            if name not in CHECKS:
                raise ValueError(f"{where}: unknown check {name!r}; the checks are {', '.join(CHECKS)} "
                                 f"(e.g. {ENV}=order,init,bounds; order=SEED and race=SEED shuffle)")
            if seed:
                self.seeds[name] = _seed(name, seed.strip(), f"{where}: {item!r}")
            if name not in self.names:
                self.names.append(name)
        self.flags = sum(CHECKS[n] for n in self.names)

    @classmethod
    def from_env(cls) -> EmuChecks:
        return cls(os.environ.get(ENV, ""), where=ENV)

    def __bool__(self) -> bool:
        return bool(self.names)

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def __str__(self) -> str:
        """The checks as they run, e.g. 'order=reversed,init,bounds' or 'order=shuffled(7)'."""
        out = []
        for name in self.names:
            if name in SEEDED:
                seed = self.seeds[name]
                name += f"=shuffled({seed})" if seed else "=reversed"
            out.append(name)
        return ",".join(out)

    def __repr__(self) -> str:
        return f"EmuChecks({str(self)!r})"

    # ------------------------------------------------------------------ memory
    def empty(self, shape, dtype) -> np.ndarray:
        """A fresh device array: guarded (bounds), poisoned (init), else np.empty."""
        dtype = np.dtype(dtype)
        if "bounds" in self:
            return guarded_empty(shape, dtype, poison_data="init" in self)
        a = np.empty(shape, dtype)
        if "init" in self:
            poison(a)
        return a

    # ---------------------------------------------------------------- launches
    def launch(self, kernel: EmuKernel, grid, block, args) -> None:
        """Run `kernel` under these checks; an EmuCheckError when bounds caught it."""
        config = EmuCheckConfig(flags=self.flags, order_seed=self.seeds["order"], race_seed=self.seeds["race"],
                                page_size=PAGE)
        if "init" in self:
            shared = shared_arrays(kernel)
            config.shared, config.shared_count = shared.ctypes.data, len(shared)
        if "bounds" not in self:
            kernel.run(grid, block, args, config)
            return
        run_args, copies = _guarded_arguments(args)
        guards = _guard_pages()  # with the copies'
        config.guards, config.guard_count = guards.ctypes.data, len(guards)
        try:
            status = kernel.run(grid, block, run_args, config)
        finally:
            for original, copy in copies:
                if original.flags.writeable:
                    np.copyto(original, copy)
        where = f"{kernel.name} (grid {tuple(grid)}, block {tuple(block)}; checks {self})"
        if status == STATUS_OUT_OF_BOUNDS:
            raise EmuCheckError(f"{where}: {_describe_fault(config, run_args)}")
        for i, a in enumerate(run_args):
            if isinstance(a, np.ndarray):
                offset = _check_slack(a)
                if offset is not None:
                    raise EmuCheckError(f"{where}: wrote byte {offset} of argument {i}, {_describe(a)}, "
                                        f"{'past its end' if offset >= 0 else 'before its start'} (between "
                                        "the array and its guard page)")


def _seed(name: str, text: str, where: str) -> int:
    """A check's seed: an integer from 1 to 2**32 - 1, or what str() shows ('reversed'
    is 0, 'shuffled(7)' is 7)."""
    if text.startswith("shuffled(") and text.endswith(")"):
        text = text[len("shuffled("):-1]
    if name in SEEDED and text == "reversed":
        return 0
    if name not in SEEDED or not text.isdigit() or not 0 < int(text) < 2**32:
        raise ValueError(f"{where}: only order and race take a seed, an integer from 1 to 2**32 - 1 "
                         "(or 'reversed', the default)")
    return int(text)


# -------------------------------------------------------------------- poison
def poison(a: np.ndarray) -> None:
    """Fill `a` (any dtype) with EMU_POISON, word by word."""
    raw = a.reshape(-1).view(np.uint8)
    _poison_bytes(raw, a.ctypes.data)


def _poison_bytes(raw: np.ndarray, address: int) -> None:
    pattern = np.frombuffer(np.uint32(POISON).tobytes(), np.uint8)
    raw[:] = np.resize(np.roll(pattern, -(address % 4)), raw.size)  # each aligned word is POISON


# ------------------------------------------------------------ guarded memory
class _Pages(mmap.mmap):
    """The mapping of one guarded array: guard page, data pages, guard page."""

    region: _Region


class _Region:
    """Where a guarded array lies in its mapping."""

    def __init__(self, base: int, data_pages: int, start: int, nbytes: int, shape, dtype):
        self.base, self.data_pages, self.start, self.nbytes = base, data_pages, start, nbytes
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.head_guard = base
        self.tail_guard = base + (data_pages + 1) * PAGE

    @property
    def end(self) -> int:
        return self.start + self.nbytes


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.mprotect.restype = ctypes.c_int
_PROT_NONE = 0

_guards: dict[int, weakref.ref] = {}  # guard page -> the _Region it guards
_guards_sorted: list = [None]         # the pages as a sorted uint64 array, rebuilt after a change


def guarded_empty(shape, dtype, poison_data: bool = False) -> np.ndarray:
    """An uninitialised array that starts after and ends before a PROT_NONE guard page
    (its end at most ALIGNMENT - 1 bytes before the page). The bytes between the
    array and its guards hold the poison, which _check_slack reads back; with
    poison_data the array's own bytes too."""
    dtype = np.dtype(dtype)
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
    count = int(np.prod(shape, dtype=np.int64))
    nbytes = count * dtype.itemsize
    if nbytes == 0:
        return np.empty(shape, dtype)
    span = -(-nbytes // ALIGNMENT) * ALIGNMENT
    data_pages = -(-span // PAGE)
    pages = _Pages(-1, (data_pages + 2) * PAGE, flags=mmap.MAP_PRIVATE)
    base = np.frombuffer(pages, np.uint8, count=1).ctypes.data
    for guard in (base, base + (data_pages + 1) * PAGE):
        if _libc.mprotect(guard, PAGE, _PROT_NONE) != 0:
            raise OSError(ctypes.get_errno(), f"cuda-emu bounds check: mprotect of a guard page failed: "
                                              f"{os.strerror(ctypes.get_errno())}")
    start = base + (data_pages + 1) * PAGE - span
    region = pages.region = _Region(base, data_pages, start, nbytes, shape, dtype)
    data = np.frombuffer(pages, np.uint8, count=data_pages * PAGE, offset=PAGE)
    if poison_data:
        _poison_bytes(data, base + PAGE)
    else:
        _poison_bytes(data[:start - base - PAGE], base + PAGE)
        _poison_bytes(data[start - base - PAGE + nbytes:], start + nbytes)
    ref = weakref.ref(region)
    _guards[region.head_guard] = _guards[region.tail_guard] = ref
    _guards_sorted[0] = None
    weakref.finalize(pages, _forget, region.head_guard, region.tail_guard)
    return np.frombuffer(pages, dtype, count=count, offset=start - base).reshape(shape)


def _forget(*pages_) -> None:
    for page in pages_:
        _guards.pop(page, None)
    _guards_sorted[0] = None


def _guard_pages() -> np.ndarray:
    if _guards_sorted[0] is None:
        _guards_sorted[0] = np.array(sorted(_guards), np.uint64)
    return _guards_sorted[0]


def region_of(a: np.ndarray) -> _Region | None:
    """The guarded mapping `a` (or the array it is a view of) lies in, or None."""
    base = a
    while isinstance(base, np.ndarray):
        base = base.base
    owner = base.obj if isinstance(base, memoryview) else base
    return owner.region if isinstance(owner, _Pages) else None


def _guarded_arguments(args) -> tuple[list, list]:
    """The launch's arguments with every array outside guarded memory replaced by a
    guarded copy (one per distinct array), and the (original, copy) pairs."""
    out, copies, seen = [], [], {}
    for a in args:
        if isinstance(a, np.ndarray) and a.size and region_of(a) is None:
            key = (a.ctypes.data, a.nbytes, a.dtype.str, a.shape)
            if key not in seen:
                copy = guarded_empty(a.shape, a.dtype)
                np.copyto(copy, a)
                seen[key] = copy
                copies.append((a, copy))
            a = seen[key]
        out.append(a)
    return out, copies


def _describe(a) -> str:
    return f"a {np.dtype(a.dtype).name} array of shape {tuple(a.shape)} ({a.nbytes} bytes)"


def _describe_fault(config: EmuCheckConfig, args) -> str:
    access = {1: "wrote", 0: "read"}.get(config.fault_write, "accessed")
    address = int(config.fault_address)
    if config.fault_kind != FAULT_GUARD_PAGE:
        return (f"{access} unmapped memory at 0x{address:x}, beside no array (a wild index: an "
                f"uninitialised or overflowed one?); {config.faults} access(es) caught")
    page = address - address % PAGE
    ref = _guards.get(page)
    region = ref() if ref is not None else None
    if region is None:
        return f"{access} the guard page at 0x{page:x} of an array freed since"
    which = "an array that is not an argument (reached through a pointer table?)"
    for i, a in enumerate(args):
        if isinstance(a, np.ndarray) and region_of(a) is region:
            which = f"argument {i}, {_describe(a)}"
            break
    side = "past its end" if page == region.tail_guard else "before its start"
    return (f"{access} byte {address - region.start} of {which}, {side}; {config.faults} access(es) "
            "caught")


def _check_slack(a: np.ndarray) -> int | None:
    """Whether a launch wrote between guarded array `a` and its guard pages: the first
    such byte's offset from the array's start, or None. The poison is put back."""
    region = region_of(a)
    if region is None:
        return None
    span = np.frombuffer(_root_buffer(a), np.uint8, count=region.data_pages * PAGE, offset=PAGE)
    head = region.start - region.base - PAGE
    found = None
    for part, address in ((span[:head], region.base + PAGE), (span[head + region.nbytes:], region.end)):
        want = np.empty_like(part)
        _poison_bytes(want, address)
        changed = np.flatnonzero(part != want)
        if changed.size and found is None:
            found = address + int(changed[0]) - region.start
        part[:] = want
    return found


def _root_buffer(a: np.ndarray):
    base = a
    while isinstance(base, np.ndarray):
        base = base.base
    return base
