"""Evaluation metrics for a binary classifier (1 = malignant, the positive class).

ROC and AUC come from scikit-learn. The 95% confidence interval of the AUC is a
percentile bootstrap, seeded. Where the patient of every test sample is known (every
reader gives one), it is a cluster bootstrap: whole patients are resampled with
replacement, each bringing all of her ROIs (and, in the paper's order, all their
augmented copies), because two ROIs of one woman, or two rotations of one ROI, are
not independent evidence. Without patients it resamples the samples themselves.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def softmax_positive(logits: np.ndarray) -> np.ndarray:
    """P(class 1) from (N, 2) logits, computed stably in float64 on the host: a
    confident network's probabilities crowd against 1.0, where float32 (the backends'
    softmax) would turn distinct scores into ties and move the ROC."""
    logits = np.asarray(logits, dtype=np.float64)
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e[:, 1] / e.sum(axis=1)


def confusion(labels, probs, threshold: float = 0.5) -> np.ndarray:
    """[[TN, FP], [FN, TP]]: rows are the truth (benign, malignant), columns the call."""
    labels = np.asarray(labels).astype(int)
    pred = (np.asarray(probs) >= threshold).astype(int)
    cm = np.zeros((2, 2), dtype=np.int64)
    np.add.at(cm, (labels, pred), 1)
    return cm


def auc(labels, probs) -> float:
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return float("nan")  # undefined with one class
    return float(roc_auc_score(labels, probs))


def bootstrap_auc_ci(labels, probs, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> list[float]:
    """Percentile bootstrap interval of the AUC; resamples with one class are redrawn
    by skipping them (they have no AUC)."""
    labels, probs = np.asarray(labels), np.asarray(probs)
    if len(np.unique(labels)) < 2:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng([seed, 0xB007])
    n, values = len(labels), []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        if labels[idx].min() == labels[idx].max():
            continue
        values.append(roc_auc_score(labels[idx], probs[idx]))
    alpha = (1 - level) / 2
    return [float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))]


def weighted_auc(labels, probs, weights) -> float:
    """The AUC of a set in which sample i appears weights[i] times (ties count one half):
    what roc_auc_score gives on the duplicated set, without building it. NaN when the
    weighted set lacks a class."""
    labels, probs, weights = np.asarray(labels), np.asarray(probs, dtype=np.float64), np.asarray(weights, float)
    _, level = np.unique(probs, return_inverse=True)
    pos = np.bincount(level, weights=weights * (labels == 1))
    neg = np.bincount(level, weights=weights * (labels == 0))
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    below = np.cumsum(neg) - neg  # negatives scored strictly lower than each level
    return float(np.sum(pos * (below + 0.5 * neg)) / (n_pos * n_neg))


def _group_index(groups) -> tuple[np.ndarray, int]:
    """(index of each sample's group in 0..G-1, G); groups numbered in sorted order."""
    uniq, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    return inverse.reshape(-1), len(uniq)


def cluster_bootstrap_aucs(labels, probs, groups, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """AUCs of n_boot cluster-bootstrap resamples: G groups (patients) drawn with
    replacement from the G present, each bringing all of its samples as often as it
    was drawn. Resamples that hold one class only (no AUC) are left out. With one
    sample per group, numbered in sample order, the draws are those of
    bootstrap_auc_ci (same generator), so the two agree exactly."""
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    index, n_groups = _group_index(groups)
    rng = np.random.default_rng([seed, 0xB007])
    values = []
    for _ in range(n_boot):
        counts = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
        value = weighted_auc(labels, probs, counts[index])
        if not np.isnan(value):
            values.append(value)
    return np.array(values)


def _interval(values, level: float) -> list[float]:
    if len(values) == 0:
        return [float("nan"), float("nan")]
    alpha = (1 - level) / 2
    return [float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))]


def cluster_bootstrap_auc_ci(labels, probs, groups, n_boot: int = 1000, seed: int = 0,
                             level: float = 0.95) -> list[float]:
    """Percentile interval of the AUC from a bootstrap that resamples groups (patients)."""
    if len(np.unique(np.asarray(labels))) < 2:
        return [float("nan"), float("nan")]
    return _interval(cluster_bootstrap_aucs(labels, probs, groups, n_boot, seed), level)


def paired_auc_difference(a, b, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """AUC(a) - AUC(b) with a paired cluster-bootstrap interval. a and b are
    (labels, probs, groups) of two evaluations of the same patients (e.g. the paper's
    order and the patient split on the same folds). Each resample draws patients from
    the union of both sides' patients and computes both AUCs on the same draw, so what
    the two share (which women are easy) cancels out of the difference."""
    (ya, pa, ga), (yb, pb, gb) = [(np.asarray(y), np.asarray(p, dtype=np.float64), np.asarray(g).astype(str))
                                  for y, p, g in (a, b)]
    uniq = np.unique(np.concatenate([ga, gb]))
    ia, ib = np.searchsorted(uniq, ga), np.searchsorted(uniq, gb)
    diff = auc(ya, pa) - auc(yb, pb)
    rng = np.random.default_rng([seed, 0xD1FF])
    values = []
    for _ in range(n_boot):
        counts = np.bincount(rng.integers(0, len(uniq), len(uniq)), minlength=len(uniq))
        value = weighted_auc(ya, pa, counts[ia]) - weighted_auc(yb, pb, counts[ib])
        if not np.isnan(value):
            values.append(value)
    return {"auc_difference": float(diff), "ci95" if level == 0.95 else f"ci{level:g}": _interval(values, level),
            "patients": int(len(uniq)), "resamples": int(len(values)),
            "method": f"paired cluster bootstrap over {len(uniq)} patients ({len(values)} resamples)"}


def binary_report(labels, probs, threshold: float = 0.5, n_boot: int = 1000, seed: int = 0,
                  groups=None) -> dict:
    """Accuracy, AUC (+ bootstrap CI), sensitivity, specificity and the confusion matrix.
    groups (the patient of each sample): the interval resamples patients instead of
    samples (cluster bootstrap)."""
    labels, probs = np.asarray(labels).astype(int), np.asarray(probs, dtype=np.float64)
    cm = confusion(labels, probs, threshold)
    (tn, fp), (fn, tp) = cm
    if groups is None:
        ci = bootstrap_auc_ci(labels, probs, n_boot=n_boot, seed=seed)
        method = f"bootstrap over the {len(labels)} test samples"
    else:
        ci = cluster_bootstrap_auc_ci(labels, probs, groups, n_boot=n_boot, seed=seed)
        method = f"cluster bootstrap over the {_group_index(groups)[1]} test patients"
    return {
        "n": int(len(labels)),
        **({} if groups is None else {"patients": _group_index(groups)[1]}),
        "accuracy": float((tn + tp) / max(cm.sum(), 1)),
        "auc": auc(labels, probs),
        "auc_ci95": ci,
        "ci_method": method,
        "sensitivity": float(tp / (tp + fn)) if tp + fn else float("nan"),
        "specificity": float(tn / (tn + fp)) if tn + fp else float("nan"),
        "threshold": float(threshold),
        "confusion_matrix": cm.tolist(),
    }


def roc_points(labels, probs) -> dict:
    fpr, tpr, _ = roc_curve(np.asarray(labels), np.asarray(probs))
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}


def pixel_baseline(images, labels, train_samples, test_samples, seed: int = 0, max_side: int = 64,
                   max_train: int = 20000) -> np.ndarray:
    """The reference point beside the CNN: L2-regularised logistic regression on the
    raw (preprocessed) pixels, trained on the same training samples (augmented the
    same way) and returning P(malignant) for the test samples. Images larger than
    max_side are block-averaged down to it, and at most max_train samples are used,
    to keep it cheap at 256x256; a linear model gains nothing from more pixels."""
    from sklearn.linear_model import LogisticRegression

    from .data import augment

    def features(samples):
        x = augment.gather(images, samples)[:, 0]
        f = max(1, int(np.ceil(x.shape[-1] / max_side)))
        if f > 1:
            h = (x.shape[-1] // f) * f
            x = x[:, :h, :h].reshape(len(x), h // f, f, h // f, f).mean(axis=(2, 4))
        return x.reshape(len(x), -1)

    rng = np.random.default_rng([seed, 0xBA5E])
    train_samples = np.asarray(train_samples)
    if len(train_samples) > max_train:
        train_samples = train_samples[np.sort(rng.choice(len(train_samples), max_train, replace=False))]
    y = np.asarray(labels)[train_samples[:, 0]]
    model = LogisticRegression(C=0.01, max_iter=300)
    model.fit(features(train_samples), y)
    return model.predict_proba(features(np.asarray(test_samples)))[:, 1]
