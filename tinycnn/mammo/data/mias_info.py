"""Info.txt of the mini-MIAS database, every row accounted for.

A data row is a line whose first word is a film reference (`mdb001`, in any letter
case); every other line is the prose around the table, whether the file has that
prose or not. A byte-order mark (UTF-8 or UTF-16) is read as such, not as part of
the first reference. Rows are read in any letter case and spacing (tabs, trailing
blanks, CRLF), and each ends up in exactly one place:

- used: a normal film (NORM), or an abnormality with its severity, with a centre and
  radius (three whole numbers) or without (the database's own rows of spread
  calcifications, `*NOTE 3*`, and the bare `mdb059 F CIRC B`);
- a duplicate: the same circle of a film (or the same normal film, or the same
  uncropped abnormality) listed again with the same severity is used once and named;
- skipped and named with its line number: an unknown class code or severity, a centre
  or radius that is not three whole numbers, text after the radius, a reference that
  is not mdbNNN, too few fields.

One circle of a film listed as benign on one line and malignant on another, or a film
listed both as normal and with an abnormality, is a DataError naming both lines: one
crop cannot be trained under two labels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .preprocess import DataError

INFO_FILE = "Info.txt"
CLASSES = ("CALC", "CIRC", "SPIC", "MISC", "ARCH", "ASYM")
NORMAL = "NORM"
SEVERITIES = ("B", "M")
_REF = re.compile(r"mdb(\d+)", re.IGNORECASE)
_LOOKS_LIKE_REF = re.compile(r"mdb\d", re.IGNORECASE)  # a data row, even if its reference is garbled
_INT = re.compile(r"[+-]?\d+")


@dataclass
class Abnormality:
    ref: str  # mdbNNN, lower case
    tissue: str
    kind: str  # CALC ... ASYM, or NORM
    severity: str | None  # B or M; None on a normal row
    x: int | None
    y: int | None
    radius: int | None
    line: int = 0  # where Info.txt lists it (1-based)

    @property
    def croppable(self) -> bool:
        return self.severity in SEVERITIES and None not in (self.x, self.y, self.radius)

    def describe(self) -> str:
        circle = f" ({self.x}, {self.y}) r{self.radius}" if self.croppable else ""
        return f"{self.ref} {self.kind}{' ' + self.severity if self.severity else ''}{circle}"


@dataclass
class InfoTable:
    path: Path
    rows: list  # [Abnormality]: every usable row once (normal films included), in file order
    skipped: list = field(default_factory=list)  # "Info.txt line N: reason" of rows that cannot be used
    duplicates: list = field(default_factory=list)  # "Info.txt line N repeats line M ...": used once
    unusable: dict = field(default_factory=dict)  # {ref: [what was skipped of its rows]}: it may hold more

    def summary(self) -> str:
        """One line accounting for every data row of the table."""
        abnormal = [a for a in self.rows if a.severity]
        croppable = sum(a.croppable for a in abnormal)
        parts = [f"{croppable} abnormal row(s) with a centre and radius",
                 f"{len(abnormal) - croppable} abnormal row(s) without a centre or radius cannot be cropped",
                 f"{len(self.rows) - len(abnormal)} normal film(s)"]
        if self.duplicates:
            parts.append(f"{len(self.duplicates)} duplicate row(s) used once (first: {self.duplicates[0]})")
        if self.skipped:
            parts.append(f"{len(self.skipped)} row(s) skipped (first: {self.skipped[0]})")
        total = len(self.rows) + len(self.duplicates) + len(self.skipped)
        return f"{self.path.name}: {total} data row(s): " + "; ".join(parts)


def find_info(data_dir) -> Path:
    """Info.txt (any letter case) in data_dir, else in exactly one folder below it."""
    root = Path(data_dir)
    here = _named(root)
    if here:
        return here
    below = [p for p in (_named(d) for d in sorted(root.iterdir()) if d.is_dir()) if p] if root.is_dir() else []
    if len(below) > 1:
        raise DataError(f"mias: {root} holds no {INFO_FILE} but several folders below it do ("
                        f"{', '.join(p.relative_to(root).as_posix() for p in below[:3])}): point --data-dir at one")
    if below:
        return below[0]
    raise DataError(f"mias: no {INFO_FILE} in {root} (expected the MIAS layout: Info.txt and mdbNNN.pgm)")


def _named(folder: Path) -> Path | None:
    try:
        found = sorted(p for p in folder.iterdir() if p.name.lower() == INFO_FILE.lower() and p.is_file())
    except OSError:
        return None
    if len(found) > 1:
        raise DataError(f"mias: {folder} holds {' and '.join(p.name for p in found)}, which differ only in letter "
                        "case: keep one")
    return found[0] if found else None


def read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"mias: {path}: cannot read it ({e.strerror or e})") from e
    try:
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            return data.decode("utf-16")
        if data.startswith(b"\xef\xbb\xbf"):
            return data[3:].decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"mias: {path}: starts with a byte-order mark but is not that encoding ({e.reason})") from e
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # the database's own file is ASCII; any byte reads


def _row(tokens: list[str], line: int) -> Abnormality | str:
    """One data row, or the reason it cannot be used."""
    m = _REF.fullmatch(tokens[0])
    if not m:
        return f"reference {tokens[0]!r} is not mdbNNN"
    ref = f"mdb{int(m.group(1)):03d}"
    if len(tokens) < 3:
        return f"{ref}: too few fields (expected reference, tissue, class[, severity, x, y, radius])"
    tissue, kind, rest = tokens[1].upper(), tokens[2].upper(), tokens[3:]
    if kind == NORMAL:
        if rest:
            return f"{ref}: a normal (NORM) row with more fields ({' '.join(rest)!r}): normal or not?"
        return Abnormality(ref, tissue, kind, None, None, None, None, line)
    if kind not in CLASSES:
        return f"{ref}: unknown class code {tokens[2]!r} (expected {', '.join(CLASSES)} or {NORMAL})"
    if not rest:
        return f"{ref}: no severity (B or M)"
    severity, numbers = rest[0].upper(), rest[1:]
    if severity not in SEVERITIES:
        return f"{ref}: severity {rest[0]!r} is not B or M"
    if not numbers or numbers[0].upper().startswith("*NOTE"):  # the database's rows without a centre
        return Abnormality(ref, tissue, kind, severity, None, None, None, line)
    if len(numbers) < 3 or not all(_INT.fullmatch(t) for t in numbers[:3]):
        return (f"{ref}: centre x, centre y and radius should be three whole numbers, found "
                f"{' '.join(numbers[:3])!r}")
    if len(numbers) > 3:
        return f"{ref}: text after the radius ({' '.join(numbers[3:])!r})"
    x, y, r = (int(t) for t in numbers)
    return Abnormality(ref, tissue, kind, severity, x, y, r, line)


def parse_table(path) -> InfoTable:
    """Every data row of Info.txt, accounted for (see the module's docstring)."""
    path = Path(path)
    table = InfoTable(path, [])
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        tokens = line.split()
        if not tokens or not _LOOKS_LIKE_REF.match(tokens[0]):
            continue
        row = _row(tokens, number)
        if isinstance(row, str):
            table.skipped.append(f"{path.name} line {number}: {row}")
            ref = _REF.fullmatch(tokens[0])
            if ref:
                table.unusable.setdefault(f"mdb{int(ref.group(1)):03d}", []).append(f"line {number}: {row}")
        else:
            table.rows.append(row)
    if not table.rows and not table.skipped:
        raise DataError(f"mias: {path} holds no data rows like 'mdb001 G CIRC B 535 425 197'")
    table.rows = _deduplicate(table, path)
    return table


def _deduplicate(table: InfoTable, path: Path) -> list:
    """The rows with repeats removed (named in table.duplicates); DataError for a circle
    with both severities or a film listed as normal and abnormal."""
    kept, first = [], {}
    normal, abnormal = {}, {}
    for a in table.rows:
        (normal if a.severity is None else abnormal).setdefault(a.ref, a)
        other = normal.get(a.ref) if a.severity else abnormal.get(a.ref)
        if other is not None:
            raise DataError(f"mias: {path}: line {min(a.line, other.line)} and line {max(a.line, other.line)} list "
                            f"{a.ref} both as a normal film and with an abnormality: correct one of them")
        key = (a.ref, a.x, a.y, a.radius) if a.croppable else (a.ref, a.kind, a.severity)
        seen = first.get(key)
        if seen is None:
            first[key] = a
            kept.append(a)
        elif seen.severity != a.severity:
            raise DataError(f"mias: {path}: line {seen.line} ({seen.describe()}) and line {a.line} "
                            f"({a.describe()}) give one circle both severities: one crop cannot be benign and "
                            "malignant; correct one of the rows")
        else:
            also = f", as {a.kind} after {seen.kind}" if a.kind != seen.kind else ""
            table.duplicates.append(f"{path.name} line {a.line} repeats line {seen.line} ({seen.describe()}{also})")
    return kept


def parse_info(path) -> list[Abnormality]:
    """The usable rows of Info.txt, each once (normal films included)."""
    return parse_table(path).rows
