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

A window whose pixels cannot be normalised, or whose output is not finite, stops the
scan with a ScanError naming the window: a heat map never holds a NaN that stands for
a number. film_bytes() is what scanning a film takes on the host beside the network's
batches (the film read, its mask and the two maps), measured within 1.5x by a test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import memory, metrics
from .data.preprocess import UnreadableImage, preprocess
from .detection.masks import breast_mask, otsu_threshold  # noqa: F401  (the breast mask's one home; scan.breast_mask)
from .progress import bar as progress_bar

REGIONS_HEADER = ["rank", "x", "y", "side", "p_malignant", "log_odds"]


class ScanError(ValueError):
    """A window of the film could not be classified (its pixels, or the network's output
    on them, are not finite): the message names the window."""


OVERLAY_SIDE = 1024  # the heat-map PNG's longer side at most


def film_bytes(height: int, width: int) -> int:
    """Host bytes a film of height x width pixels takes while it is read, scanned and
    drawn, besides the network's batches: per pixel, the film in float32 (4) and its
    breast mask (1) throughout; at the peak, while the maps are made, the two float64
    sums that become the heat map and the log-odds map (16) and the windows' count (4);
    one more for the allocator. The read (the decoder's buffer, the conversion to
    float32 and its copy: about 11 per pixel) and the breast mask's own work (about 21)
    peak lower. The overlay adds some 64 bytes per pixel of the shrunk image. Held
    within 1.5x of the measured peak by a test (tests/test_hostile_apps.py)."""
    f = overlay_step(height, width)
    return 26 * height * width + 64 * math.ceil(height / f) * math.ceil(width / f)


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
        inside = mask_share(mask, tops, lefts, side)
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
            x = np.stack([_window(film, tops[i], lefts[i], side, image_size) for i in idx])[:, None]
            logits = be.to_numpy(net.forward(be.asarray(x.astype(np.float32)), train=False)).astype(np.float64)
            bad = np.flatnonzero(~np.isfinite(logits).all(axis=1))
            if len(bad):
                i = idx[bad[0]]
                raise ScanError(f"the network's output is not finite for the window at x {lefts[i]}, y {tops[i]} "
                                f"(side {side}; {len(bad)} of its batch of {len(idx)}): its pixels normalise to "
                                "finite values, so the weights overflow on them")
            probs[start:start + len(idx)] = metrics.softmax_positive(logits)
            log_odds[start:start + len(idx)] = logits[:, 1] - logits[:, 0]
            if b is not None:
                b.update(len(idx))
    finally:
        if b is not None:
            b.close()
    heat, score = mean_maps((h, w), tops, lefts, side, probs, log_odds)
    return ScanResult(heat, tops, lefts, side, probs, skipped, log_odds, score)


def _window(film: np.ndarray, top: int, left: int, side: int, image_size: int) -> np.ndarray:
    try:
        return preprocess(film[top:top + side, left:left + side], image_size)
    except UnreadableImage as e:
        raise ScanError(f"the window at x {left}, y {top} (side {side}) cannot be normalised: {e}") from e


def mask_share(mask: np.ndarray, tops, lefts, side: int) -> np.ndarray:
    """(M,): the fraction of each window's pixels inside mask, from the mask's summed
    area table (int32 where the film's pixel count allows, built in place)."""
    h, w = mask.shape
    integral = np.zeros((h + 1, w + 1), dtype=np.int32 if h * w < 2**31 else np.int64)
    np.cumsum(mask, axis=0, out=integral[1:, 1:])
    np.cumsum(integral[1:, 1:], axis=1, out=integral[1:, 1:])
    return (integral[tops + side, lefts + side] - integral[tops, lefts + side]
            - integral[tops + side, lefts] + integral[tops, lefts]) / (side * side)


def mean_maps(shape, tops, lefts, side: int, *values) -> list[np.ndarray]:
    """(H, W) per sequence of window values: the mean of the values of the windows
    covering each pixel; NaN where none does. One count for all, each sum divided in
    place (a film's maps are its largest arrays)."""
    totals = [np.zeros(shape) for _ in values]
    count = np.zeros(shape, dtype=np.int32)
    for k, (t, l) in enumerate(zip(tops, lefts)):
        count[t:t + side, l:l + side] += 1
        for total, v in zip(totals, values):
            total[t:t + side, l:l + side] += v[k]
    with np.errstate(invalid="ignore", divide="ignore"):
        for total in totals:
            np.divide(total, count, out=total)  # 0 / 0: NaN where no window was scanned
    return totals


def mean_map(shape, tops, lefts, side: int, values) -> np.ndarray:
    """(H, W): the mean of the values of the windows covering each pixel; NaN where none does."""
    return mean_maps(shape, tops, lefts, side, values)[0]


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


def region_rows(regions: list[dict]) -> list[dict]:
    """top_regions as the rows of NAME.regions.csv (REGIONS_HEADER)."""
    return [{**r, "p_malignant": f"{r['p_malignant']:.6f}", "log_odds": f"{r['log_odds']:.4f}"} for r in regions]


def overlay_step(height: int, width: int, max_side: int = OVERLAY_SIDE) -> int:
    """Every how many film pixels the overlay keeps one, so its longer side is at most max_side."""
    return max(1, math.ceil(max(height, width) / max_side))


def heat_overlay(film: np.ndarray, heat: np.ndarray, max_side: int = OVERLAY_SIDE, alpha: float = 0.5) -> np.ndarray:
    """(h, w, 3) uint8: the film in grey with the heat map (0 to 1; NaN: not scanned)
    blended in, shrunk so its longer side is at most max_side. Shrunk first and made a
    channel at a time: a few arrays of the overlay's size, never of the film's."""
    f = overlay_step(*film.shape, max_side)
    g = np.asarray(film[::f, ::f], dtype=np.float64)
    hm = heat[::f, ::f]
    lo, hi = np.percentile(g, [1, 99.5])
    g = np.clip((g - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    scanned = np.isfinite(hm)
    v = np.clip(np.where(scanned, hm, 0.0), None, 1)
    a = np.where(scanned, alpha * (0.3 + 0.7 * np.where(scanned, hm, 0.0)), 0.0)
    out = np.empty(g.shape + (3,), dtype=np.uint8)
    for c in range(3):  # saliency._colour's black-red-yellow-white, one channel
        out[..., c] = np.round(255 * ((1 - a) * g + a * np.clip(3 * v - c, 0, 1)))
    return out


def inside_circles(row: int, col: int, circles, height: int) -> bool:
    """Whether film pixel (row, col) lies in any MIAS circle (x, y from the bottom, r)."""
    return any((col - x) ** 2 + (row - (height - y)) ** 2 <= r * r for x, y, r in circles)


def circle_share(mask: np.ndarray, circles) -> float:
    """The chance that a uniformly random point of mask lies in one of the circles
    (x, y from the bottom, r): their area inside the mask over the mask's area."""
    h, w = mask.shape
    hit = np.zeros((h, w), dtype=bool)
    for x, y, r in circles:  # each circle within its bounding box: no film-sized grids
        row = h - y
        r0, r1 = max(0, int(np.floor(row - r))), min(h, int(np.ceil(row + r)) + 1)
        c0, c1 = max(0, int(np.floor(x - r))), min(w, int(np.ceil(x + r)) + 1)
        if r0 >= r1 or c0 >= c1:
            continue
        yy, xx = np.mgrid[r0:r1, c0:c1]
        hit[r0:r1, c0:c1] |= (xx - x) ** 2 + (yy - row) ** 2 <= r * r
    return float(np.count_nonzero(hit & mask) / max(np.count_nonzero(mask), 1))
