"""How well a detector finds the marked lesions of held-out films.

Per film, the heat map (the lesion log-odds of the window centred on each grid cell,
only cells on the breast) becomes a ranked list of candidate points by greedy
non-maximum suppression: the highest cell, then the highest cell at least
`nms_radius` film pixels (full resolution) from every earlier pick, and so on. A candidate hits a
lesion when its point (full-resolution film pixels) lies inside the lesion's circle.

- top-1 / top-3 hit rate: the share of films whose first (any of the first three)
  candidates hit one of the film's lesions; a 95% Wilson interval per film.
- FROC: all candidates of all films pooled and ranked by score; walking down the
  list, a candidate that hits a lesion not yet found finds it, one that hits only
  lesions already found counts as nothing, one that hits none is a false positive.
  Sensitivity (found lesions / all lesions) at 0.5, 1, 2 and 4 false positives per
  film is the highest reached with at most that many.
- random_hit_rate: the chance that a uniformly random point of the breast falls in a
  lesion (the marks' share of the breast), averaged over the films.
- By lesion class and by radius band: per lesion, whether its film's first (first
  three) candidates hit it, and the FROC sensitivity at the pooled list's score
  thresholds for 0.5 ... 4 false positives per film.

Shapes: a film's candidates are an (K, 3) float array of (row, col, score), rows and
columns in full-resolution pixels, best first.
"""

from __future__ import annotations

import math

import numpy as np

FP_RATES = (0.5, 1, 2, 4)
RADIUS_BANDS = ((0, 20), (20, 40), (40, 80), (80, math.inf))  # full-resolution MIAS pixels (200 micron)
CLASSES = ("CALC", "CIRC", "SPIC", "MISC", "ARCH", "ASYM")


def rate_key(rate: float) -> str:
    """0.5 -> "0.5", 1 -> "1": metrics.json's keys for FP rates."""
    return f"{rate:g}"


def band_key(band) -> str:
    lo, hi = band
    return f"{lo:g}+" if math.isinf(hi) else f"{lo:g}-{hi:g}"


def wilson(hits: int, n: int, z: float = 1.959964) -> list[float]:
    """95% Wilson score interval of a proportion hits / n ([nan, nan] for n = 0)."""
    if n == 0:
        return [float("nan"), float("nan")]
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def nms(scores: np.ndarray, rows: np.ndarray, cols: np.ndarray, radius: float, k: int) -> np.ndarray:
    """Greedy non-maximum suppression: indices (<= k) into scores (M,), best first, each
    at least `radius` (in the units of rows, cols) from every earlier pick. Ties: the
    lower index first. Non-finite scores are never picked."""
    order = np.argsort(-np.where(np.isfinite(scores), scores, -np.inf), kind="stable")
    order = order[np.isfinite(scores[order])]
    picked: list[int] = []
    alive = np.ones(len(order), dtype=bool)
    r, c = rows[order].astype(np.float64), cols[order].astype(np.float64)
    for j in range(len(order)):
        if not alive[j]:
            continue
        picked.append(int(order[j]))
        if len(picked) == k:
            break
        alive &= (r - r[j]) ** 2 + (c - c[j]) ** 2 >= radius * radius
    return np.array(picked, dtype=np.int64)


def film_candidates(film, score_map: np.ndarray, step: int, nms_radius: float, k: int = 20) -> np.ndarray:
    """A film's heat map (R, C) on a grid of `step` working pixels (cell (a, b) = the
    window centred on working pixel (a * step, b * step)) -> (K, 3) candidates (row,
    col in full-resolution pixels, score), cells off the breast left out. nms_radius in
    full-resolution film pixels."""
    h, w = film.mask.shape
    a, b = np.meshgrid(np.arange(score_map.shape[0]) * step, np.arange(score_map.shape[1]) * step, indexing="ij")
    a, b, s = a.ravel(), b.ravel(), np.asarray(score_map, dtype=np.float64).ravel().copy()
    on = (a < h) & (b < w)
    on[on] = film.mask[a[on], b[on]]
    s[~on] = np.nan
    idx = nms(s, a, b, nms_radius / film.scale, k)
    rows, cols = film.to_full(a[idx], b[idx])
    return np.stack([rows, cols, s[idx]], axis=1) if len(idx) else np.zeros((0, 3))


def hit_matrix(candidates: np.ndarray, marks) -> np.ndarray:
    """(K, L) bool: candidate k lies inside mark l."""
    out = np.zeros((len(candidates), len(marks)), dtype=bool)
    for j, m in enumerate(marks):
        out[:, j] = m.contains(candidates[:, 0], candidates[:, 1]) if len(candidates) else False
    return out


def froc(candidates: list, marks: list, rates=FP_RATES) -> dict:
    """Pooled FROC over films: candidates[i] (K_i, 3), marks[i] the film's lesions.
    Returns {"sensitivity": {key: s}, "thresholds": {key: lowest score still counted},
    "curve": {"fp_per_film": [...], "sensitivity": [...]}} (the curve: one point per
    distinct score, walking down the list)."""
    n_films = len(candidates)
    n_lesions = sum(len(m) for m in marks)
    entries = []  # (score, film, hit lesions as global ids)
    offset = 0
    for i, (cand, ms) in enumerate(zip(candidates, marks)):
        hm = hit_matrix(np.asarray(cand).reshape(-1, 3), ms)
        for k in range(len(hm)):
            entries.append((float(cand[k][2]), tuple(offset + np.flatnonzero(hm[k]))))
        offset += len(ms)
    entries.sort(key=lambda e: -e[0])
    found: set = set()
    fp = 0
    fps, sens, scores = [0.0], [0.0], [math.inf]
    j = 0
    while j < len(entries):
        score = entries[j][0]
        while j < len(entries) and entries[j][0] == score:  # ties enter together
            hits = entries[j][1]
            if not hits:
                fp += 1
            else:
                found.update(hits)
            j += 1
        fps.append(fp / max(n_films, 1))
        sens.append(len(found) / max(n_lesions, 1))
        scores.append(score)
    out_s, out_t = {}, {}
    for rate in rates:
        ok = [i for i, f in enumerate(fps) if f <= rate + 1e-12]
        best = max(ok, key=lambda i: (sens[i], i))
        out_s[rate_key(rate)] = float(sens[best]) if n_lesions else float("nan")
        # The last point within the rate: the lowest score threshold of that operating point.
        out_t[rate_key(rate)] = float(scores[max(ok)])
    return {"sensitivity": out_s, "thresholds": out_t, "curve": {"fp_per_film": fps, "sensitivity": sens}}


def lesion_found_at(candidates: np.ndarray, mark, threshold: float) -> bool:
    """Whether a candidate scoring at least threshold lies inside mark."""
    cand = np.asarray(candidates).reshape(-1, 3)
    keep = cand[:, 2] >= threshold
    return bool(keep.any() and mark.contains(cand[keep, 0], cand[keep, 1]).any())


def breast_share_of_marks(film) -> float:
    """The chance that a uniformly random breast point (working pixel) of the film lies
    in one of its marks."""
    rows, cols = np.nonzero(film.mask)
    if not len(rows):
        return 0.0
    return float(film.in_any_mark(*film.to_full(rows, cols)).mean())


def _rate(hits, n) -> float:
    return float(hits / n) if n else float("nan")


def summarise(films: list, candidates: list, rates=FP_RATES) -> dict:
    """The detection metrics of films (Film, with marks and masks) and their candidates
    (K_i, 3): the keys metrics.json's "detection" holds (without per-fold details)."""
    n = len(films)
    top1 = np.array([bool(len(c)) and hit_matrix(c[:1], f.marks).any() for f, c in zip(films, candidates)])
    top3 = np.array([bool(len(c)) and hit_matrix(c[:3], f.marks).any() for f, c in zip(films, candidates)])
    fr = froc(candidates, [f.marks for f in films], rates)
    out = {"n_films": n, "n_lesions": int(sum(len(f.marks) for f in films)),
           "top1_hit_rate": _rate(top1.sum(), n), "top1_ci95": wilson(int(top1.sum()), n),
           "top1_hits": int(top1.sum()),
           "top3_hit_rate": _rate(top3.sum(), n), "top3_ci95": wilson(int(top3.sum()), n),
           "top3_hits": int(top3.sum()),
           "froc": fr["sensitivity"], "froc_thresholds": fr["thresholds"], "froc_curve": fr["curve"],
           "random_hit_rate": float(np.mean([breast_share_of_marks(f) for f in films])) if n else float("nan")}
    out["by_class"] = _groups(films, candidates, fr["thresholds"],
                              {c: (lambda m, c=c: m.kind == c) for c in CLASSES})
    out["by_radius"] = _groups(films, candidates, fr["thresholds"],
                               {band_key(b): (lambda m, b=b: b[0] <= m.radius < b[1]) for b in RADIUS_BANDS})
    return out


def _groups(films, candidates, thresholds: dict, groups: dict) -> dict:
    """Per group of lesions (a predicate on a mark): how many, on how many films, the
    share whose film's first (first three) candidates hit it (Wilson interval for the
    first), its FROC sensitivity at the pooled thresholds, and its breast share."""
    out = {}
    for name, belongs in groups.items():
        rows = [(f, c, m) for f, c in zip(films, candidates) for m in f.marks if belongs(m)]
        n = len(rows)
        t1 = sum(bool(len(c)) and bool(m.contains(c[:1, 0], c[:1, 1]).any()) for f, c, m in rows)
        t3 = sum(bool(len(c)) and bool(m.contains(c[:3, 0], c[:3, 1]).any()) for f, c, m in rows)
        shares = []
        for f, _, m in rows:
            r, c = np.nonzero(f.mask)
            shares.append(float(m.contains(*f.to_full(r, c)).mean()) if len(r) else 0.0)
        out[name] = {"n_lesions": n, "n_films": len({id(f) for f, _, _ in rows}),
                     "top1_hit_rate": _rate(t1, n), "top1_ci95": wilson(t1, n), "top3_hit_rate": _rate(t3, n),
                     "froc": {k: _rate(sum(lesion_found_at(c, m, t) for _, c, m in rows), n)
                              for k, t in thresholds.items()},
                     "random_hit_rate": float(np.mean(shares)) if shares else float("nan")}
    return out


def brightest_window_map(film, side: int, step: int) -> np.ndarray:
    """The trivial detector: the mean normalised intensity of the side x side window
    centred on each grid cell (the windows the detector sees, on the grid of a heat map
    of `step`), (R, C)."""
    from .fcn import grid_centres, pad_film

    padded = pad_film(film.image, side).astype(np.float64)
    integral = np.pad(padded.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    rows, cols = grid_centres(film.image.shape, step)
    t, l = np.meshgrid(rows, cols, indexing="ij")  # window top-left in padded = centre in film
    total = integral[t + side, l + side] - integral[t, l + side] - integral[t + side, l] + integral[t, l]
    return total / (side * side)
