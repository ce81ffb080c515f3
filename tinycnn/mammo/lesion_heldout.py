"""scan_film.py --heldout with a detection run (`train.py --task detect --cv K`, or
`python -m tinycnn.mammo.detection`): each fold's detector scans the films its own
meta record says it held out, and the out-of-fold candidates are pooled into the
figures the run's metrics.json holds under "detection" (detection.json): top-1 and
top-3 hit rates with Wilson intervals, FROC, the random breast point and the
brightest window on the same films, by class and radius.

A scan of the same films with the same backend gives the run's numbers exactly (the
heat maps are deterministic); another backend may move a candidate where two cells
round to the same score, and a film missing from the data changes the pool: both are
said. Refused: a folder that is not a finished detection run (no detection.json nor
metrics.json with "detection"), a run a training is still writing, a fold detector
whose record names no held-out films, and two folds that claim the same film."""

from __future__ import annotations

import json
from pathlib import Path

from .cli import shown
from .data.preprocess import DataError
from .detection.checkpoints import NotADetector, detector_config, fold_checkpoints, load_detector
from .detection.crossval import METRICS_FILE, grid_step_of, scan_films
from .detection.evaluate import brightest_window_map, film_candidates, summarise
from .lesion_scanner import sigmoid
from .outputs import is_regular_file
from .runfolder import lock_owner
from .threads import limit_blas
from tinycnn.checkpoint import CheckpointError, read_checkpoint

HEADER = ["film", "patient", "fold", "marks", "top1_hit", "x", "y", "p_lesion", "log_odds"]
COMPARED = ("n_films", "top1_hits", "top1_hit_rate", "top3_hit_rate", "froc", "random_hit_rate", "by_class",
            "by_radius")  # the figures, not the scores at the FROC points (float rounding of another backend)


def run_record(run: Path) -> dict:
    """The finished run's "detection" record: metrics.json's (train.py) or
    detection.json (the package's own command), with its "dataset" added where the
    run says. DataError for a folder a training still writes, or one not finished."""
    if not run.is_dir():
        raise DataError(f"--heldout needs CHECKPOINT to be a detection run folder, got {run}")
    owner = lock_owner(run)
    if owner is not None:
        raise DataError(f"{run} is being written by a training (process {owner}): its fold detectors are not "
                        "final; wait for it to end")
    for name in ("metrics.json", METRICS_FILE):
        path = run / name
        if not is_regular_file(path):
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataError(f"{path} cannot be read ({e}): is the run finished?") from e
        if isinstance(record, dict) and isinstance(record.get("detection"), dict):
            return {**record["detection"], "dataset": record.get("dataset", "mias"), "file": str(path)}
        if isinstance(record, dict) and "top1_hit_rate" in record and name == METRICS_FILE:
            return {**record, "dataset": "mias", "file": str(path)}
    if is_regular_file(run / "metrics.json"):
        raise NotADetector(f"{run}: a benign/malignant classifier run, not a detection run (its metrics.json has no "
                           "'detection'): a lesion detector is trained with `python apps/train.py --task detect`")
    raise DataError(f"{run} is not a finished detection run: neither metrics.json with 'detection' nor "
                    f"{METRICS_FILE} (a run still training, or one that stopped, has only its fold-N folders)")


def fold_detectors(run: Path, record: dict) -> list[tuple[int, Path, dict]]:
    """(fold, detector path, meta) of each fold, checked from its records: a detector
    whose meta names the films it held out, no film claimed by two folds, and as many
    folds as the run's record lists."""
    out, owner = [], {}
    for path in fold_checkpoints(run):
        meta = read_checkpoint(path, arrays=False)["meta"]
        detector_config(meta, path)
        refs = meta.get("heldout")
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
            raise CheckpointError(f"{path}: its meta record names no held-out films: not a fold of a detection "
                                  "cross-validation run")
        fold = int(path.parent.name.split("-")[1])
        for r in refs:
            if r in owner:
                raise CheckpointError(f"{path}: film {r} is held out by fold {owner[r]} too: the run's records "
                                      "contradict")
            owner[r] = fold
        out.append((fold, path, meta))
    listed = record.get("folds")
    if isinstance(listed, list) and len(listed) != len(out):
        raise DataError(f"{run}: the record lists {len(listed)} folds, the folder holds {len(out)} fold detectors")
    return out


def read_films(data: Path, dataset: str, scale: int, strict: bool):
    """(films, skipped) of the run's dataset at the detector's scale."""
    from .detection.films import cbis_films, mias_films

    reader = cbis_films if dataset == "cbis-ddsm" else mias_films
    return reader(data, scale=scale, strict=strict)


def pooled_scan(folds, films_at, backend, log) -> tuple[dict, list[dict], list[str]]:
    """Each fold's detector over its held-out films (films_at(scale) -> films read at
    that scale): (metrics as format_summary reads them, a heldout.csv row per film, the
    held-out refs not found in the data). As the run scanned: one BLAS thread (the same
    sums in the same order, so the same scores to the last bit), and the pool in the
    data's film order (the same means)."""
    with limit_blas(1):
        return _pooled_scan(folds, films_at, backend, log)


def _pooled_scan(folds, films_at, backend, log):
    pool, cands, rows, fold_rows, missing = [], [], [], [], []
    for fold, path, _ in folds:
        net, config, meta = load_detector(path, backend)
        by_ref = {f.ref: f for f in films_at(config.scale)}
        test = [by_ref[r] for r in meta["heldout"] if r in by_ref]
        missing += [r for r in meta["heldout"] if r not in by_ref]
        _, found = scan_films(net, test, config)
        hits = 0
        for f, c in zip(test, found):
            hit = bool(len(c)) and bool(f.in_any_mark(c[:1, 0], c[:1, 1]).any())
            hits += hit
            best = c[0] if len(c) else (float("nan"),) * 3
            rows.append({"film": shown(f.ref), "patient": shown(f.patient), "fold": fold,
                         "marks": ";".join(f"{m.col:g} {m.row:g} {m.radius:g}" for m in f.marks),
                         "top1_hit": int(hit), "x": f"{best[1]:.1f}", "y": f"{best[0]:.1f}",
                         "p_lesion": f"{float(sigmoid(best[2])):.6f}", "log_odds": f"{best[2]:.4f}"})
        fold_rows.append({"fold": fold, "n_films": len(test), "top1_hits": int(hits),
                          "top1_hit_rate": hits / len(test) if test else float("nan"), "detector": str(path)})
        pool += test
        cands += found
        log(f"fold {fold}: {shown(path)} scanned {len(test)} held-out film(s), top-1 {hits}/{len(test)}")
    if not pool:
        raise DataError("none of the films the folds held out is in the data given")
    order = {f.ref: i for i, f in enumerate(films_at(config.scale))}
    pool, cands = zip(*sorted(zip(pool, cands), key=lambda fc: order[fc[0].ref]))
    metrics = summarise(list(pool), list(cands))
    step = grid_step_of(config)
    bright = [film_candidates(f, brightest_window_map(f, config.side, step), step, config.nms_radius,
                              config.candidates) for f in pool]
    base = summarise(pool, bright)
    metrics["baselines"] = {"brightest_window": {k: base[k] for k in (
        "top1_hit_rate", "top1_ci95", "top1_hits", "top3_hit_rate", "top3_ci95", "froc", "froc_curve")}}
    metrics["folds"] = fold_rows
    return metrics, rows, missing


def agreement(metrics: dict, record: dict) -> tuple[bool, str]:
    """Whether the scan gave the run's recorded figures (COMPARED), and a line saying so."""
    from .report import _clean  # as metrics.json holds them: NaN as null

    differ = [k for k in COMPARED if k in record and record[k] != _clean(metrics[k])]
    mine = f"top-1 {metrics['top1_hits']}/{metrics['n_films']}"
    theirs = f"top-1 {record.get('top1_hits')}/{record.get('n_films')}"
    where = shown(record["file"])
    if not differ:
        return True, f"the same as the run's {where} ({theirs}; top-3, FROC, by class and radius too)"
    return False, (f"differs from the run's {where} in {', '.join(differ)}: {mine} here, {theirs} there")


def summary(run: Path, data: Path, metrics: dict, record: dict, missing: list, backend_name: str) -> dict:
    """heldout.json: the pooled metrics under "detection", and how they compare."""
    same, line = agreement(metrics, record)
    return {"task": "detect", "run": shown(run), "data": shown(data), "backend": backend_name,
            "run_backend": record.get("backend"), "detection": metrics, "matches_run": same, "comparison": line,
            "missing_films": [shown(r) for r in missing],
            "protocol": "each film scanned by the fold detector that never saw its woman"}
