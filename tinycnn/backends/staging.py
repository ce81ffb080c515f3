"""Batches on their way into a host backend's memory: ``HostCopier``, what
``backend.batch_copier()`` gives on numpy, numba and cuda-emu.

A copier is called on a data loader's worker thread, ``copier(x, y) -> (x, y)`` as
arrays of the backend, and around the training step that reads a batch the loop calls
``acquire(x)`` before and ``release(x)`` after, so a copier that overlaps copies with
computation can order every reuse of its buffers (cuda_staging.py does, on a GPU).
Host backends' ops wait for nothing: their copier copies and orders nothing.
"""

from __future__ import annotations

import numpy as np


class HostCopier:
    """Batches for a backend whose ops wait for nothing: copies in, nothing to order."""

    def __init__(self, backend):
        self.backend = backend

    def __call__(self, x, y):
        return self.backend.asarray(x), self.backend.asarray(y, dtype=np.int32)

    def acquire(self, x) -> None:
        pass

    def release(self, x) -> None:
        pass
