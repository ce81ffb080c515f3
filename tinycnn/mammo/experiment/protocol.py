"""One training of an experiment: the network trained on one split (one protocol, one
fold of it with --cv) into its folder, then evaluated on the held-out side: metrics
with an interval that resamples the test patients, the pixel baseline beside them,
and the paper's figures. What can stop a training is said in one line here, naming
its folder; the folder's name goes through cli.shown wherever it is written, so a
name holding a newline cannot start a line of the log."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .. import metrics, report
from ..cli import shown
from ..data.split import PAPER_WARNING
from ..train import LAST, Trainer
from tinycnn.checkpoint import CheckpointError
from tinycnn.model import paper_net
from tinycnn.optim import make_optimizer
from .config import PROTOCOL_NAMES, ExperimentConfig, show_progress, train_config
from .task import ExperimentError, ExperimentInterrupted, Run


def new_net(config: ExperimentConfig, backend):
    """The run's network, freshly initialised from --seed (every protocol starts from it)."""
    return paper_net(hidden=config.hidden, in_size=config.image_size, backend=backend, seed=config.seed)


def test_side(rois, samples) -> str:
    """'28 ROIs, 25 patients' or '143 samples of 89 ROIs, 80 patients', for titles."""
    n_rois = len(np.unique(samples[:, 0]))
    patients = len(np.unique(rois.patients[samples[:, 0]]))
    head = f"{n_rois} ROIs" if n_rois == len(samples) else f"{len(samples)} samples of {n_rois} ROIs"
    return f"{head}, {patients} patients"


def train_split(run: Run, rois, split, out_dir: Path, net, meta: dict, fold: int | None = None) -> dict | None:
    """Train `net` on one split into out_dir and evaluate it: its metrics, or None if
    Ctrl-C or SIGTERM stopped it after saving. NonFiniteLoss (the training loop's) when
    the loss diverged; ExperimentError or ExperimentInterrupted, one line naming what is
    on disk, for anything else that stops it."""
    if split.protocol == "paper" and fold in (None, 1):
        run.warn(PAPER_WARNING)
    if split.protocol == "paper":
        run.warn(f"         {split.leaked_samples} of {len(split.test)} test samples are copies of ROIs "
                 f"that are also in training")
    run.log(f"-- protocol {split.protocol}" + (f", fold {fold}/{run.config.cv}" if fold else "")
            + f": training into {shown(out_dir)}")
    try:
        return _train_and_evaluate(run, rois, split, out_dir, net, meta, fold)
    except CheckpointError as e:
        raise ExperimentError(str(e)) from e
    except MemoryError as e:
        raise ExperimentError(f"ran out of memory training into {shown(out_dir)}; the last checkpoint on disk is "
                              "intact: lower --batch-size, --hidden or --image-size") from e
    except OSError as e:  # out folder not writable, disk full, ...: what was saved before stays
        raise ExperimentError(f"cannot write the run to {shown(out_dir)}: {shown(e)}") from e
    except KeyboardInterrupt as e:
        # a second Ctrl-C in training, or one while the report is made: nothing half-written
        raise ExperimentInterrupted("interrupted: the last checkpoint on disk is intact; --resume continues the run "
                                    "(or writes the report of a finished one)") from e


def _train_and_evaluate(run: Run, rois, split, out_dir: Path, net, meta: dict, fold: int | None) -> dict | None:
    """The training, then its report. The AUC interval resamples the test patients; the
    returned dict holds the raw predictions under "_raw" (not written to JSON). Every
    line the training loop logs is one line (an epoch, a resume, a note naming a
    checkpoint), so each goes through cli.shown whole: a checkpoint's path is one field."""
    config = run.config
    opt = make_optimizer(config.optimizer, net, config.lr)
    where = f"protocol {split.protocol}" + (f", fold {fold}/{config.cv}" if fold else "")
    trainer = Trainer(net, opt, rois.images, rois.labels, split.train, split.test, train_config(config), out_dir,
                      meta=dict(meta, protocol=split.protocol, **({"fold": fold, "folds": config.cv} if fold else {})),
                      progress=show_progress(config), log=lambda line: run.log(shown(line)), on_save=run.on_save)
    if config.resume and (Path(out_dir) / LAST).exists():
        trainer.resume(Path(out_dir) / LAST)
    elif config.resume:  # stopped before this protocol (or fold) saved anything
        run.log(f"nothing saved for {where} yet: it starts from the beginning")
    result = trainer.fit()
    if result.status != "done":
        return None
    y_test = rois.labels[split.test[:, 0]]
    groups = rois.patients[split.test[:, 0]]
    probs = result.probs
    out = metrics.binary_report(y_test, probs, n_boot=config.bootstrap, seed=config.seed, groups=groups)
    out.update(protocol=split.protocol, history=result.history, best_epoch=result.best_epoch,
               best_heldout_auc=max((h["test_auc"] for h in result.history), default=float("nan")),
               train_samples=int(len(split.train)), test_samples=int(len(split.test)),
               leaked_test_samples=split.leaked_samples,
               checkpoints={"last": str(result.last_path), "best": str(result.best_path) if result.best_path else None})
    if fold:
        out["fold"] = fold
    curves = {"CNN": dict(metrics.roc_points(y_test, probs), auc=out["auc"])}
    base = None
    if not config.no_baseline:
        t0 = time.time()
        base = metrics.pixel_baseline(rois.images, rois.labels, split.train, split.test, seed=config.seed)
        base_report = metrics.binary_report(y_test, base, n_boot=config.bootstrap, seed=config.seed, groups=groups)
        out.update(baseline_auc=base_report["auc"], baseline_accuracy=base_report["accuracy"],
                   baseline=dict(base_report, method="logistic regression on pixels",
                                 seconds=round(time.time() - t0, 1)))
        curves["pixel logistic regression"] = dict(metrics.roc_points(y_test, base), auc=base_report["auc"])
    out["roc"] = curves["CNN"]
    title = (f"{PROTOCOL_NAMES[split.protocol]}" + (f", fold {fold}/{config.cv}" if fold else "")
             + f"\n{test_side(rois, split.test)}; seed {config.seed}")
    report.plot_curves(result.history, out_dir, title=title)
    report.plot_roc(curves, out_dir, title="ROC, " + title)
    report.plot_confusion(out["confusion_matrix"], out_dir, title=title)
    out["_raw"] = {"samples": split.test, "probs": probs, "baseline_probs": base}
    return out
