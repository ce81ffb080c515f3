"""Where a run's files go. A run folder (--out, by default runs/DATASET, or the first
free runs/DATASET-N next to earlier runs) holds one training's checkpoints, metrics
and plots; with --protocol both each protocol gets a subfolder (patient/, paper/), and
with --cv K each fold a fold-N subfolder of those (1-based). metrics.json and the
pooled plots stay at the protocol's level. tinycnn.mammo.runfolder guards the folder
itself (its lock, --overwrite, what killed saves left)."""

from __future__ import annotations

from pathlib import Path

from .. import cv
from ..outputs import target_kind
from ..runfolder import LOCK_FILE, RUN_FILES, holds_run, in_use, inside, subfolders, unusable_folder
from ..train import LAST
from .config import ExperimentConfig, protocols


def taken(folder: Path) -> bool:
    """A run is saved in folder, or a training is writing one there now."""
    return holds_run(folder) or in_use(folder)


def default_out(dataset: str, resume: bool) -> Path:
    """runs/DATASET for the first run; a new run next to an earlier one (or next to a
    training still running) goes to the first free runs/DATASET-2, -3, ..., so nothing
    saved is replaced; --resume takes the newest of them."""
    base = Path("runs") / dataset
    numbered = sorted((int(p.name.rsplit("-", 1)[1]), p) for p in base.parent.glob(f"{dataset}-*")
                      if p.name.rsplit("-", 1)[1].isdigit())
    runs = [p for p in [base] + [p for _, p in numbered] if holds_run(p)]
    if resume:
        return runs[-1] if runs else base
    if not taken(base):
        return base
    n = max([1] + [i for i, p in numbered if taken(p)]) + 1
    return base.parent / f"{dataset}-{n}"


def out_problem(out: Path, data_dir) -> str | None:
    """Why --out cannot hold a run, from the path alone (before minutes of reading):
    a file, under a file, not writable, or inside the data it would be trained on."""
    problem = unusable_folder(out)
    if problem:
        return problem
    if data_dir is not None and inside(out, data_dir):
        return (f"--out {out} is inside --data-dir {data_dir}: the run's files (its plots are images) "
                "would mix with the data; choose an --out outside it")
    return None


def protocol_dir(config: ExperimentConfig, protocol: str) -> Path:
    """Where a protocol's run (or, with --cv, its pooled report) goes."""
    return Path(config.out) / protocol if config.protocol == "both" else Path(config.out)


def run_dir(config: ExperimentConfig, protocol: str, fold: int | None = None) -> Path:
    """Where one training writes its checkpoints: the protocol's folder, or with --cv
    its fold-N subfolder (1-based)."""
    base = protocol_dir(config, protocol)
    return base if fold is None else base / cv.FOLD_DIR.format(fold)


def training_dirs(config: ExperimentConfig) -> list[Path]:
    """Every training's folder of this run, in the order they train."""
    folds = range(1, config.cv + 1) if config.cv else [None]
    return [run_dir(config, p, f) for f in folds for p in protocols(config)]


def target_problem(config: ExperimentConfig) -> str | None:
    """Why a folder or file this run writes (its folders, lock files, checkpoints,
    metrics.json, plots) cannot be one, from os.stat before any work: a named pipe, a
    device, a socket, a file where a folder goes or a folder where a file goes. A named
    pipe is never opened (that would wait for a writer, forever). --cache-dir first:
    the cache is the first thing the run writes."""
    problem = cache_problem(config)
    if problem:
        return problem
    out = Path(config.out)
    for d in [out] + [out / sub for sub in locked_subfolders(config)]:
        kind = target_kind(d)
        if kind not in (None, "folder"):
            return f"--out: {d} is {'a file' if kind == 'file' else kind}, where this run needs a folder"
        for name in RUN_FILES + (LOCK_FILE,):
            kind = target_kind(d / name)
            if kind not in (None, "file"):
                return (f"--out: {d / name} is {kind}, where this run writes a file: remove it or choose "
                        "another --out")
    return None


def cache_problem(config: ExperimentConfig) -> str | None:
    """Why --cache-dir cannot be the cache's folder, from os.stat alone: a file, a named
    pipe, a device or a socket, or a path under one. The cache itself treats such a
    folder as costing speed only; named on the command line, it is a mistake better
    said before minutes of reading. A folder that is read-only stays allowed: a shared
    cache may be read without being written."""
    if config.cache_dir is None or config.no_cache:
        return None
    folder = Path(config.cache_dir)
    kind = target_kind(folder)
    if kind not in (None, "folder"):
        return (f"--cache-dir {folder} is {'a file' if kind == 'file' else kind}, not a folder: name a folder "
                "for the preprocessed arrays, or drop --cache-dir")
    existing = next((p for p in [folder.absolute(), *folder.absolute().parents] if target_kind(p) is not None), None)
    kind = None if existing is None else target_kind(existing)
    if kind not in (None, "folder"):
        return (f"--cache-dir {folder}: {existing} is {'a file' if kind == 'file' else kind}, so no folder can "
                "be made under it")
    return None


def locked_subfolders(config: ExperimentConfig) -> list[str]:
    """Every folder under --out this run writes (its protocol and fold folders) or
    tidies (the subfolders an earlier run left there), relative to --out: what its lock
    holds besides --out itself, so no other training writes any of them meanwhile."""
    out = Path(config.out)
    mine = {protocol_dir(config, p) for p in protocols(config)} | set(training_dirs(config))
    subs = {str(d.relative_to(out)) for d in mine} | set(subfolders(out))
    return sorted(subs - {"", "."})


def other_layout(config: ExperimentConfig) -> str | None:
    """Why --resume finds nothing where this run looks although --out holds a run of
    another layout (with --cv where none is asked, or the other way round)."""
    out = Path(config.out)
    roots = [out / p for p in ("patient", "paper")] + [out]
    has_folds = any(any(r.glob("fold-*/" + LAST)) for r in roots if r.is_dir())
    has_single = any((r / LAST).is_file() for r in roots)
    if has_folds and not config.cv:
        return f"{out} holds a --cv run (fold-N folders): resume it with the same --cv"
    if has_single and config.cv:
        return f"{out} holds a run without --cv: resume it without --cv"
    return None
