"""apps/scan_film.py with a lesion detector: a tiny detection run (3 folds of a few
steps, numpy) on a fake MIAS folder, then a film scan with one of its detectors (the
region table: probabilities in [0, 1], best first, points on the film), --heldout on
the run (the run's own top-1, top-3 and FROC), a classifier refused by --find-lesions
before any film is read, a classifier scan saying what its map is, and a detector
whose meta record is damaged named as such. Seconds on 2 cores."""

import csv
import json
import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinycnn.checkpoint import CheckpointError
from tinycnn.mammo.detection import DetectorConfig, mias_films, run_detection_cv
from tinycnn.mammo.detection.checkpoints import load_detector
from tinycnn.mammo.lesion_scanner import REGIONS_HEADER
from tinycnn.mammo.runfolder import RunLock
from tinycnn.mammo.saliency import is_overlay
from tinycnn.model import paper_net

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "apps"))

import scan_film  # noqa: E402

SIDE = 128  # the fake films' side
CONFIG = DetectorConfig(scale=2, side=30, widths=(4, 8, 8), hidden=8, steps=12, batch_size=16, hard_at=(0.5,),
                        hard_per_film=2, shifts=2, mirrors=2, nms_radius=12, candidates=5, folds=3)


def fake_mias(root: Path, women: int = 6) -> Path:
    """A MIAS layout: two films per woman (mdb(2k-1), mdb(2k)), a breast against the
    left edge with one bright marked blob each (MIAS y counts from the bottom)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    rows = []
    for n in range(1, 2 * women + 1):
        breast = ((yy - SIDE / 2) / (0.45 * SIDE)) ** 2 + (xx / (0.7 * SIDE)) ** 2 <= 1
        raw = np.where(breast, 120 + 10 * rng.standard_normal((SIDE, SIDE)), 3.0)
        r, c, rad = int(rng.integers(35, 95)), int(rng.integers(15, 60)), int(rng.integers(6, 14))
        raw += 80 * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * (rad / 1.5) ** 2)) * breast
        Image.fromarray(np.clip(raw, 0, 255).astype(np.uint8)).save(root / f"mdb{n:03d}.pgm")
        rows.append(f"mdb{n:03d} F CIRC {'M' if n % 3 else 'B'} {c} {SIDE - r} {rad}")
    (root / "Info.txt").write_text("MIAS, fake\n" + "\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(MIAS folder, a finished detection run on it, its metrics)."""
    base = tmp_path_factory.mktemp("detect")
    mias = fake_mias(base / "mias")
    films, skipped = mias_films(mias, scale=CONFIG.scale)
    assert len(films) == 12 and not skipped
    metrics = run_detection_cv(films, CONFIG, backend="numpy", out_dir=base / "run", log=lambda line: None)
    return mias, base / "run", metrics


def test_a_detector_scan_writes_the_regions_best_first_on_the_film(run, tmp_path, capsys):
    mias, folder, _ = run
    out = tmp_path / "scans"
    rc = scan_film.main([str(folder), str(mias / "mdb001.pgm"), str(mias / "mdb002.pgm"), "--out", str(out),
                         "--top", "4", "--backend", "numpy"])
    text, err = capsys.readouterr()
    assert rc == 0, err
    assert "fold-1/detector.npz" in err and "5 fold" not in err  # the fold taken is said
    assert "a lesion detector: films shrunk 2x" in text and "p_lesion" in text
    rows = list(csv.DictReader(open(out / "mdb001.regions.csv")))
    assert list(rows[0]) == REGIONS_HEADER and [r["rank"] for r in rows] == ["1", "2", "3", "4"]
    p = [float(r["p_lesion"]) for r in rows]
    assert all(0 <= v <= 1 for v in p) and p == sorted(p, reverse=True)
    assert all(0 <= float(r["x"]) < SIDE and 0 <= float(r["y"]) < SIDE for r in rows)
    assert [float(r["log_odds"]) for r in rows] == sorted((float(r["log_odds"]) for r in rows), reverse=True)
    assert is_overlay(out / "mdb001.heatmap.png")
    index = list(csv.DictReader(open(out / "scans.csv")))
    assert [r["status"] for r in index] == ["scanned", "scanned"] and index[0]["p_lesion"] == rows[0]["p_lesion"]
    # A rerun replaces its own outputs (they are ours), and a broken film is skipped and named.
    (tmp_path / "broken.pgm").write_bytes(b"P5 not a film")
    rc = scan_film.main([str(folder / "fold-2" / "detector.npz"), str(mias / "mdb001.pgm"), str(tmp_path / "broken.pgm"),
                         "--out", str(out), "--backend", "numpy"])
    text, err = capsys.readouterr()
    assert rc == 0, err
    assert "earlier output(s) of scan_film.py" in err and "skipped" in err and "broken.pgm" in err


def classifier(tmp_path) -> Path:
    path = tmp_path / "classifier.npz"
    paper_net(hidden=4, in_size=32, seed=0).save(path, meta={"preprocessing": {"image_size": 32}})
    return path


def test_find_lesions_refuses_a_classifier_before_reading_any_film(tmp_path, capsys):
    missing = tmp_path / "not-read.pgm"  # never looked at: the checkpoint is refused first
    rc = scan_film.main([str(classifier(tmp_path)), str(missing), "--find-lesions", "--out", str(tmp_path / "o"),
                         "--backend", "numpy"])
    err = capsys.readouterr().err
    assert rc == 2 and "classifier.npz: a benign/malignant ROI classifier" in err and "--task detect" in err
    assert "not-read" not in err and not (tmp_path / "o").exists()


def test_a_classifier_scan_says_plainly_what_its_map_is(tmp_path, capsys):
    film = tmp_path / "films" / "f.png"
    film.parent.mkdir()
    Image.fromarray((np.random.default_rng(0).random((48, 48)) * 255).astype(np.uint8)).save(film)
    rc = scan_film.main([str(classifier(tmp_path)), str(film), "--out", str(tmp_path / "o"), "--backend", "numpy",
                         "--stride", "16"])
    text, err = capsys.readouterr()
    assert rc == 0, err
    line = [t for t in text.splitlines() if t.startswith("what this is:")]
    assert len(line) == 1 and "does not say where a lesion is" in line[0] and "--task detect" in line[0]


def test_heldout_gives_the_runs_own_figures(run, tmp_path, capsys):
    mias, folder, metrics = run
    out = tmp_path / "h"
    rc = scan_film.main([str(folder), "--heldout", str(mias), "--out", str(out), "--backend", "numpy"])
    text, err = capsys.readouterr()
    assert rc == 0, err
    summary = json.loads((out / "heldout.json").read_text())
    got = summary["detection"]
    for key in ("n_films", "top1_hits", "top1_hit_rate", "top3_hit_rate", "froc"):
        assert got[key] == metrics[key], key
    assert summary["matches_run"] and "the same as the run's" in text
    assert f"top-1 hit rate {100 * metrics['top1_hit_rate']:.1f}%" in text  # format_summary's lines
    rows = list(csv.DictReader(open(out / "heldout.csv")))
    assert len(rows) == 12 and sum(int(r["top1_hit"]) for r in rows) == metrics["top1_hits"]
    # A run a training still writes is refused, and so is a folder that never finished.
    with RunLock(folder):
        assert scan_film.main([str(folder), "--heldout", str(mias), "--out", str(tmp_path / "h2")]) == 2
        assert "is being written by a training" in capsys.readouterr().err
    (folder / "detection.json").rename(folder / "d.json")
    try:
        assert scan_film.main([str(folder), "--heldout", str(mias), "--out", str(tmp_path / "h2")]) == 2
        assert "not a finished detection run" in capsys.readouterr().err
    finally:
        (folder / "d.json").rename(folder / "detection.json")


def damaged_meta(src: Path, dst: Path, edit) -> Path:
    """A copy of the checkpoint src whose meta record edit(meta) changed."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == "__meta__.npy":
                meta = json.loads(np.load(src)["__meta__"].item())
                edit(meta)
                path = dst.parent / "meta.npy"
                np.save(path, np.array(json.dumps(meta)))
                data = path.read_bytes()
            zout.writestr(item, data)
    return dst


def test_a_damaged_detector_meta_is_one_clear_line(run, tmp_path, capsys):
    mias, folder, _ = run
    src = folder / "fold-1" / "detector.npz"
    for edit, said in ((lambda m: m["detector"].update(scale="four"), "detector setting 'scale'"),
                       (lambda m: m["detector"].update(shifts=3), "detector setting 'shifts'"),
                       (lambda m: m["detector"].pop("side"), "detector setting 'side'"),
                       (lambda m: m["detector"].update(mirrors=3), "detector setting 'mirrors'"),
                       (lambda m: m["detector"].update(nms_radius=float("nan")), "detector setting 'nms_radius'"),
                       (lambda m: m["detector"].update(candidates=0), "detector setting 'candidates'"),
                       (lambda m: m.update(detector="x"), "holds no detector settings")):
        bad = damaged_meta(src, tmp_path / "bad.npz", edit)
        rc = scan_film.main([str(bad), str(mias / "mdb001.pgm"), "--out", str(tmp_path / "o"), "--find-lesions",
                             "--backend", "numpy"])
        err = capsys.readouterr().err
        assert rc == 2 and said in err and "bad.npz" in err and err.count("\n") == 1, err
        # the library's loader (the --heldout and training side) names the same setting
        with pytest.raises(CheckpointError, match=said.replace("'", ".")):
            load_detector(bad)
