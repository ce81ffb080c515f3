"""The "cuda-emu" backend: the very kernels of kernels/*.cu, run on the CPU.

``EmulatedBackend`` is ``KernelBackend`` (kernel_backend.py: the same ops, grids and
argument lists as the "cuda" backend) over NumPy arrays in host memory, launching the
kernels of the library that cuda_emu_library.py compiles for the CPU. Only allocation,
copies and the launch differ from the GPU, so CI, which has no GPU, runs every kernel,
and every argument list is checked against the kernel's C signature.

Slow (a barrier costs about a millisecond with 256 threads on two cores) and meant for
tests, teaching and debugging on a machine without a GPU.

It doubles as a sanitizer: under TINYCNN_EMU_CHECK (or ``checks=``) blocks run out of
order, fresh memory is poisoned, arrays end at guard pages and threads take turns
between barriers (cuda_emu_checks.py), so bugs that only a GPU would show fail in CI.
"""

from __future__ import annotations

import os
import platform

import numpy as np

from .cuda_backend import check_device_copy, check_device_upload
from .cuda_emu_checks import EmuChecks
from .cuda_emu_library import EmuKernel, load_library
from .kernel_backend import KernelBackend
from .kernel_sources import KERNEL_DIR, kernel_sources
from .numpy_backend import HostArrays


class HostMemory:
    """KernelBackend's memory hooks for "device" arrays that are NumPy arrays in host
    memory (cuda-emu, and bench.gpu_model's recording backend). The copies refuse what
    the cuda backend's refuses (a device array that is not C-contiguous, another dtype
    or shape), so a caller that would scramble data on a GPU fails here too."""

    def _device_empty(self, shape, dtype):
        return np.empty(shape, dtype=dtype)

    def _device_copy(self, dst, src):
        check_device_copy(dst, src)
        np.copyto(dst, src)

    def _device_upload(self, dst, host):
        check_device_upload(dst, host)
        np.copyto(dst, host)

    def _address(self, a) -> int:
        return a.ctypes.data


class EmulatedBackend(HostMemory, HostArrays, KernelBackend):
    """kernels/*.cu on the CPU, with NumPy arrays (see the module docstring)."""

    name = "cuda-emu"

    def __init__(self, precision: str | None = None, kernel_dir: str = KERNEL_DIR, checks=None):
        """precision: 'fp32' (the default: the emulator is a CPU, and FP32 is the fastest
        there), 'tf32' or 'bf16', which run the tensor-core kernels as an sm_80+ GPU does
        by default (tinycnn/precision.py). kernel_dir: the folder of .cu files to run
        (kernels/; a test may pass a modified copy, with the same kernels and #defines).
        checks: the sanitizer's checks (cuda_emu_checks.py), e.g. "order,init,bounds" or
        ("order=7", "race"); None reads $TINYCNN_EMU_CHECK (unset: none)."""
        self._set_precision(precision, "fp32")
        self.checks = EmuChecks.from_env() if checks is None else EmuChecks(checks)
        lib = load_library(kernel_dir)
        self.kernel_dir = kernel_dir
        self._kernels = {name: EmuKernel(lib, name, unit) for unit, (_, names) in kernel_sources(kernel_dir).items()
                         for name in names}
        if self.checks:
            self._device_empty = self.checks.empty
            self._device_run = self._checked_run

    def __repr__(self) -> str:
        checks = f", checks={str(self.checks)!r}" if self.checks else ""
        return f"EmulatedBackend(precision={self.precision!r}{checks})"

    # ------------------------------------------------------------------ launches
    def _device_run(self, name, grid, block, args):
        self._kernels[name](grid, block, args)

    def _checked_run(self, name, grid, block, args):
        self.checks.launch(self._kernels[name], grid, block, args)

    # A graph here is the recorded launch list itself, run in order: the GPU's graph
    # replays the same list, so CI tests what a replay needs (capture.py).
    def _make_graph(self, launches):
        return list(launches)

    def _launch_graph(self, graph):
        for launch in graph:
            self._run(*launch)

    def device_name(self) -> str:
        checks = f", checks {self.checks}" if self.checks else ""
        return (f"CUDA emulator on the CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores"
                f"{checks})")
