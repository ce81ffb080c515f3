"""Train the paper's CNN on mammography ROIs and report it honestly.

    python apps/train_ddsm.py                              # synthetic ROIs, 64x64, a few minutes on a CPU
    python apps/train_ddsm.py --dataset mias --data-dir PATH/TO/MIAS --image-size 64
    python apps/train_ddsm.py --dataset cbis-ddsm --data-dir PATH --backend cuda
    python apps/train_ddsm.py --protocol both              # patient split AND the paper's optimistic order

Splits by patient (4:1, stratified, seeded), augments the training side with the
paper's six flips/rotations, evaluates on the held-out side every epoch, keeps last
and best checkpoints in --out, and writes metrics.json and the paper's figures there.
Ctrl-C (or SIGTERM) saves; --resume continues exactly. See docs/data.md and docs/paper.md.

Refused, with one line saying why and exit code 2 (details in docs/data.md):
  - before any data is read: option values out of range, inf or nan; an --out that is
    a file, lies under a file, cannot be created or is inside --data-dir; an --out that
    already holds a run (unless --resume or --overwrite) or that another training is
    using right now; --resume with nothing to resume or with other settings; a network
    that would not fit in memory (the estimate and what the machine has are printed)
  - after reading: a data set that would not fit in memory, data that cannot be used,
    --resume on other data (checkpoints carry a fingerprint of the data)
--overwrite keeps the old run aside until the new one has saved a checkpoint, and puts
it back if the new run ends before that. A loss that turns NaN stops with exit code 3;
Ctrl-C or SIGTERM saves last.npz and exits with 130.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from tinycnn import backends
from tinycnn.mammo import memory, metrics, report
from tinycnn.mammo.cli import INTERRUPTED, error, finite_float, printable, sigterm_as_ctrl_c, tolerant_std_streams
from tinycnn.mammo.data import DATASETS, DataError, load_dataset, preprocess
from tinycnn.mammo.data.split import PAPER_WARNING, PatientLeak, make_split
from tinycnn.mammo.memory import NotEnoughMemory
from tinycnn.mammo.runfolder import Replacement, RunFolderBusy, RunLock, holds_run, in_use, recover, \
    remove_stale_temporaries
from tinycnn.mammo.train import LAST, NonFiniteLoss, ResumeError, TrainConfig, Trainer, config_identity, \
    identity_differences
from tinycnn.model import CheckpointError, architecture_shapes, check_architecture, paper_net, \
    paper_net_min_size, read_checkpoint_records
from tinycnn.optim import make_optimizer

# Defaults per kind of data: the synthetic set is sized so the default run finishes in
# minutes on a 2-core CPU; real data gets the paper's 256x256 input.
PROFILES = {
    "synthetic": {"image_size": 64, "hidden": 128, "epochs": 8},
    "real": {"image_size": 256, "hidden": 1024, "epochs": 20},
}
DEFAULT_LR = {"adam": 1e-3, "sgd": 0.01}
MAX_BOOTSTRAP = 100_000  # past ~10^4 resamples the interval stops moving; 10^9 would run for days


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
    t.add_argument("--backend", default="auto", choices=("auto", "numpy", "numba", "cuda", "cuda-emu"))
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
                           ("threads", args.threads is None or args.threads >= 1, ">= 1")):
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
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file, not a folder"
    existing = next(p for p in [out.absolute(), *out.absolute().parents] if p.exists())
    if not existing.is_dir():
        return f"--out {out}: {existing} is a file, so no folder can be made under it"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"--out {out}: {existing} is not writable"
    if data_dir is not None and Path(data_dir).is_dir():
        data, target = Path(data_dir).resolve(), out.resolve()
        if target == data or data in target.parents:
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


def banner(args, rois, splits, net, backend_name, backend) -> str:
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
    for split in splits:
        lines.append(f"split    {split.protocol:7s} train {side_counts(rois.labels, split.train)}")
        lines.append(f"                 test  {side_counts(rois.labels, split.test)}")
    lines += ["", net.summary(batch_size=args.batch_size, compact=True), "",
              f"backend  {backend_name} ({'chosen by auto' if args.backend == 'auto' else 'as asked'}) on {backend.device_name()}"
              f"; BLAS threads: {args.blas_threads}",
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


def protocol_dirs(args) -> list[Path]:
    out = Path(args.out)
    return [out / "patient", out / "paper"] if args.protocol == "both" else [out]


def check_resume(args) -> None:
    """--resume: a checkpoint to continue, of this architecture and these settings,
    checked from its records before the data is read (the data are checked after)."""
    dirs = protocol_dirs(args)
    found = [d / LAST for d in dirs if (d / LAST).is_file()]
    if not found:
        raise CheckpointError(f"nothing to resume: {' or '.join(str(d / LAST) for d in dirs)} does not exist")
    expected = memory.paper_architecture(args.hidden, args.image_size)
    for path in found:
        records = read_checkpoint_records(path)
        architecture_shapes(records["arch"], path)
        check_architecture(records["arch"], expected, path)
        identity = records["meta"].get("identity", {})
        if not isinstance(identity, dict):
            raise CheckpointError(f"{path}: meta field 'identity' should be an object")
        diffs = identity_differences(identity, config_identity(train_config(args)))
        if diffs:
            raise ResumeError(f"cannot resume from {path}: this run differs in {diffs}")


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
    cfg.update(backend_resolved=backend_name, device=backend.device_name(), argv=sys.argv[1:])
    return cfg


def new_net(args, backend_name):
    """The run's network, freshly initialised from --seed (every protocol starts from it)."""
    return paper_net(hidden=args.hidden, in_size=args.image_size, backend=backend_name, seed=args.seed)


def run_protocol(args, rois, split, out_dir, net, meta, on_save=None) -> dict | None:
    """Train `net` on one protocol into out_dir; returns its metrics, or None if interrupted."""
    opt = make_optimizer(args.optimizer, net, args.lr)
    trainer = Trainer(net, opt, rois.images, rois.labels, split.train, split.test, train_config(args), out_dir,
                      meta=dict(meta, protocol=split.protocol), progress=show_progress(args), log=say,
                      on_save=on_save)
    if args.resume and (Path(out_dir) / LAST).exists():
        trainer.resume(Path(out_dir) / LAST)
    elif args.resume:  # --protocol both stopped before this protocol saved anything
        say(f"nothing saved for protocol {split.protocol} yet: it starts from the beginning")
    result = trainer.fit()
    if result.status != "done":
        return None
    y_test = rois.labels[split.test[:, 0]]
    probs = result.probs
    out = metrics.binary_report(y_test, probs, n_boot=args.bootstrap, seed=args.seed)
    out.update(protocol=split.protocol, history=result.history, best_epoch=result.best_epoch,
               best_heldout_auc=max((h["test_auc"] for h in result.history), default=float("nan")),
               train_samples=int(len(split.train)), test_samples=int(len(split.test)),
               leaked_test_samples=split.leaked_samples,
               checkpoints={"last": str(result.last_path), "best": str(result.best_path) if result.best_path else None})
    curves = {"CNN": dict(metrics.roc_points(y_test, probs), auc=out["auc"])}
    if not args.no_baseline:
        t0 = time.time()
        base = metrics.pixel_baseline(rois.images, rois.labels, split.train, split.test, seed=args.seed)
        base_report = metrics.binary_report(y_test, base, n_boot=args.bootstrap, seed=args.seed)
        out.update(baseline_auc=base_report["auc"], baseline_accuracy=base_report["accuracy"],
                   baseline=dict(base_report, method="logistic regression on pixels",
                                 seconds=round(time.time() - t0, 1)))
        curves["pixel logistic regression"] = dict(metrics.roc_points(y_test, base), auc=base_report["auc"])
    out["roc"] = curves["CNN"]
    report.plot_curves(result.history, out_dir)
    report.plot_roc(curves, out_dir)
    report.plot_confusion(out["confusion_matrix"], out_dir)
    return out


def table_rows(args, results: dict) -> list[dict]:
    data = f"{args.dataset} {args.image_size}px"
    rows = []
    for protocol, r in results.items():
        label = "patient split, train-side augmentation" if protocol == "patient" else "paper order: augment, then split (optimistic)"
        rows.append({"method": f"CNN (tinycnn), {label}", "data": data, "accuracy": r["accuracy"], "auc": r["auc"],
                     "auc_ci95": r["auc_ci95"]})
        if "baseline" in r:
            rows.append({"method": f"logistic regression on pixels, {protocol} split", "data": data,
                         "accuracy": r["baseline"]["accuracy"], "auc": r["baseline"]["auc"],
                         "auc_ci95": r["baseline"]["auc_ci95"]})
    rows.append(report.PAPER_ROW)
    return rows


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
    """(rois, [split per protocol]); DataError, PatientLeak or NotEnoughMemory when the
    data cannot be used."""
    rois = load_dataset(args.dataset, args.data_dir, image_size=args.image_size, strict=args.strict,
                        cache_dir=args.cache_dir, use_cache=not args.no_cache, progress=show_progress(args),
                        memory_available=memory_available, **dataset_options(args))
    protocols = ["patient", "paper"] if args.protocol == "both" else [args.protocol]
    splits = [make_split(p, rois.labels, rois.patients, seed=args.seed,
                         official_side=rois.side if p == "patient" else None) for p in protocols]
    return rois, splits


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


def train_protocol(args, rois, split, out_dir, net, meta, on_save=None) -> dict | int:
    """run_protocol's metrics, or the exit code of the way it stopped (after saying why)."""
    if split.protocol == "paper":
        print(PAPER_WARNING, file=sys.stderr, flush=True)
        print(f"         {split.leaked_samples} of {len(split.test)} test samples are copies of ROIs "
              f"that are also in training", file=sys.stderr, flush=True)
    say(f"-- protocol {split.protocol}: training into {out_dir}")
    try:
        result = run_protocol(args, rois, split, out_dir, net, meta, on_save)
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
    """metrics.json (the patient split's numbers first, every protocol's beside them)
    and the console's Table III."""
    out_root = Path(args.out)
    main_result = results.get("patient") or next(iter(results.values()))
    record = dict(main_result)
    record.update(dataset={"name": args.dataset, "data_dir": args.data_dir, **rois.counts(),
                           "skipped": rois.skipped, "notes": rois.notes},
                  config=meta["config"], preprocessing=meta["preprocessing"],
                  wall_seconds=round(time.time() - started, 1))
    if len(results) > 1:
        record["protocols"] = results
    try:
        out_root.mkdir(parents=True, exist_ok=True)
        report.write_metrics(out_root / "metrics.json", record)
    except OSError as e:
        return error(f"cannot write {out_root / 'metrics.json'}: {e}; the checkpoints are saved", 2)
    print()
    print(report.table_three(table_rows(args, results)))
    r = main_result
    print(f"\nheld-out ({r['protocol']} split): accuracy {r['accuracy']:.4f}, AUC {r['auc']:.4f} "
          f"[{r['auc_ci95'][0]:.3f}, {r['auc_ci95'][1]:.3f}], sensitivity {r['sensitivity']:.3f}, "
          f"specificity {r['specificity']:.3f}; confusion [[TN, FP], [FN, TP]] = {r['confusion_matrix']}")
    say(f"wrote {out_root / 'metrics.json'} and plots; {record['wall_seconds']:.0f} s in all")
    return 0


def train_and_report(args) -> int:
    started = time.time()
    backend_name = resolve_backend(args.backend)
    args.blas_threads = limit_blas_threads(args)
    backend = backends.get(backend_name)
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


def train_all(args, rois, splits, backend_name, backend, started) -> int:
    """Every protocol into the locked --out, then the report. With --overwrite the old
    run is moved aside first and deleted at the new run's first checkpoint; if the new
    run ends before that, it is put back."""
    net = new_net(args, backend_name)  # built once for the banner and the first protocol
    print(printable(banner(args, rois, splits, net, backend_name, backend)), flush=True)
    meta = {"preprocessing": preprocess.settings(args.image_size), "classes": ["benign", "malignant"],
            "dataset": args.dataset, "config": config_record(args, backend_name, backend)}
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
        results = {}
        for split in splits:
            out_dir = Path(args.out) / split.protocol if len(splits) > 1 else Path(args.out)
            if net is None:  # the next protocol starts from the same initial weights
                net = new_net(args, backend_name)
            result = train_protocol(args, rois, split, out_dir, net, meta,
                                    replacement.commit if replacement is not None else None)
            net = None  # trained: free it before the next protocol builds its own
            if isinstance(result, int):
                return result
            results[split.protocol] = result
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
