"""K-fold cross-validation by patient, and what is pooled from its folds.

A single 4:1 split of a hundred ROIs tests some 25 of them: its AUC interval is
about 0.45 wide, and another seed gives another number. K folds test every ROI
exactly once, each by a model that never saw that woman, and the out-of-fold
predictions are pooled into one AUC whose interval resamples patients.

- patient_folds: stratified group K-fold. Patients (not ROIs) are dealt to folds,
  stratified by whether a patient has a malignant ROI; each patient goes to the fold
  that holds the fewest ROIs of her class so far (in a seeded random order), so the
  folds come out balanced even when women carry different numbers of ROIs. Where that
  dealing leaves a fold without a benign or a malignant ROI (women with ROIs of both
  classes can do it), each fold is first given a woman of each class, then the rest
  are dealt the same way: every fold gets both classes whenever each class has at
  least K women, and with fewer no dealing can, which is the error.
- cv_splits: per fold, the patient protocol (train on the other folds' patients,
  augmented six ways; test on this fold's untransformed ROIs) and, on request, the
  paper's order on the same folds: every ROI augmented six ways, the untransformed
  copy tested in its patient fold, the five other copies dealt to folds at random
  (stratified), so each fold's test side holds the same originals plus copies whose
  siblings sit in training: the paper's leak, measured on the same women.
- pool: the out-of-fold predictions of every fold as one evaluation.

Every fold's patient split is asserted patient-disjoint (PatientLeak otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import metrics
from .data import augment
from .data.preprocess import DataError
from .data.split import Split, assert_patient_disjoint

FOLD_DIR = "fold-{}"  # 1-based, under the run folder (or its protocol folder)


def patient_folds(labels, patients, k: int, seed: int = 0) -> list[np.ndarray]:
    """ROI indices tested by each of k folds (every ROI in exactly one), whole patients
    per fold, stratified by patient label (1 if any of her ROIs is malignant), with
    both classes on the test and the training side of every fold. DataError when a
    class has fewer than k patients: then no dealing can give every fold both."""
    labels, patients = np.asarray(labels), np.asarray(patients).astype(str)
    uniq, inverse = np.unique(patients, return_inverse=True)
    inverse = inverse.reshape(-1)
    patient_label = np.zeros(len(uniq), dtype=np.int64)
    np.maximum.at(patient_label, inverse, labels)
    rois_of = np.bincount(inverse, minlength=len(uniq))
    has = [np.bincount(inverse[labels == cls], minlength=len(uniq)) > 0 for cls in (0, 1)]
    for cls, word in ((1, "malignant"), (0, "benign")):
        have = int(has[cls].sum())
        if have < 2:
            raise DataError(f"--cv {k}: only {have} patient(s) with a {word} ROI; cross-validation needs at least "
                            f"two (each fold tests one and trains on another): drop --cv")
        if have < k:
            raise DataError(f"--cv {k}: only {have} patient(s) with a {word} ROI; each fold needs at least one "
                            f"of them on its test side: lower --cv to {have} or below")
    rng = np.random.default_rng([seed, 0xC5F0])
    order = {cls: rng.permutation(np.flatnonzero(patient_label == cls)) for cls in (1, 0)}
    fold_of = _deal(order, rois_of, k)
    if not _every_fold_has_both(fold_of, has, k):
        fold_of = _deal(order, rois_of, k, first=_cover(order, has, rois_of, k))
    folds = [np.flatnonzero(fold_of[inverse] == f) for f in range(k)]
    check_folds(folds, labels, patients)
    return folds


def _deal(order: dict, rois_of: np.ndarray, k: int, first: dict | None = None) -> np.ndarray:
    """Fold of each patient: per class, the biggest patients first (ties in the seeded
    order), each to the fold holding the fewest ROIs of her class so far; `first`
    ({patient: fold}) are placed before the others."""
    first = first or {}
    fold_of = np.full(len(rois_of), -1, dtype=np.int64)
    for cls in (1, 0):
        load = np.zeros(k, dtype=np.int64)
        members = order[cls][np.argsort(-rois_of[order[cls]], kind="stable")]
        for p in [p for p in members if p in first] + [p for p in members if p not in first]:
            f = first[p] if p in first else int(np.argmin(load))  # ties: the lowest fold
            fold_of[p] = f
            load[f] += rois_of[p]
    return fold_of


def _every_fold_has_both(fold_of: np.ndarray, has: list, k: int) -> bool:
    """Every fold tests a patient with a benign ROI and one with a malignant ROI (so,
    with k >= 2, every training side holds both classes too: the other folds')."""
    return all(len(set(fold_of[has[cls]].tolist())) == k for cls in (0, 1))


def _cover(order: dict, has: list, rois_of: np.ndarray, k: int) -> dict:
    """{patient: fold} giving each fold a patient of each class: a patient with ROIs of
    both classes covers a fold alone, else one with benign and one with malignant ROIs.
    Possible whenever each class has k patients (the check made before), as then
    mixed + min(benign only, malignant only) >= k."""
    both, only = has[0] & has[1], {cls: has[cls] & ~has[1 - cls] for cls in (0, 1)}

    def biggest(mask):  # the seeded order, biggest patients first
        members = np.concatenate([order[1], order[0]])
        members = members[mask[members]]
        return list(members[np.argsort(-rois_of[members], kind="stable")])

    mixed, pure = biggest(both), {cls: biggest(only[cls]) for cls in (0, 1)}
    first = {}
    for f in range(k):
        if mixed:
            first[mixed.pop(0)] = f
        else:
            first[pure[0].pop(0)] = f
            first[pure[1].pop(0)] = f
    return first


def check_folds(folds, labels, patients) -> None:
    """Every ROI tested exactly once; no patient on both sides of any fold; both
    classes on both sides of every fold."""
    n = len(labels)
    tested = np.concatenate(folds) if folds else np.zeros(0, np.int64)
    if len(tested) != n or len(np.unique(tested)) != n:
        raise AssertionError("the folds do not test every ROI exactly once")
    for i, test in enumerate(folds):
        train = np.setdiff1d(np.arange(n), test)
        assert_patient_disjoint(patients, train, test)
        for side, rois in (("test", test), ("training", train)):
            present = set(np.asarray(labels)[rois].tolist())
            if present != {0, 1}:
                missing = "benign" if 0 not in present else "malignant"
                raise DataError(f"fold {i + 1}: the {side} side has no {missing} ROI; lower --cv")


def paper_folds(labels, folds, seed: int = 0) -> list[np.ndarray]:
    """The paper's order on the same folds: (ROI, transform) samples tested by each fold.
    The untransformed copy of an ROI is tested in its patient fold; its five other
    copies are dealt to folds in a seeded random order, stratified by label, each to
    the fold with the fewest samples of that class so far."""
    labels = np.asarray(labels)
    k, n = len(folds), len(labels)
    fold_of_roi = np.empty(n, dtype=np.int64)
    for f, rois in enumerate(folds):
        fold_of_roi[rois] = f
    samples = augment.expand(np.arange(n))
    fold_of = np.full(len(samples), -1, dtype=np.int64)
    originals = samples[:, 1] == 0
    fold_of[originals] = fold_of_roi[samples[originals, 0]]
    rng = np.random.default_rng([seed, 0xA9E, k])
    for cls in (0, 1):
        load = np.bincount(fold_of[originals & (labels[samples[:, 0]] == cls)], minlength=k)
        copies = rng.permutation(np.flatnonzero(~originals & (labels[samples[:, 0]] == cls)))
        for s in copies:
            f = int(np.argmin(load))
            fold_of[s] = f
            load[f] += 1
    return [samples[fold_of == f] for f in range(k)]


def cv_splits(protocols, labels, patients, k: int, seed: int = 0) -> list[dict]:
    """One {protocol: Split} per fold, for protocols among "patient" and "paper"."""
    labels = np.asarray(labels)
    folds = patient_folds(labels, patients, k, seed)
    paper = paper_folds(labels, folds, seed) if "paper" in protocols else None
    all_samples = augment.expand(np.arange(len(labels)))
    out = []
    for f, test_rois in enumerate(folds):
        splits = {}
        if "patient" in protocols:
            train_rois = np.setdiff1d(np.arange(len(labels)), test_rois)
            splits["patient"] = Split("patient", augment.expand(train_rois), augment.expand(test_rois, [0]))
        if paper is not None:
            test = paper[f]
            in_test = np.zeros(len(all_samples), dtype=bool)
            in_test[test[:, 0] * len(augment.TRANSFORMS) + test[:, 1]] = True
            train = all_samples[~in_test]
            leaked = int(np.isin(test[:, 0], train[:, 0]).sum())
            splits["paper"] = Split("paper", train, test, leaked_samples=leaked)
        out.append(splits)
    return out


@dataclass
class Pooled:
    """Out-of-fold predictions of one protocol: one row per test sample of every fold."""

    samples: np.ndarray  # (M, 2) (ROI index, transform)
    fold: np.ndarray  # (M,) 1-based fold that tested it
    probs: np.ndarray  # (M,) P(malignant)
    baseline: np.ndarray | None  # (M,) the pixel baseline's P(malignant), or None

    def labels(self, labels) -> np.ndarray:
        return np.asarray(labels)[self.samples[:, 0]]

    def groups(self, patients) -> np.ndarray:
        return np.asarray(patients).astype(str)[self.samples[:, 0]]


def pool(fold_results: list[dict]) -> Pooled:
    """fold_results: per fold {"samples", "probs", "baseline_probs" (or None)}."""
    samples = np.concatenate([r["samples"] for r in fold_results])
    fold = np.concatenate([np.full(len(r["samples"]), i + 1) for i, r in enumerate(fold_results)])
    probs = np.concatenate([r["probs"] for r in fold_results])
    has_base = all(r.get("baseline_probs") is not None for r in fold_results)
    base = np.concatenate([r["baseline_probs"] for r in fold_results]) if has_base else None
    return Pooled(samples, fold, probs, base)


def fold_summary(values) -> dict:
    """Mean and spread (sample standard deviation, min, max) of per-fold numbers; NaN
    folds (one class on a side) are left out and counted."""
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    return {"mean": float(v.mean()) if len(v) else float("nan"),
            "sd": float(v.std(ddof=1)) if len(v) > 1 else float("nan"),
            "min": float(v.min()) if len(v) else float("nan"), "max": float(v.max()) if len(v) else float("nan"),
            "folds": int(len(v))}


def pooled_report(pooled: Pooled, labels, patients, n_boot: int, seed: int) -> dict:
    """binary_report of the pooled out-of-fold predictions, the interval resampling
    patients; the baseline's pooled AUC beside it."""
    y, g = pooled.labels(labels), pooled.groups(patients)
    out = metrics.binary_report(y, pooled.probs, n_boot=n_boot, seed=seed, groups=g)
    if pooled.baseline is not None:
        base = metrics.binary_report(y, pooled.baseline, n_boot=n_boot, seed=seed, groups=g)
        out.update(baseline_auc=base["auc"], baseline_accuracy=base["accuracy"],
                   baseline=dict(base, method="logistic regression on pixels"))
    return out
