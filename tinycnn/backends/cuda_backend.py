"""The "cuda" backend: CuPy arrays, and every op one of our kernels in kernels/*.cu.

The kernels are compiled once per process by NVRTC through ``cupy.RawModule`` (one
module per .cu file, local headers inlined, so CuPy's on-disk cache key covers
them) and launched with the grids and argument lists of kernel_backend.py and
geometry.py, the very code the cuda-emu backend runs in CI. No cuDNN, no cuBLAS, no
CuPy element-wise or reduction kernels stand in for ours: CuPy only allocates memory
and launches. Nothing in a training step waits for
the host: the loss comes back as a 0-d device array.
"""

from __future__ import annotations

import functools

import numpy as np

from . import BackendUnavailable
from .kernel_backend import KernelBackend
from .kernel_sources import kernel_sources

NVRTC_OPTIONS = ("-std=c++17",)


# The device copies move raw bytes (cudaMemcpyAsync), so they take whole C-contiguous
# arrays of one dtype and shape and nothing else: a strided view or another dtype
# would be scrambled, not converted. The emulator's copies (cuda_emu.HostMemory) run
# the same checks, so CI refuses what a GPU would mishandle.
def _check_layout(a, what: str) -> None:
    if not a.flags.c_contiguous:
        raise ValueError(f"{what}: a device array of shape {tuple(a.shape)} that is not C-contiguous; the copy "
                         "moves raw bytes (make it contiguous first)")


def _check_match(dst, src, what: str) -> None:
    if tuple(dst.shape) != tuple(src.shape) or np.dtype(dst.dtype) != np.dtype(src.dtype):
        raise ValueError(f"{what}: {np.dtype(src.dtype)} {tuple(src.shape)} into {np.dtype(dst.dtype)} "
                         f"{tuple(dst.shape)}; the copy moves raw bytes (convert first)")


def check_device_copy(dst, src) -> None:
    """A device-to-device copy's arrays: both C-contiguous, one dtype and shape."""
    _check_layout(dst, "device copy, destination")
    _check_layout(src, "device copy, source")
    _check_match(dst, src, "device copy")


def check_device_upload(dst, host) -> None:
    """A host-to-device copy's arrays: a C-contiguous device array, a host array
    (np.ndarray, any strides: it is made contiguous first) of its dtype and shape."""
    if not isinstance(host, np.ndarray):
        raise TypeError(f"upload: the host side is a {type(host).__module__}.{type(host).__name__}, not a NumPy "
                        "array (a device array is copied with a device copy)")
    _check_layout(dst, "upload, destination")
    _check_match(dst, host, "upload")


def _import_cupy():
    try:
        import cupy
    except ImportError as e:
        raise BackendUnavailable(
            "the cuda backend needs CuPy and an NVIDIA GPU (pip install -e '.[cuda12]' or '.[cuda13]'); "
            "without a GPU use the 'numpy' backend, or 'cuda-emu' to run the same kernels on the CPU") from e
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # no driver, no device, ...
        raise BackendUnavailable(
            f"CuPy found no usable CUDA device ({e}); use the 'numpy' backend, or 'cuda-emu' to run the "
            "same kernels on the CPU") from e
    if count < 1:
        raise BackendUnavailable("no CUDA device; use the 'numpy' backend, or 'cuda-emu' to run the same "
                                 "kernels on the CPU")
    return cupy


@functools.lru_cache(maxsize=None)
def _load_kernels(device_id: int) -> dict:
    """{kernel name: cupy.RawKernel}, compiled once per process and device."""
    import cupy

    kernels = {}
    for fname, (source, names) in kernel_sources().items():
        module = cupy.RawModule(code=f"// tinycnn kernels/{fname}\n{source}", options=NVRTC_OPTIONS)
        for name in names:
            try:
                kernels[name] = module.get_function(name)
            except cupy.cuda.compiler.CompileException as e:
                raise RuntimeError(f"NVRTC could not compile kernels/{fname}:\n{e}") from e
    return kernels


class CudaBackend(KernelBackend):
    """The op contract on an NVIDIA GPU, with our kernels (see the module docstring)."""

    name = "cuda"

    def __init__(self, precision: str | None = None):
        """precision: 'fp32', 'tf32' or 'bf16' (tinycnn/precision.py); None: 'tf32' on a GPU
        with tensor cores for it (compute capability 8.0 and newer, as PyTorch's default
        for convolutions), else 'fp32', the only mode an older GPU runs."""
        cupy = _import_cupy()
        self.xp = cupy
        self._cupy = cupy
        self._device_id = cupy.cuda.runtime.getDevice()
        props = cupy.cuda.runtime.getDeviceProperties(self._device_id)
        self.compute_capability = 10 * int(props["major"]) + int(props["minor"])
        if self.compute_capability < 80:
            self.precisions = ("fp32",)  # mma.sync with TF32 / BF16 operands needs sm_80
        self._set_precision(precision, "tf32" if self.compute_capability >= 80 else "fp32")
        self._kernels = _load_kernels(self._device_id)

    def __repr__(self) -> str:
        return f"CudaBackend(device={self._device_id}, precision={self.precision!r})"

    # ------------------------------------------------------------------ arrays
    def _device_empty(self, shape, dtype):
        return self._cupy.empty(shape, dtype=dtype)

    def _device_run(self, name, grid, block, args):
        self._kernels[name](grid, block, tuple(args))

    def _check_device(self, a, what: str) -> None:
        if not isinstance(a, self._cupy.ndarray):
            raise TypeError(f"{what}: a {type(a).__module__}.{type(a).__name__} where a device array (cupy.ndarray) "
                            "belongs (host arrays go through an upload)")

    def _device_copy(self, dst, src):
        self._check_device(dst, "device copy, destination")
        self._check_device(src, "device copy, source")
        check_device_copy(dst, src)
        runtime = self._cupy.cuda.runtime
        runtime.memcpyAsync(self._address(dst), self._address(src), src.nbytes, runtime.memcpyDeviceToDevice,
                            self._cupy.cuda.get_current_stream().ptr)

    def _device_upload(self, dst, host):
        self._check_device(dst, "upload, destination")
        if isinstance(host, self._cupy.ndarray):
            raise TypeError("upload: the host side is a device array (cupy.ndarray); device arrays are copied "
                            "with a device copy")
        check_device_upload(dst, host)
        # From pageable memory the driver stages the bytes before the call returns, so
        # `host` may change afterwards; the copy itself runs in stream order.
        host = np.ascontiguousarray(host)
        runtime = self._cupy.cuda.runtime
        runtime.memcpyAsync(self._address(dst), host.ctypes.data, host.nbytes, runtime.memcpyHostToDevice,
                            self._cupy.cuda.get_current_stream().ptr)

    def _address(self, a) -> int:
        return a.__cuda_array_interface__["data"][0]

    def _make_graph(self, launches):
        """The launch list as a CUDA graph: captured on a stream of its own from the raw
        launches alone (no allocation, copy or host call can reach the capture)."""
        stream = self._cupy.cuda.Stream(non_blocking=True)
        with stream:
            stream.begin_capture()
            try:
                for launch in launches:
                    self._run(*launch)
            finally:
                graph = stream.end_capture()
        return graph

    def _launch_graph(self, graph):
        graph.launch(self._cupy.cuda.get_current_stream())

    def asarray(self, a, dtype=None):
        """A host (or device) array as a C-contiguous device array; floats become float32."""
        cupy = self._cupy
        if isinstance(a, cupy.ndarray):
            if dtype is None:
                dtype = self.dtype if a.dtype.kind == "f" else a.dtype
            return cupy.ascontiguousarray(a, dtype=dtype)
        a = np.asarray(a)
        if dtype is None:
            dtype = self.dtype if a.dtype.kind == "f" else a.dtype
        return cupy.asarray(np.ascontiguousarray(a, dtype=dtype))

    def to_numpy(self, a) -> np.ndarray:
        if isinstance(a, self._cupy.ndarray):
            return self._cupy.asnumpy(a)
        return np.asarray(a)

    def synchronize(self) -> None:
        self._cupy.cuda.get_current_stream().synchronize()

    # ------------------------------------------------------------ its memory
    memory_where = "the GPU"
    memory_is_host = False

    def memory_available(self) -> int | None:
        """The device's free bytes, plus what CuPy's pool holds free for reuse."""
        try:
            free = int(self._cupy.cuda.runtime.memGetInfo()[0])
        except Exception:  # a driver that cannot tell: let the allocation try
            return None
        return free + int(self._cupy.get_default_memory_pool().free_bytes())

    def batch_copier(self, slots: int = 6):
        """Pinned buffers, a copy stream and events (cuda_staging.py)."""
        from .cuda_staging import CudaStaging

        return CudaStaging(self, slots)

    def device_name(self) -> str:
        props = self._cupy.cuda.runtime.getDeviceProperties(self._device_id)
        name = props["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        return f"{name} (CUDA device {self._device_id}), CuPy {self._cupy.__version__}"
