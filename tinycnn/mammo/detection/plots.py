"""Pictures of a detection run, as PNG files (matplotlib's Agg backend: files only).

- froc.png: sensitivity against false positives per film (log axis), the detector's
  pooled curve beside the brightest-window baseline, the 0.5 / 1 / 2 / 4 points
  marked.
- heatmaps/REF.png: a held-out film in grey with its lesion probability heat map
  (the sigmoid of the log-odds) laid over the breast, every mark drawn as its circle
  and the first three candidates numbered.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinycnn.paths import atomic_write

from .evaluate import FP_RATES, rate_key


def _plt():
    from ..report import _plt as plt_agg

    return plt_agg()


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)
    return path


def plot_froc(curves: dict, path, title: str = "FROC, held-out films") -> Path:
    """curves: {label: {"fp_per_film": [...], "sensitivity": [...], "points": {rate key: s}}}."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, c in curves.items():
        fp, s = np.asarray(c["fp_per_film"]), np.asarray(c["sensitivity"])
        keep = fp > 0
        line, = ax.step(np.r_[fp[keep]], np.r_[s[keep]], where="post", label=label)
        pts = c.get("points") or {}
        xs = [r for r in FP_RATES if rate_key(r) in pts]
        ax.plot(xs, [pts[rate_key(r)] for r in xs], "o", color=line.get_color())
    ax.set_xscale("log")
    ax.set_xlim(0.1, 10)
    ax.set_ylim(0, 1)
    ax.set_xlabel("false positives per film")
    ax.set_ylabel("sensitivity (marked lesions found)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = _save(fig, Path(path))
    plt.close(fig)
    return out


def plot_heatmap(film, heat: np.ndarray, step: int, candidates: np.ndarray, path, title: str = "") -> Path:
    """film (Film), heat (R, C) log-odds on a grid of `step` working pixels, candidates
    (K, 3) full-resolution (row, col, score)."""
    plt = _plt()
    h, w = film.image.shape
    prob = 1.0 / (1.0 + np.exp(-np.clip(heat.astype(np.float64), -30, 30)))
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(film.image, cmap="gray", vmin=-3, vmax=3, extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    shown = np.ma.masked_where(~_cell_mask(film, heat.shape, step), prob)
    r, c = heat.shape
    ax.imshow(shown, cmap="inferno", vmin=0, vmax=1, alpha=0.5, interpolation="nearest",
              extent=(-step / 2, (c - 0.5) * step, (r - 0.5) * step, -step / 2))
    for m in film.marks:
        mr, mc = film.to_work(m.row, m.col)
        ax.add_patch(plt.Circle((float(mc), float(mr)), max(m.radius / film.scale, 1.5), fill=False,
                                color="cyan", lw=1.5))
    for k, (cr, cc, _) in enumerate(np.asarray(candidates)[:3]):
        wr, wc = film.to_work(cr, cc)
        ax.plot(float(wc), float(wr), "+", color="lime", ms=12, mew=2)
        ax.text(float(wc) + 4, float(wr) - 4, str(k + 1), color="lime", fontsize=9)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_axis_off()
    ax.set_title(title or film.ref, fontsize=9)
    fig.tight_layout()
    out = _save(fig, Path(path))
    plt.close(fig)
    return out


def _cell_mask(film, shape, step: int) -> np.ndarray:
    """(R, C) bool: grid cells whose centre lies on the breast."""
    h, w = film.mask.shape
    a = np.arange(shape[0]) * step
    b = np.arange(shape[1]) * step
    on = (a[:, None] < h) & (b[None, :] < w)
    out = np.zeros(shape, dtype=bool)
    out[on] = film.mask[np.minimum(a, h - 1)[:, None].repeat(shape[1], 1)[on],
                        np.minimum(b, w - 1)[None, :].repeat(shape[0], 0)[on]]
    return out
