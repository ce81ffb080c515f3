"""The training app's task: the paper's CNN told benign from malignant ROIs, honestly.

Every protocol (patient split, the paper's order, or both) and with --cv every fold
of it is a training of its own, each from the same initial weights (--seed), into its
own folder (layout.py), evaluated on its held-out side (protocol.py); the folds of a
protocol are pooled and the two protocols compared (results.py). The task checks
before reading that the network fits in memory and that --resume has something to
continue (resume.py), and reads the data into its splits: one train/test split per
protocol, or K folds by patient."""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import cv, memory
from ..data import augment, count_rois, load_dataset, preprocess
from ..data.split import make_split
from tinycnn.checkpoint import architecture_shapes
from .config import ExperimentConfig, protocols, show_progress
from .layout import run_dir
from .protocol import new_net, train_split
from .resume import check_resume
from .results import pool_folds, run_record
from .tables import banner, summary
from .task import Run


class RoiClassification:
    """The Task (task.py) of ROI classification."""

    def network_memory(self, config: ExperimentConfig, backend) -> int | None:
        """Refuse a network that cannot fit before anything is read or allocated (the
        estimate comes from shapes alone, at the batch the run can have: never more than
        the data's training samples). Returns the host memory left for the data."""
        shapes = architecture_shapes(memory.paper_architecture(config.hidden, config.image_size))
        batch, why = estimate_batch(config)
        need = memory.training_bytes(shapes, batch)
        memory.require(need, memory.device_available(backend),
                       f"training the network (--hidden {config.hidden}, --image-size {config.image_size}, "
                       f"--batch-size {config.batch_size}{why}: {shapes.num_parameters():,} parameters)",
                       "lower --hidden, --image-size or --batch-size", backend.memory_where)
        host = memory.host_available()
        return None if host is None else host - (need if backend.memory_is_host else 0)

    def check_resume(self, config: ExperimentConfig) -> None:
        check_resume(config)

    def read(self, config: ExperimentConfig, memory_available: int | None) -> tuple:
        """(rois, plan): plan is a list of {protocol: Split}, one per fold with --cv, else
        one. DataError, PatientLeak or NotEnoughMemory when the data cannot be used."""
        rois = load_dataset(config.dataset, config.data_dir, image_size=config.image_size, strict=config.strict,
                            cache_dir=config.cache_dir, use_cache=not config.no_cache,
                            progress=show_progress(config), memory_available=memory_available,
                            **dataset_options(config))
        if config.cv:
            return rois, cv.cv_splits(protocols(config), rois.labels, rois.patients, config.cv, seed=config.seed)
        return rois, [{p: make_split(p, rois.labels, rois.patients, seed=config.seed,
                                     official_side=rois.side if p == "patient" else None)
                       for p in protocols(config)}]

    def train(self, run: Run, data: tuple) -> dict | None:
        """Every protocol and fold, one after another, then the pooled results."""
        rois, plan = data
        config = run.config
        net = new_net(config, run.backend)  # built once for the banner and the first training
        sizes = sorted({len(split.train) for splits in plan for split in splits.values()})
        shown = run
        if config.batch_size > sizes[0]:  # the banner's batch and memory estimate: the batch the run has
            shown = dataclasses.replace(run, config=dataclasses.replace(config, batch_size=min(config.batch_size,
                                                                                               sizes[-1])))
        run.log(banner(shown, rois, plan, net))
        if config.batch_size > sizes[0]:
            span = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
            run.log(f"note: --batch-size {config.batch_size} is more than the {span} training samples: each batch "
                    f"holds at most the whole training side (min(batch, samples), as data loaders do)")
        meta = {"preprocessing": preprocess.settings(config.image_size), "classes": ["benign", "malignant"],
                "dataset": config.dataset, "config": run.settings()}
        if rois.source_sides is not None and len(rois.source_sides):  # what a film scan's windows should match
            sides = np.asarray(rois.source_sides)
            meta["roi_pixels"] = {"median": int(np.median(sides)), "min": int(sides.min()), "max": int(sides.max()),
                                  "what": "side of the square ROI crops in film pixels, before the resize"}
        runs = {p: [] for p in protocols(config)}  # per protocol: one result per fold (one without --cv)
        for i, splits in enumerate(plan):
            fold = i + 1 if config.cv else None
            for protocol, split in splits.items():
                if net is None:  # every protocol and fold starts from the same initial weights
                    net = new_net(config, run.backend)
                result = train_split(run, rois, split, run_dir(config, protocol, fold), net, meta, fold)
                net = None  # trained: free it before the next one builds its own
                if result is None:
                    return None
                runs[protocol].append(result)
        if config.cv:
            results = {p: pool_folds(config, rois, p, folds) for p, folds in runs.items()}
        else:
            results = {p: folds[0] for p, folds in runs.items()}
        return run_record(config, rois, results, meta)

    def summary(self, record: dict) -> list[str]:
        return summary(record)


def estimate_batch(config: ExperimentConfig) -> tuple[int, str]:
    """(the batch to estimate memory for, the words saying why it is not --batch-size):
    --batch-size, or the data's training samples at most where that is fewer (every ROI
    six ways: no split trains on more)."""
    n = count_rois(config.dataset, config.data_dir, **dataset_options(config))
    most = None if n is None else max(1, n * len(augment.TRANSFORMS))
    if most is None or config.batch_size <= most:
        return config.batch_size, ""
    return most, f", batches of at most {most:,}: {n:,} ROIs x {len(augment.TRANSFORMS)} transforms"


def dataset_options(config: ExperimentConfig) -> dict:
    """The reader's own options of config.dataset."""
    if config.dataset == "synthetic":
        return {"benign": config.synthetic_count, "malignant": config.synthetic_count, "seed": config.seed}
    if config.dataset == "cbis-ddsm":
        return {"abnormality": config.abnormality}
    if config.dataset == "mias":
        return {"margin": config.mias_margin}
    return {}
