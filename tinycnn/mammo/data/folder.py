"""A folder of ROI images: benign/ and malignant/ subfolders (searched recursively) of
PNG, JPEG, TIFF, PGM (8- or 16-bit) or DICOM files. Patient ids come from an optional
patients.csv (columns: file, patient_id; `file` relative to the folder, relative to
its class subfolder, or a bare file name), else every file is its own patient. Which
files are read, and what is named instead (links, hidden entries, other extensions),
is folder_walk.py's."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..progress import tracked
from . import cache
from .csv_rows import read_numbered_rows
from .folder_walk import CLASSES, FolderScan, scan  # noqa: F401  (CLASSES: the classes' names and labels)
from .preprocess import IMAGE_EXTENSIONS, DataError, UnreadableImage, load_preprocessed

# 2: patients.csv coverage in the notes and strict_errors; 3: files not read are noted; 4: links
# followed, each real file read once, hidden folders not read, all of it noted
VERSION = 4
PATIENTS_CSV = "patients.csv"


def _checked_scan(root: Path) -> FolderScan:
    """The scan of root, refused when a class or every image is missing."""
    result = scan(root)
    if len(result.missing) == 2:
        raise DataError(f"folder dataset: {root} has neither a benign/ nor a malignant/ subfolder")
    if result.missing:
        raise DataError(f"folder dataset: only one class in {root}: no {result.missing[0]}/ subfolder")
    if not result.found:
        raise DataError(f"folder dataset: no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}/benign "
                        f"or {root}/malignant" + (f"; {'; '.join(result.notes())}" if result.notes() else ""))
    return result


def list_images(root) -> list[tuple[Path, int]]:
    """(file, label) for every image under benign/ and malignant/, each real file once."""
    return _checked_scan(Path(root)).found


def read_patients_csv(path: Path) -> dict[str, str]:
    """{file as written in the table (forward slashes, no leading ./): patient id}. A row
    without a patient id lists nothing (its file counts as unlisted), so blank ids never
    make one patient of unrelated files. A file listed twice with two patient ids is a
    DataError naming both lines; listed twice with one id, it is one entry."""
    table: dict[str, tuple[int, str]] = {}
    for line, row in read_numbered_rows(path, ("file", "patient_id")):
        name = row["file"].replace("\\", "/").removeprefix("./")
        if not name or not row["patient_id"]:
            continue
        seen = table.setdefault(name, (line, row["patient_id"]))
        if seen[1] != row["patient_id"]:
            raise DataError(f"{path}: line {seen[0]} and line {line} give {name} two patient ids "
                            f"({seen[1]!r} and {row['patient_id']!r}): which woman is it?")
    return {name: patient for name, (_, patient) in table.items()}


def _table_key(table: dict, root: Path, path: Path) -> str | None:
    """The patients.csv entry naming this file: relative to the folder, to its class
    subfolder, or the bare file name; None if the table does not list it. DataError
    when two of those spellings name it with different patient ids."""
    rel = path.relative_to(root)
    keys = [k for k in dict.fromkeys((rel.as_posix(), Path(*rel.parts[1:]).as_posix(), path.name)) if k in table]
    if len({table[k] for k in keys}) > 1:
        raise DataError(f"{root / PATIENTS_CSV}: {rel.as_posix()} is listed as "
                        + " and as ".join(f"{k} (patient {table[k]!r})" for k in keys) + ": which woman is it?")
    return keys[0] if keys else None


def _patients_coverage(table: dict | None, keys: dict, root: Path) -> tuple[str, list[str]]:
    """The banner's note on patient ids, and what --strict refuses. An image the table
    does not list becomes a patient of its own and a row naming no image is likely a
    typo: either can split one woman across train and test."""
    if table is None:
        return "no patients.csv: one patient per file", []
    unlisted = [p.relative_to(root).as_posix() for p, k in keys.items() if k is None]
    unmatched = sorted(set(table) - set(keys.values()))
    if not unlisted and not unmatched:
        return f"patients from {PATIENTS_CSV}", []
    problems = []
    if unlisted:
        problems.append(f"{len(unlisted)} image(s) not listed, one patient each (first: {unlisted[0]})")
    if unmatched:
        problems.append(f"{len(unmatched)} row(s) name no image (first: {unmatched[0]})")
    note = f"patients from {PATIENTS_CSV}, {len(keys) - len(unlisted)} of {len(keys)} images listed; "
    return note + "; ".join(problems), [f"{root / PATIENTS_CSV}: {'; '.join(problems)}"]


def count(data_dir, **options) -> int:
    """How many ROIs a read can give at most (for the memory estimate made before it)."""
    return len(list_images(data_dir))


def fingerprint(data_dir, **options) -> list:
    files = [p for p, _ in list_images(data_dir)]
    extra = [Path(data_dir) / PATIENTS_CSV] if (Path(data_dir) / PATIENTS_CSV).exists() else []
    return cache.file_fingerprint(files + extra, data_dir)


def read(data_dir, image_size: int, strict: bool = False, progress: bool = False, **options):
    from .roiset import RoiSet

    root = Path(data_dir)
    found = _checked_scan(root)
    files = found.found
    table = read_patients_csv(root / PATIENTS_CSV) if (root / PATIENTS_CSV).exists() else None
    keys = {path: _table_key(table or {}, root, path) for path, _ in files}
    note, strict_errors = _patients_coverage(table, keys, root)
    images, labels, patients, ids, skipped = [], [], [], [], []
    for path, label in tracked(files, f"reading {root}", progress):
        rel = path.relative_to(root).as_posix()
        try:
            images.append(load_preprocessed(path, image_size))
        except UnreadableImage as e:
            if strict:
                raise
            skipped.append(f"{rel}: {e}")
            continue
        patients.append(table[keys[path]] if keys[path] else f"file:{rel}")
        labels.append(label)
        ids.append(rel)
    if not images:
        raise DataError(f"folder dataset: none of the {len(files)} images under {root} could be read "
                        f"(first: {skipped[0] if skipped else '?'})")
    listed = [table[k] for k in keys.values() if k] if table else []
    return RoiSet("folder", np.stack(images), np.array(labels, dtype=np.int64), np.array(patients),
                  np.array(ids), skipped=skipped, notes=[note] + found.notes() + _case_note(listed),
                  strict_errors=strict_errors + [f"{root}: {u}" for u in found.unusable])


def _case_note(patients) -> list[str]:
    """patients.csv ids are free text, so 'W1' and 'w1' stay two women; say so, as they
    may well be one."""
    spellings: dict[str, set] = {}
    for p in patients:
        spellings.setdefault(str(p).lower(), set()).add(str(p))
    clashes = [sorted(s) for s in spellings.values() if len(s) > 1]
    if not clashes:
        return []
    return [f"{len(clashes)} patient id(s) in {PATIENTS_CSV} differ from another only in letter case and are kept "
            f"apart (first: {' and '.join(map(repr, clashes[0]))}): write them alike if they are one woman"]
