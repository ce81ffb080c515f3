"""apps/train.py --task detect end to end on a small MIAS-style folder (Info.txt and
PGM films, two per woman, a bright blob in each marked circle): the run folder and
metrics.json's "detection" figures, a rerun refused and --resume loading every
finished fold, the options of the ROI task refused, and data it cannot use said in
one line."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps"))
import train  # noqa: E402  (apps/train.py)

SIZE = 512  # film pixels; the detector works at a quarter: 128 x 128
KINDS = ("CIRC", "SPIC", "CALC", "ARCH", "MISC", "ASYM")


def write_mias(root: Path, n_women: int = 4, seed: int = 0) -> Path:
    """A MIAS layout: mdbNNN.pgm (consecutive films one woman) and Info.txt rows
    'REF TISSUE CLASS SEVERITY X Y RADIUS' with y counted from the bottom."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    root.mkdir(parents=True)
    rows = []
    for i in range(2 * n_women):
        breast = ((yy - SIZE / 2) / (0.45 * SIZE)) ** 2 + (xx / (0.7 * SIZE)) ** 2 <= 1
        raw = np.where(breast, 110 + 12 * rng.standard_normal((SIZE, SIZE)), 4.0)
        row, col, radius = int(rng.integers(150, 360)), int(rng.integers(60, 200)), int(rng.integers(24, 48))
        raw += 90 * np.exp(-((yy - row) ** 2 + (xx - col) ** 2) / (2 * (radius / 1.5) ** 2)) * breast
        ref = f"mdb{i + 1:03d}"
        Image.fromarray(np.clip(raw, 0, 255).astype(np.uint8)).save(root / f"{ref}.pgm")
        rows.append(f"{ref} G {KINDS[i % len(KINDS)]} {'BM'[i % 2]} {col} {SIZE - row} {radius}")
    (root / "Info.txt").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def mias_dir(tmp_path_factory):
    return write_mias(tmp_path_factory.mktemp("detect") / "mias")


FAST = ["--task", "detect", "--dataset", "mias", "--cv", "2", "--steps", "3", "--batch-size", "8", "--hidden", "8",
        "--backend", "numpy", "--no-progress"]


def test_detect_writes_folds_plots_and_the_detection_figures(mias_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(FAST + ["--data-dir", str(mias_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "8 films with marked lesions (8 lesions, 4 women)" in printed and "top-1 hit rate" in printed
    for k in (1, 2):
        assert (out / f"fold-{k}" / "detector.npz").is_file() and (out / f"fold-{k}" / "scans.npz").is_file()
    assert (out / "froc.png").is_file() and any((out / "heatmaps").glob("*.png"))
    record = json.loads((out / "metrics.json").read_text())
    d = record["detection"]
    assert record["task"] == "detect" and d["n_films"] == 8
    assert set(d["froc"]) == {"0.5", "1", "2", "4"} and all(0 <= v <= 1 for v in d["froc"].values())
    lo, hi = d["top1_ci95"]
    assert 0 <= lo <= d["top1_hit_rate"] <= hi <= 1 and d["top1_hit_rate"] == d["top1_hits"] / 8
    assert 0 < d["random_hit_rate"] < 1 and set(d["by_class"]) <= set(KINDS)
    assert record["config"]["task"] == "detect" and record["config"]["steps"] == 3
    # the same command again is refused (the run is there); --resume loads both folds, trains none
    assert train.main(FAST + ["--data-dir", str(mias_dir), "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert train.main(FAST + ["--data-dir", str(mias_dir), "--out", str(out), "--resume"]) == 0
    again = capsys.readouterr().out
    assert again.count("finished earlier, loaded") == 2 and "step " not in again
    assert json.loads((out / "metrics.json").read_text())["detection"]["top1_hits"] == d["top1_hits"]


def test_resume_with_other_settings_says_the_fold_is_trained_again(mias_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(FAST + ["--data-dir", str(mias_dir), "--out", str(out)]) == 0
    capsys.readouterr()
    argv = FAST + ["--data-dir", str(mias_dir), "--out", str(out), "--resume"]
    argv[argv.index("--steps") + 1] = "4"
    assert train.main(argv) == 0
    assert capsys.readouterr().out.count("other films, settings or backend") == 2


@pytest.mark.parametrize("extra, said", [
    (["--image-size", "64"], "does not take --image-size"),
    (["--epochs", "2"], "does not take --epochs"),
    (["--protocol", "paper"], "does not take --protocol"),
    (["--dataset", "synthetic"], "needs whole films with marked lesions"),
])
def test_options_of_the_roi_task_are_refused_with_detect(mias_dir, tmp_path, capsys, extra, said):
    with pytest.raises(SystemExit) as e:
        train.main(FAST + ["--data-dir", str(mias_dir), "--out", str(tmp_path / "r")] + extra)
    assert e.value.code == 2 and said in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_steps_belongs_to_detect(capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--steps", "3"])
    assert e.value.code == 2 and "--steps is for --task detect" in capsys.readouterr().err


def test_more_folds_than_women_is_one_line_before_training(mias_dir, tmp_path, capsys):
    argv = FAST + ["--data-dir", str(mias_dir), "--out", str(tmp_path / "r")]
    argv[argv.index("--cv") + 1] = "5"
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    assert "--cv 5: only 4 woman/women" in err and "Traceback" not in err
    assert not list((tmp_path / "r").glob("fold-*/detector.npz"))


def test_a_folder_without_marked_films_is_one_line(tmp_path, capsys):
    root = tmp_path / "empty"
    root.mkdir()
    (root / "Info.txt").write_text("mdb001 G NORM\nmdb002 G NORM\n")
    for ref in ("mdb001", "mdb002"):
        Image.fromarray(np.full((SIZE, SIZE), 100, np.uint8)).save(root / f"{ref}.pgm")
    assert train.main(FAST + ["--data-dir", str(root), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "no film with a croppable abnormality" in err and "Traceback" not in err
