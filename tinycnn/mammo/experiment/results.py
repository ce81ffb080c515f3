"""What a run's trainings become: one result per protocol (with --cv, its folds pooled
into out-of-fold predictions with one AUC whose interval resamples patients, the
per-fold table beside it), the leak between the two protocols as a paired
difference, one prediction record per test sample, notes where the pixel baseline
beats the network, and the metrics.json record that holds them all."""

from __future__ import annotations

import numpy as np

from .. import cv, metrics, report
from .config import PROTOCOL_NAMES, ExperimentConfig
from .layout import protocol_dir
from .protocol import test_side


def pool_folds(config: ExperimentConfig, rois, protocol: str, folds: list[dict]) -> dict:
    """One protocol's folds as one result: pooled out-of-fold metrics (interval over
    patients), the per-fold table and its mean and spread, the plots."""
    pooled = cv.pool([f["_raw"] for f in folds])
    out = cv.pooled_report(pooled, rois.labels, rois.patients, n_boot=config.bootstrap, seed=config.seed)
    y = pooled.labels(rois.labels)
    fold_rows = [{k: f.get(k) for k in ("fold", "n", "patients", "accuracy", "auc", "auc_ci95", "sensitivity",
                                        "specificity", "baseline_auc", "best_epoch", "train_samples",
                                        "test_samples", "leaked_test_samples", "checkpoints")} for f in folds]
    out.update(protocol=protocol, test_samples=int(len(y)), leaked_test_samples=sum(f["leaked_test_samples"]
                                                                                    for f in folds),
               cv={"k": config.cv, "folds": fold_rows, "fold_auc": cv.fold_summary([f["auc"] for f in folds]),
                   "fold_accuracy": cv.fold_summary([f["accuracy"] for f in folds]),
                   **({"fold_baseline_auc": cv.fold_summary([f["baseline_auc"] for f in folds])}
                      if pooled.baseline is not None else {}),
                   "pooled": "out-of-fold predictions of every fold, one AUC; 95% interval by cluster bootstrap "
                             "over patients"},
               roc=dict(metrics.roc_points(y, pooled.probs), auc=out["auc"]),
               predictions=predictions(rois, {"_raw": {"samples": pooled.samples, "probs": pooled.probs}},
                                       pooled.fold))
    out["_raw"] = {"samples": pooled.samples, "probs": pooled.probs}
    curves = {"CNN, pooled": dict(out["roc"])}
    if pooled.baseline is not None:
        curves["pixel logistic regression, pooled"] = dict(metrics.roc_points(y, pooled.baseline),
                                                           auc=out["baseline_auc"])
    per_fold = {f"fold {f['fold']}": dict(f["roc"], auc=f["auc"]) for f in folds}
    where = protocol_dir(config, protocol)
    title = (f"{PROTOCOL_NAMES[protocol]}, {config.cv}-fold CV pooled\n{test_side(rois, pooled.samples)}; "
             f"seed {config.seed}")
    report.plot_roc(curves, where, title="ROC, " + title, thin=per_fold)
    report.plot_fold_curves([f["history"] for f in folds], where, title=title)
    report.plot_confusion(out["confusion_matrix"], where, title=title)
    return out


def predictions(rois, result: dict, fold_of=None) -> list[dict]:
    """One record per test sample: ROI id, patient, transform, label, P(malignant)."""
    raw = result["_raw"]
    out = []
    for k, (i, t) in enumerate(raw["samples"]):
        rec = {"roi": str(rois.ids[i]), "patient": str(rois.patients[i]), "transform": int(t),
               "label": int(rois.labels[i]), "p_malignant": float(raw["probs"][k])}
        if fold_of is not None:
            rec["fold"] = int(fold_of[k])
        out.append(rec)
    return out


def raw_arrays(rois, result: dict) -> tuple:
    """(labels, P(malignant), patients) of a result's test samples."""
    raw = result["_raw"]
    return rois.labels[raw["samples"][:, 0]], raw["probs"], rois.patients[raw["samples"][:, 0]]


def leak(config: ExperimentConfig, rois, results: dict) -> dict | None:
    """The paper's order minus the patient split, in AUC, with a paired interval that
    resamples patients (both AUCs on the same draw of women)."""
    if not {"patient", "paper"} <= set(results):
        return None
    out = metrics.paired_auc_difference(raw_arrays(rois, results["paper"]), raw_arrays(rois, results["patient"]),
                                        n_boot=config.bootstrap, seed=config.seed)
    out["what"] = "AUC of the paper's order (augment, then split) minus AUC of the patient split"
    if config.cv:
        out["what"] += f", pooled over the same {config.cv} folds"
    return out


def baseline_notes(results: dict) -> list[str]:
    """A line for each protocol whose pixel baseline scored at or above the CNN."""
    notes = []
    for protocol, r in results.items():
        b, c = r.get("baseline_auc"), r["auc"]
        if b is not None and np.isfinite(b) and np.isfinite(c) and b >= c:
            notes.append(f"note: on the {PROTOCOL_NAMES[protocol]} the pixel logistic regression (AUC {b:.3f}) "
                         f"scored at or above the CNN (AUC {c:.3f}): the CNN shows no gain over a linear model on "
                         "pixels here")
            r["baseline_beats_cnn"] = True
    return notes


def run_record(config: ExperimentConfig, rois, results: dict, meta: dict) -> dict:
    """metrics.json: the patient split's numbers first, every protocol's beside them,
    the leak between them, the folds with --cv, the data and the settings."""
    leak_record = leak(config, rois, results)
    notes = baseline_notes(results)
    if not config.cv:  # a single split's predictions: one record per test sample
        for r in results.values():
            r["predictions"] = predictions(rois, r)
    public = {p: {k: v for k, v in r.items() if k != "_raw"} for p, r in results.items()}
    record = dict(public.get("patient") or next(iter(public.values())))
    record.update(dataset={"name": config.dataset, "data_dir": config.data_dir, **rois.counts(),
                           "skipped": rois.skipped, "notes": rois.notes},
                  precision=meta["config"]["precision_resolved"], config=meta["config"],
                  preprocessing=meta["preprocessing"])
    if len(results) > 1:
        record["protocols"] = public
    if leak_record is not None:
        record["leak"] = leak_record
    if notes:
        record["notes"] = notes
    return record
