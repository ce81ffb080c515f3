"""Train the paper's CNN on mammography ROIs and report it honestly.

    python apps/train.py                              # synthetic ROIs, 64x64, a few minutes on a CPU
    python apps/train.py --dataset mias --data-dir PATH/TO/MIAS --image-size 64
    python apps/train.py --dataset cbis-ddsm --data-dir PATH --backend cuda
    python apps/train.py --protocol both              # patient split AND the paper's optimistic order
    python apps/train.py --cv 5 --protocol both       # every ROI tested once, pooled AUC, the leak as a number
    python apps/train.py --dataset mias --data-dir PATH/TO/MIAS --task detect --cv 5   # find the lesion

Splits by patient (4:1, stratified, seeded), augments the training side with the
paper's six flips/rotations, evaluates on the held-out side every epoch, keeps last
and best checkpoints in --out, and writes metrics.json and the paper's figures there.
--cv K runs K folds by patient instead (OUT/fold-1 ... OUT/fold-K, per protocol with
--protocol both) and pools the out-of-fold predictions: one AUC whose 95% interval
resamples patients, the per-fold table beside it, and with --protocol both the leak
(paper's order minus patient split) with a paired interval.
Ctrl-C (or SIGTERM) saves; --resume continues exactly. See docs/data.md and docs/paper.md.

--task detect trains a lesion detector instead (tinycnn.mammo.detection): a small
window classifier, lesion against normal breast tissue, on whole films with marked
lesions (--dataset mias or cbis-ddsm), K folds by woman (--cv, default 5); each fold's
model scans the films its women held out, and metrics.json's "detection" pools them:
top-1 and top-3 hit rates with Wilson intervals, FROC at 0.5/1/2/4 false positives per
film, a random breast point and the brightest window, by lesion class and radius. It
takes --steps, --batch-size, --lr, --hidden, --seed and --backend; the options of
the ROI task (--image-size, --epochs, --protocol, ...) are refused with it. Finished
folds are saved whole; --resume loads them and trains the rest.
(apps/train_ddsm.py is this app under its earlier name.)

Refused, with one line saying why and exit code 2 (details in docs/data.md):
  - before any data is read: option values out of range, inf or nan; a backend that
    cannot run here, or not in --precision; an --out that is a file, lies under a file,
    cannot be created or is inside --data-dir; a file or folder the run writes that is
    something else (a named pipe, a device, a folder where a checkpoint goes); an --out
    that already holds a run
    (unless --resume or --overwrite), that another training is using right now, that
    lies inside such a training's folder or holds a folder it writes;
    --resume with nothing to resume or with other settings (another --cv layout
    included); --cv below 2; a network that would not fit in memory (the estimate and
    what the machine has are printed)
  - after reading: a data set that would not fit in memory, data that cannot be used,
    --cv with fewer women of a class than folds, --resume on other data (checkpoints
    carry a fingerprint of the data)
--overwrite keeps the old run aside until the new one has saved a checkpoint, and puts
it back if the new run ends before that. A loss that turns NaN stops with exit code 3;
running out of memory all the same stops with exit code 2 and says what to lower;
Ctrl-C or SIGTERM saves last.npz and exits with 130. File names in the console, the
warnings and metrics.json are one field on one line (control characters and bytes that
are not UTF-8 as backslash escapes).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from tinycnn.mammo.cli import (INTERRUPTED, BackendError, add_backend_arguments, error, finite_float, open_backend,
                               out_of_memory, printable, shown, sigterm_as_ctrl_c, tolerant_std_streams)
from tinycnn.mammo.data import DATASETS
from tinycnn.mammo.detection import DetectorConfig
from tinycnn.mammo.experiment import TASKS, ExperimentConfig, ExperimentError, ExperimentInterrupted, run_experiment
from tinycnn.mammo.experiment.detection import DATASETS as DETECTION_DATASETS
from tinycnn.mammo.experiment.layout import default_out, out_problem, target_problem
from tinycnn.mammo.train import NonFiniteLoss
from tinycnn.model import paper_net_min_size

# Defaults per kind of data: the synthetic set is sized so the default run finishes in
# minutes on a 2-core CPU; real data gets the paper's 256x256 input.
PROFILES = {
    "synthetic": {"image_size": 64, "hidden": 128, "epochs": 8},
    "real": {"image_size": 256, "hidden": 1024, "epochs": 20},
}
DEFAULT_LR = {"adam": 1e-3, "sgd": 0.01}
DEFAULT_BATCH = 32
# Options of the ROI task that mean nothing to the detector: given with --task detect, refused.
ROI_ONLY = ("image_size", "epochs", "protocol", "optimizer", "lr_schedule", "mias_margin", "synthetic_count")
MAX_BOOTSTRAP = 100_000  # past ~10^4 resamples the interval stops moving; 10^9 would run for days
MAX_FOLDS = 1000  # more folds than that is leave-one-out on a big set: thousands of trainings


def parse_args(argv=None) -> ExperimentConfig:
    """The command line as an ExperimentConfig, its defaults filled in and every value
    checked (argparse's usage error, exit code 2, for any that cannot be used)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--dataset", default="synthetic", choices=DATASETS)
    d.add_argument("--data-dir", help="the dataset's folder (not for synthetic)")
    d.add_argument("--image-size", type=int, help="ROI side in pixels (default 64 for synthetic, else 256)")
    d.add_argument("--strict", action="store_true", help="stop at the first unreadable image instead of skipping it")
    d.add_argument("--cache-dir", help="preprocessed-array cache (default $TINYCNN_CACHE or ~/.cache/tinycnn)")
    d.add_argument("--no-cache", action="store_true", help="always re-read the source files")
    d.add_argument("--abnormality", default="both", choices=("mass", "calc", "both"), help="cbis-ddsm tables to use")
    d.add_argument("--mias-margin", type=finite_float, help="mias crop side = 2 x margin x radius (default 1.5)")
    d.add_argument("--synthetic-count", type=int, help="synthetic ROIs per class (default 600, the paper's)")
    t = p.add_argument_group("training")
    t.add_argument("--task", default="classify", choices=tuple(TASKS),
                   help="classify: the paper's benign/malignant ROIs (default); detect: find the lesion on whole "
                        "films (mias, cbis-ddsm)")
    t.add_argument("--protocol", choices=("patient", "paper", "both"),
                   help="patient: split by patient, then augment the training side (default); "
                        "paper: augment all, then split at random (optimistic); both: run both")
    t.add_argument("--cv", type=int, metavar="K",
                   help="K-fold cross-validation by patient (stratified; every ROI tested once, no woman on both "
                        "sides of a fold); out-of-fold predictions pooled into one AUC. CBIS-DDSM's official "
                        "split is not used then")
    add_backend_arguments(t)
    t.add_argument("--epochs", type=int)
    t.add_argument("--steps", type=int, help=f"--task detect: training steps per fold (default {DetectorConfig.steps})")
    t.add_argument("--batch-size", type=int,
                   help=f"default {DEFAULT_BATCH} ({DetectorConfig.batch_size} windows with --task detect)")
    t.add_argument("--optimizer", choices=("sgd", "adam"), help="default adam")
    t.add_argument("--lr", type=finite_float, help="learning rate (default 1e-3 for adam, 0.01 for sgd)")
    t.add_argument("--lr-schedule", choices=("cosine", "constant"), help="default cosine")
    t.add_argument("--hidden", type=int, help="width of the two fully connected layers (default 128 for "
                                              "synthetic, else 1024; the paper's table reads 28800)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, help="BLAS threads for the CPU backends (default: 1 below 128 px, "
                                               "where thread hand-offs cost more than they save; else the library's)")
    o = p.add_argument_group("output")
    o.add_argument("--out", help="run folder: checkpoints, metrics.json, plots (default runs/DATASET, or the "
                                 "first free runs/DATASET-N; with --resume the newest of them); one training "
                                 "at a time, and never inside --data-dir")
    o.add_argument("--resume", action="store_true", help="continue from OUT/last.npz (same data and settings)")
    o.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out instead of refusing; the old run is kept aside "
                        "until the new one has saved a checkpoint")
    o.add_argument("--bootstrap", type=int, default=1000,
                   help=f"bootstrap resamples for the AUC interval (1 to {MAX_BOOTSTRAP:,})")
    o.add_argument("--no-baseline", action="store_true", help="skip the pixel logistic-regression baseline")
    o.add_argument("--no-progress", action="store_true",
                   help="no progress bars for reading and training (they show only on a terminal)")
    given = vars(p.parse_args(argv))
    options = task_defaults(p, given)
    options["out_given"] = options["out"] is not None
    if options["out"] is None:
        options["out"] = str(default_out(options["dataset"], options["resume"]))
    c = ExperimentConfig(**options)
    for flag, ok, rule in (("epochs", c.epochs is None or c.epochs >= 1, ">= 1"),
                           ("steps", c.steps is None or c.steps >= 1, ">= 1"),
                           ("batch-size", c.batch_size >= 1, ">= 1"),
                           ("hidden", c.hidden >= 1, ">= 1"), ("lr", c.lr > 0, "> 0"),
                           ("seed", c.seed >= 0, ">= 0"),
                           ("bootstrap", c.bootstrap >= 1, ">= 1"),
                           ("bootstrap", c.bootstrap <= MAX_BOOTSTRAP,
                            f"<= {MAX_BOOTSTRAP} (more resamples no longer move the interval)"),
                           ("synthetic-count", c.synthetic_count >= 1, ">= 1"),
                           ("mias-margin", c.mias_margin > 0, "> 0"),
                           ("threads", c.threads is None or c.threads >= 1, ">= 1"),
                           ("cv", c.cv is None or c.cv >= 2, ">= 2 (one fold would test nothing)"),
                           ("cv", c.cv is None or c.cv <= MAX_FOLDS, f"<= {MAX_FOLDS}")):
        if not ok:
            p.error(f"--{flag} must be {rule}, got {getattr(c, flag.replace('-', '_'))}")
    min_size = paper_net_min_size()
    if c.task == "classify" and c.image_size < min_size:
        p.error(f"--image-size must be at least {min_size} (the paper's four conv + pool blocks need it), "
                f"got {c.image_size}")
    if c.resume and c.overwrite:
        p.error("--resume continues the run in --out, --overwrite replaces it: choose one")
    problem = (out_problem(Path(c.out), c.data_dir if c.dataset != "synthetic" else None)
               or target_problem(c))
    if problem:
        p.error(shown(problem))
    return c


def task_defaults(p: argparse.ArgumentParser, given: dict) -> dict:
    """The options with the defaults of their task and kind of data filled in; a usage
    error for an option the task does not take."""
    options = dict(given)
    if given["task"] == "detect":
        if given["dataset"] not in DETECTION_DATASETS:
            p.error(f"--task detect needs whole films with marked lesions: --dataset "
                    f"{' or '.join(DETECTION_DATASETS)}, not {given['dataset']}")
        extra = [k for k in ROI_ONLY if given[k] is not None and not (k == "protocol" and given[k] == "patient")]
        if extra:
            p.error(f"--task detect does not take --{extra[0].replace('_', '-')} (an option of the ROI task; the "
                    "detector's window and folds are by woman, its steps are --steps)")
        d = DetectorConfig()
        options.update(protocol="patient", image_size=d.side, epochs=None, optimizer="adam", lr_schedule="cosine",
                       mias_margin=1.5, synthetic_count=600)
        for key, value in (("cv", d.folds), ("steps", d.steps), ("batch_size", d.batch_size), ("hidden", d.hidden),
                           ("lr", d.lr)):
            if options[key] is None:
                options[key] = value
        return options
    if given["steps"] is not None:
        p.error("--steps is for --task detect; the ROI task trains for --epochs")
    profile = PROFILES["synthetic" if given["dataset"] == "synthetic" else "real"]
    for key, value in (("protocol", "patient"), ("optimizer", "adam"), ("lr_schedule", "cosine"),
                       ("mias_margin", 1.5), ("synthetic_count", 600), ("batch_size", DEFAULT_BATCH), *profile.items()):
        if options[key] is None:
            options[key] = value
    if options["lr"] is None:
        options["lr"] = DEFAULT_LR[options["optimizer"]]
    return options


def say(message) -> None:
    print(printable(message), flush=True)


def warn(message) -> None:
    print(printable(message), file=sys.stderr, flush=True)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A user reads "warning: skipped x.png: ...", not the library's file and source line;
    one line, whatever the file's name holds (cli.shown)."""
    return f"warning: {shown(message)}\n"


def train_and_report(config: ExperimentConfig) -> int:
    """Run the experiment, print its summary; the exit code."""
    task = TASKS[config.task]
    try:
        backend = open_backend(config.backend, config.precision)
        record = run_experiment(task, config, backend, log=say, warn=warn)
    except (BackendError, ExperimentError) as e:
        return error(e, 2)
    except NonFiniteLoss as e:
        return error(e, 3)
    except ExperimentInterrupted as e:
        return error(e, INTERRUPTED)
    if record is None:  # Ctrl-C or SIGTERM stopped a training, which saved and said so
        return INTERRUPTED
    for line in task.summary(record):
        say(line)
    metrics = shown(Path(record['config']['out']) / 'metrics.json')
    say(f"wrote {metrics} and plots; {record['wall_seconds']:.0f} s in all")
    return 0


def main(argv=None) -> int:
    config = parse_args(argv)
    formatwarning, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        with sigterm_as_ctrl_c():
            return train_and_report(config)
    except KeyboardInterrupt:  # outside training (which saves first): what was saved stays
        return error("interrupted; every checkpoint saved so far is intact (--resume continues)", INTERRUPTED)
    except MemoryError:  # anywhere the estimates and the runner did not foresee
        return out_of_memory(f"(--batch-size {config.batch_size}, --hidden {config.hidden}, --image-size "
                             f"{config.image_size}); every checkpoint saved so far is intact",
                             "lower --batch-size, --hidden or --image-size")
    finally:  # leave the process as we found it (tests call main() in-process)
        warnings.formatwarning = formatwarning


if __name__ == "__main__":
    tolerant_std_streams()
    sys.exit(main())
