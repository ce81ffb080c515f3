"""A folder of ROI images: benign/ and malignant/ subfolders (searched recursively) of
PNG, JPEG, TIFF, PGM (8- or 16-bit) or DICOM files. Patient ids come from an optional
patients.csv (columns: file, patient_id; `file` relative to the folder, relative to
its class subfolder, or a bare file name), else every file is its own patient."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..progress import tracked
from . import cache
from .csv_rows import read_rows
from .preprocess import IMAGE_EXTENSIONS, DataError, UnreadableImage, load_preprocessed

VERSION = 3  # 2: patients.csv coverage in the notes and strict_errors; 3: files not read are noted
CLASSES = (("benign", 0), ("malignant", 1))
PATIENTS_CSV = "patients.csv"


def _class_dir(root: Path, name: str) -> Path | None:
    """The class folder, in any letter case. Two of them (benign/ and Benign/, possible
    where names are case-sensitive) are refused: reading one would drop the other."""
    matches = sorted(child for child in root.iterdir() if child.is_dir() and child.name.lower() == name)
    if len(matches) > 1:
        names = " and ".join(f"{m.name}/" for m in matches)
        raise DataError(f"folder dataset: {root} has {names}, which differ only in letter case: merge them "
                        f"into one {name}/ folder")
    return matches[0] if matches else None


def _scan(root: Path) -> tuple[list[tuple[Path, int]], list[Path], list[str]]:
    """(image, label) pairs under the class folders, the other (non-hidden) files there,
    and the class folders that are missing."""
    found, others, missing = [], [], []
    for name, label in CLASSES:
        folder = _class_dir(root, name)
        if folder is None:
            missing.append(name)
            continue
        for p in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
            if p.suffix.lower() in IMAGE_EXTENSIONS:
                found.append((p, label))
            else:
                others.append(p)
    return found, others, missing


def list_images(root) -> list[tuple[Path, int]]:
    """(file, label) for every image under benign/ and malignant/."""
    root = Path(root)
    found, _, missing = _scan(root)
    if len(missing) == 2:
        raise DataError(f"folder dataset: {root} has neither a benign/ nor a malignant/ subfolder")
    if missing:
        raise DataError(f"folder dataset: only one class in {root}: no {missing[0]}/ subfolder")
    if not found:
        raise DataError(f"folder dataset: no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}/benign "
                        f"or {root}/malignant")
    return found


def read_patients_csv(path: Path) -> dict[str, str]:
    """{file as written in the table (forward slashes): patient id}. A row without a
    patient id lists nothing (its file counts as unlisted), so blank ids never make
    one patient of unrelated files."""
    return {row["file"].replace("\\", "/"): row["patient_id"]
            for row in read_rows(path, ("file", "patient_id")) if row["file"] and row["patient_id"]}


def _table_key(table: dict, root: Path, path: Path) -> str | None:
    """The patients.csv entry naming this file: relative to the folder, to its class
    subfolder, or the bare file name; None if the table does not list it."""
    rel = path.relative_to(root)
    return next((k for k in (rel.as_posix(), Path(*rel.parts[1:]).as_posix(), path.name) if k in table), None)


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


def ignored_files_note(root: Path) -> list[str]:
    """A note naming files in the class folders that are not read (another extension),
    so an image saved as .bmp or .gif is not dropped without a word."""
    _, others, _ = _scan(root)
    if not others:
        return []
    return [f"{len(others)} file(s) in the class folders not read: not {', '.join(IMAGE_EXTENSIONS)} "
            f"(first: {others[0].relative_to(root).as_posix()})"]


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
    files = list_images(root)
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
    return RoiSet("folder", np.stack(images), np.array(labels, dtype=np.int64), np.array(patients),
                  np.array(ids), skipped=skipped, notes=[note] + ignored_files_note(root), strict_errors=strict_errors)
