"""What a run leaves behind: metrics.json, the paper's figures as PNG (accuracy and loss
per epoch, ROC curve: Figures IV-VI) plus a confusion matrix, and the console's
Table III-style summary."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from tinycnn.paths import atomic_write

from .cli import shown

# What plot_curves, plot_roc and plot_confusion write into a run folder (no prefix).
PLOT_FILES = ("accuracy.png", "loss.png", "roc.png", "confusion_matrix.png")
PAPER_ROW = {"method": "CNN (paper, Table III, as published)", "data": "DDSM ROIs, augment-then-split",
             "accuracy": 0.9525, "auc": 0.98}


def _plt():
    import matplotlib

    if os.environ.get("MPLBACKEND", "").lower() != "agg":
        matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _clean(obj):
    """JSON without NaN (as null), without NumPy scalars, and with every text as
    cli.shown writes it: a file name is one field on one line in metrics.json too, and
    the bytes of a name that is not UTF-8 (lone surrogates, which strict JSON readers
    refuse) are \\xNN."""
    if isinstance(obj, str):
        return shown(obj)
    if isinstance(obj, dict):
        return {shown(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if not math.isfinite(float(obj)) else float(obj)
    return obj


def write_metrics(path, metrics: dict) -> None:
    """metrics.json, whole or not at all (tinycnn.paths.atomic_write); NaN as null."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(_clean(metrics), indent=2) + "\n")


def plot_curves(history: list, out_dir, prefix: str = "", title: str = "") -> list[Path]:
    """accuracy.png and loss.png: train and held-out values per epoch. title (the
    protocol, test side and seed) goes under each plot's name, so a copied plot still
    says which run it shows."""
    plt = _plt()
    out_dir, paths = Path(out_dir), []
    epochs = [h["epoch"] for h in history]
    for key, label in (("acc", "accuracy"), ("loss", "loss")):
        fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
        ax.plot(epochs, [h[f"train_{key}"] for h in history], "o-", label="training")
        ax.plot(epochs, [h[f"test_{key}"] for h in history], "s-", label="held-out")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(f"{label} per epoch" + (f", {title}" if title else ""), fontsize=8 if title else None)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        paths.append(out_dir / f"{prefix}{label}.png")
        fig.savefig(paths[-1])
        plt.close(fig)
    return paths


def plot_roc(curves: dict, out_dir, prefix: str = "", title: str = "ROC, held-out side",
             thin: dict | None = None) -> Path:
    """curves: name -> {"fpr", "tpr", "auc"}; one line each, with the chance diagonal.
    thin: more curves drawn as thin grey lines behind them (a --cv run's folds).
    title: name the protocol, the test side's size and the seed (a copied paper/roc.png
    must not pass for an honest one)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 4.8), dpi=120)
    for i, (name, c) in enumerate((thin or {}).items()):
        ax.plot(c["fpr"], c["tpr"], color="grey", lw=0.8, alpha=0.6,
                label=f"{len(thin)} folds (AUC {min(v['auc'] for v in thin.values()):.2f}-"
                      f"{max(v['auc'] for v in thin.values()):.2f})" if i == 0 else None)
    for name, c in curves.items():
        ax.plot(c["fpr"], c["tpr"], lw=2 if thin else 1.5, label=f"{name} (AUC {c['auc']:.3f})")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(title, fontsize=8 if "\n" in title or len(title) > 40 else None)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(out_dir) / f"{prefix}roc.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_fold_curves(histories: list, out_dir, prefix: str = "", title: str = "") -> list[Path]:
    """accuracy.png and loss.png of a --cv run: each fold's training and held-out curve
    (thin), and their mean per epoch (bold)."""
    plt = _plt()
    out_dir, paths = Path(out_dir), []
    for key, label in (("acc", "accuracy"), ("loss", "loss")):
        fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
        for side, colour, name in (("train", "C0", "training"), ("test", "C1", "held-out")):
            for h in histories:
                ax.plot([e["epoch"] for e in h], [e[f"{side}_{key}"] for e in h], color=colour, lw=0.7, alpha=0.4)
            n = min(len(h) for h in histories)
            mean = [float(np.mean([h[i][f"{side}_{key}"] for h in histories])) for i in range(n)]
            ax.plot(range(1, n + 1), mean, "o-", color=colour, label=f"{name} (mean of {len(histories)} folds)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(f"{label} per epoch" + (f", {title}" if title else ""), fontsize=8 if title else None)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out_dir / f"{prefix}{label}.png")
        fig.savefig(paths[-1])
        plt.close(fig)
    return paths


def plot_confusion(cm, out_dir, prefix: str = "", title: str = "") -> Path:
    plt = _plt()
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(3.8, 3.4), dpi=120)
    ax.imshow(cm, cmap="Blues")
    names = ["benign", "malignant"]
    ax.set_xticks([0, 1], names)
    ax.set_yticks([0, 1], names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(2):
        for j in range(2):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_title("confusion matrix (threshold 0.5)" + (f"\n{title}" if title else ""), fontsize=8 if title else None)
    fig.tight_layout()
    path = Path(out_dir) / f"{prefix}confusion_matrix.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def table_three(rows: list[dict]) -> str:
    """The paper's Table III layout: method, data, accuracy, AUC."""
    def pct(v):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}%"

    def num(v):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"

    cells = [(r["method"], r["data"], pct(r.get("accuracy")), num(r.get("auc"))
              + (f" [{r['auc_ci95'][0]:.3f}, {r['auc_ci95'][1]:.3f}]" if r.get("auc_ci95") else ""))
             for r in rows]
    head = ("method", "data", "accuracy", "AUC [95% CI]")
    widths = [max(len(head[i]), *(len(c[i]) for c in cells)) for i in range(4)]
    line = "-+-".join("-" * w for w in widths)
    fmt = lambda c: " | ".join(f"{c[i]:<{widths[i]}}" for i in range(4))  # noqa: E731
    return "\n".join([fmt(head), line] + [fmt(c) for c in cells])
