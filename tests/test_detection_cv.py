"""The detection experiment end to end on a tiny synthetic set of films: folds by
woman (no woman on both sides, the classification task's --cv folds), the metrics'
keys, the files, and a run that stops after a fold and resumes without redoing it."""

import json

import numpy as np
import pytest

from tinycnn.mammo.cv import patient_folds
from tinycnn.mammo.detection import DetectorConfig, run_detection_cv
from tinycnn.mammo.detection.crossval import FOLD_DIR, METRICS_FILE, MODEL_FILE, SCANS_FILE
from tinycnn.mammo.detection.films import Mark, make_film
from tinycnn.mammo.detection.folds import check_film_folds, film_folds
from tinycnn.mammo.detection.checkpoints import NotADetector, load_detector
from tinycnn.mammo.detection.crossval import heldout_report
from tinycnn.model import load_model, paper_net

KINDS = ("CIRC", "CALC", "SPIC", "ARCH")


def tiny_films(n_women=6, size=128, seed=0):
    """Two films per woman: a breast-like ellipse with one bright blob (the lesion)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    films = []
    for w in range(n_women):
        for side in range(2):
            breast = ((yy - size / 2) / (0.45 * size)) ** 2 + (xx / (0.7 * size)) ** 2 <= 1
            raw = np.where(breast, 120 + 10 * rng.standard_normal((size, size)), 3.0)
            r, c, rad = rng.integers(35, 95), rng.integers(15, 60), rng.integers(6, 14)
            raw += 60 * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * (rad / 1.5) ** 2)) * breast
            mark = Mark(float(r), float(c), float(rad), KINDS[(2 * w + side) % 4], "M" if w % 2 else "B")
            films.append(make_film(f"f{2 * w + side:02d}", f"woman-{w}", raw.astype(np.float32), [mark], scale=2))
    return films


CONFIG = DetectorConfig(scale=2, side=30, widths=(4, 8, 8), hidden=8, steps=12, batch_size=16, hard_at=(0.5,),
                        hard_per_film=2, shifts=2, mirrors=2, nms_radius=12, candidates=5, folds=3)


def test_folds_by_woman():
    films = tiny_films()
    folds = film_folds(films, 3, seed=0)
    check_film_folds(films, folds)
    for test in folds:
        held = {films[i].patient for i in test}
        rest = {f.patient for j, f in enumerate(films) if j not in set(test.tolist())}
        assert held and not held & rest  # no woman on both sides
    # The women's folds are those the classification task's --cv deals over the same lesions.
    labels = [1 if f.marks[0].severity == "M" else 0 for f in films]
    lesion_folds = patient_folds(labels, [f.patient for f in films], 3, seed=0)
    assert [sorted(t.tolist()) for t in folds] == [sorted(t.tolist()) for t in lesion_folds]
    bad = [np.array([0, 2, 4, 6, 8, 10]), np.array([1, 3, 5, 7, 9, 11])]  # splits every woman's pair
    with pytest.raises(AssertionError, match="both sides"):
        check_film_folds(films, bad)


def test_cv_end_to_end_and_resume(tmp_path):
    films = tiny_films()
    lines = []
    metrics = run_detection_cv(films, CONFIG, backend="numpy", out_dir=tmp_path, log=lines.append)
    for key in ("top1_hit_rate", "top1_ci95", "top3_hit_rate", "froc", "random_hit_rate", "n_films", "by_class",
                "by_radius"):
        assert key in metrics
    assert set(metrics["froc"]) == {"0.5", "1", "2", "4"} and metrics["n_films"] == 12
    assert set(metrics["by_class"]) == {"CALC", "CIRC", "SPIC", "MISC", "ARCH", "ASYM"}
    assert 0 <= metrics["top1_ci95"][0] <= metrics["top1_hit_rate"] <= metrics["top1_ci95"][1] <= 1
    assert sum(r["n_films"] for r in metrics["folds"]) == 12
    assert "brightest_window" in metrics["baselines"]
    assert (tmp_path / "froc.png").is_file() and len(list((tmp_path / "heatmaps").glob("*.png"))) >= 3
    assert json.loads((tmp_path / METRICS_FILE).read_text())["n_films"] == 12
    net, info = load_model(tmp_path / FOLD_DIR.format(1) / MODEL_FILE)
    assert info["meta"]["task"] == "detect" and net.input_shape == (1, 30, 30)

    # The run folder's held-out report (what scan_film --heldout gives): each fold's model on the films
    # it held out, the same numbers as the run's.
    report = heldout_report(tmp_path, films, backend="numpy", log=lambda line: None)
    for key in ("top1_hit_rate", "top3_hit_rate", "froc", "n_films"):
        assert report[key] == metrics[key]
    assert all(report["by_class"][k] == metrics["by_class"][k] for k in KINDS)  # (the others: NaN, no lesion)
    # A benign/malignant classifier is refused as a detector, saying what it is.
    paper_net(hidden=4, in_size=32).save(tmp_path / "classifier.npz", meta={"preprocessing": {"image_size": 32}})
    with pytest.raises(NotADetector, match="benign/malignant ROI classifier"):
        load_detector(tmp_path / "classifier.npz")

    # Stop during fold 2's training (as Ctrl-C would), then run again: fold 1 is loaded, not redone,
    # and the pooled numbers are those of the uninterrupted run.
    again = tmp_path / "again"

    def stop_in_fold_2(line):
        if line.startswith("fold 2/3: training"):
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_detection_cv(films, CONFIG, backend="numpy", out_dir=again, log=stop_in_fold_2)
    assert (again / FOLD_DIR.format(1) / SCANS_FILE).is_file() and not (again / FOLD_DIR.format(2)).exists()
    lines = []
    resumed = run_detection_cv(films, CONFIG, backend="numpy", out_dir=again, log=lines.append)
    assert any(line.startswith("fold 1/3: finished earlier") for line in lines)
    assert any(line.startswith("fold 2/3: training") for line in lines)
    for key in ("top1_hit_rate", "top3_hit_rate", "froc", "films"):
        assert resumed[key] == metrics[key]

    # Other settings: every fold is trained again, none loaded.
    lines = []
    run_detection_cv(films, DetectorConfig(**{**CONFIG.__dict__, "steps": 8}), backend="numpy", out_dir=again,
                     log=lines.append)
    assert not any("finished earlier" in line for line in lines)
    with pytest.raises(ValueError, match="scale 4"):  # films read at another resolution than the settings'
        run_detection_cv(films, DetectorConfig(**{**CONFIG.__dict__, "scale": 4}), out_dir=None, log=print)
