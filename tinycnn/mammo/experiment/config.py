"""What one experiment is asked to do: ExperimentConfig, one field per option of the
training app (apps/train.py), under the option's own name, so the record a run keeps
in metrics.json and in every checkpoint reads like its command line. The few settings
derived from it (which protocols run, the training loop's TrainConfig, whether bars
are drawn) are here too."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from ..train import TrainConfig

PROTOCOL_NAMES = {"patient": "patient split", "paper": "paper order (augment, then split)"}


@dataclass(frozen=True)
class ExperimentConfig:
    # the data
    dataset: str  # synthetic, folder, cbis-ddsm or mias (tinycnn.mammo.data.DATASETS)
    data_dir: str | None
    image_size: int  # ROI side in pixels after preprocessing
    strict: bool  # stop at the first unreadable image instead of skipping it
    cache_dir: str | None
    no_cache: bool
    abnormality: str  # cbis-ddsm: mass, calc or both
    mias_margin: float  # mias: crop side = 2 x margin x radius
    synthetic_count: int  # synthetic: ROIs per class
    # the protocols and the training
    protocol: str  # patient, paper or both
    cv: int | None  # K-fold cross-validation by patient, or None for one split
    backend: str  # as asked ("auto" included); the backend that runs is the run's
    precision: str
    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    lr_schedule: str
    hidden: int  # width of the two fully connected layers
    seed: int
    threads: int | None  # BLAS threads (None: the rule of thumb, runner.blas_threads)
    # the output
    out: str  # the run folder
    out_given: bool  # --out was given; else a default runs/DATASET[-N], which may move to the next free one
    resume: bool
    overwrite: bool
    bootstrap: int  # resamples of every bootstrap interval
    no_baseline: bool  # skip the pixel logistic-regression baseline
    no_progress: bool
    # the task: the paper's benign/malignant ROIs, or finding the lesion on whole films
    task: str = "classify"
    steps: int | None = None  # --task detect: training steps per fold


def protocols(config: ExperimentConfig) -> list[str]:
    """The protocols a run trains, in order: the patient split first."""
    return ["patient", "paper"] if config.protocol == "both" else [config.protocol]


def train_config(config: ExperimentConfig) -> TrainConfig:
    """The training loop's settings (the ones a checkpoint must share to be resumed)."""
    return TrainConfig(epochs=config.epochs, batch_size=config.batch_size, optimizer=config.optimizer,
                       lr=config.lr, lr_schedule=config.lr_schedule, seed=config.seed)


def show_progress(config: ExperimentConfig) -> bool:
    """Progress bars on a terminal only: a log file gets the per-epoch lines instead."""
    return not config.no_progress and sys.stderr.isatty()
