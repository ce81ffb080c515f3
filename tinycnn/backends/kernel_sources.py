"""Where the CUDA sources are, and what is in them: the one place that reads kernels/.

Both kernel backends and every tool that compiles the kernels (NVRTC for "cuda", the
C++ compiler for "cuda-emu", nvcc for the tests and bench.gpu_model) start here:

    kernel_dir()          the folder of the .cu files (installed package or source tree)
    kernel_sources(dir)   {file: (self-contained source, [extern "C" kernel names])}
    kernel_names(source)  the extern "C" __global__ kernels a source defines
    inline_includes(path) a file with its local #include "x" replaced by x's text
    defines(*files)       {NAME: value} of the integer #defines, the C source being the
                          one home of every number a launch must agree with

A self-contained source needs no include path, and its hash covers the headers, which
is what CuPy's on-disk cache and the emulator's build key rely on.
"""

from __future__ import annotations

import functools
import importlib.resources
import os
import re

_DEFINE_RE = re.compile(r"^\s*#\s*define\s+([A-Z][A-Z0-9_]*)\s+(\d+)\b", re.M)
_KERNEL_RE = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(')
_INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*(?://.*)?$', re.M)
_PRAGMA_ONCE_RE = re.compile(r'^\s*#\s*pragma\s+once\s*$', re.M)


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
EMU_HEADER = os.path.join(KERNEL_DIR, "emu", "cuda_emu.h")  # the CUDA subset on the CPU (cuda-emu)


def defines(*files: str, folder: str = KERNEL_DIR) -> dict:
    """{NAME: value} of every integer ``#define NAME value`` in the given kernel files."""
    out = {}
    for fname in files:
        with open(os.path.join(folder, fname), encoding="utf-8") as f:
            out.update((name, int(value)) for name, value in _DEFINE_RE.findall(f.read()))
    return out


def kernel_names(source: str) -> list[str]:
    """The ``extern "C" __global__`` kernels that `source` defines, in order."""
    return _KERNEL_RE.findall(source)


def inline_includes(path: str, seen: set | None = None) -> str:
    """The file with each local #include "x" replaced by x's text (once per file)."""
    seen = set() if seen is None else seen
    folder = os.path.dirname(path)
    with open(path, encoding="utf-8") as f:
        text = f.read()

    def repl(m):
        inc = os.path.normpath(os.path.join(folder, m.group(1)))
        if inc in seen:
            return f"// (already included: {m.group(1)})"
        seen.add(inc)
        body = _PRAGMA_ONCE_RE.sub("", inline_includes(inc, seen))  # the `seen` set does its job now
        return f"// ---- begin {m.group(1)}\n{body}\n// ---- end {m.group(1)}"

    return _INCLUDE_RE.sub(repl, text)


@functools.lru_cache(maxsize=None)
def kernel_sources(folder: str = KERNEL_DIR) -> dict:
    """{file name: (self-contained source, [kernel names])} for every .cu in `folder`
    (kernels/ by default); a kernel name defined in two files is an error."""
    out = {}
    names_seen = {}
    for fname in sorted(os.listdir(folder)):
        if not fname.endswith(".cu"):
            continue
        source = inline_includes(os.path.join(folder, fname))
        names = kernel_names(source)
        for n in names:
            if n in names_seen:
                raise RuntimeError(f"kernel {n} is defined in both {names_seen[n]} and {fname}")
            names_seen[n] = fname
        out[fname] = (source, names)
    return out
