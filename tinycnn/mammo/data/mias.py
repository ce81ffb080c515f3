"""The mini-MIAS database in its own layout: Info.txt plus mdbNNN.pgm films.

Info.txt rows: `mdb001 G CIRC B 535 425 197` (reference, background tissue, class,
severity, centre x, centre y, radius), parsed and accounted for row by row in
mias_info.py (the one parser of the table, for ROIs and whole films alike). One ROI
per abnormality: a square crop around the centre, 2 * margin * radius on a side (at
least MIN_SIDE pixels), shifted to stay on the film. A centre outside the film (or a
radius under 1) is a typo in the table: that ROI is skipped and named, never cut from
a corner. The y axis starts at the BOTTOM of the film, so the row is H - y.
Normal films and rows without a centre (spread calcifications, "*NOTE 3*") give no ROI.
Films mdb(2k-1) and mdb(2k) are the left and right breast of one woman: one patient.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..progress import tracked
from . import cache
from .mias_info import INFO_FILE, Abnormality, InfoTable, find_info, parse_info, parse_table  # noqa: F401
from .preprocess import DataError, UnreadableImage, preprocess, read_image

# 2: centres outside the film and radii under 1 are skipped; 3: crop sides recorded; 4: rows in any
# letter case or after a byte-order mark, repeated circles used once, every row accounted for in the notes
VERSION = 4
MIN_SIDE = 32
DEFAULT_MARGIN = 1.5


def patient_of(ref: str) -> str:
    """mdb001 and mdb002 -> the same woman."""
    n = int(ref[3:])
    return f"mias-{(n + 1) // 2:03d}"


def crop_box(x: int, y: int, radius: int, height: int, width: int, margin: float = DEFAULT_MARGIN):
    """(top, left, side) of the square crop around the centre (x, y from the bottom-left).
    UnreadableImage for a centre off the film or a radius under 1 (the table is wrong
    there, and a crop shifted onto the film would show some other tissue)."""
    if not (0 <= x < width and 0 < y <= height):
        raise UnreadableImage(f"centre ({x}, {y}) is outside the {width}x{height} film")
    if radius < 1:
        raise UnreadableImage(f"radius {radius} is not a positive number of pixels")
    side = int(round(min(max(2 * margin * radius, MIN_SIDE), min(height, width))))
    row, col = height - y, x
    top = int(np.clip(row - side // 2, 0, height - side))
    left = int(np.clip(col - side // 2, 0, width - side))
    return top, left, side


def film_path(root: Path, info_dir: Path, ref: str) -> Path | None:
    """The film mdbNNN.pgm (any letter case) next to Info.txt, else in the data folder;
    None if neither holds it. UnreadableImage when one folder holds it under two names
    that differ only in letter case (which one is the film?)."""
    for folder in dict.fromkeys((info_dir, root)):
        try:
            found = sorted(e.path for e in os.scandir(folder) if e.name.lower() == f"{ref}.pgm" and e.is_file())
        except OSError:
            continue
        if len(found) > 1:
            raise UnreadableImage(f"{folder} holds {' and '.join(Path(p).name for p in found)}, which differ only "
                                  "in letter case: keep one")
        if found:
            return Path(found[0])
    return None


_film_path = film_path  # the name scan_film.py uses


def _read_film(root: Path, info: Path, ref: str) -> np.ndarray:
    path = film_path(root, info.parent, ref)
    if path is None:
        raise UnreadableImage(f"film {ref}.pgm not found next to {info}")
    return read_image(path)


def count(data_dir, margin: float = DEFAULT_MARGIN) -> int:
    """How many ROIs a read can give at most (for the memory estimate made before it)."""
    return sum(a.croppable for a in parse_info(find_info(data_dir)))


def fingerprint(data_dir, margin: float = DEFAULT_MARGIN) -> list:
    info = find_info(data_dir)
    refs = {a.ref for a in parse_info(info) if a.croppable}
    films = []
    for ref in sorted(refs):
        try:
            films.append(film_path(Path(data_dir), info.parent, ref))
        except UnreadableImage:
            continue  # the read names it
    return cache.file_fingerprint([info, *(p for p in films if p)], data_dir)


def _table(root: Path, strict: bool) -> tuple[Path, InfoTable]:
    """Info.txt and its rows; --strict stops at the first row that cannot be used."""
    info = find_info(root)
    table = parse_table(info)
    if strict and table.skipped:
        raise DataError(f"mias: {info.parent / table.skipped[0]} (--strict)")
    return info, table


def read(data_dir, image_size: int, strict: bool = False, margin: float = DEFAULT_MARGIN, progress: bool = False):
    from .roiset import RoiSet

    root = Path(data_dir)
    info, table = _table(root, strict)
    usable = [a for a in table.rows if a.croppable]
    images, labels, patients, ids, sides = [], [], [], [], []
    skipped = list(table.skipped)
    films: dict[str, np.ndarray | None] = {}  # None: unreadable, skipped once, not once per ROI
    for a in tracked(usable, "cropping MIAS ROIs", progress):
        roi = f"{a.ref}:{a.kind}:{a.x},{a.y},r{a.radius}"
        try:
            if a.ref not in films:
                films[a.ref] = None  # stays None if the read below fails
                films[a.ref] = _read_film(root, info, a.ref)
            film = films[a.ref]
            if film is None:
                continue
            top, left, side = crop_box(a.x, a.y, a.radius, *film.shape, margin=margin)
            image = preprocess(film[top:top + side, left:left + side], image_size)
        except UnreadableImage as e:
            if strict:
                raise UnreadableImage(f"mias: {roi}: {e}") from e
            skipped.append(f"{roi}: {e}")
            continue
        images.append(image)
        labels.append(1 if a.severity == "M" else 0)
        patients.append(patient_of(a.ref))
        ids.append(roi)
        sides.append(side)
    if not images:
        raise DataError(f"mias: no croppable abnormality with a readable film in {root}"
                        + (f" ({len(skipped)} skipped; first: {skipped[0]})" if skipped else ""))
    return RoiSet("mias", np.stack(images), np.array(labels, dtype=np.int64), np.array(patients),
                  np.array(ids), skipped=skipped, notes=[table.summary()],
                  source_sides=np.array(sides, dtype=np.int64))


@dataclass
class WholeFilm:
    """One abnormal film, whole, with its marked abnormalities (for detection)."""

    ref: str
    patient: str
    image: np.ndarray  # (H, W) float32 raw grey levels, as read
    marks: list  # the film's croppable abnormalities whose circle lies on the film
    unmarked: list  # its other abnormal rows (no centre or radius, or off the film), named


def read_films(data_dir, strict: bool = False, progress: bool = False) -> tuple[list[WholeFilm], list[str]]:
    """Every film with at least one croppable abnormality (a centre and a radius), whole:
    ([WholeFilm], skipped films and rows). An abnormal row of the film without a usable
    circle (no numbers, a centre off the film, a radius under 1, a row of it that could
    not be parsed) is named in the film's `unmarked`, so its caller knows the film holds
    a lesion nobody located; a film that cannot be read is skipped and named, and so are
    the table's unusable and repeated rows. strict: an unusable row, a circle off the
    film or an unreadable film stops the read (rows without numbers are the database's
    own, never an error)."""
    root = Path(data_dir)
    info, table = _table(root, strict)
    by_ref: dict[str, list[Abnormality]] = {}
    for a in table.rows:
        if a.severity in ("B", "M"):
            by_ref.setdefault(a.ref, []).append(a)
    films = []
    skipped = table.skipped + [f"{d}: used once" for d in table.duplicates]  # rows not used, named
    for ref in tracked(sorted(r for r, rows in by_ref.items() if any(a.croppable for a in rows)),
                       "reading MIAS films", progress):
        try:
            image = _read_film(root, info, ref)
            if image.ndim != 2 or min(image.shape) < 2:
                raise UnreadableImage(f"image of shape {image.shape} is not a film")
        except UnreadableImage as e:
            if strict:
                raise UnreadableImage(f"mias: {ref}: {e}") from e
            skipped.append(f"{ref}: {e}")
            continue
        marks, unmarked = [], list(table.unusable.get(ref, []))  # a row nobody could read: a lesion unmarked
        for a in by_ref[ref]:
            name = f"{ref}:{a.kind}:{a.x},{a.y},r{a.radius}"
            if not a.croppable:
                unmarked.append(f"{name}: no centre or radius")
                continue
            try:
                crop_box(a.x, a.y, a.radius, *image.shape)
            except UnreadableImage as e:
                if strict:
                    raise UnreadableImage(f"mias: {name}: {e}") from e
                unmarked.append(f"{name}: {e}")
                continue
            marks.append(a)
        if marks:
            films.append(WholeFilm(ref, patient_of(ref), image, marks, unmarked))
        else:
            skipped.append(f"{ref}: no abnormality with a usable circle ({'; '.join(unmarked)})")
    if not films:
        raise DataError(f"mias: no film with a croppable abnormality could be read in {root}")
    return films, skipped
