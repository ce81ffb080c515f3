"""The training app's second task (--task detect): find the lesion on a whole film.

A small patch classifier (lesion against normal breast tissue, tinycnn.mammo.detection)
is trained by K folds of women on whole films with marked lesions (MIAS circles, or
CBIS-DDSM full mammograms with their ROI masks), and each fold's model scans the films
of the women it held out. The out-of-fold candidates are pooled into the figures
metrics.json holds under "detection": top-1 and top-3 hit rates with Wilson
intervals, FROC sensitivities at 0.5, 1, 2 and 4 false positives per film, a random
breast point and the brightest window on the same films, and all of it by lesion
class and radius band.

The run folder holds fold-N/detector.npz (each fold's model) and fold-N/scans.npz
(its held-out heat maps and candidates), froc.png, heatmaps/, detection.json and
metrics.json. A fold is saved whole once it is trained and scanned; --resume loads
the folds finished with the same films, settings and backend, and trains the rest.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .. import memory
from ..cli import shown
from ..data import DataError
from ..detection import DetectorConfig, cbis_films, format_summary, mias_films, run_detection_cv
from ..detection.crossval import FOLD_DIR, SCANS_FILE
from ..detection.folds import film_folds
from ..detection.network import detector_net
from tinycnn.checkpoint import CheckpointError, architecture_shapes
from .config import ExperimentConfig, show_progress
from .task import ExperimentError, ExperimentInterrupted, Run

DATASETS = ("mias", "cbis-ddsm")  # the readers that have whole films and where their lesions are


def detector_config(config: ExperimentConfig) -> DetectorConfig:
    """The detector's settings for this run: its defaults (CBIS-DDSM's 50 micron films
    shrunk 16 times, MIAS's 200 micron ones 4 times: 800 micron working pixels both),
    with the app's --cv, --steps, --batch-size, --lr, --hidden and --seed."""
    base = DetectorConfig(scale=16) if config.dataset == "cbis-ddsm" else DetectorConfig()
    return dataclasses.replace(base, folds=config.cv, steps=config.steps, batch_size=config.batch_size,
                               lr=config.lr, hidden=config.hidden, seed=config.seed)


class FilmDetection:
    """The Task (task.py) of lesion detection on whole films."""

    def network_memory(self, config: ExperimentConfig, backend) -> int | None:
        """The detector's training step at its batch, from shapes alone."""
        d = detector_config(config)
        net = detector_net(d.side, d.widths, d.hidden, dropout=d.dropout)
        shapes = architecture_shapes(net.architecture())
        memory.require(memory.training_bytes(shapes, d.batch_size), memory.device_available(backend),
                       f"training the detector (--hidden {d.hidden}, --batch-size {d.batch_size}: "
                       f"{shapes.num_parameters():,} parameters)", "lower --hidden or --batch-size",
                       backend.memory_where)
        return memory.host_available()

    def check_resume(self, config: ExperimentConfig) -> None:
        """--resume needs a finished fold to continue from (a fold whose settings or
        films differ is trained again, and the log says so)."""
        out = Path(config.out)
        if not any((out / FOLD_DIR.format(i) / SCANS_FILE).is_file() for i in range(1, config.cv + 1)):
            raise CheckpointError(f"nothing to resume: no finished fold in {out} "
                                  f"({out / FOLD_DIR.format(1) / SCANS_FILE} ... does not exist)")

    def read(self, config: ExperimentConfig, memory_available: int | None) -> tuple:
        """(films, skipped): every film with a marked lesion, at working resolution;
        DataError when there are none or too few women for the folds."""
        d = detector_config(config)
        if config.dataset == "mias":
            films, skipped = mias_films(config.data_dir, scale=d.scale, strict=config.strict,
                                        progress=show_progress(config))
        else:
            films, skipped = cbis_films(config.data_dir, scale=d.scale, abnormality=config.abnormality,
                                        strict=config.strict, progress=show_progress(config))
        if not films:
            raise DataError(f"{config.dataset} in {shown(config.data_dir)}: no film with a marked lesion to train "
                            f"the detector on ({len(skipped)} skipped)")
        film_folds(films, d.folds, d.seed)  # too few women for --cv: said now, not after the first fold
        return films, skipped

    def train(self, run: Run, data: tuple) -> dict:
        films, skipped = data
        config = run.config
        d = detector_config(config)
        lesions = sum(len(f.marks) for f in films)
        run.log("=" * 78)
        run.log(f"tinycnn: lesion detection on whole films   (dataset {config.dataset}, {shown(config.data_dir)})")
        run.log(f"data     {len(films)} films with marked lesions ({lesions} lesions, "
                f"{len({f.patient for f in films})} women), {len(skipped)} skipped; 1/{d.scale} resolution")
        run.log(f"model    a {d.side} px window classifier (lesion / normal tissue), widths {list(d.widths)}, "
                f"hidden {d.hidden}; {d.steps} steps of {d.batch_size} per fold, Adam lr {d.lr:g}")
        run.log(f"backend  {run.backend.name} ({run.backend.precision}); {d.folds} folds by woman; out "
                f"{shown(run.out)}")
        run.log("=" * 78)
        for why in skipped:
            run.warn(f"warning: skipped {shown(why)}")
        try:
            metrics = run_detection_cv(films, d, backend=run.backend, out_dir=run.out, log=run.log,
                                       on_save=run.on_save)
        except DataError as e:  # films the detector cannot learn from (no negatives, say): after the data was read
            raise ExperimentError(f"{e}; every finished fold is saved") from e
        except KeyboardInterrupt as e:
            raise ExperimentInterrupted(f"interrupted; every finished fold is saved in {shown(run.out)}/fold-N "
                                        "(--resume continues from them)") from e
        return {"task": "detect", "dataset": config.dataset, "detection": metrics, "config": run.settings(),
                "skipped": [shown(s) for s in skipped]}

    def summary(self, record: dict) -> list[str]:
        return [""] + format_summary(record["detection"]).split("\n")
