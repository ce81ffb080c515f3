"""A run folder (apps/train.py's --out): owned by one training at a time, never left
with half-written files, and replaced by --overwrite only once the new run has
something to show.

- RunLock: an exclusive lock on OUT/.lock (flock), and on the .lock of every
  subfolder the run writes or tidies (protocol and fold folders). The kernel drops
  them when the process ends, however it ends (kill -9 included), so a crash never
  leaves a folder locked. A second training is refused while the first runs if it
  would write any folder the first locked (a run at OUT/patient while a --protocol
  both run writes OUT, or the other way round), or if its folder lies inside one a
  live training holds (a parent's lock covers its subfolders). A lock file is
  opened without following a link and without blocking: a named pipe or a device
  where .lock should be is refused, never waited on.
- remove_stale_temporaries: the temporary files of saves that a killed process never
  finished (tinycnn.paths.atomic_write writes .tmp-*.npz or .tmp-*.json and renames
  it; runs of earlier versions left metrics.json.tmp). Safe only under the lock:
  nobody else writes there.
- Replacement: --overwrite moves the old run's files to OUT/.replaced/ and deletes
  them once the new run has saved its first checkpoint; a new run that ends before
  that (a NaN at step 2, an error, Ctrl-C twice) gets the old run put back, and a
  run killed in between is sorted out by the next one to take the lock (recover).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

from .outputs import target_kind
from .report import PLOT_FILES
from .train import BEST, LAST

LOCK_FILE = ".lock"
REPLACED = ".replaced"  # --overwrite: the previous run, until the new one has saved a checkpoint
DISCARDED = ".replaced-discarded"  # renamed there first, so a half-done delete is never mistaken for a backup
COMPLETE = ".complete"  # in REPLACED once every file of the old run is in it
SUBFOLDERS = ("", "patient", "paper")  # --protocol both keeps each protocol in its own subfolder
FOLD_PATTERN = "fold-*"  # --cv keeps each fold in its own subfolder of those
CHECKPOINTS = (LAST, BEST)
# --task detect's own files (tinycnn.mammo.detection.crossval: each fold's model and scans, the pooled report)
DETECTION_FILES = ("detector.npz", "scans.npz", "detection.json", "froc.png")
RUN_FILES = CHECKPOINTS + ("metrics.json",) + PLOT_FILES + DETECTION_FILES
STALE_PATTERNS = (".tmp-*.npz", ".tmp-*.json", "*.json.tmp")


class RunFolderBusy(Exception):
    """Another live process holds the run folder's lock."""


def subfolders(folder: Path) -> list[str]:
    """Where a run keeps files, relative to its folder: itself, its protocol subfolders
    and the fold-N subfolders of each (--cv)."""
    folder, out = Path(folder), []
    for sub in SUBFOLDERS:
        out.append(sub)
        d = folder / sub
        if d.is_dir():
            out += sorted(str(f.relative_to(folder)) for f in d.glob(FOLD_PATTERN) if f.is_dir())
    return out


def run_files(folder: Path, names=RUN_FILES) -> list[Path]:
    """The files of a run (checkpoints, metrics, plots) in folder, its protocol
    subfolders and their fold subfolders."""
    folder = Path(folder)
    return [folder / sub / name for sub in subfolders(folder) for name in names if (folder / sub / name).is_file()]


def holds_run(folder: Path) -> bool:
    """Some run's files are in folder: writing a new run there would replace them."""
    return bool(run_files(folder))


# ------------------------------------------------------------ the lock
try:
    import fcntl

    def _try_lock(f) -> bool:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:  # BlockingIOError: held by another open file
            return False

    def _unlock(f) -> None:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
except ImportError:  # Windows
    import msvcrt

    def _try_lock(f) -> bool:
        try:
            f.seek(0)
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(f) -> None:
        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)


class RunFolderUnusable(Exception):
    """Where the run's lock file should be is something that is not a file."""


def _open_lock_file(path: Path, create: bool):
    """path opened for locking, or None when create is False and there is none. Never
    follows a link and never blocks (a named pipe opened for reading waits for a writer,
    forever); RunFolderUnusable when it is not a regular file."""
    flags = (os.O_RDWR | (os.O_CREAT if create else 0) | getattr(os, "O_NONBLOCK", 0)
             | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    try:
        fd = os.open(path, flags, 0o666)
    except FileNotFoundError:
        if create:
            raise
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:  # O_NOFOLLOW met a link
            raise RunFolderUnusable(f"{path} is a symbolic link, not a lock file: remove it") from e
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RunFolderUnusable(f"{path} is {target_kind(path) or 'not a regular file'}, not a lock file: remove it")
    return os.fdopen(fd, "r+", encoding="utf-8")


def lock_owner(folder) -> str | None:
    """The process holding folder's lock right now ("?" when it cannot be told), or None
    when no live process does. Creates nothing."""
    try:
        f = _open_lock_file(Path(folder) / LOCK_FILE, create=False)
    except (OSError, RunFolderUnusable):
        return None
    if f is None:
        return None
    with f:
        if _try_lock(f):
            _unlock(f)
            return None
        f.seek(0)
        return f.read().strip() or "?"


def in_use(folder) -> bool:
    """Another process holds folder's lock right now (creates nothing)."""
    return lock_owner(folder) is not None


class RunLock:
    """with RunLock(folder, subfolders): ... holds folder, and each of its subfolders
    (relative paths) that the run writes or tidies, for this process, creating them if
    needed. RunFolderBusy names the process that holds one of them, or that holds a
    folder this one lies inside; OSError when one cannot be created."""

    def __init__(self, folder, subfolders=()):
        self.folder = Path(folder)
        self.subfolders = sorted({str(s) for s in subfolders} - {"", "."})
        self._held = []  # (folder, open lock file, created by this lock), in the order taken

    def acquire(self) -> "RunLock":
        self._take(self.folder, None)
        try:
            self._check_parents()
            for sub in self.subfolders:  # parents before their children: released the other way round
                self._take(self.folder / sub, sub)
        except BaseException:
            self.release()
            raise
        return self

    def _take(self, folder: Path, sub: str | None) -> None:
        created = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        f = _open_lock_file(folder / LOCK_FILE, create=True)
        if not _try_lock(f):
            f.seek(0)
            owner = f.read().strip() or "?"
            f.close()
            where = f"{folder}" if sub is None else f"{folder} (a folder this run writes)"
            raise RunFolderBusy(f"{where} is in use by another training (process {owner}): wait for it "
                                "to end, or choose another --out")
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")  # for the message a second process prints
        f.flush()
        self._held.append((folder, f, created))

    def _check_parents(self) -> None:
        """A live training whose folder holds this one would tidy, move aside or write
        over what this run writes: its lock covers its subfolders."""
        for parent in self.folder.resolve().parents:
            owner = lock_owner(parent)
            if owner is not None:
                raise RunFolderBusy(f"{self.folder} lies inside {parent}, which another training (process {owner}) "
                                    "is using: wait for it to end, or choose an --out outside it")

    def release(self) -> None:
        while self._held:
            folder, f, created = self._held.pop()
            try:
                # a folder this run created and left empty (it failed before writing) goes too
                if created and [p.name for p in folder.iterdir()] == [LOCK_FILE]:
                    (folder / LOCK_FILE).unlink()
                    folder.rmdir()
            except OSError:
                pass
            finally:
                _unlock(f)
                f.close()

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ------------------------------------------------------------ tidying (under the lock)
def remove_stale_temporaries(folder) -> list[Path]:
    """Delete what interrupted saves left behind; returns what was removed."""
    removed = []
    for sub in subfolders(folder):
        d = Path(folder) / sub
        for pattern in STALE_PATTERNS:
            for p in sorted(d.glob(pattern)) if d.is_dir() else []:
                try:
                    p.unlink()
                    removed.append(p)
                except OSError:
                    pass
    return removed


class Replacement:
    """--overwrite, in three steps: begin() moves the old run aside, commit() deletes it
    (call it when the new run has saved a checkpoint), rollback() puts it back (when
    the new run ended without one). Idempotent, and safe to call in any order after
    begin()."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.backup = self.folder / REPLACED
        self.active = False

    def begin(self) -> int:
        """Move every file of the old run into OUT/.replaced/; returns how many."""
        moved = 0
        self.backup.mkdir(exist_ok=True)
        for path in run_files(self.folder):
            target = self.backup / path.relative_to(self.folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            moved += 1
        (self.backup / COMPLETE).touch()  # from here on, a checkpoint in OUT is the new run's
        self.active = True
        return moved

    def commit(self, *_) -> None:
        """The new run has something to show: the old one goes. Called from the
        training loop's save, so a delete that fails must not stop training: the
        next run in this folder (recover) finishes it."""
        if not self.active:
            return
        self.active = False
        try:
            _discard(self.backup)
        except OSError:
            pass

    def rollback(self) -> None:
        """The new run ended with nothing saved: the old run comes back."""
        if not self.active:
            return
        self.active = False
        _restore(self.backup, self.folder)


def _discard(backup: Path) -> None:
    if backup.exists():
        discarded = backup.parent / DISCARDED
        os.replace(backup, discarded)  # atomic: never a half-deleted backup
        shutil.rmtree(discarded, ignore_errors=True)


def _restore(backup: Path, folder: Path) -> None:
    (backup / COMPLETE).unlink(missing_ok=True)  # killed mid-way, this reads as "restore the rest"
    for path in sorted(p for p in backup.rglob("*") if p.is_file()):
        target = folder / path.relative_to(backup)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    shutil.rmtree(backup, ignore_errors=True)


def recover(folder) -> str | None:
    """Finish what a killed --overwrite run left half-done (call it holding the lock).
    Returns a line for the log, or None if there was nothing to do."""
    folder = Path(folder)
    shutil.rmtree(folder / DISCARDED, ignore_errors=True)
    backup = folder / REPLACED
    if not backup.is_dir():
        return None
    new_checkpoint = bool(run_files(folder, CHECKPOINTS))
    if (backup / COMPLETE).exists() and new_checkpoint:
        _discard(backup)
        return (f"removed {backup}: the earlier --overwrite run that replaced it had saved a checkpoint "
                "before it was stopped")
    _restore(backup, folder)
    return f"restored the run in {folder}: an --overwrite run was stopped before it saved anything"


def unusable_folder(folder: Path, flag: str = "--out") -> str | None:
    """Why `folder` cannot receive outputs, from the path alone (before any work, and
    from os.stat: nothing is opened): a file or anything else that is not a folder,
    under one, or not writable; None when it can."""
    folder = Path(folder)
    kind = target_kind(folder)
    if kind not in (None, "folder"):
        return f"{flag} {folder} is {'a file' if kind == 'file' else kind}, not a folder"
    existing = next(p for p in [folder.absolute(), *folder.absolute().parents] if target_kind(p) is not None)
    kind = target_kind(existing)
    if kind != "folder":
        what = "a file" if kind == "file" else kind
        return f"{flag} {folder}: {existing} is {what}, so no folder can be made under it"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{flag} {folder}: {existing} is not writable"
    return None


def inside(folder: Path, other) -> bool:
    """Whether `folder` is the existing folder `other` or lies below it."""
    other = Path(other)
    if not other.is_dir():
        return False
    target, base = Path(folder).resolve(), other.resolve()
    return target == base or base in target.parents
