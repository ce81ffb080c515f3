"""Training one detector on a set of films: balanced batches of lesion and normal
windows (sampling.py), Adam with a cosine schedule, and rounds of hard-negative
mining: at set points of the run the current network scans its own training films
(fully convolutionally, cheap), and the normal-tissue windows it scores highest
(on the breast, clear of every mark, a few per film after non-maximum suppression)
become a share of the negatives from then on. That is what teaches a patch
classifier that the pectoral muscle, dense glandular tissue and the skin line are
not lesions.

Deterministic from (config.seed, a run key): the batches, the augmentation, the
initial weights and the dropout masks.

DetectorConfig is the one place for the detector's settings, the training, the
scan and the evaluation; a run's identity (resume) is its JSON.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from tinycnn import backends
from tinycnn.optim import Adam, CosineLR

from ..train import NonFiniteLoss
from .evaluate import nms
from .fcn import grid_centres
from .heatmap import grid_step, heat_map, padded_to_step
from .network import detector_net
from .sampling import WindowSampler, clear_of_marks


@dataclass
class DetectorConfig:
    """Everything a detection run depends on. Sides and radii in working pixels
    (800 microns at MIAS's quarter resolution)."""

    scale: int = 4  # full-resolution pixels per working pixel
    side: int = 62  # window side: exact for 4 blocks (16k + 30)
    widths: tuple = (16, 32, 64, 128)
    hidden: int = 128
    dropout: float = 0.5
    steps: int = 800  # 1000 gave 45.0% top-1 in 637 s on 2 cores: over the 10 minutes a run may take
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    jitter: float = 0.5  # positives: centre drawn in a disc of jitter x the mark's radius
    aug_zoom: float = 0.2  # windows rescaled by exp(U(-aug_zoom, aug_zoom))
    aug_contrast: float = 0.15  # breast pixels a x + b, a in 1 +- aug_contrast, b in +- aug_contrast
    hard_at: tuple = (0.25, 0.5, 0.75)  # fractions of the run after which hard negatives are mined
    hard_share: float = 0.6  # of the negatives, once mined
    hard_per_film: int = 16
    shifts: int = 2  # scan grid step = 16 / shifts working pixels
    mirrors: int = 2  # heat map averaged over the film and its left-right mirror
    mine_shifts: int = 2  # hard-negative mining grid: 16 / mine_shifts working pixels
    nms_radius: float = 120.0  # full-resolution film pixels (24 mm on MIAS)
    candidates: int = 20  # per film, after NMS
    folds: int = 5
    seed: int = 0

    def identity(self) -> dict:
        d = asdict(self)
        d["widths"], d["hard_at"] = list(self.widths), list(self.hard_at)
        return d


def mine_hard_negatives(net, sampler: WindowSampler, config: DetectorConfig) -> list[np.ndarray]:
    """Per training film, (M, 2) centres (working pixels, on the scan grid) of the
    normal windows the network scores highest: allowed negatives only, suppressed to
    one per nms_radius / 2, config.hard_per_film per film."""
    step = grid_step(net, config.mine_shifts)
    out = []
    for film in sampler.films:
        if not film.complete:
            out.append(np.zeros((0, 2), np.int64))
            continue
        odds = heat_map(net, film.image, config.mine_shifts, mirrors=0)
        rows, cols = grid_centres(padded_to_step(film.image, step).shape, step)
        h, w = film.mask.shape
        rr, cc = np.meshgrid(rows, cols, indexing="ij")
        rr, cc, s = rr.ravel(), cc.ravel(), odds.ravel().astype(np.float64)
        on = (rr < h) & (cc < w)
        allowed = film.mask & clear_of_marks(film, sampler.side)
        on[on] = allowed[rr[on], cc[on]]
        s = np.where(on, s, np.nan)
        idx = nms(s, rr, cc, config.nms_radius / film.scale / 2, config.hard_per_film)
        out.append(np.stack([rr[idx], cc[idx]], axis=1).astype(np.int64))
    return out


def train_detector(films: list, config: DetectorConfig, backend="numpy", run_key: int = 0, log=None):
    """A detector trained on films (Film) -> (net, history). history: per logged step
    {"step", "loss", "acc", "lr", "seconds"} and the mining rounds."""
    be = backends.get(backend)
    log = log or (lambda *a, **k: None)
    rng = np.random.default_rng([config.seed, run_key, 0xDE7EC7])
    net = detector_net(config.side, config.widths, config.hidden, dropout=config.dropout,
                       seed=config.seed * 1000 + run_key, backend=be)
    opt = Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay, backend=be)
    schedule = CosineLR(config.lr, total=max(1, config.steps), min_lr=config.lr * 0.02)
    sampler = WindowSampler(films, config.side, jitter=config.jitter, augment=True, hard_share=config.hard_share,
                            zoom=config.aug_zoom, contrast=config.aug_contrast)
    mine_at = sorted({int(round(f * config.steps)) for f in config.hard_at if 0 < f < 1})
    history, start = [], time.perf_counter()
    loss_sum, correct, seen = 0.0, 0, 0
    log_every = max(1, config.steps // 10)
    for step in range(config.steps):
        if step in mine_at:
            hard = mine_hard_negatives(net, sampler, config)
            sampler.set_hard(hard)
            history.append({"step": step, "mined": int(sum(len(h) for h in hard))})
        opt.lr = schedule(step)
        x, y, _ = sampler.draw(config.batch_size, rng)
        logits = net.forward(be.asarray(x), train=True)
        loss, dlogits = be.softmax_cross_entropy(logits, be.asarray(y))
        net.backward(dlogits)
        opt.step()
        loss = float(be.to_numpy(loss))
        if not math.isfinite(loss):
            raise NonFiniteLoss(f"detector training: the loss became {loss} at step {step + 1} of {config.steps} "
                                "(every finished fold is saved): lower --lr")
        loss_sum += loss * len(y)
        correct += int((be.to_numpy(logits).argmax(1) == y).sum())
        seen += len(y)
        if (step + 1) % log_every == 0 or step + 1 == config.steps:
            row = {"step": step + 1, "loss": loss_sum / seen, "acc": correct / seen, "lr": opt.lr,
                   "seconds": time.perf_counter() - start}
            history.append(row)
            log(f"  step {step + 1}/{config.steps}: loss {row['loss']:.4f}, accuracy {row['acc']:.3f}, "
                f"{row['seconds']:.0f} s")
            loss_sum, correct, seen = 0.0, 0, 0
    return net, history
