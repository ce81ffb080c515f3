"""The training app's task: the paper's CNN told benign from malignant ROIs, honestly.

Every protocol (patient split, the paper's order, or both) and with --cv every fold
of it is a training of its own, each from the same initial weights (--seed), into its
own folder (layout.py), evaluated on its held-out side (protocol.py); the folds of a
protocol are pooled and the two protocols compared (results.py). The task checks
before reading that the network fits in memory and that --resume has something to
continue (resume.py), and reads the data into its splits: one train/test split per
protocol, or K folds by patient."""

from __future__ import annotations

import numpy as np

from .. import cv, memory
from ..data import load_dataset, preprocess
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
        estimate comes from shapes alone). Returns the host memory left for the data."""
        shapes = architecture_shapes(memory.paper_architecture(config.hidden, config.image_size))
        need = memory.training_bytes(shapes, config.batch_size)
        memory.require(need, memory.device_available(backend),
                       f"training the network (--hidden {config.hidden}, --image-size {config.image_size}, "
                       f"--batch-size {config.batch_size}: {shapes.num_parameters():,} parameters)",
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
        run.log(banner(run, rois, plan, net))
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


def dataset_options(config: ExperimentConfig) -> dict:
    """The reader's own options of config.dataset."""
    if config.dataset == "synthetic":
        return {"benign": config.synthetic_count, "malignant": config.synthetic_count, "seed": config.seed}
    if config.dataset == "cbis-ddsm":
        return {"abnormality": config.abnormality}
    if config.dataset == "mias":
        return {"margin": config.mias_margin}
    return {}
