"""Tier 2: the sources the cuda backend hands to NVRTC (kernels/*.cu with local headers
inlined, the backend's own options) compile with the NVRTC library, for sm_80 and
sm_90, with an empty log (no warning), and every extern "C" kernel is found by name.

NVRTC is a library, not nvcc: it has no include path, no system headers and its own
option parser, so this checks what the GPU will really be given. It needs no GPU, only
libnvrtc: from a CUDA toolkit, from the `nvidia-cuda-nvrtc` wheel
(`pip install nvidia-cuda-nvrtc`), or named by TINYCNN_NVRTC=/path/to/libnvrtc.so.
Skipped where none is found.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import importlib.util
import os

import pytest

from tinycnn.backends.cuda_backend import NVRTC_OPTIONS
from tinycnn.backends.kernel_sources import kernel_sources

ARCHS = ("sm_80", "sm_90")


def _candidates():
    yield os.environ.get("TINYCNN_NVRTC")
    yield ctypes.util.find_library("nvrtc")
    cuda_home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    yield from sorted(glob.glob(os.path.join(cuda_home, "lib64", "libnvrtc.so*")), reverse=True)
    spec = importlib.util.find_spec("nvidia")  # the nvidia-cuda-nvrtc wheels (cu12 and cu13 layouts)
    for root in (spec.submodule_search_locations if spec else []):
        for pattern in ("cuda_nvrtc/lib/libnvrtc.so*", "cu*/lib/libnvrtc.so*"):
            yield from sorted(glob.glob(os.path.join(root, pattern)), reverse=True)


def _load_nvrtc():
    for path in _candidates():
        if not path or "builtins" in os.path.basename(path):
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        return lib, path
    return None, None


NVRTC, NVRTC_PATH = _load_nvrtc()
pytestmark = pytest.mark.skipif(NVRTC is None, reason="libnvrtc not found (pip install nvidia-cuda-nvrtc)")


def nvrtc_compile(source: str, name: str, names: list[str], arch: str) -> tuple[int, str, dict]:
    """(status, log, {kernel name: lowered name}) of one NVRTC compilation."""
    prog = ctypes.c_void_p()
    assert NVRTC.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None) == 0
    try:
        for n in names:
            NVRTC.nvrtcAddNameExpression(prog, n.encode())
        opts = [o.encode() for o in NVRTC_OPTIONS] + [f"--gpu-architecture={arch}".encode()]
        status = NVRTC.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
        size = ctypes.c_size_t()
        NVRTC.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        NVRTC.nvrtcGetProgramLog(prog, log)
        lowered = {}
        if status == 0:
            for n in names:
                out = ctypes.c_char_p()
                if NVRTC.nvrtcGetLoweredName(prog, n.encode(), ctypes.byref(out)) == 0:
                    lowered[n] = out.value.decode()
        return status, log.value.decode().strip(), lowered
    finally:
        NVRTC.nvrtcDestroyProgram(ctypes.byref(prog))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("cu", sorted(kernel_sources()))
def test_backend_source_compiles_with_nvrtc(cu, arch):
    source, names = kernel_sources()[cu]
    status, log, lowered = nvrtc_compile(f"// tinycnn kernels/{cu}\n{source}", cu, names, arch)
    assert status == 0, f"NVRTC ({NVRTC_PATH}) rejected kernels/{cu} for {arch}: " \
                        f"{NVRTC.nvrtcGetErrorString(status).decode()}\n{log}"
    assert log == "", f"NVRTC warned on kernels/{cu} for {arch}:\n{log}"
    # extern "C": each kernel keeps its plain name, which is what the backend asks CuPy for
    assert lowered == {n: n for n in names}
