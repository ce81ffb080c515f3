"""On-disk cache of preprocessed ROI sets, keyed by the source and the settings.

The key is a hash of everything the arrays depend on: the reader and its version,
the source files (relative path, size, modification time) and the preprocessing
settings. A changed file, a new --image-size or a new reader version gives a new key,
so a stale cache is never read; a second run with the same inputs starts at once.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from tinycnn import paths
from tinycnn.model import atomic_savez


def default_cache_dir() -> Path:
    """The folder for preprocessed datasets: tinycnn.paths.cache_dir()."""
    return paths.cache_dir()


def file_fingerprint(paths, root) -> list:
    """(relative path, size, mtime_ns) of each file: cheap, and changes with the file."""
    out = []
    for p in sorted(map(str, paths)):
        st = os.stat(p)
        out.append([os.path.relpath(p, root), st.st_size, st.st_mtime_ns])
    return out


def cache_key(parts: dict) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def cache_path(cache_dir, name: str, key: str) -> Path:
    return Path(cache_dir) / f"{name}-{key}.npz"


def load(path) -> dict | None:
    """The cached arrays, or None if absent or unreadable (then it is rebuilt)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception:
        return None


def save(path, arrays: dict) -> str | None:
    """Write the arrays; None on success, else why not. A cache folder that cannot be
    written costs speed, never the run."""
    folder = Path(path).parent
    if folder.exists() and not folder.is_dir():  # else the error reads "File exists"
        return f"cache folder {folder} is a file"
    try:
        atomic_savez(path, arrays)
    except OSError as e:
        return f"cannot write {e.filename or path}: {e.strerror or e}"
    return None
