"""What the experiment runner asks of a task, and what it gives one.

A Task is one kind of experiment the training app can run in a run folder: ROI
classification (classification.py: protocols, folds, the pooled AUC, the leak) is
the one it has. The runner (runner.py) owns what every task shares: the run folder's
lock, tidying and --overwrite, the BLAS threads, metrics.json; a task owns what it
trains and how it reports. A new task is a class with the methods below, listed in
TASKS (tinycnn/mammo/experiment/__init__.py).

Run is what a task is given: the experiment's settings, the backend that runs it, and
where its lines go (log: the progress a user follows, on stdout; warn: warnings, on
stderr).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Protocol

from .config import ExperimentConfig


class ExperimentError(Exception):
    """The run cannot go on: one line says why, and what it leaves on disk."""


class ExperimentInterrupted(Exception):
    """Ctrl-C or SIGTERM ended the run where nothing could be saved first: one line says
    what is on disk."""


@dataclass
class Run:
    config: ExperimentConfig
    backend: object  # a tinycnn backend (tinycnn.mammo.cli.open_backend)
    log: Callable[[str], None]
    warn: Callable[[str], None]
    blas_threads: str = "library default"  # what the runner set, as the banner prints it
    on_save: Callable | None = None  # called with each checkpoint's path once it is on disk (--overwrite)

    @property
    def out(self) -> Path:
        return Path(self.config.out)

    def settings(self) -> dict:
        """The run's settings as metrics.json and its checkpoints record them: every
        option, and what "auto" and the machine made of them."""
        return dict(asdict(self.config), blas_threads=self.blas_threads, backend_resolved=self.backend.name,
                    precision_resolved=self.backend.precision, device=self.backend.device_name(),
                    argv=sys.argv[1:])


class Task(Protocol):
    """One kind of experiment. Its methods raise the library's own errors (DataError,
    NotEnoughMemory, CheckpointError, ...), which the runner says in one line, or
    ExperimentError / ExperimentInterrupted with the line said already; NonFiniteLoss
    (a diverged training) goes through as it is. The app turns each into an exit code."""

    def network_memory(self, config: ExperimentConfig, backend) -> int | None:
        """Before the run folder is made: NotEnoughMemory if the network cannot fit.
        Returns the host memory left for the data (None: cannot tell)."""

    def check_resume(self, config: ExperimentConfig) -> None:
        """--resume, under the run folder's lock, before any data is read: a
        CheckpointError when there is nothing to continue with these settings."""

    def read(self, config: ExperimentConfig, memory_available: int | None):
        """The data the task trains on, read and split."""

    def train(self, run: Run, data) -> dict | None:
        """Every training of the run into run.out; the record metrics.json gets, or
        None when Ctrl-C or SIGTERM stopped a training after it saved (it said so)."""

    def summary(self, record: dict) -> list[str]:
        """The lines the console shows once metrics.json is written."""
