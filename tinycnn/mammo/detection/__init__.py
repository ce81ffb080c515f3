"""Lesion detection on whole films: a small patch classifier (lesion vs normal breast
tissue) trained from scratch on windows of whole films, run fully convolutionally
over held-out films, measured per woman as hit rate and FROC against a random
breast point and the brightest window.

films.py (films and marks at working resolution, per-film normalisation), masks.py
(breast mask), sampling.py (training windows), network.py (the exact-pool network),
fcn.py (film-wide and window-by-window passes), heatmap.py (log-odds maps, mirrors),
training.py (DetectorConfig, training with hard negatives), folds.py (folds by
woman), evaluate.py (hits, FROC, baselines), plots.py, crossval.py (the experiment).
"""

from .crossval import format_summary, run_detection_cv
from .films import Film, Mark, cbis_films, mias_films
from .training import DetectorConfig, train_detector

__all__ = ["DetectorConfig", "Film", "Mark", "cbis_films", "format_summary", "mias_films", "run_detection_cv",
           "train_detector"]
