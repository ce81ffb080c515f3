"""The training loop: epochs of shuffled, augmented batches (built ahead of the step by
tinycnn.mammo.batches), evaluation on the held-out side after every epoch, last and
best checkpoints, exact resume, NaN detection and a clean stop on Ctrl-C (or SIGTERM,
what `timeout` and batch schedulers send).

Reproducibility: the order of epoch e is a permutation drawn from (seed, e) alone,
dropout masks come from counters kept in the model, the learning rate is a function
of the global step, and a checkpoint stores the optimizer buffers, the position
(epoch, batch) and the running sums of the current epoch. So a run stopped anywhere
and resumed reaches bit for bit the weights of an uninterrupted run (on the NumPy
backend, whose arithmetic is deterministic). A checkpoint also records a fingerprint
of the data (the preprocessed images and labels), so --resume on other data is
refused instead of mixing two datasets in one history.
"""

from __future__ import annotations

import hashlib
import math
import signal
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import metrics, progress
from .batches import BatchLoader
from .data import augment
from tinycnn.backends.contract import STAT_LAYOUT, new_step_stats
from tinycnn.checkpoint import CheckpointError
from tinycnn.optim import ConstantLR, CosineLR

LAST, BEST = "last.npz", "best.npz"


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; training stopped before applying that step."""


class ResumeError(CheckpointError):
    """A checkpoint that cannot continue this run (other data, seed or settings)."""


@dataclass
class TrainConfig:
    epochs: int = 8
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 1e-3
    lr_schedule: str = "cosine"  # or "constant"
    seed: int = 0
    eval_batch_size: int = 128

    def schedule(self, steps_per_epoch: int):
        if self.lr_schedule == "constant":
            return ConstantLR(self.lr)
        if self.lr_schedule == "cosine":
            return CosineLR(self.lr, total=max(1, self.epochs * steps_per_epoch), min_lr=self.lr * 0.02)
        raise ValueError(f"unknown lr schedule {self.lr_schedule!r}; choose constant or cosine")


@dataclass
class TrainState:
    epoch: int = 0  # the epoch in progress (0-based)
    batch: int = 0  # the next batch of that epoch
    global_step: int = 0
    loss_sum: float = 0.0  # running sums of the epoch in progress
    correct: int = 0
    seen: int = 0
    history: list = field(default_factory=list)
    best_auc: float = -1.0
    best_epoch: int = 0


@dataclass
class TrainResult:
    status: str  # "done" or "interrupted"
    history: list
    best_epoch: int
    last_path: Path
    best_path: Path | None
    probs: np.ndarray | None = None  # the final model's P(malignant) on the test samples


def samples_digest(samples: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(samples, dtype=np.int64).tobytes()).hexdigest()[:16]


def data_digest(images: np.ndarray, labels: np.ndarray) -> str:
    """A fingerprint of the preprocessed data: its shape, pixels and labels. It follows
    the content, not the paths, so the same files copied elsewhere still resume, while
    another folder, changed files or another preprocessing do not."""
    h = hashlib.sha256(repr((images.shape, str(images.dtype))).encode())
    h.update(memoryview(np.ascontiguousarray(images)).cast("B"))  # no copy: ~1 s per GB
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def config_identity(config: "TrainConfig") -> dict:
    """The settings a checkpoint must share with a run to continue it."""
    c = config
    return {"seed": c.seed, "batch_size": c.batch_size, "optimizer": c.optimizer, "lr": c.lr,
            "lr_schedule": c.lr_schedule}


def identity_differences(found: dict, expected: dict) -> str:
    """'key: checkpoint X, now Y' for each key of expected that the checkpoint's identity
    record holds differently; empty when none does."""
    return ", ".join(f"{k}: checkpoint {found.get(k)!r}, now {v!r}" for k, v in expected.items() if found.get(k) != v)


HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "test_auc", "lr", "steps")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _meta_field(meta: dict, name: str, ok, rule: str, path, default):
    """meta[name] if it passes ok(), the default if absent; else a CheckpointError that
    names the field (hand-edited and foreign checkpoints land here)."""
    if name not in meta:
        return default
    value = meta[name]
    if not ok(value):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise CheckpointError(f"{path}: meta field {name!r} should be {rule}, found {shown}")
    return value


def _history_ok(history) -> bool:
    return isinstance(history, list) and all(
        isinstance(h, dict) and all(_is_number(h.get(k)) for k in HISTORY_KEYS) for h in history)


class _StopFlag:
    """First Ctrl-C asks the loop to stop after the current step (and save); a second
    one interrupts at once. SIGTERM (what `timeout`, `kill` and batch schedulers send)
    counts as Ctrl-C, so a run stopped that way saves too."""

    SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        name = self.SIGNALS.get(signum, "signal")
        print(f"\n{name}: stopping after this step and saving a checkpoint (Ctrl-C again to abort)",
              file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}


class Trainer:
    """Trains `net` with `optimizer` on images[train samples], evaluating on the test
    samples. `meta` (JSON-able: preprocessing settings, configuration, dataset) is
    stored in every checkpoint; on_save(path) is called after each checkpoint is on
    disk (the app lets an --overwrite'd run go once the new run has one)."""

    def __init__(self, net, optimizer, images, labels, train_samples, test_samples, config: TrainConfig,
                 out_dir, meta: dict | None = None, progress: bool = True, log=print, on_save=None):
        self.net, self.opt, self.config = net, optimizer, config
        self.images, self.labels = images, np.asarray(labels, dtype=np.int64)
        self.train_samples, self.test_samples = np.asarray(train_samples), np.asarray(test_samples)
        self.out_dir = Path(out_dir)
        self.meta = dict(meta or {})
        self.progress, self.log = progress, log
        self.state = TrainState()
        # a batch larger than the training side is that side, as data loaders do (and as
        # slicing gave before): config.batch_size stays what a checkpoint must match
        self.batch_size = max(1, min(config.batch_size, len(self.train_samples)))
        self.steps_per_epoch = math.ceil(len(self.train_samples) / self.batch_size)
        self.lr_at = config.schedule(self.steps_per_epoch)
        self.stop_after_steps: int | None = None  # tests: act as if Ctrl-C came after this global step
        self.on_save = on_save  # called with each checkpoint's path once it is on disk
        self._data_digest: str | None = None  # computed once, when first needed
        # The step never waits for the host: its loss and accuracy go to step statistics
        # on the backend, read every few steps (collect_stats); on a GPU the step itself
        # is a captured CUDA graph after its first two calls (backend.capture).
        be = net.backend
        self._stats = be.asarray(new_step_stats())
        self._pending: list[int] = []  # batch sizes of the steps not yet collected
        self._step = be.capture(self._device_step)
        self._copier = be.batch_copier()

    # ------------------------------------------------------------ checkpoints
    def _identity(self) -> dict:
        """What must match for a checkpoint to continue this run."""
        if self._data_digest is None:
            self._data_digest = data_digest(self.images, self.labels)
        return dict(config_identity(self.config), train_samples=samples_digest(self.train_samples),
                    test_samples=samples_digest(self.test_samples), data=self._data_digest)

    def save(self, path: Path) -> None:
        extra = {f"opt.{k}": v for k, v in self.opt.state_arrays().items()}
        s = self.state
        extra["position"] = np.array([s.epoch, s.batch, s.global_step, s.correct, s.seen], dtype=np.int64)
        extra["loss_sum"] = np.array(s.loss_sum, dtype=np.float64)
        meta = dict(self.meta, identity=self._identity(), train_config=asdict(self.config),
                    history=s.history, best_auc=s.best_auc, best_epoch=s.best_epoch,
                    precision=self.net.backend.precision)
        self.net.save(path, extra=extra, meta=meta)
        if self.on_save is not None:
            self.on_save(path)

    def resume(self, path) -> None:
        """Continue from a checkpoint written by save(): weights, optimizer, position."""
        path = Path(path)
        if path.is_dir():
            path = path / LAST
        info = self.net.load(path)  # CheckpointError on another architecture
        meta, extra = info["meta"], info["extra"]
        if "position" not in extra:
            raise ResumeError(f"{path} holds weights only (no training position): cannot resume from it")
        self._check_identity(meta, path)
        self._load_optimizer(extra, path)
        epoch, batch, step, correct, seen = self._position(extra, path)
        loss_sum = extra.get("loss_sum")
        if loss_sum is None or loss_sum.shape != () or loss_sum.dtype.kind != "f" or not np.isfinite(loss_sum):
            raise CheckpointError(f"{path}: field extra.loss_sum should be one finite number, found {loss_sum!r}")
        history = _meta_field(meta, "history", _history_ok, f"a list of epoch records with {', '.join(HISTORY_KEYS)}",
                              path, [])
        best_auc = _meta_field(meta, "best_auc", _is_number, "a number", path, -1.0)
        best_epoch = _meta_field(meta, "best_epoch", lambda v: isinstance(v, int) and not isinstance(v, bool)
                                 and 0 <= v <= len(history), "an epoch number of the history", path, 0)
        train_config = _meta_field(meta, "train_config", lambda v: isinstance(v, dict), "an object", path, {})
        self.state = TrainState(epoch, batch, step, float(loss_sum), correct, seen, list(history),
                                float(best_auc), best_epoch)
        self.log(f"resumed from {path}: epoch {epoch + 1}, batch {batch}, step {step}")
        was, now = meta.get("precision"), self.net.backend.precision
        if isinstance(was, str) and was != now:
            self.log(f"note: the run so far was trained in precision {was} and continues in {now}: the weights "
                     f"will differ from an uninterrupted run in either")
        before = train_config.get("epochs")
        if before is not None and before != self.config.epochs and self.config.lr_schedule != "constant":
            self.log(f"note: the run was planned for {before} epochs and now for {self.config.epochs}; the "
                     f"{self.config.lr_schedule} learning-rate schedule spans the new length from here on, so the "
                     f"weights will differ from an uninterrupted {self.config.epochs}-epoch run")

    def _check_identity(self, meta: dict, path) -> None:
        """Refuse a checkpoint of another run: other settings, split or data."""
        found = _meta_field(meta, "identity", lambda v: isinstance(v, dict), "an object", path, {})
        expected = self._identity()
        if "data" not in found:  # written before data fingerprints: cannot tell, so say so
            self.log(f"note: {path} predates data fingerprints; cannot check that it was trained on this data")
            expected.pop("data")
        if "data" in expected and found.get("data") != expected["data"]:
            raise ResumeError(f"cannot resume from {path}: it was trained on other data (its data fingerprint is "
                              f"{found.get('data')!r}, this run's {expected['data']!r}: another --data-dir, changed "
                              "files or other preprocessing); resume with the same data or start a new --out")
        diffs = identity_differences(found, expected)
        if diffs:
            raise ResumeError(f"cannot resume from {path}: this run differs in {diffs}")

    def _load_optimizer(self, extra: dict, path) -> None:
        opt_state = {k[len("opt."):]: v for k, v in extra.items() if k.startswith("opt.")}
        for key, value in opt_state.items():
            if value.dtype.kind not in "fiu" or not np.isfinite(value).all():
                raise CheckpointError(f"{path}: optimizer state extra.opt.{key} holds NaN, infinite or "
                                      "non-numeric values")
        try:
            self.opt.load_state_arrays(opt_state)
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"{path}: optimizer state does not fit this run's {self.config.optimizer} "
                                  f"optimizer ({e})") from e

    def _position(self, extra: dict, path) -> tuple[int, ...]:
        """(epoch, batch, global step, correct, seen) from extra.position, checked."""
        pos = extra["position"]
        if pos.shape != (5,) or pos.dtype.kind not in "iu" or (pos < 0).any():
            raise CheckpointError(f"{path}: field extra.position should be 5 whole numbers >= 0 (epoch, batch, "
                                  f"step, correct, seen), found {pos.tolist()!r}")
        epoch, batch, step, correct, seen = (int(v) for v in pos)
        if batch > self.steps_per_epoch or correct > seen:
            raise CheckpointError(f"{path}: field extra.position {pos.tolist()} does not fit this run "
                                  f"({self.steps_per_epoch} batches per epoch)")
        return epoch, batch, step, correct, seen

    # ------------------------------------------------------------ evaluation
    def predict(self, samples=None) -> np.ndarray:
        """P(malignant) for each sample (ROI index, transform), in order."""
        samples = self.test_samples if samples is None else samples
        be, out = self.net.backend, []
        bs = self.config.eval_batch_size
        for i in range(0, len(samples), bs):
            x = be.asarray(augment.gather(self.images, samples[i:i + bs]))
            out.append(be.to_numpy(self.net.forward(x, train=False)))
        return metrics.softmax_positive(np.concatenate(out)) if out else np.zeros(0)

    def evaluate(self) -> dict:
        probs = self.predict()
        if not np.isfinite(probs).all():  # weights blown up by the last steps: never saved
            raise NonFiniteLoss(f"the network's held-out outputs are NaN or infinite at the end of epoch "
                                f"{self.state.epoch + 1}: the weights diverged; {self._kept()}. Try a lower --lr.")
        y = self.labels[self.test_samples[:, 0]]
        p = np.clip(probs, 1e-7, 1 - 1e-7)
        return {"test_loss": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
                "test_acc": float(np.mean((probs >= 0.5) == y)), "test_auc": metrics.auc(y, probs),
                "probs": probs}

    # ------------------------------------------------------------ training
    def fit(self) -> TrainResult:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        last, best = self.out_dir / LAST, self.out_dir / BEST
        c, s = self.config, self.state
        ev = None  # the latest evaluation: the final model's, once the last epoch ends
        with _StopFlag() as flag:
            while s.epoch < c.epochs:
                if self._run_epoch(flag):
                    self.save(last)
                    self.log(f"stopped at epoch {s.epoch + 1}, batch {s.batch}/{self.steps_per_epoch}; "
                             f"saved {last}; continue with --resume")
                    return TrainResult("interrupted", s.history, s.best_epoch, last,
                                       best if best.exists() else None)
                ev = self.evaluate()
                s.history.append({
                    "epoch": s.epoch + 1, "train_loss": s.loss_sum / max(s.seen, 1),
                    "train_acc": s.correct / max(s.seen, 1), "test_loss": ev["test_loss"],
                    "test_acc": ev["test_acc"], "test_auc": ev["test_auc"],
                    "lr": float(self.lr_at(s.global_step - 1)), "steps": s.global_step,
                })
                h = s.history[-1]
                self.log(f"epoch {h['epoch']}/{c.epochs}: train loss {h['train_loss']:.4f} acc {h['train_acc']:.3f} | "
                         f"held-out loss {h['test_loss']:.4f} acc {h['test_acc']:.3f} AUC {h['test_auc']:.4f}")
                s.epoch, s.batch, s.loss_sum, s.correct, s.seen = s.epoch + 1, 0, 0.0, 0, 0
                improved = not math.isnan(h["test_auc"]) and h["test_auc"] > s.best_auc
                if improved:
                    s.best_auc, s.best_epoch = h["test_auc"], h["epoch"]
                self.save(last)
                if improved:
                    self.save(best)
        probs = (ev or self.evaluate())["probs"]  # evaluated here only when resuming a finished run
        return TrainResult("done", s.history, s.best_epoch, last, best if best.exists() else None, probs)

    def loader(self, epoch: int, start_batch: int = 0) -> BatchLoader:
        """The batches of `epoch` from `start_batch` on, in the epoch's seeded order."""
        order = np.random.default_rng([self.config.seed, epoch, 0xDA7A]).permutation(len(self.train_samples))
        return BatchLoader(self.images, self.labels, self.train_samples, order, self.batch_size,
                           start_batch, to_device=self._copier)

    def _device_step(self, x, y) -> None:
        """Forward, loss, step statistics, backward, optimizer step: all on the backend,
        nothing read back. The optimizer skips its update once the statistics hold a
        non-finite loss, so nothing is updated from that step on."""
        be = self.net.backend
        logits = self.net.forward(x, train=True)
        loss, dlogits = be.softmax_cross_entropy(logits, y)
        be.step_stats_update(self._stats, loss, logits, y)
        self.net.backward(dlogits)
        self.opt.step(guard=self._stats)

    def train_step(self, x, y, y_host) -> None:
        """One step on a batch already on the backend; its loss and accuracy are read
        with those of the next few steps (collect_stats)."""
        s = self.state
        self.opt.lr = float(self.lr_at(s.global_step))
        self._copier.acquire(x)
        self._step(x, y)
        self._copier.release(x)
        self._pending.append(len(y_host))
        s.batch += 1
        s.global_step += 1
        if len(self._pending) >= STAT_LAYOUT["STAT_RING"] // 2:
            self.collect_stats()

    def collect_stats(self) -> None:
        """Read the step statistics (one small copy from the device) into the running
        sums, step by step in order, as if each step's loss had been read at once; then
        reset them. NonFiniteLoss names the first step whose loss was not finite: the
        parameters are those before it."""
        if not self._pending:
            return
        be, s, lay = self.net.backend, self.state, STAT_LAYOUT
        stats = be.to_numpy(self._stats)
        bad = int(stats[lay["STAT_FIRST_BAD"]])
        first = s.global_step - len(self._pending)  # the global step of the first pending one
        for i, size in enumerate(self._pending):
            if i == bad:
                step = first + i
                batch = step - s.epoch * self.steps_per_epoch
                raise NonFiniteLoss(f"loss is {float(stats[lay['STAT_BAD_LOSS']])} at epoch {s.epoch + 1}, batch "
                                    f"{batch + 1}/{self.steps_per_epoch} (global step {step + 1}); stopped before "
                                    f"applying that step; {self._kept()}. Try a lower --lr.")
            ring = i % lay["STAT_RING"]
            s.loss_sum += float(stats[lay["STAT_LOSSES"] + ring]) * size
            s.correct += int(stats[lay["STAT_CORRECT"] + ring])
            s.seen += size
        self._pending = []
        be.assign(self._stats, new_step_stats())

    def _kept(self) -> str:
        last = self.out_dir / LAST
        return f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written yet"

    def _run_epoch(self, flag: _StopFlag) -> bool:
        """Train the rest of the current epoch. True if asked to stop part-way."""
        c, s = self.config, self.state
        loader = self.loader(s.epoch, s.batch)
        bar = progress.bar(self.steps_per_epoch, f"epoch {s.epoch + 1}/{c.epochs}", enabled=self.progress,
                           initial=s.batch, unit="batch")
        try:
            for x, y, y_host in loader:
                self.train_step(x, y, y_host)
                if bar is not None:
                    if not self._pending and s.seen:  # the sums were just read
                        bar.set_postfix(loss=f"{s.loss_sum / s.seen:.4f}", acc=f"{s.correct / s.seen:.3f}")
                    bar.update(1)
                if self.stop_after_steps is not None and s.global_step >= self.stop_after_steps:
                    flag.requested = True
                if flag.requested:
                    self.collect_stats()
                    return True
            self.collect_stats()
            return False
        finally:
            loader.close()
            if bar is not None:
                bar.close()
