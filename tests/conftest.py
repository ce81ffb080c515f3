import os

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def pytest_collection_modifyitems(config, items):
    """GPU tests run only where CuPy sees a GPU; everything else runs everywhere."""
    try:
        import cupy

        has_gpu = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="no CUDA GPU (CuPy not installed or no device)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def shared_data_dir():
    """../shared/data when .ci/run found it (TINYCNN_SHARED_DATA), else None."""
    path = os.environ.get("TINYCNN_SHARED_DATA")
    return path if path and os.path.isdir(path) else None
