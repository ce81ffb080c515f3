"""What an app writes, decided before any work: one output name per input, never two
inputs on one file, and every target checked for what it is.

- output_names: a stem per input, unique and deterministic. It is the input's path
  below the folder it was found in (benign/0.png and malignant/0.png are benign__0 and
  malignant__0), its extension added where two inputs would share it (x.png and x.tif
  are x.png and x.tif), and a number after that where they still would (-2, -3, ...
  in input order, never a name another input has). Names are compared ignoring case,
  so the outputs stay apart on a file system that ignores it too. Every name that is
  not the input's plain stem comes with a line saying why, for the app to report.
- target_kind / check_file_target: what a path is, from os.stat alone. A named pipe
  is never opened (opening one waits for a writer, forever); a device, a socket, a
  folder where a file goes, a link to nothing are refused before any work.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from .data.preprocess import DataError

# Characters a stem may not take into a file name: path separators and what shown()
# escapes, except the surrogates of non-UTF-8 names, which write back as their bytes.
_NOT_IN_NAMES = re.compile("[/\\\\\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
MAX_STEM_BYTES = 200  # room for ".gradient.png" and a number within a 255-byte file name
SEPARATOR = "__"  # benign/0.png -> benign__0


class OutputError(DataError):
    """An output cannot be written where it was asked for: the message says why."""


# ------------------------------------------------------------ what a path is
def target_kind(path) -> str | None:
    """None when nothing is at path, else "file", "folder" or what else it is ("a named
    pipe (FIFO)", "a character device", ...), from os.stat (which follows links: what
    a write would reach) and never from opening it."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a symbolic link to nothing" if os.path.islink(path) else None
    except NotADirectoryError:
        return None  # under a file: nothing can be there (the folder check says why)
    except OSError as e:
        return f"a path that cannot be examined ({e.strerror or e})"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    for test, what in ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "not a regular file"


def check_file_target(path, flag: str) -> bool:
    """Whether path holds a regular file the caller may replace once it has checked
    the file is its own (False: nothing there, it will be created). OutputError for
    anything else: a folder, a named pipe, a device, a socket, a link to nothing."""
    kind = target_kind(path)
    if kind is None:
        return False
    if kind == "file":
        return True
    if kind == "folder":
        raise OutputError(f"{flag} {path} is a folder, not a file")
    raise OutputError(f"{flag} {path} is {kind}, not a regular file: outputs are written to files only")


def is_regular_file(path) -> bool:
    return target_kind(path) == "file"


def starts_with(path, first_lines) -> bool:
    """A regular file that is empty or whose first line is one of first_lines (bytes):
    how an app knows a table it wrote before. Never opens anything but a regular file."""
    if not is_regular_file(path):
        return False
    with open(path, "rb") as f:
        first = f.readline(4096)
    return first == b"" or first.rstrip(b"\r\n") in first_lines


# ------------------------------------------------------------ one name per input
def _relative(f: Path, roots) -> Path:
    root = next((r for r in roots if r in f.parents), None)
    return f.relative_to(root) if root is not None else Path(f.name)


def _clean(text: str) -> str:
    return _NOT_IN_NAMES.sub("_", text)


def _fit(stem: str, whole: str) -> str:
    """stem cut to MAX_STEM_BYTES (as the file system counts them), with a short hash
    of the whole path so two long names cut alike stay apart."""
    if len(os.fsencode(stem)) <= MAX_STEM_BYTES:
        return stem
    digest = hashlib.sha1(os.fsencode(whole)).hexdigest()[:10]
    cut = stem
    while len(os.fsencode(cut)) > MAX_STEM_BYTES - 11:
        cut = cut[:-1]
    return f"{cut}~{digest}"


def output_names(files, roots=()) -> tuple[list[str], list[str]]:
    """(one stem per file, in order; notes): stems unique ignoring case and the same for
    the same inputs in the same order. roots: the folders given on the command line
    (a file found in one is named by its path below it). notes: a line for each file
    whose stem is not its plain one (the path below its folder, without extension),
    naming the file, the stem and why."""
    files = [Path(f) for f in files]
    roots = [Path(r) for r in roots if Path(r).is_dir()]
    rels = [_relative(f, roots) for f in files]
    plain = [SEPARATOR.join(list(r.parent.parts) + [r.stem or r.name]) for r in rels]
    stems = [_fit(_clean(p), str(f)) for p, f in zip(plain, files)]
    why = [[] for _ in files]
    for i, p in enumerate(plain):
        if _clean(p) != p:
            why[i].append("characters a file name cannot hold replaced by _")
        if stems[i] != _clean(p):
            why[i].append("cut to fit a file name")
    count: dict[str, int] = {}
    for s in stems:
        count[s.casefold()] = count.get(s.casefold(), 0) + 1
    first = list(stems)
    for i, (f, r) in enumerate(zip(files, rels)):  # two inputs on one stem: each keeps its extension
        if count[first[i].casefold()] > 1 and r.suffix:
            stems[i] = _fit(_clean(plain[i] + r.suffix), str(f))
            why[i].append(f"another input has the stem {first[i]}")
    taken = {s.casefold() for s in stems}
    used: set[str] = set()
    for i, s in enumerate(stems):  # still two on one: a number, in input order
        if s.casefold() in used:
            n = 2
            while f"{s}-{n}".casefold() in taken | used:
                n += 1
            stems[i] = f"{s}-{n}"
            why[i].append(f"an earlier input is written as {s}")
        used.add(stems[i].casefold())
    notes = [f"{f}: its outputs are named {s}.* ({'; '.join(w)})" for f, s, w in zip(files, stems, why) if w]
    return stems, notes


# ------------------------------------------------------------ an app's outputs, planned
@dataclass
class OutputPlan:
    """Where each input's outputs go: paths[input][kind]. notes: the inputs whose names
    had to change (output_names); replaced: earlier outputs of the app that the run
    will write over (said before the work starts)."""

    paths: dict
    notes: list
    replaced: int = 0


def plan_outputs(folder: Path, files, kinds: dict, roots=(), protected=(), flag: str = "--out",
                 ours: str = "an earlier output of this app") -> OutputPlan:
    """Name and check every output before any work. kinds: {kind: (suffix, is_ours)}
    with is_ours(path) telling a file this app wrote. A target that exists must be a
    regular file (check_file_target), none of `protected` ((what, path) pairs: the
    inputs, the checkpoint), and the app's own (is_ours); OutputError otherwise."""
    folder = Path(folder)
    stems, notes = output_names(files, roots)
    plan = OutputPlan({}, notes)
    for f, stem in zip(files, stems):
        paths = {}
        for kind, (suffix, is_ours) in kinds.items():
            path = folder / f"{stem}{suffix}"
            if check_file_target(path, f"{flag}: {kind} of {f}:"):
                for what, q in protected:
                    if target_kind(q) == "file" and os.path.samefile(path, q):
                        raise OutputError(f"{flag}: writing {path} would destroy {what}; choose another folder")
                if not is_ours(path):
                    raise OutputError(f"{flag}: {path} exists and is not {ours}: remove it or choose another "
                                      "folder")
                plan.replaced += 1
            paths[kind] = path
        plan.paths[f] = paths
    return plan
