"""Train the paper's CNN on mammography ROIs and report it honestly.

    python apps/train_ddsm.py                              # synthetic ROIs, 64x64, a few minutes on a CPU
    python apps/train_ddsm.py --dataset mias --data-dir PATH/TO/MIAS --image-size 64
    python apps/train_ddsm.py --dataset cbis-ddsm --data-dir PATH --backend cuda
    python apps/train_ddsm.py --protocol both              # patient split AND the paper's optimistic order
    python apps/train_ddsm.py --cv 5 --protocol both       # every ROI tested once, pooled AUC, the leak as a number

Splits by patient (4:1, stratified, seeded), augments the training side with the
paper's six flips/rotations, evaluates on the held-out side every epoch, keeps last
and best checkpoints in --out, and writes metrics.json and the paper's figures there.
--cv K runs K folds by patient instead (OUT/fold-1 ... OUT/fold-K, per protocol with
--protocol both) and pools the out-of-fold predictions: one AUC whose 95% interval
resamples patients, the per-fold table beside it, and with --protocol both the leak
(paper's order minus patient split) with a paired interval.
Ctrl-C (or SIGTERM) saves; --resume continues exactly. See docs/data.md and docs/paper.md.

Refused, with one line saying why and exit code 2 (details in docs/data.md):
  - before any data is read: option values out of range, inf or nan; an --out that is
    a file, lies under a file, cannot be created or is inside --data-dir; an --out that
    already holds a run (unless --resume or --overwrite) or that another training is
    using right now; --resume with nothing to resume or with other settings (another
    --cv layout included); --cv below 2; a network that would not fit in memory (the
    estimate and what the machine has are printed)
  - after reading: a data set that would not fit in memory, data that cannot be used,
    --cv with fewer women of a class than folds, --resume on other data (checkpoints
    carry a fingerprint of the data)
--overwrite keeps the old run aside until the new one has saved a checkpoint, and puts
it back if the new run ends before that. A loss that turns NaN stops with exit code 3;
Ctrl-C or SIGTERM saves last.npz and exits with 130.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from tinycnn import backends
from tinycnn.mammo import cv, memory, metrics, report
from tinycnn.mammo.cli import (INTERRUPTED, add_precision_argument, backend_with_precision, error, finite_float,
                               precision_line, printable, sigterm_as_ctrl_c, tolerant_std_streams)
from tinycnn.mammo.data import DATASETS, DataError, load_dataset, preprocess
from tinycnn.mammo.data.split import PAPER_WARNING, PatientLeak, make_split
from tinycnn.mammo.memory import NotEnoughMemory
from tinycnn.mammo.runfolder import Replacement, RunFolderBusy, RunLock, holds_run, in_use, inside, recover, \
    remove_stale_temporaries, unusable_folder
from tinycnn.mammo.train import LAST, NonFiniteLoss, ResumeError, TrainConfig, Trainer, config_identity, \
    identity_differences
from tinycnn.checkpoint import CheckpointError, architecture_shapes, check_architecture, read_checkpoint
from tinycnn.model import paper_net, paper_net_min_size
from tinycnn.optim import make_optimizer

# Defaults per kind of data: the synthetic set is sized so the default run finishes in
# minutes on a 2-core CPU; real data gets the paper's 256x256 input.
PROFILES = {
    "synthetic": {"image_size": 64, "hidden": 128, "epochs": 8},
    "real": {"image_size": 256, "hidden": 1024, "epochs": 20},
}
DEFAULT_LR = {"adam": 1e-3, "sgd": 0.01}
MAX_BOOTSTRAP = 100_000  # past ~10^4 resamples the interval stops moving; 10^9 would run for days
MAX_FOLDS = 1000  # more folds than that is leave-one-out on a big set: thousands of trainings


def parse_args(argv=None):
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
    d.add_argument("--mias-margin", type=finite_float, default=1.5, help="mias crop side = 2 x margin x radius")
    d.add_argument("--synthetic-count", type=int, default=600, help="synthetic ROIs per class (the paper: 600)")
    t = p.add_argument_group("training")
    t.add_argument("--protocol", default="patient", choices=("patient", "paper", "both"),
                   help="patient: split by patient, then augment the training side (default); "
                        "paper: augment all, then split at random (optimistic); both: run both")
    t.add_argument("--cv", type=int, metavar="K",
                   help="K-fold cross-validation by patient (stratified; every ROI tested once, no woman on both "
                        "sides of a fold); out-of-fold predictions pooled into one AUC. CBIS-DDSM's official "
                        "split is not used then")
    t.add_argument("--backend", default="auto", choices=("auto", "numpy", "numba", "cuda", "cuda-emu"))
    add_precision_argument(t)
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--optimizer", default="adam", choices=("sgd", "adam"))
    t.add_argument("--lr", type=finite_float, help="learning rate (default 1e-3 for adam, 0.01 for sgd)")
    t.add_argument("--lr-schedule", default="cosine", choices=("cosine", "constant"))
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
    args = p.parse_args(argv)
    profile = PROFILES["synthetic" if args.dataset == "synthetic" else "real"]
    for key in ("image_size", "hidden", "epochs"):
        if getattr(args, key) is None:
            setattr(args, key, profile[key])
    args.lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
    for flag, ok, rule in (("epochs", args.epochs >= 1, ">= 1"), ("batch-size", args.batch_size >= 1, ">= 1"),
                           ("hidden", args.hidden >= 1, ">= 1"), ("lr", args.lr > 0, "> 0"),
                           ("seed", args.seed >= 0, ">= 0"),
                           ("bootstrap", args.bootstrap >= 1, ">= 1"),
                           ("bootstrap", args.bootstrap <= MAX_BOOTSTRAP,
                            f"<= {MAX_BOOTSTRAP} (more resamples no longer move the interval)"),
                           ("synthetic-count", args.synthetic_count >= 1, ">= 1"),
                           ("mias-margin", args.mias_margin > 0, "> 0"),
                           ("threads", args.threads is None or args.threads >= 1, ">= 1"),
                           ("cv", args.cv is None or args.cv >= 2, ">= 2 (one fold would test nothing)"),
                           ("cv", args.cv is None or args.cv <= MAX_FOLDS, f"<= {MAX_FOLDS}")):
        if not ok:
            p.error(f"--{flag} must be {rule}, got {getattr(args, flag.replace('-', '_'))}")
    min_size = paper_net_min_size()
    if args.image_size < min_size:
        p.error(f"--image-size must be at least {min_size} (the paper's four conv + pool blocks need it), "
                f"got {args.image_size}")
    if args.resume and args.overwrite:
        p.error("--resume continues the run in --out, --overwrite replaces it: choose one")
    args.out_given = args.out is not None
    if args.out is None:
        args.out = str(default_out(args.dataset, args.resume))
    problem = out_problem(Path(args.out), args.data_dir if args.dataset != "synthetic" else None)
    if problem:
        p.error(printable(problem))
    return args


def out_problem(out: Path, data_dir) -> str | None:
    """Why --out cannot hold a run, from the path alone (before minutes of reading):
    a file, under a file, not writable, or inside the data it would be trained on."""
    problem = unusable_folder(out)
    if problem:
        return problem
    if data_dir is not None and inside(out, data_dir):
        return (f"--out {out} is inside --data-dir {data_dir}: the run's files (its plots are images) "
                "would mix with the data; choose an --out outside it")
    return None


def taken(folder: Path) -> bool:
    """A run is saved in folder, or a training is writing one there now."""
    return holds_run(folder) or in_use(folder)


def default_out(dataset: str, resume: bool) -> Path:
    """runs/DATASET for the first run; a new run next to an earlier one (or next to a
    training still running) goes to the first free runs/DATASET-2, -3, ..., so nothing
    saved is replaced; --resume takes the newest of them."""
    base = Path("runs") / dataset
    numbered = sorted((int(p.name.rsplit("-", 1)[1]), p) for p in base.parent.glob(f"{dataset}-*")
                      if p.name.rsplit("-", 1)[1].isdigit())
    runs = [p for p in [base] + [p for _, p in numbered] if holds_run(p)]
    if resume:
        return runs[-1] if runs else base
    if not taken(base):
        return base
    n = max([1] + [i for i, p in numbered if taken(p)]) + 1
    return base.parent / f"{dataset}-{n}"


def resolve_backend(name: str) -> str:
    """tinycnn.backends.resolve ("auto": cuda, else numba, else numpy), or exit with why."""
    try:
        return backends.resolve(name)
    except backends.BackendUnavailable as e:
        raise SystemExit(f"error: backend {name!r} is not available here: {e}")


_BLAS_LIMIT = None  # threadpoolctl's limiter while main() runs, restored at its end


def limit_blas_threads(args) -> str:
    """Small matrices gain nothing from BLAS threads, and on a busy machine idle-spinning
    threads made a 64 px step 6x slower (measured). Returns what the banner prints."""
    n = args.threads if args.threads is not None else (1 if args.image_size < 128 else None)
    if n is None:
        return "library default"
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return "library default (threadpoolctl missing)"
    global _BLAS_LIMIT
    _BLAS_LIMIT = threadpool_limits(limits=n, user_api="blas")
    return str(n)


def show_progress(args) -> bool:
    """Progress bars on a terminal only: a log file gets the per-epoch lines instead."""
    return not args.no_progress and sys.stderr.isatty()


def dataset_options(args) -> dict:
    if args.dataset == "synthetic":
        return {"benign": args.synthetic_count, "malignant": args.synthetic_count, "seed": args.seed}
    if args.dataset == "cbis-ddsm":
        return {"abnormality": args.abnormality}
    if args.dataset == "mias":
        return {"margin": args.mias_margin}
    return {}


def side_counts(labels, samples) -> str:
    rois = np.unique(samples[:, 0])
    b, m = int((labels[rois] == 0).sum()), int((labels[rois] == 1).sum())
    return f"{len(rois):5d} ROIs ({b} benign, {m} malignant) -> {len(samples):6d} samples"


def split_lines(args, rois, plan) -> list[str]:
    """The banner's split lines: one train/test pair per protocol, or the folds."""
    lines = []
    if not args.cv:
        for split in plan[0].values():
            lines.append(f"split    {split.protocol:7s} train {side_counts(rois.labels, split.train)}")
            lines.append(f"                 test  {side_counts(rois.labels, split.test)}")
        return lines
    lines.append(f"cv       {args.cv} folds by patient (stratified, seed {args.seed}): every ROI tested once, by a "
                 "model that never saw that woman")
    for protocol in plan[0]:
        tests = [len(fold[protocol].test) for fold in plan]
        trains = [len(fold[protocol].train) for fold in plan]
        what = "ROIs" if protocol == "patient" else "samples"
        lines.append(f"         {protocol:7s} test {what} per fold {' '.join(map(str, tests))}; training samples "
                     f"{min(trains)}-{max(trains)}")
        if protocol == "paper":
            leaked = sum(fold[protocol].leaked_samples for fold in plan)
            lines.append(f"                 the paper's order on the same folds: {leaked} of {sum(tests)} test "
                         "samples are copies of ROIs that are also in their fold's training")
    if rois.side is not None:
        lines.append("         the dataset's official train/test split is not used: the folds replace it")
    return lines


def banner(args, rois, plan, net, backend_name, backend) -> str:
    c = rois.counts()
    lines = ["=" * 78,
             f"tinycnn: the paper's CNN on mammography ROIs   (dataset {args.dataset}"
             + (f", {args.data_dir}" if args.data_dir else "") + ")",
             f"data     {len(rois)} ROIs: {c['benign']} benign, {c['malignant']} malignant, {c['patients']} patients; "
             f"{args.image_size}x{args.image_size}, {preprocess.NORMALISATION}"]
    if rois.cache_file is None:
        lines.append("         preprocessed, not cached")
    else:
        lines.append(f"         {'read from the cache' if rois.from_cache else 'preprocessed and cached'}: {rois.cache_file}")
    if rois.skipped:
        lines.append(f"         {len(rois.skipped)} unreadable input(s) skipped (first: {rois.skipped[0]})")
    lines += [f"         {n}" for n in rois.notes]
    lines += split_lines(args, rois, plan)
    lines += ["", net.summary(batch_size=args.batch_size, compact=True), "",
              f"backend  {backend_name} ({'chosen by auto' if args.backend == 'auto' else 'as asked'}) on {backend.device_name()}"
              f"; BLAS threads: {args.blas_threads}",
              f"         {precision_line(backend)}"
              f"{' (chosen by auto)' if args.precision == 'auto' else ''}",
              f"train    {args.epochs} epochs, batch {args.batch_size}, {args.optimizer} lr {args.lr:g} "
              f"({args.lr_schedule}), hidden {args.hidden}, seed {args.seed}",
              f"output   {args.out}", "=" * 78]
    return "\n".join(lines)


def check_network_memory(args, backend_name: str) -> int | None:
    """Refuse a network that cannot fit before anything is read or allocated (the
    estimate comes from shapes alone). Returns the host memory left for the data."""
    shapes = architecture_shapes(memory.paper_architecture(args.hidden, args.image_size))
    need = memory.training_bytes(shapes, args.batch_size)
    on_gpu = backend_name == "cuda"
    memory.require(need, memory.device_available(backend_name),
                   f"training the network (--hidden {args.hidden}, --image-size {args.image_size}, "
                   f"--batch-size {args.batch_size}: {shapes.num_parameters():,} parameters)",
                   "lower --hidden, --image-size or --batch-size", "the GPU" if on_gpu else "this machine")
    host = memory.host_available()
    return None if host is None else host - (0 if on_gpu else need)


def train_config(args) -> TrainConfig:
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                       lr_schedule=args.lr_schedule, seed=args.seed)


def protocols(args) -> list[str]:
    return ["patient", "paper"] if args.protocol == "both" else [args.protocol]


def protocol_dir(args, protocol: str) -> Path:
    """Where a protocol's run (or, with --cv, its pooled report) goes."""
    return Path(args.out) / protocol if args.protocol == "both" else Path(args.out)


def run_dir(args, protocol: str, fold: int | None = None) -> Path:
    """Where one training writes its checkpoints: the protocol's folder, or with --cv
    its fold-N subfolder (1-based)."""
    base = protocol_dir(args, protocol)
    return base if fold is None else base / cv.FOLD_DIR.format(fold)


def protocol_dirs(args) -> list[Path]:
    """Every training's folder of this run, in the order they train."""
    folds = range(1, args.cv + 1) if args.cv else [None]
    return [run_dir(args, p, f) for f in folds for p in protocols(args)]


def check_resume(args) -> None:
    """--resume: a checkpoint to continue, of this architecture and these settings,
    checked from its records before the data is read (the data are checked after)."""
    dirs = protocol_dirs(args)
    found = [d / LAST for d in dirs if (d / LAST).is_file()]
    if not found:
        other = cv_layout(args)
        if other:
            raise CheckpointError(f"nothing to resume with these options: {other}")
        shown = " or ".join(str(d / LAST) for d in dirs[:2]) + (f" (or {len(dirs) - 2} more)" if len(dirs) > 2 else "")
        raise CheckpointError(f"nothing to resume: {shown} does not exist")
    expected = memory.paper_architecture(args.hidden, args.image_size)
    for path in found:
        records = read_checkpoint(path, arrays=False)
        architecture_shapes(records["arch"], path)
        check_architecture(records["arch"], expected, path)
        folds = records["meta"].get("folds")
        if folds != args.cv:
            raise ResumeError(f"cannot resume from {path}: it is "
                              + (f"a fold of a --cv {folds} run" if folds else "a run without --cv")
                              + (f", and this run asks --cv {args.cv}" if args.cv else ", and this run has no --cv")
                              + ": give the same --cv")
        identity = records["meta"].get("identity", {})
        if not isinstance(identity, dict):
            raise CheckpointError(f"{path}: meta field 'identity' should be an object")
        diffs = identity_differences(identity, config_identity(train_config(args)))
        if diffs:
            raise ResumeError(f"cannot resume from {path}: this run differs in {diffs}")


def cv_layout(args) -> str | None:
    """Why --resume finds nothing where this run looks although --out holds a run of
    another layout (with --cv where none is asked, or the other way round)."""
    out = Path(args.out)
    roots = [out / p for p in ("patient", "paper")] + [out]
    has_folds = any(any(r.glob("fold-*/" + LAST)) for r in roots if r.is_dir())
    has_single = any((r / LAST).is_file() for r in roots)
    if has_folds and not args.cv:
        return f"{out} holds a --cv run (fold-N folders): resume it with the same --cv"
    if has_single and args.cv:
        return f"{out} holds a run without --cv: resume it without --cv"
    return None


def acquire_out(args) -> RunLock:
    """Lock --out for this run. A default --out that another training took meanwhile
    gives way to the next free runs/DATASET-N."""
    for _ in range(100):
        try:
            return RunLock(args.out).acquire()
        except RunFolderBusy:
            if args.out_given or args.resume:
                raise
            args.out = str(default_out(args.dataset, resume=False))  # in_use() now skips it
    raise RunFolderBusy(f"no free run folder next to {args.out}: choose an --out")


def prepare_out(args) -> str | None:
    """Under the lock: tidy what killed runs left, then the checks that need the folder
    as it is. Returns an error message, or None to go on."""
    out = Path(args.out)
    note = recover(out)
    if note:
        say(note)
    stale = remove_stale_temporaries(out)
    if stale:
        say(f"removed {len(stale)} temporary file(s) left by an interrupted save (first: {stale[0]})")
    if holds_run(out) and not (args.resume or args.overwrite):
        return (f"{out} already holds a run: --resume continues it, --overwrite replaces it, "
                "or choose another --out")
    if args.resume:
        try:
            check_resume(args)
        except CheckpointError as e:
            return str(e)
    return None


def say(message) -> None:
    print(printable(message), flush=True)


def config_record(args, backend_name, backend) -> dict:
    cfg = {k: v for k, v in vars(args).items()}
    cfg.update(backend_resolved=backend_name, precision_resolved=backend.precision, device=backend.device_name(),
               argv=sys.argv[1:])
    return cfg


def new_net(args, backend):
    """The run's network, freshly initialised from --seed (every protocol starts from it)."""
    return paper_net(hidden=args.hidden, in_size=args.image_size, backend=backend, seed=args.seed)


PROTOCOL_NAMES = {"patient": "patient split", "paper": "paper order (augment, then split)"}


def test_side(rois, samples) -> str:
    """'28 ROIs, 25 patients' or '143 samples of 89 ROIs, 80 patients', for titles."""
    n_rois = len(np.unique(samples[:, 0]))
    patients = len(np.unique(rois.patients[samples[:, 0]]))
    head = f"{n_rois} ROIs" if n_rois == len(samples) else f"{len(samples)} samples of {n_rois} ROIs"
    return f"{head}, {patients} patients"


def run_protocol(args, rois, split, out_dir, net, meta, on_save=None, fold: int | None = None) -> dict | None:
    """Train `net` on one protocol (one fold of it, with --cv) into out_dir; returns its
    metrics, or None if interrupted. The AUC interval resamples the test patients.
    The returned dict holds the raw predictions under "_raw" (not written to JSON)."""
    opt = make_optimizer(args.optimizer, net, args.lr)
    where = f"protocol {split.protocol}" + (f", fold {fold}/{args.cv}" if fold else "")
    trainer = Trainer(net, opt, rois.images, rois.labels, split.train, split.test, train_config(args), out_dir,
                      meta=dict(meta, protocol=split.protocol, **({"fold": fold, "folds": args.cv} if fold else {})),
                      progress=show_progress(args), log=say, on_save=on_save)
    if args.resume and (Path(out_dir) / LAST).exists():
        trainer.resume(Path(out_dir) / LAST)
    elif args.resume:  # stopped before this protocol (or fold) saved anything
        say(f"nothing saved for {where} yet: it starts from the beginning")
    result = trainer.fit()
    if result.status != "done":
        return None
    y_test = rois.labels[split.test[:, 0]]
    groups = rois.patients[split.test[:, 0]]
    probs = result.probs
    out = metrics.binary_report(y_test, probs, n_boot=args.bootstrap, seed=args.seed, groups=groups)
    out.update(protocol=split.protocol, history=result.history, best_epoch=result.best_epoch,
               best_heldout_auc=max((h["test_auc"] for h in result.history), default=float("nan")),
               train_samples=int(len(split.train)), test_samples=int(len(split.test)),
               leaked_test_samples=split.leaked_samples,
               checkpoints={"last": str(result.last_path), "best": str(result.best_path) if result.best_path else None})
    if fold:
        out["fold"] = fold
    curves = {"CNN": dict(metrics.roc_points(y_test, probs), auc=out["auc"])}
    base = None
    if not args.no_baseline:
        t0 = time.time()
        base = metrics.pixel_baseline(rois.images, rois.labels, split.train, split.test, seed=args.seed)
        base_report = metrics.binary_report(y_test, base, n_boot=args.bootstrap, seed=args.seed, groups=groups)
        out.update(baseline_auc=base_report["auc"], baseline_accuracy=base_report["accuracy"],
                   baseline=dict(base_report, method="logistic regression on pixels",
                                 seconds=round(time.time() - t0, 1)))
        curves["pixel logistic regression"] = dict(metrics.roc_points(y_test, base), auc=base_report["auc"])
    out["roc"] = curves["CNN"]
    title = (f"{PROTOCOL_NAMES[split.protocol]}" + (f", fold {fold}/{args.cv}" if fold else "")
             + f"\n{test_side(rois, split.test)}; seed {args.seed}")
    report.plot_curves(result.history, out_dir, title=title)
    report.plot_roc(curves, out_dir, title="ROC, " + title)
    report.plot_confusion(out["confusion_matrix"], out_dir, title=title)
    out["_raw"] = {"samples": split.test, "probs": probs, "baseline_probs": base}
    return out


def protocol_label(protocol: str, results: dict) -> str:
    """The table's name for a protocol's row. The paper's order is called optimistic only
    where it scored above the patient split in this run (it can score below)."""
    if protocol == "patient":
        return "patient split, train-side augmentation"
    label = "paper order: augment, then split"
    if "patient" in results:
        ahead = results["paper"]["auc"] - results["patient"]["auc"]
        if np.isfinite(ahead):
            return label + (f" (optimistic: {ahead:+.3f} AUC)" if ahead > 0 else
                            f" ({ahead:+.3f} AUC: not above the patient split in this run)")
    return label + " (copies of test ROIs in training)"


def table_rows(args, results: dict) -> list[dict]:
    data = f"{args.dataset} {args.image_size}px" + (f", {args.cv}-fold CV pooled" if args.cv else "")
    rows = []
    for protocol, r in results.items():
        rows.append({"method": f"CNN (tinycnn), {protocol_label(protocol, results)}", "data": data,
                     "accuracy": r["accuracy"], "auc": r["auc"], "auc_ci95": r["auc_ci95"]})
        if "baseline" in r:
            rows.append({"method": f"logistic regression on pixels, {protocol} split", "data": data,
                         "accuracy": r["baseline"]["accuracy"], "auc": r["baseline"]["auc"],
                         "auc_ci95": r["baseline"]["auc_ci95"]})
    rows.append(report.PAPER_ROW)
    return rows


def raw_arrays(rois, result: dict) -> tuple:
    """(labels, P(malignant), patients) of a result's test samples."""
    raw = result["_raw"]
    return rois.labels[raw["samples"][:, 0]], raw["probs"], rois.patients[raw["samples"][:, 0]]


def leak(args, rois, results: dict) -> dict | None:
    """The paper's order minus the patient split, in AUC, with a paired interval that
    resamples patients (both AUCs on the same draw of women)."""
    if not {"patient", "paper"} <= set(results):
        return None
    out = metrics.paired_auc_difference(raw_arrays(rois, results["paper"]), raw_arrays(rois, results["patient"]),
                                        n_boot=args.bootstrap, seed=args.seed)
    out["what"] = "AUC of the paper's order (augment, then split) minus AUC of the patient split"
    if args.cv:
        out["what"] += f", pooled over the same {args.cv} folds"
    return out


def baseline_notes(results: dict) -> list[str]:
    """A line for each protocol whose pixel baseline scored at or above the CNN."""
    notes = []
    for protocol, r in results.items():
        b, c = r.get("baseline_auc"), r["auc"]
        if b is not None and np.isfinite(b) and np.isfinite(c) and b >= c:
            notes.append(f"note: on the {PROTOCOL_NAMES[protocol]} the pixel logistic regression (AUC {b:.3f}) "
                         f"scored at or above the CNN (AUC {c:.3f}): the CNN shows no gain over a linear model on "
                         "pixels here")
            r["baseline_beats_cnn"] = True
    return notes


def predictions(rois, result: dict, fold_of=None) -> list[dict]:
    """One record per test sample: ROI id, patient, transform, label, P(malignant)."""
    raw = result["_raw"]
    out = []
    for k, (i, t) in enumerate(raw["samples"]):
        rec = {"roi": str(rois.ids[i]), "patient": str(rois.patients[i]), "transform": int(t),
               "label": int(rois.labels[i]), "p_malignant": float(raw["probs"][k])}
        if fold_of is not None:
            rec["fold"] = int(fold_of[k])
        out.append(rec)
    return out


def pool_folds(args, rois, protocol: str, folds: list[dict]) -> dict:
    """One protocol's folds as one result: pooled out-of-fold metrics (interval over
    patients), the per-fold table and its mean and spread, the plots."""
    pooled = cv.pool([f["_raw"] for f in folds])
    out = cv.pooled_report(pooled, rois.labels, rois.patients, n_boot=args.bootstrap, seed=args.seed)
    y = pooled.labels(rois.labels)
    fold_rows = [{k: f.get(k) for k in ("fold", "n", "patients", "accuracy", "auc", "auc_ci95", "sensitivity",
                                        "specificity", "baseline_auc", "best_epoch", "train_samples",
                                        "test_samples", "leaked_test_samples", "checkpoints")} for f in folds]
    out.update(protocol=protocol, test_samples=int(len(y)), leaked_test_samples=sum(f["leaked_test_samples"]
                                                                                    for f in folds),
               cv={"k": args.cv, "folds": fold_rows, "fold_auc": cv.fold_summary([f["auc"] for f in folds]),
                   "fold_accuracy": cv.fold_summary([f["accuracy"] for f in folds]),
                   **({"fold_baseline_auc": cv.fold_summary([f["baseline_auc"] for f in folds])}
                      if pooled.baseline is not None else {}),
                   "pooled": "out-of-fold predictions of every fold, one AUC; 95% interval by cluster bootstrap "
                             "over patients"},
               roc=dict(metrics.roc_points(y, pooled.probs), auc=out["auc"]),
               predictions=predictions(rois, {"_raw": {"samples": pooled.samples, "probs": pooled.probs}},
                                       pooled.fold))
    out["_raw"] = {"samples": pooled.samples, "probs": pooled.probs}
    curves = {"CNN, pooled": dict(out["roc"])}
    if pooled.baseline is not None:
        curves["pixel logistic regression, pooled"] = dict(metrics.roc_points(y, pooled.baseline),
                                                           auc=out["baseline_auc"])
    per_fold = {f"fold {f['fold']}": dict(f["roc"], auc=f["auc"]) for f in folds}
    where = protocol_dir(args, protocol)
    title = (f"{PROTOCOL_NAMES[protocol]}, {args.cv}-fold CV pooled\n{test_side(rois, pooled.samples)}; "
             f"seed {args.seed}")
    report.plot_roc(curves, where, title="ROC, " + title, thin=per_fold)
    report.plot_fold_curves([f["history"] for f in folds], where, title=title)
    report.plot_confusion(out["confusion_matrix"], where, title=title)
    return out


def fold_table(protocol: str, r: dict) -> str:
    """The per-fold lines of a --cv run, with mean and spread and the pooled AUC."""
    c = r["cv"]
    has_base = "fold_baseline_auc" in c
    head = f"{'fold':>4}  {'test':>6}  {'patients':>8}  {'AUC':>6}  {'accuracy':>8}" + ("  baseline AUC" if has_base else "")
    lines = [f"{PROTOCOL_NAMES[protocol]}, {c['k']}-fold CV", head]
    for f in c["folds"]:
        line = f"{f['fold']:>4}  {f['n']:>6}  {f['patients']:>8}  {_num(f['auc']):>6}  {_num(f['accuracy']):>8}"
        lines.append(line + (f"  {_num(f['baseline_auc']):>12}" if has_base else ""))
    a = c["fold_auc"]
    lines.append(f"per fold: AUC mean {_num(a['mean'])}, SD {_num(a['sd'])} (range {_num(a['min'])}-{_num(a['max'])})"
                 + (f"; baseline mean {_num(c['fold_baseline_auc']['mean'])}" if has_base else ""))
    lines.append(f"pooled out-of-fold: {r['n']} test samples, {r['patients']} patients: AUC {_num(r['auc'])} "
                 f"[{_num(r['auc_ci95'][0])}, {_num(r['auc_ci95'][1])}] (95%, {r['ci_method']})")
    return "\n".join(lines)


def _num(v) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.3f}"


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A user reads "warning: skipped x.png: ...", not the library's file and source line."""
    return f"warning: {printable(message)}\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    formatwarning, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        with sigterm_as_ctrl_c():
            return train_and_report(args)
    except KeyboardInterrupt:  # outside training (which saves first): what was saved stays
        return error("interrupted; every checkpoint saved so far is intact (--resume continues)", INTERRUPTED)
    finally:  # leave the process as we found it (tests call main() in-process)
        warnings.formatwarning = formatwarning
        if _BLAS_LIMIT is not None:
            _BLAS_LIMIT.restore_original_limits()


def load_data(args, memory_available=None):
    """(rois, plan): plan is a list of {protocol: Split}, one per fold with --cv, else
    one. DataError, PatientLeak or NotEnoughMemory when the data cannot be used."""
    rois = load_dataset(args.dataset, args.data_dir, image_size=args.image_size, strict=args.strict,
                        cache_dir=args.cache_dir, use_cache=not args.no_cache, progress=show_progress(args),
                        memory_available=memory_available, **dataset_options(args))
    if args.cv:
        return rois, cv.cv_splits(protocols(args), rois.labels, rois.patients, args.cv, seed=args.seed)
    return rois, [{p: make_split(p, rois.labels, rois.patients, seed=args.seed,
                                 official_side=rois.side if p == "patient" else None) for p in protocols(args)}]


def read_data(args, memory_available) -> tuple | int:
    """load_data's result, or the exit code after saying why it failed."""
    try:
        return load_data(args, memory_available)
    except (DataError, PatientLeak, NotEnoughMemory) as e:
        return error(e, 2)
    except MemoryError:  # the estimate was too low: say so instead of a traceback
        return error(f"ran out of memory reading the {args.dataset} data at --image-size {args.image_size}: "
                     "lower --image-size or use fewer images", 2)
    except OSError as e:  # a table or folder that cannot be opened (permissions, a vanished disk)
        return error(f"cannot read the {args.dataset} data: {e}", 2)
    except KeyboardInterrupt:
        return error("interrupted while reading the data; nothing was written", INTERRUPTED)


def train_protocol(args, rois, split, out_dir, net, meta, on_save=None, fold=None) -> dict | int:
    """run_protocol's metrics, or the exit code of the way it stopped (after saying why)."""
    if split.protocol == "paper" and fold in (None, 1):
        print(PAPER_WARNING, file=sys.stderr, flush=True)
    if split.protocol == "paper":
        print(f"         {split.leaked_samples} of {len(split.test)} test samples are copies of ROIs "
              f"that are also in training", file=sys.stderr, flush=True)
    say(f"-- protocol {split.protocol}" + (f", fold {fold}/{args.cv}" if fold else "") + f": training into {out_dir}")
    try:
        result = run_protocol(args, rois, split, out_dir, net, meta, on_save, fold)
    except NonFiniteLoss as e:
        return error(e, 3)
    except CheckpointError as e:
        return error(e, 2)
    except MemoryError:
        return error(f"ran out of memory training into {out_dir}; the last checkpoint on disk is intact: lower "
                     "--batch-size, --hidden or --image-size", 2)
    except OSError as e:  # out folder not writable, disk full, ...: what was saved before stays
        return error(f"cannot write the run to {out_dir}: {e}", 2)
    except KeyboardInterrupt:
        # a second Ctrl-C in training, or one while the report is made: nothing half-written
        return error("interrupted: the last checkpoint on disk is intact; --resume continues the run (or "
                     "writes the report of a finished one)", INTERRUPTED)
    return INTERRUPTED if result is None else result  # None: stopped by Ctrl-C or SIGTERM after saving


def write_report(args, rois, results: dict, meta: dict, started: float) -> int:
    """metrics.json (the patient split's numbers first, every protocol's beside them,
    the leak between them, the folds with --cv) and the console's Table III."""
    out_root = Path(args.out)
    leak_record = leak(args, rois, results)
    notes = baseline_notes(results)
    if not args.cv:  # a single split's predictions: one record per test sample
        for r in results.values():
            r["predictions"] = predictions(rois, r)
    public = {p: {k: v for k, v in r.items() if k != "_raw"} for p, r in results.items()}
    main_result = public.get("patient") or next(iter(public.values()))
    record = dict(main_result)
    record.update(dataset={"name": args.dataset, "data_dir": args.data_dir, **rois.counts(),
                           "skipped": rois.skipped, "notes": rois.notes},
                  precision=meta["config"]["precision_resolved"], config=meta["config"],
                  preprocessing=meta["preprocessing"],
                  wall_seconds=round(time.time() - started, 1))
    if len(results) > 1:
        record["protocols"] = public
    if leak_record is not None:
        record["leak"] = leak_record
    if notes:
        record["notes"] = notes
    try:
        out_root.mkdir(parents=True, exist_ok=True)
        report.write_metrics(out_root / "metrics.json", record)
    except OSError as e:
        return error(f"cannot write {out_root / 'metrics.json'}: {e}; the checkpoints are saved", 2)
    print()
    if args.cv:
        for protocol, r in results.items():
            print(fold_table(protocol, r))
            print()
    print(report.table_three(table_rows(args, results)))
    r = main_result
    print(f"\nheld-out ({r['protocol']} split{', pooled out-of-fold' if args.cv else ''}): accuracy "
          f"{r['accuracy']:.4f}, AUC {r['auc']:.4f} [{r['auc_ci95'][0]:.3f}, {r['auc_ci95'][1]:.3f}] "
          f"({r['ci_method']}), sensitivity {r['sensitivity']:.3f}, specificity {r['specificity']:.3f}; "
          f"confusion [[TN, FP], [FN, TP]] = {r['confusion_matrix']}")
    if leak_record is not None:
        lo, hi = leak_record["ci95"]
        print(f"leak (paper order minus patient split): AUC {leak_record['auc_difference']:+.3f} "
              f"[{lo:+.3f}, {hi:+.3f}] (95%, {leak_record['method']})")
    for note in notes:
        say(note)
    say(f"wrote {out_root / 'metrics.json'} and plots; {record['wall_seconds']:.0f} s in all")
    return 0


def train_and_report(args) -> int:
    started = time.time()
    backend_name = resolve_backend(args.backend)
    args.blas_threads = limit_blas_threads(args)
    try:
        backend = backend_with_precision(backend_name, args.precision)
    except ValueError as e:
        return error(f"--precision {args.precision}: {e}", 2)
    try:
        memory_for_data = check_network_memory(args, backend_name)
        lock = acquire_out(args)
    except (NotEnoughMemory, RunFolderBusy) as e:
        return error(e, 2)
    except OSError as e:
        return error(f"cannot create --out {args.out}: {e.strerror or e}", 2)
    try:
        problem = prepare_out(args)
        if problem:
            return error(problem, 2)
        loaded = read_data(args, memory_for_data)
        if isinstance(loaded, int):
            return loaded
        return train_all(args, *loaded, backend_name, backend, started)
    finally:
        lock.release()


def train_all(args, rois, plan, backend_name, backend, started) -> int:
    """Every protocol into the locked --out, then the report. With --overwrite the old
    run is moved aside first and deleted at the new run's first checkpoint; if the new
    run ends before that, it is put back."""
    net = new_net(args, backend)  # built once for the banner and the first protocol
    print(printable(banner(args, rois, plan, net, backend_name, backend)), flush=True)
    meta = {"preprocessing": preprocess.settings(args.image_size), "classes": ["benign", "malignant"],
            "dataset": args.dataset, "config": config_record(args, backend_name, backend)}
    if rois.source_sides is not None and len(rois.source_sides):  # what a film scan's windows should match
        sides = np.asarray(rois.source_sides)
        meta["roi_pixels"] = {"median": int(np.median(sides)), "min": int(sides.min()), "max": int(sides.max()),
                              "what": "side of the square ROI crops in film pixels, before the resize"}
    replacement = Replacement(args.out) if args.overwrite and holds_run(Path(args.out)) else None
    try:
        if replacement is not None:
            try:
                moved = replacement.begin()
            except OSError as e:
                replacement.active = True  # put back whatever was moved before the failure
                return error(f"--overwrite: cannot move the run in {args.out} aside ({e}); it is left in place", 2)
            say(f"--overwrite: the {moved} file(s) of the run in {args.out} are kept aside until this run "
                "saves its first checkpoint")
        runs = {p: [] for p in protocols(args)}  # per protocol: one result per fold (one without --cv)
        for i, splits in enumerate(plan):
            fold = i + 1 if args.cv else None
            for protocol, split in splits.items():
                if net is None:  # every protocol and fold starts from the same initial weights
                    net = new_net(args, backend)
                result = train_protocol(args, rois, split, run_dir(args, protocol, fold), net, meta,
                                        replacement.commit if replacement is not None else None, fold)
                net = None  # trained: free it before the next one builds its own
                if isinstance(result, int):
                    return result
                runs[protocol].append(result)
        if args.cv:
            results = {p: pool_folds(args, rois, p, folds) for p, folds in runs.items()}
        else:
            results = {p: folds[0] for p, folds in runs.items()}
    finally:
        if replacement is not None and replacement.active:
            try:
                replacement.rollback()
                say(f"the earlier run in {args.out} is back in place: this run saved no checkpoint")
            except OSError as e:  # it stays in .replaced/, and the next run there puts it back
                error(f"could not put the earlier run back yet ({e}); it is safe in {replacement.backup} and the "
                      "next run in this folder restores it")
    return write_report(args, rois, results, meta, started)


if __name__ == "__main__":
    tolerant_std_streams()
    sys.exit(main())
