"""The detection experiment: K folds by woman, one detector trained per fold, each
fold's held-out films scanned by that fold's model, and the out-of-fold candidates
pooled into one evaluation against the trivial baselines on the same films.

    metrics = run_detection_cv(films, DetectorConfig(), backend="numba", out_dir="runs/x", log=print)

Layout of out_dir: fold-N/detector.npz (the fold's model, a Sequential checkpoint
whose meta says it is a detector), fold-N/scans.npz (every held-out film's heat map
and candidates: the fold's result), froc.png, heatmaps/REF.png, detection.json (the
returned dict). Crash safety: each fold's scans.npz is written whole or not at all
(temporary file, fsync, rename) after its model; a rerun with the same films,
settings and backend loads finished folds instead of training them again (a fold's
key hashes all three), and a fold whose key differs is trained afresh.
"""

from __future__ import annotations

import hashlib
import math
import json
import time
from pathlib import Path

import numpy as np

from tinycnn import backends
from tinycnn.checkpoint import CheckpointError
from tinycnn.paths import atomic_savez

from ..report import write_metrics
from ..threads import limit_blas
from .checkpoints import MODEL_FILE, TASK, fold_checkpoints, load_detector
from .evaluate import brightest_window_map, film_candidates, summarise
from .folds import film_folds
from .heatmap import grid_step, heat_map
from .plots import plot_froc, plot_heatmap
from .training import DetectorConfig, train_detector

FOLD_DIR = "fold-{}"
SCANS_FILE, METRICS_FILE = "scans.npz", "detection.json"
HEATMAP_FILMS = 6


def fold_key(config: DetectorConfig, backend_name: str, train_refs, test_refs) -> str:
    blob = json.dumps({"config": config.identity(), "backend": backend_name, "train": sorted(train_refs),
                       "test": sorted(test_refs)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def scan_films(net, films: list, config: DetectorConfig) -> tuple[list, list]:
    """Heat maps (R, C) and candidates (K, 3) of films with net."""
    step = grid_step(net, config.shifts)
    maps, cands = [], []
    for f in films:
        heat = heat_map(net, f.image, config.shifts, config.mirrors)
        maps.append(heat)
        cands.append(film_candidates(f, heat, step, config.nms_radius, config.candidates))
    return maps, cands


def _load_fold(path: Path, key: str, refs: list):
    """The finished fold at path if its key matches: (maps, candidates, info); else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key or [str(r) for r in z["refs"]] != list(refs):
                return None
            counts = z["counts"]
            flat = z["candidates"]
            cands = np.split(flat, np.cumsum(counts)[:-1]) if len(counts) else []
            maps = [z[f"map_{i}"] for i in range(len(refs))]
            info = json.loads(str(z["info"]))
        return maps, cands, info
    except (OSError, KeyError, ValueError):
        return None  # unreadable or foreign: train the fold again


def _save_fold(path: Path, key: str, refs: list, maps: list, cands: list, info: dict) -> None:
    arrays = {"key": np.array(key), "refs": np.array(refs), "info": np.array(json.dumps(info)),
              "counts": np.array([len(c) for c in cands], dtype=np.int64),
              "candidates": np.concatenate(cands) if cands else np.zeros((0, 3))}
    arrays.update({f"map_{i}": m for i, m in enumerate(maps)})
    atomic_savez(path, arrays)


def run_detection_cv(films: list, config: DetectorConfig, backend="numpy", out_dir=None, log=print,
                     threads: int | None = 1, on_save=None) -> dict:
    """Train and evaluate the detector by K folds of women over films (Film). Returns
    the "detection" metrics (evaluate.summarise's keys, plus "baselines", "folds",
    "films", "config", "seconds"); writes out_dir's files when out_dir is given.
    threads: BLAS threads while it runs (1; None: the library's choice). on_save: called
    with each fold's model path once the fold is saved whole (the app's --overwrite
    lets the old run go then)."""
    with limit_blas(threads):
        return _run(films, config, backend, out_dir, log, on_save)


def _run(films: list, config: DetectorConfig, backend, out_dir, log, on_save=None) -> dict:
    wrong = sorted({f.scale for f in films} - {config.scale})
    if wrong:
        raise ValueError(f"films shrunk by {wrong}, the detector's settings say scale {config.scale}: "
                         "read the films with the config's scale")
    be = backends.get(backend)
    out = Path(out_dir) if out_dir is not None else None
    folds = film_folds(films, config.folds, config.seed)
    start = time.perf_counter()
    n_maps: list = [None] * len(films)
    n_cands: list = [None] * len(films)
    fold_of = np.zeros(len(films), dtype=np.int64)
    fold_rows = []
    for i, test in enumerate(folds):
        test_set = set(test.tolist())
        train_films = [f for j, f in enumerate(films) if j not in test_set]
        test_films = [films[j] for j in test]
        refs = [f.ref for f in test_films]
        key = fold_key(config, be.name, [f.ref for f in train_films], refs)
        fold_dir = out / FOLD_DIR.format(i + 1) if out is not None else None
        loaded = _load_fold(fold_dir / SCANS_FILE, key, refs) if fold_dir is not None else None
        if loaded is not None:
            maps, cands, info = loaded
            log(f"fold {i + 1}/{len(folds)}: finished earlier, loaded ({len(test_films)} films)")
        else:
            if fold_dir is not None and (fold_dir / SCANS_FILE).is_file():
                log(f"fold {i + 1}/{len(folds)}: the fold saved in {fold_dir} has other films, settings or "
                    "backend (or cannot be read): trained again")
            log(f"fold {i + 1}/{len(folds)}: training on {len(train_films)} films "
                f"({len({f.patient for f in train_films})} women), testing {len(test_films)} films "
                f"({len({f.patient for f in test_films})} women)")
            t0 = time.perf_counter()
            net, history = train_detector(train_films, config, be, run_key=i + 1, log=log)
            t1 = time.perf_counter()
            maps, cands = scan_films(net, test_films, config)
            t2 = time.perf_counter()
            info = {"train_seconds": t1 - t0, "scan_seconds": t2 - t1, "history": history}
            if fold_dir is not None:
                net.save(fold_dir / MODEL_FILE, meta={"task": TASK, "detector": config.identity(),
                                                      "fold": i + 1, "heldout": refs,
                                                      "grid_step": grid_step(net, config.shifts)})
                _save_fold(fold_dir / SCANS_FILE, key, refs, maps, cands, info)
                if on_save is not None:
                    on_save(fold_dir / MODEL_FILE)
        hits = sum(bool(len(c)) and bool(f.in_any_mark(c[:1, 0], c[:1, 1]).any()) for f, c in zip(test_films, cands))
        row = {"fold": i + 1, "n_films": len(test_films), "top1_hits": int(hits),
               "top1_hit_rate": hits / len(test_films), "train_seconds": info.get("train_seconds"),
               "scan_seconds": info.get("scan_seconds")}
        fold_rows.append(row)
        log(f"fold {i + 1}: top-1 {hits}/{len(test_films)} films")
        for j, m, c in zip(test, maps, cands):
            n_maps[j], n_cands[j], fold_of[j] = m, c, i + 1
    metrics = summarise(films, n_cands)
    step = grid_step_of(config)
    bright = [film_candidates(f, brightest_window_map(f, config.side, step), step, config.nms_radius,
                              config.candidates) for f in films]
    base = summarise(films, bright)
    metrics["baselines"] = {"brightest_window": {k: base[k] for k in (
        "top1_hit_rate", "top1_ci95", "top1_hits", "top3_hit_rate", "top3_ci95", "froc", "froc_curve")}}
    metrics["folds"] = fold_rows
    metrics["films"] = [{"ref": f.ref, "patient": f.patient, "fold": int(fold_of[j]), "n_marks": len(f.marks),
                         "candidates": [[float(v) for v in row] for row in n_cands[j][:5]],
                         "top1_hit": bool(len(n_cands[j])) and bool(f.in_any_mark(*n_cands[j][:1, :2].T).any())}
                        for j, f in enumerate(films)]
    metrics["config"] = config.identity()
    metrics["backend"] = be.name
    metrics["seconds"] = time.perf_counter() - start
    if out is not None:
        write_outputs(out, films, n_maps, n_cands, metrics, step)
    return metrics


def grid_step_of(config: DetectorConfig) -> int:
    return 2 ** len(config.widths) // config.shifts


def write_outputs(out: Path, films, maps, cands, metrics: dict, step: int) -> None:
    """froc.png, a few heat maps, detection.json."""
    out.mkdir(parents=True, exist_ok=True)
    base = metrics["baselines"]["brightest_window"]
    plot_froc({"detector": {**metrics["froc_curve"], "points": metrics["froc"]},
               "brightest window": {**base["froc_curve"], "points": base["froc"]}}, out / "froc.png",
              title=f"FROC, {metrics['n_films']} held-out films, {metrics['n_lesions']} lesions")
    picks = np.unique(np.linspace(0, len(films) - 1, min(HEATMAP_FILMS, len(films))).round().astype(int))
    for j in picks:
        f = films[j]
        hit = "hit" if metrics["films"][j]["top1_hit"] else "miss"
        plot_heatmap(f, maps[j], step, cands[j], out / "heatmaps" / f"{f.ref}.png",
                     title=f"{f.ref} (fold {metrics['films'][j]['fold']}): top-1 {hit}; "
                           + ", ".join(f"{m.kind} r{m.radius:g}" for m in f.marks))
    write_metrics(out / METRICS_FILE, metrics)


def format_summary(metrics: dict) -> str:
    """The lines a user reads: pooled top-1 / top-3 with intervals, FROC, baselines."""
    def pct(v):
        return "n/a" if v is None or math.isnan(v) else f"{100 * v:.1f}%"

    lo, hi = metrics["top1_ci95"]
    b = metrics["baselines"]["brightest_window"]
    lines = [f"detection, {metrics['n_films']} held-out films ({metrics['n_lesions']} lesions), "
             f"{len(metrics['folds'])} folds by woman:",
             f"  top-1 hit rate {pct(metrics['top1_hit_rate'])} ({metrics['top1_hits']}/{metrics['n_films']}; "
             f"95% Wilson {pct(lo)}-{pct(hi)}), top-3 {pct(metrics['top3_hit_rate'])}",
             "  FROC sensitivity at " + ", ".join(f"{k} FP/film {metrics['froc'][k]:.3f}" for k in metrics["froc"]),
             f"  random breast point {pct(metrics['random_hit_rate'])}; brightest window top-1 "
             f"{pct(b['top1_hit_rate'])} ({b['top1_hits']}/{metrics['n_films']}), top-3 {pct(b['top3_hit_rate'])}, "
             "FROC " + " / ".join(f"{b['froc'][k]:.3f}" for k in b["froc"])]
    classes = metrics.get("by_class", {})
    if classes:
        lines.append("  top-1 by class: " + ", ".join(
            f"{k} {v['top1_hit_rate'] * 100:.0f}% of {v['n_lesions']}" for k, v in classes.items() if v["n_lesions"]))
    radii = metrics.get("by_radius", {})
    if radii:
        lines.append("  top-1 by radius (px): " + ", ".join(
            f"{k} {v['top1_hit_rate'] * 100:.0f}% of {v['n_lesions']}" for k, v in radii.items() if v["n_lesions"]))
    return "\n".join(lines)


def heldout_report(run_dir, films: list, backend="numpy", log=print) -> dict:
    """Scan each fold's held-out films with that fold's detector (the films its meta
    names, found among `films` by ref) and pool them: evaluate.summarise's metrics,
    the numbers metrics.json's "detection" holds. A film no fold held out is left out
    (counted in "not_heldout")."""
    by_ref = {f.ref: f for f in films}
    pooled_films, pooled_cands, seen = [], [], set()
    for path in fold_checkpoints(run_dir):
        net, config, meta = load_detector(path, backend)
        refs = [r for r in meta.get("heldout", []) if r in by_ref and r not in seen]
        test = [by_ref[r] for r in refs]
        _, cands = scan_films(net, test, config)
        pooled_films += test
        pooled_cands += cands
        seen.update(refs)
        log(f"{path.parent.name}: scanned {len(test)} held-out film(s)")
    if not pooled_films:
        raise CheckpointError(f"{run_dir}: no fold held out any of the {len(films)} film(s) given")
    out = summarise(pooled_films, pooled_cands)
    out["not_heldout"] = len(films) - len(pooled_films)
    return out
