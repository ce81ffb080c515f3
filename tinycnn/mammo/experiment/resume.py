"""--resume, checked before any data is read: every training folder of the run that has
a checkpoint holds one of this architecture, of this --cv layout and of these
settings, judged from its records alone (no weights read). Whether it was trained on
the same data is checked later, by the training loop, from the data's fingerprint."""

from __future__ import annotations

from .. import memory
from ..train import LAST, ResumeError, config_identity, identity_differences
from tinycnn.checkpoint import CheckpointError, architecture_shapes, check_architecture, read_checkpoint
from .config import ExperimentConfig, train_config
from .layout import other_layout, training_dirs


def check_resume(config: ExperimentConfig) -> None:
    """CheckpointError (ResumeError for a run of other settings) when --resume has
    nothing to continue here or finds a checkpoint this run cannot continue."""
    dirs = training_dirs(config)
    found = [d / LAST for d in dirs if (d / LAST).is_file()]
    if not found:
        other = other_layout(config)
        if other:
            raise CheckpointError(f"nothing to resume with these options: {other}")
        shown = " or ".join(str(d / LAST) for d in dirs[:2]) + (f" (or {len(dirs) - 2} more)" if len(dirs) > 2 else "")
        raise CheckpointError(f"nothing to resume: {shown} does not exist")
    expected = memory.paper_architecture(config.hidden, config.image_size)
    for path in found:
        records = read_checkpoint(path, arrays=False)
        architecture_shapes(records["arch"], path)
        check_architecture(records["arch"], expected, path)
        folds = records["meta"].get("folds")
        if folds != config.cv:
            raise ResumeError(f"cannot resume from {path}: it is "
                              + (f"a fold of a --cv {folds} run" if folds else "a run without --cv")
                              + (f", and this run asks --cv {config.cv}" if config.cv else ", and this run has no --cv")
                              + ": give the same --cv")
        identity = records["meta"].get("identity", {})
        if not isinstance(identity, dict):
            raise CheckpointError(f"{path}: meta field 'identity' should be an object")
        diffs = identity_differences(identity, config_identity(train_config(config)))
        if diffs:
            raise ResumeError(f"cannot resume from {path}: this run differs in {diffs}")


def checkpoint_notes(config: ExperimentConfig) -> list[str]:
    """What reading the run's checkpoints will change (parameters stored as float16 or
    float64 converted to float32), from their members' headers, for the log."""
    return [line for d in training_dirs(config) if (d / LAST).is_file()
            for line in read_checkpoint(d / LAST, arrays=False)["notes"]]
