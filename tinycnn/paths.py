"""Files and folders: where tinycnn keeps what it can rebuild (preprocessed datasets,
compiled kernels), and the one way it writes a file that must never be seen half
written (checkpoints, caches, metrics.json, predictions tables, overlays): a
temporary file beside the target, synced, then renamed over it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np


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


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb", **open_args):
    """`with atomic_write(path) as f:` writes `path` whole or not at all. f is a
    temporary file in the same folder (.tmp-*, with path's suffix, so whoever tidies
    leftovers of killed writers knows it); when the block ends it is synced to disk,
    given the permissions of any new file (mkstemp makes it private), renamed over
    `path` in one step and the folder synced, so a crash never leaves a truncated file
    nor destroys the previous one. On any error, Ctrl-C included, the temporary file
    goes and `path` stays as it was. mode and open_args are open()'s ("w", newline="",
    encoding="utf-8" for text)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    try:
        with os.fdopen(fd, mode, **open_args) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _sync_folder(folder)


def atomic_savez(path, arrays: dict) -> None:
    """np.savez of `arrays` to `path` through atomic_write, creating its folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def _new_file_mode() -> int:
    umask = os.umask(0)  # the only way to read it
    os.umask(umask)
    return 0o666 & ~umask


def _sync_folder(folder: str) -> None:
    """Make the rename itself durable. Folders cannot be opened on Windows, and some
    file systems refuse to sync one: the file is in place either way."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
