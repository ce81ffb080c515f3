"""The mini-MIAS database in its own layout: Info.txt plus mdbNNN.pgm films.

Info.txt rows: `mdb001 G CIRC B 535 425 197` (reference, background tissue, class,
severity, centre x, centre y, radius). One ROI per abnormality: a square crop around
the centre, 2 * margin * radius on a side (at least MIN_SIDE pixels), shifted to stay
on the film. A centre outside the film (or a radius under 1) is a typo in the table:
that ROI is skipped and named, never cut from a corner. The y axis starts at the BOTTOM of the film, so the row is H - y.
Normal films and rows without a centre (spread calcifications, "*NOTE 3*") give no ROI.
Films mdb(2k-1) and mdb(2k) are the left and right breast of one woman: one patient.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..progress import tracked
from . import cache
from .preprocess import DataError, UnreadableImage, preprocess, read_image

VERSION = 3  # 2: centres outside the film and radii under 1 are skipped; 3: crop sides recorded
INFO_FILE = "Info.txt"
MIN_SIDE = 32
DEFAULT_MARGIN = 1.5
_ROW = re.compile(r"^(mdb\d{3})\s+(\S+)\s+(\S+)(.*)$")


@dataclass
class Abnormality:
    ref: str
    tissue: str
    kind: str
    severity: str | None
    x: int | None
    y: int | None
    radius: int | None

    @property
    def croppable(self) -> bool:
        return self.severity in ("B", "M") and None not in (self.x, self.y, self.radius)


def find_info(data_dir) -> Path:
    root = Path(data_dir)
    for candidate in [root / INFO_FILE, *sorted(root.glob(f"*/{INFO_FILE}"))]:
        if candidate.is_file():
            return candidate
    raise DataError(f"mias: no {INFO_FILE} in {root} (expected the MIAS layout: Info.txt and mdbNNN.pgm)")


def parse_info(path) -> list[Abnormality]:
    """Every data row of Info.txt (normal films included); the prose around it is ignored."""
    rows = []
    for line in Path(path).read_text(encoding="latin-1").splitlines():
        m = _ROW.match(line.strip())
        if not m:
            continue
        ref, tissue, kind, rest = m.groups()
        rest = rest.split()
        severity = rest[0] if rest and rest[0] in ("B", "M") else None
        nums = [int(t) for t in rest[1:4] if t.lstrip("-").isdigit()] if severity else []
        x, y, r = nums if len(nums) == 3 else (None, None, None)
        rows.append(Abnormality(ref, tissue, kind, severity, x, y, r))
    if not rows:
        raise DataError(f"mias: {path} holds no data rows like 'mdb001 G CIRC B 535 425 197'")
    return rows


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


def _film_path(root: Path, info_dir: Path, ref: str) -> Path | None:
    for folder in (info_dir, root):
        for ext in (".pgm", ".PGM"):
            if (folder / f"{ref}{ext}").is_file():
                return folder / f"{ref}{ext}"
    return None


def _read_film(root: Path, info: Path, ref: str) -> np.ndarray:
    path = _film_path(root, info.parent, ref)
    if path is None:
        raise UnreadableImage(f"film {ref}.pgm not found next to {info}")
    return read_image(path)


def count(data_dir, margin: float = DEFAULT_MARGIN) -> int:
    """How many ROIs a read can give at most (for the memory estimate made before it)."""
    return sum(a.croppable for a in parse_info(find_info(data_dir)))


def fingerprint(data_dir, margin: float = DEFAULT_MARGIN) -> list:
    info = find_info(data_dir)
    refs = {a.ref for a in parse_info(info) if a.croppable}
    films = [p for p in (_film_path(Path(data_dir), info.parent, r) for r in sorted(refs)) if p]
    return cache.file_fingerprint([info, *films], data_dir)


def read(data_dir, image_size: int, strict: bool = False, margin: float = DEFAULT_MARGIN, progress: bool = False):
    from .roiset import RoiSet

    root = Path(data_dir)
    info = find_info(root)
    rows = parse_info(info)
    abnormal = [a for a in rows if a.severity in ("B", "M")]
    usable = [a for a in abnormal if a.croppable]
    notes = [f"{len(abnormal) - len(usable)} abnormal row(s) without a centre or radius cannot be cropped"]
    images, labels, patients, ids, skipped, sides = [], [], [], [], [], []
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
        raise DataError(f"mias: no croppable abnormality with a readable film in {root}")
    return RoiSet("mias", np.stack(images), np.array(labels, dtype=np.int64), np.array(patients),
                  np.array(ids), skipped=skipped, notes=notes, source_sides=np.array(sides, dtype=np.int64))



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
    ([WholeFilm], skipped films). An abnormal row of the film without a usable circle
    (no numbers, a centre off the film, a radius under 1) is named in the film's
    `unmarked`, so its caller knows the film holds a lesion nobody located; a film that
    cannot be read is skipped and named. strict: a circle off the film or an unreadable
    film stops the read (rows without numbers are the database's own, never an error)."""
    root = Path(data_dir)
    info = find_info(root)
    by_ref: dict[str, list[Abnormality]] = {}
    for a in parse_info(info):
        if a.severity in ("B", "M"):
            by_ref.setdefault(a.ref, []).append(a)
    films, skipped = [], []
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
        marks, unmarked = [], []
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
