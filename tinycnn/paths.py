"""Where tinycnn keeps what it can rebuild: preprocessed datasets and compiled kernels."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    """$TINYCNN_CACHE, else ~/.cache/tinycnn; where that cannot be created or written
    (a read-only home), a per-user folder in the temporary directory."""
    path = Path(os.environ.get("TINYCNN_CACHE") or Path(os.path.expanduser("~")) / ".cache" / "tinycnn")
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except OSError:
        pass
    user = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"tinycnn-cache-{user}"
