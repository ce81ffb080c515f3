"""The CUDA C sources of every op (kernels/*.cu), installed as ``tinycnn.kernels``.

Nothing here is Python: the package exists so that a wheel carries the sources and
``tinycnn.backends.kernel_sources.kernel_dir()`` finds them with ``importlib.resources``.
NVRTC compiles them for the "cuda" backend, g++ for "cuda-emu".
"""
