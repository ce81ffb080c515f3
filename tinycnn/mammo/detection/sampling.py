"""Training windows for the detector: lesions (positives) and normal breast tissue
(negatives), balanced per batch, deterministic from a seed.

- Positives: the window centred on a point jittered inside a mark (uniform in a disc
  of `jitter` times the mark's radius; always a working pixel whose centre lies inside
  the mark, or the pixel nearest the mark's centre for marks smaller than a pixel).
  Every lesion is drawn equally often, whatever its size.
- Negatives: windows centred on the breast mask (never air) whose whole square stays
  clear of every mark (the square does not touch any circle, with a pixel to spare),
  from films whose every abnormality is marked (an unmarked lesion could otherwise be
  taught as normal). Drawn uniformly over films, then over the allowed centres; a
  share of them can come from a pool of hard negatives (the allowed centres a model
  scored highest, hard_negatives()).
- Augmentation: each window in one of the 8 symmetries of the square (mirrors and
  quarter turns), chosen at random; optionally rescaled (a square of side x f cut
  around the centre and resized to side, log f uniform in [-zoom, zoom]: lesions and
  tissue a little larger or smaller) and its breast pixels' contrast and level moved
  (a x + b, a in [1 - contrast, 1 + contrast], b in [-contrast, contrast]; AIR stays
  AIR, as the scan sees it).

Windows are cut from the film padded with AIR (as fcn.pad_film pads it), so windows
near the film's edge look as they do when the film is scanned. Shapes: a batch is
(n, 1, side, side) float32 with labels (n,) int64, 1 = lesion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.preprocess import DataError
from .films import AIR, Film


def clear_of_marks(film: Film, side: int, spare: float = 1.0) -> np.ndarray:
    """(h, w) bool: working pixels whose side x side window (in full-resolution pixels,
    side * scale, centred there) keeps at least `spare` pixels from every mark's circle."""
    h, w = film.mask.shape
    s = film.scale
    # Window centred on working pixel (r, c) covers working rows r - side/2 .. r + side/2 - 1,
    # i.e. full-resolution [(r - side/2) * s, (r + side/2) * s).
    top = (np.arange(h) - side // 2) * s
    left = (np.arange(w) - side // 2) * s
    span = side * s
    ok = np.ones((h, w), dtype=bool)
    for m in film.marks:
        # Distance from the circle's centre to the nearest point of each window, per axis.
        dr = np.maximum(0.0, np.maximum(top - m.row, m.row - (top + span)))
        dc = np.maximum(0.0, np.maximum(left - m.col, m.col - (left + span)))
        ok &= (dr[:, None] ** 2 + dc[None, :] ** 2) > (m.radius + spare) ** 2
    return ok


def negative_centres(film: Film, side: int) -> np.ndarray:
    """(M, 2) working-pixel centres (row, col) allowed as negatives: on the breast, window
    clear of every mark; none for a film with an unmarked abnormality."""
    if not film.complete:
        return np.zeros((0, 2), dtype=np.int64)
    return np.argwhere(film.mask & clear_of_marks(film, side)).astype(np.int64)


def positive_centre(film: Film, mark, rng: np.random.Generator, jitter: float) -> tuple[int, int]:
    """A working pixel inside `mark` (its full-resolution centre within the circle), drawn
    uniformly in a disc of jitter * radius around the mark's centre (a few tries; then the
    pixel nearest the centre)."""
    h, w = film.mask.shape
    for _ in range(8):
        rad = jitter * mark.radius * np.sqrt(rng.random())
        ang = 2 * np.pi * rng.random()
        r, c = film.to_work(mark.row + rad * np.sin(ang), mark.col + rad * np.cos(ang))
        r, c = int(np.clip(round(float(r)), 0, h - 1)), int(np.clip(round(float(c)), 0, w - 1))
        if mark.contains(*film.to_full(r, c)):
            return r, c
    r, c = film.to_work(mark.row, mark.col)
    return int(np.clip(round(float(r)), 0, h - 1)), int(np.clip(round(float(c)), 0, w - 1))


def dihedral(x: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 symmetries of a square image (..., s, s): k in 0..7 = k % 4 quarter
    turns, mirrored first when k >= 4."""
    if k >= 4:
        x = x[..., ::-1]
    return np.rot90(x, k % 4, axes=(-2, -1))


@dataclass
class WindowSampler:
    """Draws balanced batches from training films. hard: per film, (M, 2) centres of hard
    negatives (set_hard), of which a share hard_share of the negatives is drawn."""

    films: list
    side: int
    jitter: float = 0.5
    augment: bool = True
    hard_share: float = 0.0
    zoom: float = 0.0
    contrast: float = 0.0

    def __post_init__(self):
        # Padded by a whole side (not half) so a window rescaled up to twice the side still fits.
        self.margin = self.side // 2
        self.padded = [np.pad(f.image, self.side, constant_values=AIR).astype(np.float32) for f in self.films]
        self.negatives = [negative_centres(f, self.side) for f in self.films]
        self.neg_films = np.array([i for i, n in enumerate(self.negatives) if len(n)], dtype=np.int64)
        self.lesions = [(i, m) for i, f in enumerate(self.films) for m in f.marks]
        if not self.lesions:
            raise DataError("no marked lesion among the training films")
        if not len(self.neg_films):
            raise DataError(f"no breast tissue clear of every mark among the {len(self.films)} training film(s): "
                            f"a negative is a {self.side} x {self.side} window of working pixels clear of every "
                            "mark (are the films that small, or every film incomplete?)")
        self.hard: list[np.ndarray] = [np.zeros((0, 2), np.int64) for _ in self.films]

    def set_hard(self, hard: list) -> None:
        """Per film (M_i, 2) centres of hard negatives (each must be an allowed negative)."""
        self.hard = [np.asarray(h, dtype=np.int64).reshape(-1, 2) for h in hard]

    def window(self, film_index: int, row: int, col: int, side: int | None = None) -> np.ndarray:
        """(side, side) window centred on working pixel (row, col) of film film_index
        (its pixels row - side/2 .. row + side/2 - 1; side defaults to the sampler's)."""
        side = self.side if side is None else side
        top, left = row + self.side - side // 2, col + self.side - side // 2
        return self.padded[film_index][top:top + side, left:left + side]

    def _augmented(self, i: int, r: int, c: int, k: int, rng: np.random.Generator) -> np.ndarray:
        if self.zoom > 0:
            from scipy import ndimage

            cut = int(np.clip(round(self.side * float(np.exp(rng.uniform(-self.zoom, self.zoom)))), 2,
                              2 * self.side))
            x = self.window(i, r, c, cut)
            if cut != self.side:
                x = ndimage.zoom(x, self.side / cut, order=1, mode="nearest", grid_mode=True)[:self.side, :self.side]
        else:
            x = self.window(i, r, c)
        if self.contrast > 0:
            a = rng.uniform(1 - self.contrast, 1 + self.contrast)
            b = rng.uniform(-self.contrast, self.contrast)
            x = np.where(x == AIR, x, a * x + b)
        return dihedral(x, k)

    def draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x (n, 1, side, side) float32, y (n,) int64, where (n, 3) film, row, col):
        n // 2 lesions and n - n // 2 normal windows, shuffled."""
        n_pos = n // 2
        where = []
        for j in rng.integers(0, len(self.lesions), n_pos):
            i, mark = self.lesions[j]
            where.append((i, *positive_centre(self.films[i], mark, rng, self.jitter)))
        hard_films = np.array([i for i, h in enumerate(self.hard) if len(h)], dtype=np.int64)
        for _ in range(n - n_pos):
            if len(hard_films) and rng.random() < self.hard_share:
                i = int(hard_films[rng.integers(len(hard_films))])
                r, c = self.hard[i][rng.integers(len(self.hard[i]))]
            else:
                i = int(self.neg_films[rng.integers(len(self.neg_films))])
                r, c = self.negatives[i][rng.integers(len(self.negatives[i]))]
            where.append((i, int(r), int(c)))
        y = np.array([1] * n_pos + [0] * (n - n_pos), dtype=np.int64)
        order = rng.permutation(n)
        where = np.array(where, dtype=np.int64)[order]
        y = y[order]
        x = np.empty((n, 1, self.side, self.side), dtype=np.float32)
        ks = rng.integers(0, 8, n) if self.augment else np.zeros(n, dtype=np.int64)
        for b, ((i, r, c), k) in enumerate(zip(where, ks)):
            x[b, 0] = self._augmented(int(i), int(r), int(c), int(k), rng) if self.augment else self.window(i, r, c)
        return x, y, where
