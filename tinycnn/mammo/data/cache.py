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
import time
from pathlib import Path

import numpy as np

from tinycnn import paths
from tinycnn.paths import atomic_savez


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


class Damaged(Exception):
    """A cache file that is there but cannot be used (truncated, not an .npz archive,
    an array missing or malformed): the set is rebuilt from the data, with a note."""


def load(path) -> dict | None:
    """The cached arrays, or None if there is no cache file. Damaged(why) when the file
    is there but cannot be read as an .npz archive of plain arrays."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return None
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001  (whatever the bytes are, the cache is rebuilt)
        raise Damaged(_why(e)) from e
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise Damaged("a single array, not an .npz archive")
    try:
        with archive:
            return {k: archive[k] for k in archive.files}
    except Exception as e:  # noqa: BLE001  (a truncated or corrupted member: bad CRC, short data, ...)
        raise Damaged(_why(e)) from e


def _why(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


STALE_AFTER_S = 3600  # a temporary file untouched this long belongs to a write that was killed


def remove_stale_temporaries(folder, now: float | None = None) -> int:
    """Delete temporary files (atomic_savez's .tmp-*.npz) that killed writers left in
    the cache folder. Other processes may be writing there right now, so only files
    untouched for an hour go: a live write touches its file every moment."""
    now = time.time() if now is None else now
    removed = 0
    for p in Path(folder).glob(".tmp-*.npz"):
        try:
            if now - p.stat().st_mtime > STALE_AFTER_S:
                p.unlink()
                removed += 1
        except OSError:
            pass  # gone already, or not ours to delete
    return removed


def save(path, arrays: dict) -> str | None:
    """Write the arrays; None on success, else why not. A cache folder that cannot be
    written costs speed, never the run."""
    folder = Path(path).parent
    if folder.exists() and not folder.is_dir():  # else the error reads "File exists"
        return f"cache folder {folder} is a file"
    if folder.is_dir():
        remove_stale_temporaries(folder)
    try:
        atomic_savez(path, arrays)
    except OSError as e:
        return f"cannot write {e.filename or path}: {e.strerror or e}"
    return None
