"""tinycnn: a from-scratch CNN engine with hand-written backward passes.

Every op exists twice: a plain NumPy reference (``tinycnn.backends.numpy_backend``)
and CUDA C kernels (``kernels/*.cu``). There is no autograd: each layer knows its
own backward pass.
"""

__version__ = "0.1.0"
