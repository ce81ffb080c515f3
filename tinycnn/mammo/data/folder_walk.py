"""The images of a folder dataset: every entry under benign/ and malignant/ is read or
named, and every real file is read once.

- Class folders match in any letter case; two that differ only in case are refused.
- Links are followed: a symlinked subfolder or file is read like any other. A file is
  known by its device and inode, so a second path to it (a link, a hard link, a folder
  linked twice) reads it once and is named in a note; a file reachable under both
  classes (a class folder that links to the other, a link across) is a DataError naming
  both paths: its image would be trained as benign and as malignant.
- A folder reached again through a link (a loop, or one folder linked from two places)
  is walked once.
- Hidden entries (any name starting with '.': .Trash-1000/, .git/, .DS_Store, ._a.png)
  are not read, and not walked into; the note counts them and names the first.
- Files with another extension are not read, and counted.
- Broken links, entries that are not regular files (FIFOs, sockets) and folders that
  cannot be listed are named; --strict refuses them.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .preprocess import IMAGE_EXTENSIONS, DataError

CLASSES = (("benign", 0), ("malignant", 1))


@dataclass
class FolderScan:
    root: Path
    found: list = field(default_factory=list)  # [(path as reached under root, label)], sorted per class
    others: list = field(default_factory=list)  # files with another extension
    hidden: list = field(default_factory=list)  # hidden entries, not walked into
    aliases: list = field(default_factory=list)  # (path, the path it was first read as): one file, read once
    unusable: list = field(default_factory=list)  # "path: reason"
    missing: list = field(default_factory=list)  # class names without a folder

    def rel(self, path: Path) -> str:
        return Path(path).relative_to(self.root).as_posix()

    def notes(self) -> list[str]:
        """What was not read, or read once for several paths, in the banner's words."""
        out = []
        if self.others:
            out.append(f"{len(self.others)} file(s) in the class folders not read: not {', '.join(IMAGE_EXTENSIONS)} "
                       f"(first: {self.rel(self.others[0])})")
        if self.hidden:
            folders = sum(p.is_dir() for p in self.hidden)
            out.append(f"{len(self.hidden)} hidden entr{'y' if len(self.hidden) == 1 else 'ies'} (name starting "
                       f"with '.'; {folders} folder(s), not looked into) not read (first: "
                       f"{self.rel(self.hidden[0])}{'/' if self.hidden[0].is_dir() else ''})")
        if self.aliases:
            path, first = self.aliases[0]
            out.append(f"{len(self.aliases)} path(s) lead to a file or folder already read, read once (first: "
                       f"{self.rel(path)} is {self.rel(first)})")
        if self.unusable:
            out.append(f"{len(self.unusable)} entr{'y' if len(self.unusable) == 1 else 'ies'} in the class folders "
                       f"cannot be read (first: {self.unusable[0]})")
        return out


def class_dir(root: Path, name: str) -> Path | None:
    """The class folder, in any letter case. Two of them (benign/ and Benign/, possible
    where names are case-sensitive) are refused: reading one would drop the other."""
    named = sorted(child for child in root.iterdir() if child.name.lower() == name)
    matches = [m for m in named if m.is_dir()]
    if len(matches) > 1:
        names = " and ".join(f"{m.name}/" for m in matches)
        raise DataError(f"folder dataset: {root} has {names}, which differ only in letter case: merge them "
                        f"into one {name}/ folder")
    if not matches and named:
        what = "a broken link" if named[0].is_symlink() and not named[0].exists() else "not a folder"
        raise DataError(f"folder dataset: {named[0]} is {what}: the {name} images must be in a folder")
    return matches[0] if matches else None


def scan(root) -> FolderScan:
    """Every entry under the class folders, sorted into what is read and what is not."""
    result = FolderScan(Path(root))
    files: dict[tuple, tuple[Path, int]] = {}  # (device, inode) -> (first path, label)
    folders: dict[tuple, tuple[Path, int]] = {}
    for name, label in CLASSES:
        folder = class_dir(result.root, name)
        if folder is None:
            result.missing.append(name)
            continue
        start = len(result.found)
        _walk(folder, label, result, files, folders)
        result.found[start:] = sorted(result.found[start:])
    return result


def _same(result: FolderScan, path: Path, label: int, seen: tuple[Path, int], what: str) -> None:
    """A second path to a file or folder already found: once under one class, an error
    under two."""
    first, first_label = seen
    if first_label != label:
        raise DataError(f"folder dataset: {result.rel(path)} and {result.rel(first)} are one {what} (through a "
                        f"link) under both benign/ and malignant/: {'every image in it' if what == 'folder' else 'it'} "
                        "would be trained under both labels; keep it in one class folder")
    result.aliases.append((path, first))


def _walk(folder: Path, label: int, result: FolderScan, files: dict, folders: dict) -> None:
    key = _identity(folder)
    if key in folders:
        _same(result, folder, label, folders[key], "folder")
        return
    folders[key] = (folder, label)
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        result.unusable.append(f"{result.rel(folder)}/: cannot list the folder ({e.strerror or e})")
        return
    for entry in entries:
        path = Path(entry.path)
        if entry.name.startswith("."):
            result.hidden.append(path)
            continue
        try:
            st = os.stat(path)  # follows links
        except FileNotFoundError:
            result.unusable.append(f"{result.rel(path)}: a broken link (to {_target(path)})")
            continue
        except OSError as e:
            result.unusable.append(f"{result.rel(path)}: {e.strerror or e}")
            continue
        if stat.S_ISDIR(st.st_mode):
            _walk(path, label, result, files, folders)
        elif not stat.S_ISREG(st.st_mode):
            result.unusable.append(f"{result.rel(path)}: not a regular file")
        elif path.suffix.lower() not in IMAGE_EXTENSIONS:
            result.others.append(path)
        elif (st.st_dev, st.st_ino) in files:
            _same(result, path, label, files[st.st_dev, st.st_ino], "file")
        else:
            files[st.st_dev, st.st_ino] = (path, label)
            result.found.append((path, label))


def _target(link: Path) -> str:
    try:
        return os.readlink(link)
    except OSError:
        return "nothing"


def _identity(path: Path) -> tuple:
    st = os.stat(path)
    return st.st_dev, st.st_ino
