"""tinycnn: a from-scratch CNN engine with hand-written backward passes.

Every op of the contract (``tinycnn.backends.contract``) is written by hand in each
backend: a plain NumPy reference (``tinycnn.backends.numpy_backend``), Numba CPU
kernels, and CUDA C kernels (``kernels/*.cu``, run on a GPU by "cuda" and on the CPU
by "cuda-emu"). There is no autograd: each layer knows its own backward pass.

The engine needs numpy alone; the mammography application built on it is
``tinycnn.mammo`` (pip install 'tinycnn[app]').
"""

__version__ = "0.1.0"
