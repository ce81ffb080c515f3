"""Cross-validated lesion detection on MIAS (or CBIS-DDSM) whole films, from the
command line, with the detector's defaults:

    python -m tinycnn.mammo.detection --data-dir /path/to/mias --out runs/detect --backend numba

Prints each fold as it finishes and the pooled summary (top-1 and top-3 hit rates
with Wilson intervals, FROC, baselines, by class and radius); writes the run folder
(crossval.py) with detection.json. A rerun with the same --out loads finished folds.
"""

from __future__ import annotations

import argparse
import sys
import time

from tinycnn import backends

from .crossval import format_summary, run_detection_cv
from .films import cbis_films, mias_films
from .training import DetectorConfig


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tinycnn.mammo.detection", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=("mias", "cbis-ddsm"), default="mias")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", required=True, help="run folder (finished folds in it are loaded, not redone)")
    p.add_argument("--backend", default="numba", choices=backends.names())
    p.add_argument("--cv", type=int, default=DetectorConfig.folds, help="folds by woman")
    p.add_argument("--steps", type=int, default=DetectorConfig.steps, help="training steps per fold")
    p.add_argument("--seed", type=int, default=DetectorConfig.seed)
    args = p.parse_args(argv)
    start = time.perf_counter()
    config = DetectorConfig(folds=args.cv, steps=args.steps, seed=args.seed,
                            **({"scale": 16} if args.dataset == "cbis-ddsm" else {}))
    reader = mias_films if args.dataset == "mias" else cbis_films
    films, skipped = reader(args.data_dir, scale=config.scale)
    print(f"{len(films)} films with marked lesions ({sum(len(f.marks) for f in films)} lesions, "
          f"{len({f.patient for f in films})} women), {len(skipped)} skipped; backend {args.backend}", flush=True)
    metrics = run_detection_cv(films, config, backend=args.backend, out_dir=args.out,
                               log=lambda line: print(line, flush=True))
    print(format_summary(metrics))
    print(f"wall time {time.perf_counter() - start:.0f} s; {args.out}/detection.json, froc.png, heatmaps/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
