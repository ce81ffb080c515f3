"""BLAS threads, limited while a block runs: the one place the application sets them.

The CPU backends' matrix products run on BLAS's own thread pool. For small products
(the detector's 62 px windows, ROIs under 128 px) those threads gain nothing, and on
a busy 2-core machine OpenBLAS's idle-spinning threads made a training step 6-10x
slower in wall time (measured: 1.0 s against 0.09 s for a detector step). The limit
comes from threadpoolctl (installed with scikit-learn); without it the library's
own choice stands, and the text yielded says so.
"""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def limit_blas(n: int | None):
    """BLAS uses at most n threads inside the block (None: the library's choice).
    Yields what was set, as a banner prints it."""
    if n is None:
        yield "library default"
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield "library default (threadpoolctl missing)"
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield str(n)
