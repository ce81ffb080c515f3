"""Sliding the ROI classifier over a whole film: a malignancy heat map and its top regions.

Windows are squares of `window` film pixels (by default the training ROIs' own crop
side in film pixels, which a MIAS checkpoint records; else the network's input size)
placed every `stride` pixels, the last row and column flush with the film's edge so
a stride that does not divide the film still covers it. Each window gets the
checkpoint's preprocessing, exactly as an ROI did in training (resize to the
network's input, per-window zero mean and unit std), and the windows go through the
backend in batches whose size is bounded by the memory available. A film smaller
than a window on either side is scanned with windows the size of its shorter side.

The heat of a pixel is the mean P(malignant) of the windows that cover it; where the
maximum and the top regions are sought, windows are ranked by their log-odds
(malignant minus benign logit) instead, because an over-confident network saturates
many windows at P = 1.000 and a maximum among ties would be arbitrary. One
fully convolutional pass over the film would not be exact here: every window is
normalised by its own mean and standard deviation, and the dense layers see one
window's flattened features, so windows are classified one by one.

Windows mostly outside the breast (black background, labels) are not scanned when a
breast mask is used: the film's Otsu threshold, the largest bright component, holes
filled.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass

import numpy as np

from . import memory, metrics
from .data.preprocess import preprocess
from .progress import bar as progress_bar

REGIONS_HEADER = ["rank", "x", "y", "side", "p_malignant", "log_odds"]


@dataclass
class ScanResult:
    heat: np.ndarray  # (H, W) mean P(malignant) of the windows covering each pixel; NaN where none was scanned
    tops: np.ndarray  # (M,) window rows (film pixels, from the top)
    lefts: np.ndarray  # (M,) window columns
    side: int  # window side in film pixels
    probs: np.ndarray  # (M,) P(malignant) of each scanned window
    skipped: int  # windows left out (outside the breast mask)
    log_odds: np.ndarray | None = None  # (M,) malignant minus benign logit of each window
    score: np.ndarray | None = None  # (H, W) mean log-odds of the windows covering each pixel (NaN: none)

    def __post_init__(self):
        if self.log_odds is None:  # built by hand (tests): the log-odds of the probabilities
            p = np.clip(self.probs, 1e-12, 1 - 1e-12)
            self.log_odds = np.log(p) - np.log1p(-p)


def positions(length: int, side: int, stride: int) -> np.ndarray:
    """Window starts along one axis: every stride pixels, and one flush with the far
    edge when the stride does not land there."""
    last = length - side
    starts = list(range(0, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    return np.array(starts, dtype=np.int64)


def window_grid(height: int, width: int, window: int, stride: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(tops, lefts, side) of every window of a film: side is the window, or the film's
    shorter side when the film is smaller than a window."""
    side = int(min(window, height, width))
    rows, cols = positions(height, side, stride), positions(width, side, stride)
    tops, lefts = np.meshgrid(rows, cols, indexing="ij")
    return tops.ravel(), lefts.ravel(), side


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The threshold that best splits values into two classes (Otsu 1979)."""
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(centres[int(np.argmax(between))])


def breast_mask(film: np.ndarray) -> np.ndarray:
    """(H, W) bool: the breast, told from the background by Otsu's threshold on the
    film, keeping the largest connected bright region (labels and markers are small)
    with its holes filled. The whole film when it has no contrast."""
    from scipy import ndimage

    film = np.asarray(film, dtype=np.float32)
    if float(film.max()) <= float(film.min()):
        return np.ones(film.shape, dtype=bool)
    smooth = ndimage.uniform_filter(film, size=max(3, min(film.shape) // 64))
    bright = smooth > otsu_threshold(smooth)
    labels, n = ndimage.label(bright)
    if n == 0:
        return np.ones(film.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return ndimage.binary_fill_holes(labels == int(np.argmax(sizes)))


def batch_for(shapes, wanted: int, available: int | None) -> int:
    """The largest batch <= wanted whose forward pass takes at most half the memory
    available (None: unknown, wanted). NotEnoughMemory when not even one window fits."""
    if available is None:
        return wanted
    per_window = memory.inference_bytes(shapes, 1) - 4 * shapes.num_parameters()
    room = available // 2 - 4 * shapes.num_parameters()
    batch = min(wanted, int(room // max(per_window, 1)))
    if batch < 1:
        memory.require(memory.inference_bytes(shapes, 1), available // 2, "scanning with this network",
                       "use a machine with more memory")
        batch = 1
    return batch


def scan(net, film: np.ndarray, image_size: int, window: int, stride: int, batch_size: int = 64,
         mask: np.ndarray | None = None, min_inside: float = 0.5, progress: bool = False,
         desc: str = "scanning") -> ScanResult:
    """Classify every window of `film` (2-D, raw intensities) and build the heat map.
    mask (H, W bool): windows with less than min_inside of their pixels in it are not
    scanned."""
    film = np.asarray(film, dtype=np.float32)
    h, w = film.shape
    tops, lefts, side = window_grid(h, w, window, stride)
    if mask is not None:
        integral = np.pad(np.cumsum(np.cumsum(mask, 0), 1), ((1, 0), (1, 0)))
        inside = (integral[tops + side, lefts + side] - integral[tops, lefts + side]
                  - integral[tops + side, lefts] + integral[tops, lefts]) / (side * side)
        keep = inside >= min_inside
        skipped = int((~keep).sum())
        tops, lefts = tops[keep], lefts[keep]
    else:
        skipped = 0
    be = net.backend
    probs, log_odds = np.zeros(len(tops)), np.zeros(len(tops))
    b = progress_bar(len(tops), desc, enabled=progress, unit="win")
    try:
        for start in range(0, len(tops), batch_size):
            idx = range(start, min(start + batch_size, len(tops)))
            x = np.stack([preprocess(film[tops[i]:tops[i] + side, lefts[i]:lefts[i] + side], image_size)
                          for i in idx])[:, None].astype(np.float32)
            logits = be.to_numpy(net.forward(be.asarray(x), train=False)).astype(np.float64)
            probs[start:start + len(idx)] = metrics.softmax_positive(logits)
            log_odds[start:start + len(idx)] = logits[:, 1] - logits[:, 0]
            if b is not None:
                b.update(len(idx))
    finally:
        if b is not None:
            b.close()
    return ScanResult(mean_map((h, w), tops, lefts, side, probs), tops, lefts, side, probs, skipped,
                      log_odds, mean_map((h, w), tops, lefts, side, log_odds))


def mean_map(shape, tops, lefts, side: int, values) -> np.ndarray:
    """(H, W): the mean of the values of the windows covering each pixel; NaN where none does."""
    total, count = np.zeros(shape), np.zeros(shape)
    for t, l, v in zip(tops, lefts, values):
        total[t:t + side, l:l + side] += v
        count[t:t + side, l:l + side] += 1
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def hottest_point(heat: np.ndarray) -> tuple[int, int]:
    """(row, column) of the heat map's maximum: of the pixels at the maximum (a plateau
    where windows overlap), the one nearest their centroid. Give it the log-odds map
    (ScanResult.score), which does not saturate."""
    if not np.isfinite(heat).any():
        raise ValueError("the heat map is empty: no window was scanned")
    top = np.nanmax(heat)
    rows, cols = np.nonzero(heat >= top)
    cy, cx = rows.mean(), cols.mean()
    k = int(np.argmin((rows - cy) ** 2 + (cols - cx) ** 2))
    return int(rows[k]), int(cols[k])


def top_regions(result: ScanResult, k: int = 10, max_overlap: float = 0.25) -> list[dict]:
    """The k most malignant windows, each overlapping an earlier pick by at most
    max_overlap of its area (so the list is not ten shifts of one spot). x, y: the
    window's centre in film pixels (y from the top)."""
    order = np.argsort(-result.log_odds, kind="stable")
    side, picked = result.side, []
    for i in order:
        t, l = result.tops[i], result.lefts[i]
        if all(max(0, side - abs(t - pt)) * max(0, side - abs(l - pl)) <= max_overlap * side * side
               for pt, pl in ((r["_top"], r["_left"]) for r in picked)):
            picked.append({"rank": len(picked) + 1, "x": int(l + side // 2), "y": int(t + side // 2),
                           "side": int(side), "p_malignant": float(result.probs[i]),
                           "log_odds": float(result.log_odds[i]), "_top": int(t), "_left": int(l)})
            if len(picked) == k:
                break
    return [{key: v for key, v in r.items() if not key.startswith("_")} for r in picked]


def write_regions(path, regions: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, REGIONS_HEADER)
        w.writeheader()
        for r in regions:
            w.writerow({**r, "p_malignant": f"{r['p_malignant']:.6f}", "log_odds": f"{r['log_odds']:.4f}"})


def heat_overlay(film: np.ndarray, heat: np.ndarray, max_side: int = 1024, alpha: float = 0.5) -> np.ndarray:
    """(h, w, 3) uint8: the film in grey with the heat map (0 to 1; NaN: not scanned)
    blended in, shrunk so its longer side is at most max_side."""
    from .saliency import _colour

    f = max(1, math.ceil(max(film.shape) / max_side))
    g = np.asarray(film, dtype=np.float64)[::f, ::f]
    hm = heat[::f, ::f]
    lo, hi = np.percentile(g, [1, 99.5])
    g = np.clip((g - lo) / (hi - lo if hi > lo else 1.0), 0, 1)[..., None].repeat(3, axis=-1)
    scanned = np.isfinite(hm)
    v = np.where(scanned, hm, 0.0)
    a = np.where(scanned, alpha * (0.3 + 0.7 * v), 0.0)[..., None]
    return np.round(255 * ((1 - a) * g + a * _colour(v))).astype(np.uint8)


def inside_circles(row: int, col: int, circles, height: int) -> bool:
    """Whether film pixel (row, col) lies in any MIAS circle (x, y from the bottom, r)."""
    return any((col - x) ** 2 + (row - (height - y)) ** 2 <= r * r for x, y, r in circles)


def circle_share(mask: np.ndarray, circles) -> float:
    """The chance that a uniformly random point of mask lies in one of the circles
    (x, y from the bottom, r): their area inside the mask over the mask's area."""
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w]
    hit = np.zeros((h, w), dtype=bool)
    for x, y, r in circles:
        hit |= (xx - x) ** 2 + (yy - (h - y)) ** 2 <= r * r
    return float((hit & mask).sum() / max(mask.sum(), 1))
