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

from pathlib import Path

from tinycnn.checkpoint import CheckpointError, read_checkpoint

from .training import DetectorConfig

TASK = "detect"
MODEL_FILE = "detector.npz"


class NotADetector(CheckpointError):
    """A checkpoint that is not a lesion detector (e.g. the benign/malignant classifier)."""


def detector_config(meta: dict, path) -> DetectorConfig:
    """The DetectorConfig a detector's meta record holds; NotADetector for any other
    checkpoint (naming what it is, when it says)."""
    if not isinstance(meta, dict) or meta.get("task") != TASK or not isinstance(meta.get("detector"), dict):
        what = "a benign/malignant ROI classifier" if isinstance(meta, dict) and (
            "preprocessing" in meta or meta.get("task") in (None, "classify")) else "not a detector"
        raise NotADetector(f"{path}: {what} (its meta record has no task 'detect'): a lesion detector is trained "
                           "with --task detect; an ROI classifier scores benign against malignant on lesion crops "
                           "and cannot say where a lesion is")
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
