"""CBIS-DDSM: the case-description CSVs and their ROI crops, from DICOM or from the
JPEG redistribution.

- CSVs: {mass,calc}_case_description_{train,test}_set.csv in the data folder or its
  csv/ subfolder. Label: pathology MALIGNANT = 1, BENIGN and BENIGN_WITHOUT_CALLBACK = 0
  (any letter case); rows with another value are counted and named in a note.
  The official train/test split is kept (side 0 / 1). The mass and calc tables are
  each patient-disjoint, but together 31 patients have training rows in one and test
  rows in the other: those test rows are dropped (and counted) so the split stays
  patient-disjoint.
- Images, DICOM layout: the CSV paths relative to the data folder (or its CBIS-DDSM/
  subfolder); where the download renamed the folders (TCIA's NBIA layout), the
  series is found by the SeriesInstanceUID in the DICOM headers under the case folder.
- Images, JPEG layout: dicom_info.csv (image_path, SeriesInstanceUID, ...) maps the
  series (the third component of a CSV path) to jpeg/<SeriesInstanceUID>/1-N.jpg.
- The crop is told from the mask by content, never by name (the tables swap the two
  and about a hundred rows point both columns at one file): a mask is almost all
  black or white. With only a mask, the ROI is cut from the full mammogram around the
  mask's bounding box.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..progress import tracked
from . import cache
from .csv_rows import read_numbered_rows, read_rows
from .preprocess import DataError, UnreadableImage, preprocess, read_image

VERSION = 3  # 2: unknown pathology values named in the notes; 3: patient ids in any letter case, repeated rows once
TABLES = {(kind, split): f"{kind}_case_description_{split}_set.csv"
          for kind in ("mass", "calc") for split in ("train", "test")}
REQUIRED = ("patient_id", "pathology", "cropped image file path", "ROI mask file path")
LABELS = {"MALIGNANT": 1, "BENIGN": 0, "BENIGN_WITHOUT_CALLBACK": 0}
DICOM_INFO = "dicom_info.csv"
ABNORMALITIES = ("mass", "calc", "both")


def _csv_dir(root: Path) -> Path:
    for folder in (root / "csv", root):
        if any((folder / name).is_file() for name in TABLES.values()):
            return folder
    raise DataError(f"cbis-ddsm: no case-description CSV ({', '.join(sorted(set(TABLES.values())))}) "
                    f"in {root} or {root / 'csv'}")


def _tables(root: Path, abnormality: str) -> list[tuple[Path, str]]:
    if abnormality not in ABNORMALITIES:
        raise DataError(f"cbis-ddsm: abnormality must be one of {', '.join(ABNORMALITIES)}, got {abnormality!r}")
    folder = _csv_dir(root)
    kinds = ("mass", "calc") if abnormality == "both" else (abnormality,)
    found = [(folder / TABLES[k, s], s) for k in kinds for s in ("train", "test") if (folder / TABLES[k, s]).is_file()]
    if not found:
        raise DataError(f"cbis-ddsm: no {abnormality} case-description CSV in {folder}")
    return found


def read_table(path: Path) -> list[dict]:
    """A case-description table's rows (stripped: some path cells end with a newline)."""
    return read_rows(path, REQUIRED)


def patient_key(patient_id: str) -> str:
    """The patient a CBIS-DDSM id names. The ids are P_ and five digits, one spelling per
    woman: 'p_00001' and 'P_00001 ' are one woman (tables edited by hand, or by a
    spreadsheet, change the case), so ids are compared stripped and in upper case."""
    return patient_id.strip().upper()


def merged_ids_note(ids) -> list[str]:
    """The note saying how many patients were written in more than one way (and merged)."""
    spellings: dict[str, set] = {}
    for raw in ids:
        spellings.setdefault(patient_key(raw), set()).add(raw)
    merged = [sorted(v) for v in spellings.values() if len(v) > 1]
    if not merged:
        return []
    return [f"{len(merged)} patient id(s) written in more than one letter case or spacing, each merged into one "
            f"patient (first: {' and '.join(map(repr, merged[0]))})"]


def looks_like_mask(image: np.ndarray) -> bool:
    """A ROI mask is binary (0 and max; JPEG adds a little ringing), a crop is tissue."""
    lo, hi = float(image.min()), float(image.max())
    if hi <= lo:
        return True
    scaled = (image - lo) / (hi - lo)
    return float(((scaled > 0.1) & (scaled < 0.9)).mean()) < 0.02


class _Resolver:
    """CSV path -> candidate image files, for the DICOM or the JPEG layout."""

    def __init__(self, root: Path):
        self.root = root
        info = next((p for p in (root / "csv" / DICOM_INFO, root / DICOM_INFO) if p.is_file()), None)
        self.jpeg_series = self._read_dicom_info(info) if info else None
        self._uid_index: dict[str, dict[str, list[Path]]] = {}

    def _read_dicom_info(self, path: Path) -> dict[str, list[str]]:
        series: dict[str, list[str]] = {}
        for row in read_rows(path, ("image_path", "SeriesInstanceUID")):
            series.setdefault(row["SeriesInstanceUID"], []).append(row["image_path"])
        return series

    @property
    def layout(self) -> str:
        return "jpeg" if self.jpeg_series is not None else "dicom"

    def candidates(self, csv_path: str) -> list[Path]:
        parts = csv_path.replace("\\", "/").strip().split("/")
        if self.jpeg_series is not None:
            uid = parts[2] if len(parts) > 2 else ""
            return [p for p in (self._jpeg_file(ip, uid) for ip in self.jpeg_series.get(uid, [])) if p]
        for base in (self.root, self.root / "CBIS-DDSM"):
            if (base / csv_path).is_file():
                return [base / csv_path]
        if len(parts) > 2:  # renamed download folders: find the series by its UID
            return self._series_by_uid(parts[0]).get(parts[2], [])
        return []

    def _jpeg_file(self, image_path: str, uid: str) -> Path | None:
        parts = image_path.split("/")
        for p in (self.root / image_path, self.root / Path(*parts[1:]) if len(parts) > 1 else None,
                  self.root / "jpeg" / uid / parts[-1]):
            if p is not None and p.is_file():
                return p
        return None

    def _series_by_uid(self, case: str) -> dict[str, list[Path]]:
        if case not in self._uid_index:
            index: dict[str, list[Path]] = {}
            for base in (self.root, self.root / "CBIS-DDSM"):
                for dcm in sorted((base / case).rglob("*.dcm")) if (base / case).is_dir() else []:
                    uid = _series_uid(dcm)
                    if uid:
                        index.setdefault(uid, []).append(dcm)
            self._uid_index[case] = index
        return self._uid_index[case]


def _series_uid(path: Path) -> str | None:
    try:
        import pydicom
    except ImportError as e:
        raise DataError("cbis-ddsm: reading DICOM needs pydicom: pip install 'tinycnn[app]'") from e
    try:
        return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)
    except Exception:
        return None


def _crop_from_mask(full: np.ndarray, mask: np.ndarray, margin: float = 0.2) -> np.ndarray:
    if full.shape != mask.shape:
        raise UnreadableImage(f"mask {mask.shape} and full mammogram {full.shape} differ in size")
    rows, cols = np.nonzero(mask > (mask.min() + mask.max()) / 2)
    if len(rows) == 0:
        raise UnreadableImage("empty ROI mask")
    pad_r, pad_c = int(margin * (np.ptp(rows) + 1)), int(margin * (np.ptp(cols) + 1))
    r0, r1 = max(rows.min() - pad_r, 0), min(rows.max() + pad_r + 1, full.shape[0])
    c0, c1 = max(cols.min() - pad_c, 0), min(cols.max() + pad_c + 1, full.shape[1])
    return full[r0:r1, c0:c1]


def _roi(resolver: _Resolver, row: dict) -> np.ndarray:
    """The ROI crop of one CSV row, told from the mask by content."""
    files = []
    for column in ("cropped image file path", "ROI mask file path"):
        for p in resolver.candidates(row[column]) if row[column] else []:
            if p not in files:
                files.append(p)
    if not files:
        raise UnreadableImage(f"no image file found for {row['cropped image file path']!r}")
    files.sort(key=lambda p: p.stat().st_size)  # the crop is usually the small one: read it first
    mask = None
    for p in files:
        image = read_image(p)
        if not looks_like_mask(image):
            return image
        mask = image
    full_paths = resolver.candidates(row.get("image file path", "")) if row.get("image file path") else []
    if mask is not None and full_paths:
        return _crop_from_mask(read_image(full_paths[0]), mask)
    raise UnreadableImage(f"only a mask, no crop, for {row['cropped image file path']!r}")


def count(data_dir, abnormality: str = "both") -> int:
    """How many ROIs a read can give at most: the tables' rows (for the memory estimate
    made before reading)."""
    return sum(len(read_table(path)) for path, _ in _tables(Path(data_dir), abnormality))


def fingerprint(data_dir, abnormality: str = "both") -> list:
    root = Path(data_dir)
    tables = [p for p, _ in _tables(root, abnormality)]
    info = [p for p in (root / "csv" / DICOM_INFO, root / DICOM_INFO) if p.is_file()]
    images = [Path(d) / f for d, _, fs in os.walk(root) for f in fs
              if f.lower().endswith((".dcm", ".jpg", ".jpeg", ".png"))]
    return cache.file_fingerprint(tables + info + images, root)


def read(data_dir, image_size: int, strict: bool = False, abnormality: str = "both", progress: bool = False):
    from .roiset import RoiSet

    root = Path(data_dir)
    resolver = _Resolver(root)
    rows = [(row, split, path.name, line) for path, split in _tables(root, abnormality)
            for line, row in read_numbered_rows(path, REQUIRED)]
    train_patients = {patient_key(row["patient_id"]) for row, split, _, _ in rows if split == "train"}
    images, labels, patients, ids, sides, skipped = [], [], [], [], [], []
    dropped, unknown, no_patient, repeated = 0, {}, [], []
    crops: dict[str, tuple] = {}  # cropped image path -> (table, line, label) of its first row
    for row, split, table, line in tracked(rows, "reading CBIS-DDSM ROIs", progress):
        pathology = row["pathology"].upper()
        if pathology not in LABELS:
            unknown[row["pathology"]] = unknown.get(row["pathology"], 0) + 1
            continue
        patient = patient_key(row["patient_id"])
        if not patient:
            no_patient.append(f"{table} line {line}")
            continue
        crop = row["cropped image file path"].replace("\\", "/")
        if crop and crop in crops:
            first = crops[crop]
            if first[2] != LABELS[pathology]:
                raise DataError(f"cbis-ddsm: {first[0]} line {first[1]} and {table} line {line} list the crop {crop!r} "
                                "as benign and as malignant: one image cannot carry both labels; correct one row")
            repeated.append(f"{table} line {line} repeats {first[0]} line {first[1]}")
            continue
        if crop:
            crops[crop] = (table, line, LABELS[pathology])
        if split == "test" and patient in train_patients:
            dropped += 1
            continue
        name = row["cropped image file path"].split("/")[0] + f"#{row.get('abnormality id', '?')}"
        try:
            images.append(preprocess(_roi(resolver, row), image_size))
        except UnreadableImage as e:
            if strict:
                raise UnreadableImage(f"cbis-ddsm: {table} {name}: {e}") from e
            skipped.append(f"{table} {name}: {e}")
            continue
        labels.append(LABELS[pathology])
        patients.append(patient)
        ids.append(name)
        sides.append(0 if split == "train" else 1)
    notes = [f"{resolver.layout} layout; official train/test split kept",
             f"{dropped} test row(s) dropped: their patient has training rows in the other table"]
    notes += merged_ids_note(row["patient_id"] for row, _, _, _ in rows)
    if repeated:
        notes.append(f"{len(repeated)} row(s) repeat the crop of an earlier row with the same pathology, used once "
                     f"(first: {repeated[0]})")
    if no_patient:
        notes.append(f"{len(no_patient)} row(s) without a patient_id ignored: they cannot be kept to one side of "
                     f"the split (first: {no_patient[0]})")
    if unknown:
        common = sorted(unknown.items(), key=lambda kv: -kv[1])
        values = ", ".join(f"{v!r} x{n}" for v, n in common[:5]) + (
            f" and {len(common) - 5} other value(s)" if len(common) > 5 else "")
        notes.append(f"{sum(unknown.values())} row(s) with an unknown pathology ignored "
                     f"(expected {', '.join(LABELS)}; found {values})")
    if not images:
        why = f"{len(skipped)} skipped; first: {skipped[0]}" if skipped else "no usable rows"
        raise DataError(f"cbis-ddsm: no ROI could be read under {root} ({why})"
                        + (f"; {notes[-1]}" if unknown else ""))
    return RoiSet("cbis-ddsm", np.stack(images), np.array(labels, dtype=np.int64), np.array(patients),
                  np.array(ids), side=np.array(sides, dtype=np.int64), skipped=skipped, notes=notes)


# ------------------------------------------------------------------ whole films
@dataclass
class WholeFilm:
    """One full mammogram with the bounding boxes of its listed abnormalities (for
    detection). ref: patient, breast and view (P_00001_LEFT_CC), the mass and calc
    tables' copies of one film merged."""

    ref: str
    patient: str
    image: np.ndarray  # (H, W) float32, as read
    lesions: list  # (top, left, bottom, right, kind, severity): a mask's bounding box, inclusive
    complete: bool  # every abnormality the tables list for this film has its box
    notes: list


def _film_ref(image_path: str) -> str:
    """'Mass-Training_P_00001_LEFT_CC/...' -> 'P_00001_LEFT_CC' (the tables name one film
    by kind and split first; both kinds' copies are the same film)."""
    case = image_path.replace("\\", "/").strip().split("/")[0]
    return case.split("_", 1)[1] if "_" in case else case


def _mask_of(resolver: _Resolver, row: dict, shape: tuple) -> np.ndarray | None:
    """The row's ROI mask at the full film's shape, told from the crop by content."""
    seen = []
    for column in ("ROI mask file path", "cropped image file path"):
        for p in resolver.candidates(row[column]) if row[column] else []:
            if p in seen:
                continue
            seen.append(p)
            image = read_image(p)
            if image.shape == shape and looks_like_mask(image):
                return image > (image.min() + image.max()) / 2
    return None


def iter_films(data_dir, abnormality: str = "both", strict: bool = False, progress: bool = False):
    """Yield (WholeFilm or None, skipped message or None) for every full mammogram the
    tables list whose image is present, one at a time (a DDSM film is some 60 MB as
    float32). A lesion whose mask is missing, empty or not the film's size is left out
    and the film marked incomplete; a film that cannot be read is skipped (strict:
    raised)."""
    root = Path(data_dir)
    resolver = _Resolver(root)
    films: dict[str, list] = {}
    for path, _ in _tables(root, abnormality):
        kind = "MASS" if path.name.startswith("mass") else "CALC"
        for row in read_table(path):
            if row["pathology"].upper() in LABELS and row.get("image file path"):
                films.setdefault(_film_ref(row["image file path"]), []).append((row, kind))
    for ref in tracked(sorted(films), "reading CBIS-DDSM films", progress):
        rows = films[ref]
        paths = [p for row, _ in rows for p in resolver.candidates(row["image file path"])]
        if not paths:
            yield None, f"{ref}: full mammogram not found"
            continue
        try:
            image = read_image(paths[0])
        except UnreadableImage as e:
            if strict:
                raise UnreadableImage(f"cbis-ddsm: {ref}: {e}") from e
            yield None, f"{ref}: {e}"
            continue
        lesions, notes = [], []
        for row, kind in rows:
            try:
                mask = _mask_of(resolver, row, image.shape)
            except UnreadableImage as e:
                mask, why = None, str(e)
            else:
                why = "no ROI mask of the film's size"
            if mask is None or not mask.any():
                notes.append(f"{ref} {kind} #{row.get('abnormality id', '?')}: {why if mask is None else 'empty mask'}")
                continue
            r, c = np.nonzero(mask)
            sev = "M" if LABELS[row["pathology"].upper()] == 1 else "B"
            lesions.append((int(r.min()), int(c.min()), int(r.max()), int(c.max()), kind, sev))
        if not lesions:
            yield None, f"{ref}: no usable ROI mask ({notes[0] if notes else 'none listed'})"
            continue
        yield WholeFilm(ref, patient_key(rows[0][0]["patient_id"]), image, lesions,
                        complete=not notes and abnormality == "both", notes=notes), None
