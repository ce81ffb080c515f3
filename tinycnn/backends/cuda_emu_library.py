"""The kernels compiled for the CPU: the shared library behind the "cuda-emu" backend.

Each .cu file is compiled by the system C++ compiler with OpenMP
(``g++ -O2 -fopenmp -x c++``) against ``kernels/emu/cuda_emu.h``, which maps the
CUDA subset of kernels/README.md onto the host: one OpenMP thread per CUDA thread
of a block, blocks one after another, ``__shared__`` arrays as function statics,
``__syncthreads()`` as an OpenMP barrier. The header's ``EMU_KERNEL(name)`` adds two
extern "C" functions per kernel, ``emu_launch_NAME(grid, block, args)`` and
``emu_signature_NAME``; ``EmuKernel`` calls them through ctypes with NumPy arrays,
after checking the argument list against the kernel's C signature (argument count,
scalar types, pointer element types), which guards the GPU backend's argument lists
too: CuPy cannot check them.

Libraries are cached on disk under $TINYCNN_CACHE (default ~/.cache/tinycnn), keyed on
a hash of the sources, the header, the compiler and its flags, so each is built once
per kernel change:

    load_library(folder)   every .cu of a kernel folder (kernels/ by default; a test
                           may pass a modified copy) as one library
    load_file(path)        ONE .cu file elsewhere (a test's or a benchmark's kernel)

A launch runs plain, or under the checks of cuda_emu_checks.py (TINYCNN_EMU_CHECK),
which hand it an ``EmuCheckConfig``: the header's ``EmuChecks``, field for field.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import re
import shutil
import struct
import subprocess
import tempfile
import threading

import numpy as np

from .. import paths
from . import BackendUnavailable
from .kernel_sources import EMU_HEADER, KERNEL_DIR, inline_includes, kernel_names, kernel_sources

CXXFLAGS = ["-O2", "-fopenmp", "-std=c++17", "-fPIC", "-Wall", "-Wno-unknown-pragmas", "-Wno-unused-function"]
BUILD_VERSION = "2"  # bump when the generated wrapper code below or the entry points change

_ARG_CODES = {np.dtype(np.float32): "f", np.dtype(np.int32): "i", np.dtype(np.uint32): "u",
              np.dtype(np.int64): "q", np.dtype(np.uint64): "Q"}
_CTYPES = {"f": ctypes.c_float, "i": ctypes.c_int32, "u": ctypes.c_uint32, "q": ctypes.c_int64,
           "Q": ctypes.c_uint64}

_lock = threading.Lock()
_libraries: dict[str, ctypes.CDLL] = {}  # kernel folder -> its library


def cache_dir() -> str:
    """The folder for built libraries: tinycnn.paths.cache_dir()."""
    return str(paths.cache_dir())


def compiler() -> str:
    """The C++ compiler ($CXX, default g++), or BackendUnavailable saying what to do."""
    cxx = os.environ.get("CXX", "g++")
    path = shutil.which(cxx)
    if path is None:
        raise BackendUnavailable(
            f"the cuda-emu backend compiles kernels/*.cu with a C++ compiler, and {cxx!r} was not found "
            "(install g++ or set CXX); use the 'numpy' backend, or 'cuda' on a machine with a GPU")
    return path


def _compiler_id(cxx: str) -> str:
    try:
        return subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise BackendUnavailable(f"the C++ compiler {cxx} does not run ({e}); use the 'numpy' backend") from e


def _emu_header(folder: str) -> str:
    """The emulator header: the folder's own emu/cuda_emu.h (a copy of kernels/ has one),
    else the package's."""
    own = os.path.join(folder, "emu", "cuda_emu.h")
    return own if os.path.exists(own) else EMU_HEADER


def _build_key(cxx: str, folder: str) -> str:
    h = hashlib.sha256()
    for part in (BUILD_VERSION, _compiler_id(cxx), " ".join(CXXFLAGS), platform.machine(), folder):
        h.update(part.encode() + b"\0")
    with open(_emu_header(folder), "rb") as f:
        h.update(f.read())
    for root, _, files in sorted(os.walk(folder)):
        for fname in sorted(files):
            if fname.endswith((".cu", ".cuh", ".h")):
                with open(os.path.join(root, fname), "rb") as f:
                    h.update(fname.encode() + b"\0" + f.read())
    return h.hexdigest()[:20]


def _unit_file(fname: str) -> str:
    """The C++ file the emulator compiles for kernel file `fname` (and the name its
    symbol table keeps for it)."""
    return fname + ".cpp"


def _translation_unit(header: str, source_path: str, names: list[str]) -> str:
    """The emulator's view of one .cu file: header, the file itself, wrappers."""
    lines = [f'#include "{header}"', f'#include "{source_path}"', ""]
    lines += [f"EMU_KERNEL({n})" for n in names]
    return "\n".join(lines) + "\n"


def _compile(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _build(cxx: str, folder: str, target: str) -> None:
    """Compile every .cu of `folder` (in parallel) and link them into the library `target`."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    header = _emu_header(folder)
    with tempfile.TemporaryDirectory(prefix="build-", dir=os.path.dirname(target)) as tmp:
        procs, objects = [], []
        for fname, (_, names) in kernel_sources(folder).items():
            src = os.path.join(tmp, _unit_file(fname))
            with open(src, "w") as f:
                f.write(_translation_unit(header, os.path.join(folder, fname), names))
            obj = src[:-4] + ".o"
            cmd = [cxx, *CXXFLAGS, "-I", folder, "-x", "c++", "-c", src, "-o", obj]
            procs.append((fname, cmd, _compile(cmd)))
            objects.append(obj)
        errors = []
        for fname, cmd, proc in procs:
            out, _ = proc.communicate()
            if proc.returncode != 0:
                errors.append(f"{fname}: {' '.join(cmd)}\n{out}")
        if errors:
            raise RuntimeError("cuda-emu: compiling the kernels for the CPU failed:\n" + "\n".join(errors))
        lib = os.path.join(tmp, "lib.so")
        link = [cxx, "-shared", "-fopenmp", *objects, "-o", lib]
        res = subprocess.run(link, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"cuda-emu: linking failed: {' '.join(link)}\n{res.stdout}{res.stderr}")
        os.replace(lib, target)  # atomic: a concurrent build of the same key writes the same bytes


def _set_wait_policy() -> None:
    # Many-thread teams on few cores: sleeping at a barrier beats spinning.
    # libgomp reads this once, when it is first loaded.
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")


def load_library(folder: str = KERNEL_DIR) -> ctypes.CDLL:
    """The library of every .cu in `folder`, built on first use (once per change)."""
    folder = os.path.abspath(folder)
    with _lock:
        if folder not in _libraries:
            cxx = compiler()
            target = os.path.join(cache_dir(), f"emu-{_build_key(cxx, folder)}", "libtinycnn_emu.so")
            if not os.path.exists(target):
                _build(cxx, folder, target)
            _set_wait_policy()
            _libraries[folder] = ctypes.CDLL(target)
        return _libraries[folder]


def load_file(path: str) -> dict:
    """{kernel name: EmuKernel} for ONE .cu file outside kernels/ (a test or benchmark
    kernel), compiled as the backend's own files are (same header, compiler and flags;
    its local #includes resolve next to it), with the same argument checks. Cached on
    disk by a hash of the file with its includes inlined."""
    path = os.path.abspath(path)
    source = inline_includes(path)
    names = kernel_names(source)
    with _lock:
        cxx = compiler()
        h = hashlib.sha256()
        for part in (BUILD_VERSION, _compiler_id(cxx), " ".join(CXXFLAGS), platform.machine(), path, source):
            h.update(part.encode() + b"\0")
        with open(EMU_HEADER, "rb") as f:
            h.update(f.read())
        target = os.path.join(cache_dir(), f"file-{h.hexdigest()[:20]}", "lib.so")
        if not os.path.exists(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="build-", dir=os.path.dirname(target)) as tmp:
                src = os.path.join(tmp, "unit.cpp")
                with open(src, "w") as f:
                    f.write(_translation_unit(EMU_HEADER, path, names))
                lib = os.path.join(tmp, "lib.so")
                cmd = [cxx, *CXXFLAGS, "-x", "c++", "-shared", src, "-o", lib]
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:
                    raise RuntimeError(f"cuda-emu: compiling {path} for the CPU failed:\n{' '.join(cmd)}\n"
                                       f"{res.stdout}{res.stderr}")
                os.replace(lib, target)
        _set_wait_policy()
        lib = ctypes.CDLL(target)
    return {n: EmuKernel(lib, n) for n in names}


class EmuCheckConfig(ctypes.Structure):
    """The header's ``struct EmuChecks`` (kernels/emu/cuda_emu.h): what a launch runs
    under, and what the bounds check caught. Keep the two in step."""

    _fields_ = [("flags", ctypes.c_uint), ("order_seed", ctypes.c_uint), ("race_seed", ctypes.c_uint),
                ("unused", ctypes.c_uint),
                ("shared", ctypes.c_void_p), ("shared_count", ctypes.c_ulonglong),
                ("guards", ctypes.c_void_p), ("guard_count", ctypes.c_ulonglong),
                ("page_size", ctypes.c_ulonglong),
                ("faults", ctypes.c_ulonglong), ("fault_address", ctypes.c_ulonglong),
                ("fault_kind", ctypes.c_int), ("fault_write", ctypes.c_int)]


CHECK_ORDER, CHECK_INIT, CHECK_BOUNDS, CHECK_RACE = 1, 2, 4, 8  # EMU_CHECK_* of the header
STATUS_OUT_OF_BOUNDS = -4  # the launch's status when the bounds check caught an access
FAULT_GUARD_PAGE, FAULT_UNMAPPED = 1, 2  # EmuChecks.fault_kind


class EmuKernel:
    """One emulated kernel: its launch entry point and its C signature. `unit`: the .cu
    file of the library that defines it (None: the library is that one file)."""

    def __init__(self, lib: ctypes.CDLL, name: str, unit: str | None = None):
        self.name = name
        self.lib = lib
        self.unit = unit
        self.launch = getattr(lib, f"emu_launch_{name}")
        self.launch.argtypes = [ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint),
                                ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(EmuCheckConfig)]
        self.launch.restype = ctypes.c_int
        sig = getattr(lib, f"emu_signature_{name}")
        sig.argtypes = [ctypes.c_char_p, ctypes.c_int]
        sig.restype = ctypes.c_int
        buf = ctypes.create_string_buffer(64)
        n = sig(buf, 64)
        if n < 0:
            raise RuntimeError(f"cuda-emu: kernel {name} has too many parameters")
        self.signature = buf.value.decode()
        if "?" in self.signature:
            raise RuntimeError(f"cuda-emu: kernel {name} has a parameter type outside the subset ({self.signature})")

    def __call__(self, grid, block, args):
        """Run the kernel on `grid` x `block` with `args` (NumPy arrays and scalars of
        the C types, in parameter order), plain."""
        self.run(grid, block, args)

    def run(self, grid, block, args, config: EmuCheckConfig | None = None) -> int:
        """As calling the kernel, under the checks of `config` (None: none). Returns 0,
        or STATUS_OUT_OF_BOUNDS when the bounds check caught an access (config's
        fault fields say which): the caller, who knows the arrays, reports it."""
        codes = []
        keep = []  # the ctypes objects must outlive the call
        for a in args:
            if isinstance(a, np.ndarray):
                if not a.flags.c_contiguous:
                    raise ValueError(f"{self.name}: array arguments must be C-contiguous")
                codes.append(_ARG_CODES.get(a.dtype, "?").upper())
                keep.append(ctypes.c_void_p(a.ctypes.data))
            elif isinstance(a, np.generic):
                code = _ARG_CODES.get(a.dtype, "?")
                codes.append(code)
                keep.append(_CTYPES[code](a.item()) if code in _CTYPES else None)
            else:
                raise TypeError(f"{self.name}: pass scalars as NumPy scalars of the C type (np.int32, ...), "
                                f"got {type(a).__name__}")
        got = "".join(codes)
        if got != self.signature:
            raise TypeError(f"{self.name}: arguments {got!r} do not match the kernel's parameters "
                            f"{self.signature!r} (f float, i int, u unsigned; upper case: pointer)")
        argv = (ctypes.c_void_p * max(1, len(keep)))(*[ctypes.cast(ctypes.pointer(k), ctypes.c_void_p)
                                                        for k in keep])
        g = (ctypes.c_uint * 3)(*grid)
        b = (ctypes.c_uint * 3)(*block)
        status = self.launch(g, b, argv, None if config is None else ctypes.byref(config))
        if status == -1:
            raise RuntimeError(f"{self.name}: OpenMP would not start a team of {b[0] * b[1] * b[2]} threads "
                               "(is OMP_THREAD_LIMIT set?)")
        if status == -3:
            raise RuntimeError(f"{self.name}: an emulated instruction faulted (a cp.async address not "
                               "16-byte aligned, or an mma.sync in a block whose size is not a multiple of 32)")
        if status == STATUS_OUT_OF_BOUNDS and config is not None:
            return status
        if status != 0:
            raise RuntimeError(f"{self.name}: launch failed (status {status}, block {tuple(block)})")
        return status


def shared_arrays(kernel: "EmuKernel") -> np.ndarray:
    """The ``__shared__`` arrays `kernel` may use, as (address, bytes) pairs (uint64), for
    the init check to poison when each block starts. Under the emulator they are
    function-local statics, and the kernel subset has no other zero-initialised local
    statics (kernels/README.md), so they are the local objects (C++ names ``_ZZ...``) of
    the library's writable sections, read from its ELF symbol table (the compiler drops
    section attributes on the statics of function templates, so the symbol table is the
    one list of them). A kernel reaches only the statics of its own source file (the
    symbols after that file's entry) and, of those declared in a kernel's body, only
    its own; helpers' (templates') are shared by the file's kernels."""
    with _lock:
        arrays = _shared.get(kernel.lib._name)
        if arrays is None:
            arrays = _shared[kernel.lib._name] = _local_statics(kernel.lib)
        picked = [(address, size) for unit, owner, address, size in arrays
                  if (kernel.unit is None or unit == _unit_file(kernel.unit)) and owner in (None, kernel.name)]
        return np.array(picked, np.uint64).reshape(-1, 2)


def _local_statics(lib: ctypes.CDLL) -> list[tuple]:
    """(source file, the kernel whose body declares it or None, address, bytes) of each
    function-local static object of the library."""
    with open(lib._name, "rb") as f:
        data = f.read()
    symbols = _elf_symbols(data)
    writable = _elf_writable_sections(data)
    kernels = {n[len("emu_launch_"):] for n, _, _, kind, _ in symbols
               if kind == _STT_FUNC and n.startswith("emu_launch_")}
    # the symbol table's addresses are relative to where the library was loaded
    anchor, value = next((n, v) for n, v, _, kind, _ in symbols if kind == _STT_FUNC and n.startswith("emu_launch_"))
    base = ctypes.cast(getattr(lib, anchor), ctypes.c_void_p).value - value
    out, unit = set(), None
    for name, value, size, kind, section in symbols:
        if kind == _STT_FILE:
            unit = name
        elif kind == _STT_OBJECT and size and section in writable and name.startswith("_ZZ"):
            function = re.match(r"_ZZ(\d+)", name)  # _ZZ<length><function>E...: a static of that function
            owner = name[function.end():function.end() + int(function.group(1))] if function else None
            out.add((unit, owner if owner in kernels else None, base + value, size))
    return sorted(out, key=lambda entry: entry[2])


_shared: dict[str, list] = {}  # library file -> its function-local statics


_STT_OBJECT, _STT_FUNC, _STT_FILE = 1, 2, 4


def _elf_sections(data: bytes) -> list[tuple]:
    """(type, flags, offset, size, link, entsize) of each section of a 64-bit
    little-endian ELF file (the platforms the emulator's checks run on)."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise RuntimeError("cuda-emu: the init check reads the library's ELF symbol table (64-bit "
                           "little-endian ELF only)")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    return [struct.unpack_from("<4xIQ8xQQIxxxx8xQ", data, shoff + i * shentsize) for i in range(shnum)]


def _elf_writable_sections(data: bytes) -> set[int]:
    return {i for i, (_, flags, _, _, _, _) in enumerate(_elf_sections(data)) if flags & 3 == 3}  # WRITE | ALLOC


def _elf_symbols(data: bytes) -> list[tuple]:
    """(name, value, size, type, section index) of every symbol of the .symtab."""
    sections = _elf_sections(data)
    out = []
    for kind, _, offset, size, link, entsize in sections:
        if kind != 2:  # SHT_SYMTAB
            continue
        strtab = sections[link][2]
        for at in range(offset, offset + size, entsize):
            name, info, _, shndx, value, sym_size = struct.unpack_from("<IBBHQQ", data, at)
            end = data.index(b"\0", strtab + name)
            out.append((data[strtab + name:end].decode("latin-1"), value, sym_size, info & 0xF, shndx))
    return out
