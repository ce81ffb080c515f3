"""On-disk cache of preprocessed ROI sets, keyed by the source and the settings.

The key is a hash of everything the arrays depend on: the reader and its version,
the source files (relative path, size, modification time) and the preprocessing
settings. A changed file, a new --image-size or a new reader version gives a new key,
so a stale cache is never read; a second run with the same inputs starts at once.
A cache file that is there but cannot be used (empty, truncated, not an archive, an
array missing or malformed, a folder or a named pipe in its place) is Damaged: the
set is rebuilt from the data and the file written again, with a note saying why.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import time
import zipfile
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

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


def path_kind(path) -> str | None:
    """None when nothing is at path, else "file", "folder" or what else is there ("a
    named pipe (FIFO)", "a symbolic link to nothing", ...), from os.stat alone: a named
    pipe is never opened (that would wait for a writer, forever)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a symbolic link to nothing" if os.path.islink(path) else None
    except NotADirectoryError:
        return None  # under a file: nothing can be there
    except OSError as e:
        return f"a path that cannot be examined ({e.strerror or e})"
    for test, what in ((stat.S_ISREG, "file"), (stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "not a regular file"


def load(path) -> dict | None:
    """The cached arrays, or None if there is no cache file. Damaged(why) when something
    is there that cannot be read as an .npz archive of plain arrays: the file is looked
    at from os.stat and its first bytes before NumPy parses anything, so the note says
    what it is (empty, a single array, not an archive, a folder, a named pipe) rather
    than how NumPy's guess at it failed."""
    path = Path(path)
    kind = path_kind(path)
    if kind is None:
        return None
    if kind != "file":  # never opened: a named pipe would block, a device never ends
        raise Damaged(f"it is {'a folder' if kind == 'folder' else kind}, not a file")
    try:
        with open(path, "rb") as f:
            head = f.read(len(npy_format.MAGIC_PREFIX))
        if not head:
            raise Damaged("an empty file (0 bytes)")
        if head == npy_format.MAGIC_PREFIX:
            raise Damaged("a single array (.npy), not an .npz archive")
        if not zipfile.is_zipfile(path):
            raise Damaged("not an .npz archive: truncated, or another kind of file")
        with zipfile.ZipFile(path) as zf:
            return {key: _read_member(zf, info) for key, info in _members(zf).items()}
    except Damaged:
        raise
    except Exception as e:  # noqa: BLE001  (a truncated or corrupted member: bad CRC, short data, ...)
        raise Damaged(_why(e)) from e


def _members(zf: zipfile.ZipFile) -> dict:
    """{array name: ZipInfo} of an .npz archive; Damaged for a member that is not an
    array or a name that appears twice (np.load would silently keep one of them)."""
    out = {}
    for info in zf.infolist():
        if not info.filename.endswith(".npy"):
            raise Damaged(f"member {info.filename!r} is not a NumPy array (.npy)")
        key = info.filename[:-len(".npy")]
        if key in out:
            raise Damaged(f"member {info.filename!r} appears twice")
        out[key] = info
    return out


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One member's array. Its .npy header is read first and held to the size the
    archive records for the member, so a header claiming more data than is there (or
    objects, which need unpickling) is Damaged before anything is allocated for it."""
    with zf.open(info) as f:
        version = npy_format.read_magic(f)
        read_header = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise Damaged(f"member {info.filename!r} is a .npy file of version {version}, not written by tinycnn")
        shape, _, dtype = read_header(f)
        if dtype.hasobject:
            raise Damaged(f"member {info.filename!r} holds Python objects (they would need unpickling)")
        declared = f.tell() + math.prod(shape) * dtype.itemsize
    if declared != info.file_size:
        raise Damaged(f"member {info.filename!r} declares {dtype} {tuple(shape)} ({declared:,} bytes with its "
                      f"header) but holds {info.file_size:,} bytes")
    with zf.open(info) as f:
        return npy_format.read_array(f, allow_pickle=False)


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
    kind = path_kind(folder)
    if kind not in (None, "folder"):  # else the error reads "File exists" or "Not a directory"
        return f"cache folder {folder} is {'a file' if kind == 'file' else kind}"
    if path_kind(path) == "folder":  # a rename cannot replace it, and it is not ours to delete
        return f"the cache file {path} is a folder"
    if kind == "folder":
        remove_stale_temporaries(folder)
    try:
        atomic_savez(path, arrays)
    except OSError as e:
        return f"cannot write {e.filename or path}: {e.strerror or e}"
    return None
