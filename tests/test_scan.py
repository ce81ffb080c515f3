"""Whole-film scans: the window grid (a film smaller than a window, a stride that does not
divide the film), the heat map against hand-worked means, batches, the breast mask,
apps/scan_film.py end to end and under hostile input, and --heldout on a fake MIAS
whose women were held out by a tiny --cv run (numpy backend, small images: seconds)."""

import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinycnn.mammo import scan
from tinycnn.mammo.saliency import is_overlay
from tinycnn.model import paper_net

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "apps"))

import scan_film  # noqa: E402
import train as train_app  # noqa: E402

FILM = 96  # side of the fake MIAS films


def fake_mias(root: Path, women: int = 16) -> Path:
    """A MIAS layout with `women` women (two films each, mdb(2k-1) and mdb(2k)): a grey
    breast on black with a bright blob at each marked circle; malignant blobs are
    ragged, benign ones round. Each woman's first film carries one abnormality."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:FILM, 0:FILM]
    rows = []
    for w in range(women):
        for side in (1, 2):
            n = 2 * w + side
            ref = f"mdb{n:03d}"
            film = np.zeros((FILM, FILM))
            film[np.hypot(yy - FILM / 2, xx) < FILM * 0.8] = 90  # the breast against the left edge
            film += rng.normal(0, 6, film.shape) * (film > 0)
            if side == 1:
                malignant = w % 2 == 1
                x, y, r = int(rng.integers(20, 50)), int(rng.integers(25, 70)), 8
                d = np.hypot(yy - (FILM - y), xx - x)
                if malignant:
                    d = d * (1 + 0.35 * np.sin(7 * np.arctan2(yy - (FILM - y), xx - x)))
                film[d < r] += 100
                rows.append(f"{ref} F {'SPIC' if malignant else 'CIRC'} {'M' if malignant else 'B'} {x} {y} {r}")
            else:
                rows.append(f"{ref} F NORM")
            Image.fromarray(np.clip(film, 0, 255).astype(np.uint8)).save(root / f"{ref}.pgm")
    (root / "Info.txt").write_text("MIAS, fake\n" + "\n".join(rows) + "\n")
    return root


def tiny_net(size=32, seed=0):
    return paper_net(hidden=4, in_size=size, seed=seed)


# ------------------------------------------------------------ the grid
def test_a_stride_that_does_not_divide_the_film_ends_flush():
    assert scan.positions(100, 32, 30).tolist() == [0, 30, 60, 68]  # 68 = 100 - 32, the far edge
    assert scan.positions(92, 32, 30).tolist() == [0, 30, 60]  # 60 + 32 = 92: lands there already
    assert scan.positions(32, 32, 5).tolist() == [0]


def test_a_film_smaller_than_a_window_gets_windows_of_its_shorter_side():
    tops, lefts, side = scan.window_grid(20, 45, 32, 10)
    assert side == 20 and tops.tolist() == [0, 0, 0, 0] and lefts.tolist() == [0, 10, 20, 25]
    tops, lefts, side = scan.window_grid(10, 12, 32, 4)
    assert side == 10 and len(tops) == 2


def test_every_pixel_is_covered_and_the_heat_is_the_mean_of_its_windows():
    net = tiny_net()
    film = np.random.default_rng(0).random((70, 83)).astype(np.float32) * 255
    r = scan.scan(net, film, 32, window=40, stride=17, batch_size=5)
    assert np.isfinite(r.heat).all()  # 17 divides neither 70 - 40 nor 83 - 40: flush windows cover the rest
    assert r.tops.max() == 70 - 40 and r.lefts.max() == 83 - 40
    for (row, col) in ((0, 0), (35, 41), (69, 82)):
        cover = [(t <= row < t + 40) and (l <= col < l + 40) for t, l in zip(r.tops, r.lefts)]
        assert r.heat[row, col] == pytest.approx(r.probs[np.array(cover)].mean())


def test_windows_get_the_checkpoints_preprocessing_and_batches_change_nothing():
    from tinycnn.mammo.data.preprocess import preprocess
    from tinycnn.mammo.metrics import softmax_positive

    net = tiny_net()
    film = np.random.default_rng(1).random((50, 60)).astype(np.float32) * 200
    one = scan.scan(net, film, 32, window=24, stride=9, batch_size=1)
    many = scan.scan(net, film, 32, window=24, stride=9, batch_size=64)
    np.testing.assert_allclose(one.probs, many.probs, rtol=1e-5, atol=1e-6)
    t, l = one.tops[3], one.lefts[3]
    x = preprocess(film[t:t + 24, l:l + 24], 32)[None, None]
    assert one.probs[3] == pytest.approx(softmax_positive(net.forward(x))[0], rel=1e-5)


def test_the_breast_mask_leaves_out_the_background_and_a_label():
    film = np.zeros((80, 80), np.float32)
    yy, xx = np.mgrid[0:80, 0:80]
    film[np.hypot(yy - 40, xx) < 50] = 120
    film[5:9, 70:76] = 255  # a small bright label in the corner
    mask = scan.breast_mask(film)
    assert mask[40, 10] and not mask[40, 70] and not mask[6, 72]
    r = scan.scan(tiny_net(), film, 32, window=20, stride=10, mask=mask)
    assert r.skipped > 0 and np.isnan(r.heat[40, 75]) and np.isfinite(r.heat[40, 5])
    assert scan.breast_mask(np.full((10, 10), 3.0)).all()  # no contrast: the whole film


def test_top_regions_overlap_little_and_come_in_order():
    r = scan.ScanResult(np.zeros((1, 1)), np.array([0, 0, 0, 50]), np.array([0, 2, 40, 0]), 20,
                        np.array([0.9, 0.8, 0.7, 0.6]), 0)
    regions = scan.top_regions(r, k=3)
    assert [g["rank"] for g in regions] == [1, 2, 3]
    assert [(g["x"], g["y"]) for g in regions] == [(10, 10), (50, 10), (10, 60)]  # (2, 0) overlaps the first


def test_hottest_point_and_circles_by_hand():
    heat = np.zeros((10, 10))
    heat[2:5, 6:9] = 1.0  # a plateau: its middle pixel
    assert scan.hottest_point(heat) == (3, 7)
    assert scan.inside_circles(3, 7, [(7, 10 - 3, 0)], 10)  # x 7, y 7 from the bottom of a 10-row film
    assert not scan.inside_circles(3, 7, [(0, 0, 2)], 10)
    mask = np.zeros((10, 10), bool)
    mask[:, :5] = True  # 50 pixels of breast
    share = scan.circle_share(mask, [(2, 5, 1)])  # a plus of 5 pixels, all in the breast
    assert share == pytest.approx(5 / 50)


# ------------------------------------------------------------ the app
@pytest.fixture
def checkpoint(tmp_path):
    """A tiny trained classifier's checkpoint (a train.py run, 32 px)."""
    out = tmp_path / "run"
    assert train_app.main(["--image-size", "32", "--hidden", "4", "--epochs", "1", "--batch-size", "16",
                            "--backend", "numpy", "--no-progress", "--no-baseline", "--synthetic-count", "6",
                            "--bootstrap", "10", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]) == 0
    return out / "last.npz"


def write_film(path, shape, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)).save(path)
    return path


def test_scan_film_end_to_end(checkpoint, tmp_path, capsys):
    big = write_film(tmp_path / "films" / "big.png", (70, 90))
    small = write_film(tmp_path / "films" / "small.png", (20, 25), seed=1)
    out = tmp_path / "scans"
    rc = scan_film.main([str(checkpoint), str(big), str(small), "--out", str(out), "--stride", "7",
                         "--backend", "numpy", "--no-breast-mask", "--top", "3"])
    text, err = capsys.readouterr()
    assert rc == 0, err
    assert "windows of 32 film pixels (the network's input size" in text
    assert "small.png: 2 windows" in text and "windows of 20 px, its shorter side" in text
    for stem in ("big", "small"):
        assert is_overlay(out / f"{stem}.heatmap.png")
        rows = list(csv.DictReader(open(out / f"{stem}.regions.csv")))
        assert [r["rank"] for r in rows] == ["1", "2", "3"][:len(rows)] and rows
        assert all(0 <= float(r["p_malignant"]) <= 1 for r in rows)
    assert Image.open(out / "big.heatmap.png").size == (90, 70)
    assert "numpy, precision fp32" in text
    # again into the same folder: its own earlier outputs are replaced, nothing else; in bf16
    assert scan_film.main([str(checkpoint), str(big), "--out", str(out), "--backend", "numpy",
                           "--precision", "bf16"]) == 0
    assert "numpy, precision bf16: conv and dense products on BF16 operands" in capsys.readouterr().out


def test_scan_film_refuses_with_one_line(checkpoint, tmp_path, capsys):
    films = tmp_path / "films"
    film = write_film(films / "f.png", (40, 40))

    def usage(*argv):
        with pytest.raises(SystemExit) as e:
            scan_film.main([str(a) for a in argv])
        assert e.value.code == 2
        return capsys.readouterr().err

    assert "--stride must be >= 1" in usage(checkpoint, film, "--stride", "0")
    assert "--window must be >= 2" in usage(checkpoint, film, "--window", "1")
    assert "--min-inside must be between 0 and 1" in usage(checkpoint, film, "--min-inside", "2")
    assert "must be a finite number" in usage(checkpoint, film, "--min-inside", "nan")
    assert "give at least one FILM" in usage(checkpoint)
    assert "is inside the input folder" in usage(checkpoint, films, "--out", films / "scans")
    (tmp_path / "afile").write_text("x")
    assert "is a file, not a folder" in usage(checkpoint, film, "--out", tmp_path / "afile")

    out = tmp_path / "out"
    out.mkdir()
    (out / "f.heatmap.png").write_text("my notes")
    assert scan_film.main([str(checkpoint), str(film), "--out", str(out), "--backend", "numpy"]) == 2
    err = capsys.readouterr().err
    assert "f.heatmap.png exists and is not an earlier output of scan_film.py" in err
    assert (out / "f.heatmap.png").read_text() == "my notes"
    assert scan_film.main([str(tmp_path), str(film), "--out", str(tmp_path / "o2")]) == 2
    assert "no best.npz or last.npz" in capsys.readouterr().err
    (films / "broken.png").write_bytes(b"not an image")
    assert scan_film.main([str(checkpoint), str(films / "broken.png"), "--out", str(tmp_path / "o3"),
                           "--backend", "numpy"]) == 2
    assert "none of the 1 film(s) could be read" in capsys.readouterr().err


def test_heldout_scan_of_a_cv_run(tmp_path, capsys):
    mias = fake_mias(tmp_path / "mias")
    run = tmp_path / "cv"
    rc = train_app.main(["--dataset", "mias", "--data-dir", str(mias), "--image-size", "32", "--hidden", "4",
                          "--epochs", "1", "--batch-size", "16", "--backend", "numpy", "--no-progress",
                          "--no-baseline", "--bootstrap", "10", "--cv", "2", "--cache-dir", str(tmp_path / "c"),
                          "--out", str(run)])
    assert rc == 0, capsys.readouterr().err
    meta = json.loads(np.load(run / "fold-1" / "last.npz")["__meta__"].item())
    assert meta["roi_pixels"]["median"] == 32 and meta["folds"] == 2  # MIAS crops: 2 x 1.5 x 8, at least 32
    capsys.readouterr()
    out = tmp_path / "scans"
    rc = scan_film.main([str(run), "--heldout", str(mias), "--out", str(out), "--backend", "numpy", "--stride", "16"])
    text, err = capsys.readouterr()
    assert rc == 0, err
    assert "windows of 32 px (the training ROIs' median crop side)" in text
    rows = list(csv.DictReader(open(out / "heldout.csv")))
    assert len(rows) == 16 and {r["fold"] for r in rows} == {"1", "2"}  # every woman's marked film, once
    summary = json.loads((out / "heldout.json").read_text())
    assert summary["films"] == 16 and 0 <= summary["hit_rate"] <= 1
    assert summary["hit_rate_ci95"][0] <= summary["hit_rate"] <= summary["hit_rate_ci95"][1]
    assert 0 < summary["random_point_rate"] < 0.2  # a circle of radius 8 in a breast of some 4000 pixels
    assert is_overlay(out / "mdb001.heatmap.png")
    assert "the peak (the most malignant window's centre) inside a marked circle" in text
    assert {"hit", "hit_map_max", "random_point_hit_chance"} <= set(rows[0])
    assert scan_film.main([str(run / "fold-1"), "--heldout", str(mias), "--out", str(tmp_path / "o")]) == 2
    assert "metrics.json" in capsys.readouterr().err


def test_the_hit_rate_interval_by_hand():
    """Wilson's interval: with 0 hits of n the upper end is z^2 / (n + z^2) (a bootstrap
    would collapse to [0, 0]); 5 of 10 is symmetric about 1/2."""
    lo, hi = scan_film.wilson_interval(0, 111)
    assert lo == 0 and hi == pytest.approx(1.959964 ** 2 / (111 + 1.959964 ** 2))
    lo, hi = scan_film.wilson_interval(5, 10)
    assert lo == pytest.approx(1 - hi) and 0.23 < lo < 0.24
