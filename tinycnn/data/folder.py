"""A folder of ROI images: benign/ and malignant/ subfolders (searched recursively) of
PNG, JPEG, TIFF, PGM (8- or 16-bit) or DICOM files. Patient ids come from an optional
patients.csv (columns: file, patient_id; `file` relative to the folder, relative to
its class subfolder, or a bare file name), else every file is its own patient."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from . import cache
from .preprocess import IMAGE_EXTENSIONS, DataError, UnreadableImage, load_preprocessed

VERSION = 1
CLASSES = (("benign", 0), ("malignant", 1))
PATIENTS_CSV = "patients.csv"


def _class_dir(root: Path, name: str) -> Path | None:
    for child in root.iterdir():
        if child.is_dir() and child.name.lower() == name:
            return child
    return None


def list_images(root) -> list[tuple[Path, int]]:
    """(file, label) for every image under benign/ and malignant/."""
    root = Path(root)
    found, missing = [], []
    for name, label in CLASSES:
        folder = _class_dir(root, name)
        if folder is None:
            missing.append(name)
            continue
        files = sorted(p for p in folder.rglob("*")
                       if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)
        found += [(p, label) for p in files]
    if len(missing) == 2:
        raise DataError(f"folder dataset: {root} has neither a benign/ nor a malignant/ subfolder")
    if missing:
        raise DataError(f"folder dataset: only one class in {root}: no {missing[0]}/ subfolder")
    if not found:
        raise DataError(f"folder dataset: no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}/benign "
                        f"or {root}/malignant")
    return found


def read_patients_csv(path: Path) -> dict[str, str]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        for required in ("file", "patient_id"):
            if required not in columns:
                raise DataError(f"{path}: missing required column {required!r} (found: {', '.join(columns) or 'none'})")
        out = {}
        for row in reader:
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            if row["file"]:
                out[row["file"].replace("\\", "/")] = row["patient_id"]
        return out


def fingerprint(data_dir, **options) -> list:
    files = [p for p, _ in list_images(data_dir)]
    extra = [Path(data_dir) / PATIENTS_CSV] if (Path(data_dir) / PATIENTS_CSV).exists() else []
    return cache.file_fingerprint(files + extra, data_dir)


def read(data_dir, image_size: int, strict: bool = False, **options):
    from . import RoiSet

    root = Path(data_dir)
    files = list_images(root)
    table = read_patients_csv(root / PATIENTS_CSV) if (root / PATIENTS_CSV).exists() else {}
    images, labels, patients, ids, skipped = [], [], [], [], []
    for path, label in files:
        rel = path.relative_to(root).as_posix()
        try:
            images.append(load_preprocessed(path, image_size))
        except UnreadableImage as e:
            if strict:
                raise
            skipped.append(f"{rel}: {e}")
            continue
        within_class = Path(*path.relative_to(root).parts[1:]).as_posix()
        patients.append(table.get(rel) or table.get(within_class) or table.get(path.name) or f"file:{rel}")
        labels.append(label)
        ids.append(rel)
    notes = [f"patients from {PATIENTS_CSV}" if table else "no patients.csv: one patient per file"]
    if not images:
        raise DataError(f"folder dataset: none of the {len(files)} images under {root} could be read "
                        f"(first: {skipped[0] if skipped else '?'})")
    return RoiSet("folder", np.stack(images), np.array(labels, dtype=np.int64), np.array(patients),
                  np.array(ids), skipped=skipped, notes=notes)
