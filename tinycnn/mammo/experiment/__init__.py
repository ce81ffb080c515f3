"""Experiments: what apps/train.py runs, given a config instead of a command line.

    config.py          ExperimentConfig: one field per option of the app
    task.py            the Task a runner runs, and the Run it is given
    runner.py          run_experiment: BLAS threads, the run folder's lock, tidying and
                       --overwrite, the task's checks, data and trainings, metrics.json
    layout.py          where a run's files go: runs/DATASET[-N], protocol and fold folders
    classification.py  the ROI classification task: protocols x folds of training
    detection.py       the lesion detection task: folds of women on whole films
    protocol.py        one training on one split, evaluated, with its plots
    results.py         pooled folds, the leak, per-sample predictions, the record
    resume.py          what --resume must find before any data is read
    tables.py          the banner and the summary the console shows

TASKS maps a task's name to the task; run_experiment(TASKS[name], config, backend,
log, warn) runs it.
"""

from .classification import RoiClassification
from .config import ExperimentConfig
from .detection import FilmDetection
from .runner import run_experiment
from .task import ExperimentError, ExperimentInterrupted, Run, Task

TASKS = {"classify": RoiClassification(), "detect": FilmDetection()}

__all__ = ["TASKS", "ExperimentConfig", "ExperimentError", "ExperimentInterrupted", "Run", "Task", "run_experiment"]
