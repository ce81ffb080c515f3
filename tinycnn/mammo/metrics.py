"""Evaluation metrics for a binary classifier (1 = malignant, the positive class).

ROC and AUC come from scikit-learn; the 95% confidence interval of the AUC is a
percentile bootstrap over the test ROIs (resampled with replacement, seeded).
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


def binary_report(labels, probs, threshold: float = 0.5, n_boot: int = 1000, seed: int = 0) -> dict:
    """Accuracy, AUC (+ bootstrap CI), sensitivity, specificity and the confusion matrix."""
    labels, probs = np.asarray(labels).astype(int), np.asarray(probs, dtype=np.float64)
    cm = confusion(labels, probs, threshold)
    (tn, fp), (fn, tp) = cm
    return {
        "n": int(len(labels)),
        "accuracy": float((tn + tp) / max(cm.sum(), 1)),
        "auc": auc(labels, probs),
        "auc_ci95": bootstrap_auc_ci(labels, probs, n_boot=n_boot, seed=seed),
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
