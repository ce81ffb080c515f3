"""The "cuda-emu" backend: the very kernels of kernels/*.cu, run on the CPU.

``EmulatedBackend`` is ``KernelBackend`` (kernel_backend.py: the same ops, grids and
argument lists as the "cuda" backend) over NumPy arrays in host memory, launching the
kernels of the library that cuda_emu_library.py compiles for the CPU. Only allocation,
copies and the launch differ from the GPU, so CI, which has no GPU, runs every kernel,
and every argument list is checked against the kernel's C signature.

Slow (a barrier costs about a millisecond with 256 threads on two cores) and meant for
tests, teaching and debugging on a machine without a GPU.
"""

from __future__ import annotations

import os
import platform

import numpy as np

from .cuda_emu_library import EmuKernel, load_library
from .kernel_backend import KernelBackend
from .kernel_sources import KERNEL_DIR, kernel_sources
from .numpy_backend import HostArrays


class HostMemory:
    """KernelBackend's memory hooks for "device" arrays that are NumPy arrays in host
    memory (cuda-emu, and bench.gpu_model's recording backend)."""

    def _device_empty(self, shape, dtype):
        return np.empty(shape, dtype=dtype)

    def _device_copy(self, dst, src):
        np.copyto(dst, src)

    def _device_upload(self, dst, host):
        np.copyto(dst, host)

    def _address(self, a) -> int:
        return a.ctypes.data


class EmulatedBackend(HostMemory, HostArrays, KernelBackend):
    """kernels/*.cu on the CPU, with NumPy arrays (see the module docstring)."""

    name = "cuda-emu"

    def __init__(self, precision: str | None = None, kernel_dir: str = KERNEL_DIR):
        """precision: 'fp32' (the default: the emulator is a CPU, and FP32 is the fastest
        there), 'tf32' or 'bf16', which run the tensor-core kernels as an sm_80+ GPU does
        by default (tinycnn/precision.py). kernel_dir: the folder of .cu files to run
        (kernels/; a test may pass a modified copy, with the same kernels and #defines)."""
        self._set_precision(precision, "fp32")
        lib = load_library(kernel_dir)
        self.kernel_dir = kernel_dir
        self._kernels = {name: EmuKernel(lib, name) for _, names in kernel_sources(kernel_dir).values()
                         for name in names}

    def __repr__(self) -> str:
        return f"EmulatedBackend(precision={self.precision!r})"

    # ------------------------------------------------------------------ launches
    def _device_run(self, name, grid, block, args):
        self._kernels[name](grid, block, args)

    # A graph here is the recorded launch list itself, run in order: the GPU's graph
    # replays the same list, so CI tests what a replay needs (capture.py).
    def _make_graph(self, launches):
        return list(launches)

    def _launch_graph(self, graph):
        for launch in graph:
            self._run(*launch)

    def device_name(self) -> str:
        return f"CUDA emulator on the CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
