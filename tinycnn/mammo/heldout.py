"""scan_film.py --heldout: a finished `train.py --dataset mias --cv K` run's fold
models, each scanning the films of the women its fold held out, and how often a heat
map's peak falls inside a marked abnormality circle, against the chance that a random
point of the breast does.

Only the patient split's folds hold anything out: the paper's order augments before
it splits, so a --protocol paper fold model trained on rotated copies of the very
films its fold "held out", and a hit rate from it would be leaky. Such a run is
refused, and so is any fold model whose own record says it was trained in the
paper's order, or a run a training is still writing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .cli import shown
from .data.preprocess import DataError
from .outputs import is_regular_file
from .runfolder import lock_owner
from tinycnn.checkpoint import read_checkpoint

HEADER = ["film", "patient", "fold", "circles", "hit", "x", "y", "p_malignant", "hit_map_max", "map_max_x",
          "map_max_y", "random_point_hit_chance", "heatmap"]
EARLIER_HEADERS = [HEADER, HEADER[:-1]]  # an earlier table (before the heat map's column) is ours too
LEAKY = ("each fold model trained on rotated copies of the films its fold holds out (the paper's order augments "
         "before it splits), so a hit rate from them would be leaky")


def run_record(run: Path) -> dict:
    """The finished --cv run's metrics.json, checked: a mias --cv run of the patient
    split (or of both protocols, whose patient/ folds are used), no training writing it."""
    if not run.is_dir():
        raise DataError(f"--heldout needs CHECKPOINT to be a --cv run folder, got {run}")
    owner = lock_owner(run)
    if owner is not None:
        raise DataError(f"{run} is being written by a training (process {owner}): its fold models are not final; "
                        "wait for it to end")
    path = run / "metrics.json"
    try:
        if not is_regular_file(path):
            raise OSError("not found, or not a regular file")
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"--heldout needs the finished --cv run's {path} ({e})") from e
    if not isinstance(record, dict) or record.get("dataset", {}).get("name") != "mias" or not record.get("cv"):
        raise DataError(f"--heldout needs a `train.py --dataset mias --cv K` run; {path} is not one")
    protocol = (record.get("config") or {}).get("protocol", record.get("protocol"))
    if protocol == "paper":
        raise DataError(f"{run} is a --protocol paper run: {LEAKY}. Train with --protocol patient (or both, whose "
                        "patient split is used)")
    return record


def fold_models(run: Path, record: dict) -> dict[int, Path]:
    """fold -> the patient split's final model (last.npz) of the run, each checked from
    its own record to have been trained on the patient split."""
    base = run / "patient" if (record.get("config") or {}).get("protocol") == "both" else run
    models = {}
    for d in sorted(base.glob("fold-*")):
        if d.name[5:].isdigit() and is_regular_file(d / "last.npz"):
            models[int(d.name[5:])] = d / "last.npz"
    if not models:
        raise DataError(f"{base} holds no fold-N/last.npz: not a --cv run")
    for path in models.values():
        protocol = read_checkpoint(path, arrays=False)["meta"].get("protocol")
        if protocol not in (None, "patient"):
            raise DataError(f"{path} was trained in protocol {protocol!r}, not on the patient split: {LEAKY}")
    return models


def heldout_films(record: dict, path: Path) -> dict[str, dict]:
    """film -> {"patient", "fold"} from the run's record (the patient split's
    out-of-fold predictions name each ROI's film and the fold that tested it)."""
    films = {}
    for p in record.get("predictions", []):
        if not isinstance(p, dict):
            continue
        ref = str(p.get("roi", "")).split(":", 1)[0]
        if ref and isinstance(p.get("fold"), int):
            films.setdefault(ref, {"patient": p.get("patient"), "fold": p["fold"]})
    if not films:
        raise DataError(f"{path} lists no out-of-fold predictions")
    return films


def wilson_interval(hits: int, n: int, z: float = 1.959964) -> list[float]:
    """95% Wilson score interval of a rate hits/n (sensible at 0 or n hits too, where a
    bootstrap collapses to a point)."""
    if n == 0:
        return [float("nan"), float("nan")]
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def draw_circles(rgb: np.ndarray, circles, height: int, scale: float, point) -> np.ndarray:
    """The marked circles in cyan and the heat map's maximum as a cross, on the overlay."""
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    out = rgb.copy()
    for x, y, r in circles:
        d = np.hypot(xx - x / scale, yy - (height - y) / scale)
        out[np.abs(d - r / scale) < 1.2] = (0, 255, 255)
    row, col = int(point[0] / scale), int(point[1] / scale)
    for k in range(-6, 7):
        for rr, cc in ((row + k, col), (row, col + k)):
            if 0 <= rr < h and 0 <= cc < w:
                out[rr, cc] = (0, 255, 0)
    return out


def summary(rows: list[dict], window: int, stride: int) -> dict:
    """heldout.json: the hit rate over films with its Wilson interval, the mean map's
    maximum's, and the random point's."""
    hits = np.array([r["hit"] for r in rows], float)
    map_hits = np.array([r["hit_map_max"] for r in rows], float)
    chance = np.array([float(r["random_point_hit_chance"]) for r in rows])
    lo, hi = wilson_interval(int(hits.sum()), len(rows))
    return {"films": len(rows), "patients": len({r["patient"] for r in rows}), "hits": int(hits.sum()),
            "hit_rate": float(hits.mean()), "hit_rate_ci95": [lo, hi], "ci_method": "Wilson score interval over films",
            "map_max_hits": int(map_hits.sum()), "map_max_hit_rate": float(map_hits.mean()),
            "random_point_rate": float(chance.mean()), "peak": "centre of the window with the highest log-odds",
            "protocol": "patient split (each film scanned by the fold model that never saw its woman)",
            "window": window, "stride": stride}


def summary_line(s: dict) -> str:
    lo, hi = s["hit_rate_ci95"]
    return (f"held-out films: {s['films']} films of {s['patients']} women; the peak (the most malignant window's "
            f"centre) inside a marked circle on {s['hits']} ({100 * s['hit_rate']:.1f}%, 95% CI {100 * lo:.1f}-"
            f"{100 * hi:.1f}%, {s['ci_method']}); a random point of the breast: {100 * s['random_point_rate']:.1f}% "
            f"expected; the mean map's maximum (biased to the edges): {s['map_max_hits']} "
            f"({100 * s['map_max_hit_rate']:.1f}%)")


def film_row(ref: str, info: dict, fold: int, circles, hit: bool, best: dict, map_point, map_hit: bool,
             chance: float, heatmap: Path) -> dict:
    """One heldout.csv row; names and ids as shown() writes them (one field, one line)."""
    return {"film": shown(ref), "patient": shown(info["patient"]), "fold": fold,
            "circles": ";".join(f"{x} {y} {r}" for x, y, r in circles), "hit": int(hit), "x": best["x"],
            "y": best["y"], "p_malignant": f"{best['p_malignant']:.4f}", "hit_map_max": int(map_hit),
            "map_max_x": map_point[1], "map_max_y": map_point[0], "random_point_hit_chance": f"{chance:.4f}",
            "heatmap": shown(heatmap)}
