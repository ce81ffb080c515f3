"""Whole films and their marks, as the detector sees them.

A Film holds one mammogram at the detector's working resolution (the full film
shrunk by an integer `scale`, block means of scale x scale pixels: a quarter of
MIAS's 1024 x 1024 films by default, 800 micron pixels), its breast mask at that
resolution, and its marks (lesions: a centre and a radius, in full-resolution pixels
counted from the film's top-left corner, as the evaluation speaks of them).

The intensities are normalised once per film, not per window: zero mean and unit
standard deviation over the breast, and every pixel outside the breast set to the
constant AIR. So a window's input depends only on where it lies on the film, and a
network can be run over the whole film at once (fcn.py) with the same numbers as
window by window. Setting the background to one value also takes labels and film
edges away as cues.

Readers: MIAS (Info.txt circles; its y axis starts at the bottom, so the row is
H - y) and CBIS-DDSM (full mammograms with ROI masks, where the images are present:
a mask becomes the circle around its bounding box).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .masks import breast_mask

AIR = -4.0  # normalised value outside the breast (MIAS air lands at -3 to -6 after the breast's scaling)
DEFAULT_SCALE = 4  # 1024 -> 256 on MIAS


@dataclass(frozen=True)
class Mark:
    """A marked lesion: centre (row from the top, column) and radius, full-resolution
    film pixels; its class (MIAS: CALC, CIRC, SPIC, MISC, ARCH, ASYM) and severity."""

    row: float
    col: float
    radius: float
    kind: str = "?"
    severity: str | None = None

    def contains(self, row, col):
        """Whether full-resolution point(s) (row, col) lie in the circle (arrays broadcast)."""
        return (np.asarray(row) - self.row) ** 2 + (np.asarray(col) - self.col) ** 2 <= self.radius ** 2


@dataclass
class Film:
    """One film ready for the detector.

    image: (h, w) float32 at working resolution, normalised over the breast, AIR outside.
    mask: (h, w) bool breast mask. marks: the lesions. scale: full-resolution pixels per
    working pixel. full_shape: (H, W) of the film as read. complete: every abnormality of
    the film is marked (else the film gives no negatives: an unmarked lesion might be
    sampled as normal tissue)."""

    ref: str
    patient: str
    image: np.ndarray
    mask: np.ndarray
    marks: list
    scale: int
    full_shape: tuple
    complete: bool = True
    source: str = ""
    notes: list = field(default_factory=list)

    def to_full(self, rows, cols):
        """Working-pixel (row, col) -> full-resolution coordinates of that pixel's centre."""
        off = (self.scale - 1) / 2
        return np.asarray(rows) * self.scale + off, np.asarray(cols) * self.scale + off

    def to_work(self, rows, cols):
        """Full-resolution (row, col) -> working coordinates (float; round for a pixel)."""
        off = (self.scale - 1) / 2
        return (np.asarray(rows) - off) / self.scale, (np.asarray(cols) - off) / self.scale

    def in_any_mark(self, rows, cols) -> np.ndarray:
        """Full-resolution point(s) inside at least one mark."""
        hit = np.zeros(np.broadcast(np.asarray(rows), np.asarray(cols)).shape, dtype=bool)
        for m in self.marks:
            hit |= m.contains(rows, cols)
        return hit


def shrink(image: np.ndarray, scale: int) -> np.ndarray:
    """(H, W) -> (H // scale, W // scale) block means (trailing rows and columns that do
    not fill a block are dropped: under `scale` pixels of the film's edge)."""
    image = np.asarray(image, dtype=np.float32)
    if scale == 1:
        return image.copy()
    h, w = image.shape[0] // scale, image.shape[1] // scale
    if h < 1 or w < 1:
        raise ValueError(f"a {image.shape[0]}x{image.shape[1]} film is smaller than one {scale}x{scale} block")
    return image[:h * scale, :w * scale].reshape(h, scale, w, scale).mean(axis=(1, 3), dtype=np.float64).astype(
        np.float32)


def normalise_film(small: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(h, w) grey levels and breast mask -> float32: zero mean and unit std over the
    breast, AIR outside (a breast without contrast keeps unit scale)."""
    inside = small[mask].astype(np.float64)
    mean, std = float(inside.mean()), float(inside.std())
    out = (small - mean) / (std if std > 1e-6 else 1.0)
    out = np.where(mask, out, AIR).astype(np.float32)
    if not np.isfinite(out).all():
        raise ValueError("film has non-finite pixel values")
    return out


def make_film(ref: str, patient: str, raw: np.ndarray, marks, scale: int = DEFAULT_SCALE, complete: bool = True,
              source: str = "", notes=()) -> Film:
    """A raw (H, W) film and its marks (full resolution) -> Film at working resolution."""
    raw = np.asarray(raw, dtype=np.float32)
    small = shrink(raw, scale)
    mask = breast_mask(small)
    return Film(ref, patient, normalise_film(small, mask), mask, list(marks), int(scale), tuple(raw.shape),
                complete, source, list(notes))


def mias_films(data_dir, scale: int = DEFAULT_SCALE, strict: bool = False, progress: bool = False):
    """(films, skipped): every MIAS film with a croppable abnormality, its circles as
    marks (row = H - y). A film with an abnormality that has no usable circle (no
    centre, or one off the film) is not `complete`."""
    from ..data import mias

    whole, skipped = mias.read_films(data_dir, strict=strict, progress=progress)
    films = []
    for f in whole:
        height = f.image.shape[0]
        marks = [Mark(float(height - a.y), float(a.x), float(a.radius), a.kind, a.severity) for a in f.marks]
        films.append(make_film(f.ref, f.patient, f.image, marks, scale, not f.unmarked, "mias", f.unmarked))
    return films, skipped


def box_to_mark(top: int, left: int, bottom: int, right: int, kind: str = "?", severity: str | None = None) -> Mark:
    """A lesion's bounding box (inclusive pixel rows and columns) -> the circle through
    its corners (centre of the box, radius half its diagonal): the whole box lies inside."""
    radius = 0.5 * math.hypot(bottom - top + 1, right - left + 1)
    return Mark((top + bottom) / 2, (left + right) / 2, float(radius), kind, severity)


def cbis_films(data_dir, scale: int = 16, abnormality: str = "both", strict: bool = False, progress: bool = False):
    """(films, skipped): CBIS-DDSM full mammograms present under data_dir, every listed
    abnormality of a film with a usable ROI mask as a mark (the circle around the
    mask's bounding box). DDSM scans have 50 micron pixels: scale 16 gives 800 micron
    working pixels, the same as MIAS at a quarter. Films are shrunk as they are read,
    one at a time."""
    from ..data import cbis_ddsm

    films, skipped = [], []
    for f, why in cbis_ddsm.iter_films(data_dir, abnormality=abnormality, strict=strict, progress=progress):
        if f is None:
            skipped.append(why)
            continue
        marks = [box_to_mark(*lesion) for lesion in f.lesions]
        films.append(make_film(f.ref, f.patient, f.image, marks, scale, f.complete, "cbis-ddsm", f.notes))
    return films, skipped
