"""Detector checkpoints: what makes a checkpoint a detector, loading one, and the
fold checkpoints of a detection run folder.

A detector checkpoint is a Sequential checkpoint (tinycnn.checkpoint) whose meta
record says task "detect" and holds the DetectorConfig it was trained with (scale,
window, grid, mirrors, NMS) and, for a fold of a cross-validation run, the films it
held out. A benign/malignant ROI classifier has no such record: used as a detector
its "lesion" logit would be the malignant one, which says nothing about where a
lesion is, so load_detector refuses it with an error that says what it is.
"""

from __future__ import annotations

import math
from pathlib import Path

from tinycnn.checkpoint import CheckpointError, read_checkpoint

from .heatmap import MIRRORS
from .training import DetectorConfig

TASK = "detect"
MODEL_FILE = "detector.npz"


class NotADetector(CheckpointError):
    """A checkpoint that is not a lesion detector (e.g. the benign/malignant classifier)."""


def _whole(value, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def settings_problem(d: dict) -> str | None:
    """The first setting a scan reads that no training run writes (a damaged, hand-edited
    or hostile meta record), checked in the record itself: a DetectorConfig would take
    any value and fail deep inside a scan. None when all are usable."""
    widths, shifts, nms = d.get("widths"), d.get("shifts"), d.get("nms_radius")
    rules = {
        "scale": _whole(d.get("scale"), 1),
        "side": _whole(d.get("side"), 2) and d.get("side") % 2 == 0,
        "widths": isinstance(widths, list) and bool(widths) and all(_whole(w, 1) for w in widths),
        "shifts": _whole(shifts, 1) and isinstance(widths, list) and (2 ** len(widths)) % shifts == 0,
        "mirrors": _whole(d.get("mirrors"), 0) and d.get("mirrors") in (0, 1) + tuple(MIRRORS),
        "nms_radius": isinstance(nms, (int, float)) and not isinstance(nms, bool) and math.isfinite(nms) and nms >= 0,
        "candidates": _whole(d.get("candidates"), 1),
    }
    return next((key for key, ok in rules.items() if not ok), None)


def detector_config(meta: dict, path) -> DetectorConfig:
    """The DetectorConfig a detector's meta record holds; NotADetector for any other
    checkpoint (naming what it is, when it says), CheckpointError naming the setting
    for a detector whose record is damaged."""
    if isinstance(meta, dict) and meta.get("task") == TASK and not isinstance(meta.get("detector"), dict):
        raise CheckpointError(f"{path}: its meta record says task 'detect' but holds no detector settings: a "
                              "damaged detector checkpoint")
    if not isinstance(meta, dict) or meta.get("task") != TASK:
        what = "a benign/malignant ROI classifier" if isinstance(meta, dict) and (
            "preprocessing" in meta or meta.get("task") in (None, "classify")) else "not a detector"
        raise NotADetector(f"{path}: {what} (its meta record has no task 'detect'): a lesion detector is trained "
                           "with --task detect; an ROI classifier scores benign against malignant on lesion crops "
                           "and cannot say where a lesion is")
    bad = settings_problem(meta["detector"])
    if bad:
        found = "nothing" if bad not in meta["detector"] else repr(meta["detector"][bad])
        raise CheckpointError(f"{path}: detector setting {bad!r} in its meta record is unusable (found {found}): a "
                              "damaged or foreign detector checkpoint")
    fields = DetectorConfig.__dataclass_fields__
    stored = {k: v for k, v in meta["detector"].items() if k in fields}
    for key in ("widths", "hard_at"):
        if key in stored:
            stored[key] = tuple(stored[key])
    try:
        return DetectorConfig(**stored)
    except TypeError as e:
        raise CheckpointError(f"{path}: detector settings cannot be read ({e})") from e


def load_detector(path, backend="numpy"):
    """(net, config, meta) of a detector checkpoint; NotADetector before any weights are
    loaded when the checkpoint is something else."""
    from tinycnn.model import load_model

    meta = read_checkpoint(path)["meta"]
    config = detector_config(meta, path)
    net, info = load_model(path, backend=backend)
    if net.input_shape != (1, config.side, config.side):
        raise CheckpointError(f"{path}: the network's input {net.input_shape} is not the recorded window "
                              f"{config.side} x {config.side}")
    return net, config, info["meta"]


def fold_checkpoints(run_dir) -> list[Path]:
    """fold-1/detector.npz, fold-2/... of a detection run folder, in fold order."""
    run = Path(run_dir)
    found = sorted(run.glob(f"fold-*/{MODEL_FILE}"), key=lambda p: int(p.parent.name.split("-")[1]))
    if not found:
        raise CheckpointError(f"{run}: no fold-N/{MODEL_FILE} (not a detection run folder of --task detect --cv K)")
    return found
