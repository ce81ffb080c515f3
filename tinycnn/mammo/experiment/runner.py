"""An experiment run from start to end, whatever its task: the BLAS threads set for the
CPU backends, the task's memory check, the run folder locked (a default --out that
another training took gives way to the next free runs/DATASET-N), what killed runs
left tidied, a folder that holds a run refused unless --resume or --overwrite, the
task's --resume check, its data read, its trainings made (with --overwrite, the old run
kept aside until the new one has saved a checkpoint, and put back if it never does),
and metrics.json written. Whatever stops the run is one ExperimentError or
ExperimentInterrupted line (NonFiniteLoss passes through): the app turns them into
exit codes."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from .. import report
from ..cli import shown
from ..data import DataError
from ..data.split import PatientLeak
from ..memory import NotEnoughMemory
from ..threads import limit_blas
from ..runfolder import (Replacement, RunFolderBusy, RunFolderUnusable, RunLock, holds_run, recover,
                         remove_stale_temporaries)
from tinycnn.checkpoint import CheckpointError
from .config import ExperimentConfig
from .layout import default_out, locked_subfolders
from .resume import checkpoint_notes
from .task import ExperimentError, ExperimentInterrupted, Run, Task


def blas_threads(threads: int | None, image_size: int):
    """limit_blas with the rule of thumb when --threads is not given: 1 below 128 px
    (small matrices gain nothing from BLAS threads), else the library's choice."""
    return limit_blas(threads if threads is not None else (1 if image_size < 128 else None))


def run_experiment(task: Task, config: ExperimentConfig, backend, log, warn) -> dict | None:
    """The run's metrics.json record (with its wall time), or None when Ctrl-C or
    SIGTERM stopped a training after it saved. log: the lines a user follows (stdout);
    warn: warnings (stderr)."""
    started = time.time()
    with blas_threads(config.threads, config.image_size) as threads:
        try:
            memory_for_data = task.network_memory(config, backend)
            config, lock = lock_run_folder(config)
        except (NotEnoughMemory, RunFolderBusy, RunFolderUnusable) as e:
            raise ExperimentError(str(e)) from e
        except OSError as e:
            raise ExperimentError(f"cannot create --out {shown(config.out)}: {shown(e.strerror or e)}") from e
        try:
            prepare_run_folder(task, config, log)
            data = read_data(task, config, memory_for_data)
            run = Run(config, backend, log, warn, blas_threads=threads)
            record = train_in_place(task, run, data)
            if record is None:
                return None
            record["wall_seconds"] = round(time.time() - started, 1)
            write_record(run.out, record)
            return record
        finally:
            lock.release()


def lock_run_folder(config: ExperimentConfig) -> tuple[ExperimentConfig, RunLock]:
    """(config, the lock on its --out and every subfolder it writes or tidies). A
    default --out that another training took meanwhile gives way to the next free
    runs/DATASET-N (config.out says which)."""
    for _ in range(100):
        try:
            return config, RunLock(config.out, locked_subfolders(config)).acquire()
        except RunFolderBusy:
            if config.out_given or config.resume:
                raise
            config = dataclasses.replace(config, out=str(default_out(config.dataset, resume=False)))
    raise RunFolderBusy(f"no free run folder next to {shown(config.out)}: choose an --out")


def prepare_run_folder(task: Task, config: ExperimentConfig, log) -> None:
    """Under the lock: tidy what killed runs left, then the checks that need the folder
    as it is. ExperimentError when the run cannot go on there."""
    out = Path(config.out)
    note = recover(out)
    if note:
        log(shown(note))
    stale = remove_stale_temporaries(out)
    if stale:
        log(f"removed {len(stale)} temporary file(s) left by an interrupted save (first: {shown(stale[0])})")
    if holds_run(out) and not (config.resume or config.overwrite):
        raise ExperimentError(f"{shown(out)} already holds a run: --resume continues it, --overwrite replaces it, "
                              "or choose another --out")
    if config.resume:
        try:
            task.check_resume(config)
            for line in checkpoint_notes(config):
                log(f"note: {line}")
        except CheckpointError as e:
            raise ExperimentError(str(e)) from e


def read_data(task: Task, config: ExperimentConfig, memory_available: int | None):
    """task.read, with what can go wrong said in one line."""
    try:
        return task.read(config, memory_available)
    except (DataError, PatientLeak, NotEnoughMemory) as e:
        raise ExperimentError(str(e)) from e
    except MemoryError as e:  # the estimate was too low: say so instead of a traceback
        raise ExperimentError(f"ran out of memory reading the {config.dataset} data at --image-size "
                              f"{config.image_size}: lower --image-size or use fewer images") from e
    except OSError as e:  # a table or folder that cannot be opened (permissions, a vanished disk)
        raise ExperimentError(f"cannot read the {config.dataset} data: {e}") from e
    except KeyboardInterrupt as e:
        raise ExperimentInterrupted("interrupted while reading the data; nothing was written") from e


def train_in_place(task: Task, run: Run, data) -> dict | None:
    """task.train into the locked folder. With --overwrite the old run is moved aside
    first and deleted at the new run's first checkpoint; if the new run ends before
    that, it is put back."""
    out = run.out
    if not (run.config.overwrite and holds_run(out)):
        return _train(task, run, data)
    replacement = Replacement(out)
    try:
        try:
            moved = replacement.begin()
        except OSError as e:
            replacement.active = True  # put back whatever was moved before the failure
            raise ExperimentError(f"--overwrite: cannot move the run in {shown(out)} aside ({shown(e)}); it is left "
                                  "in place") from e
        run.log(f"--overwrite: the {moved} file(s) of the run in {shown(out)} are kept aside until this run saves its "
                "first checkpoint")
        run.on_save = replacement.commit
        return _train(task, run, data)
    finally:
        if replacement.active:
            try:
                replacement.rollback()
                run.log(f"the earlier run in {shown(out)} is back in place: this run saved no checkpoint")
            except OSError as e:  # it stays in .replaced/, and the next run there puts it back
                run.warn(f"error: could not put the earlier run back yet ({shown(e)}); it is safe in "
                         f"{shown(replacement.backup)} and the next run in this folder restores it")


def _train(task: Task, run: Run, data) -> dict | None:
    """task.train, with running out of memory anywhere in it (pooling, plots, the
    record) said in one line."""
    try:
        return task.train(run, data)
    except MemoryError as e:
        c = run.config
        raise ExperimentError(f"ran out of memory (--batch-size {c.batch_size}, --hidden {c.hidden}, --image-size "
                              f"{c.image_size}); every checkpoint saved so far is intact: lower --batch-size, "
                              "--hidden or --image-size") from e


def write_record(out: Path, record: dict) -> None:
    """metrics.json at the top of the run folder."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        report.write_metrics(out / "metrics.json", record)
    except OSError as e:
        raise ExperimentError(f"cannot write {out / 'metrics.json'}: {e}; the checkpoints are saved") from e
