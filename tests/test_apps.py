"""apps/train.py and apps/classify.py end to end on tiny data (numpy backend)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinycnn.mammo.experiment.layout import default_out

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "apps"))

import classify  # noqa: E402
import train as train_app  # noqa: E402

TINY = ["--image-size", "32", "--hidden", "8", "--epochs", "1", "--batch-size", "16", "--backend", "numpy",
        "--bootstrap", "50", "--no-progress"]


@pytest.fixture
def run(tmp_path, capsys):
    def _run(*args, out="run"):
        rc = train_app.main([*TINY, "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / out), *args])
        captured = capsys.readouterr()
        return rc, captured.out, captured.err
    return _run


def make_rois(root, n=6, size=40):
    rng = np.random.default_rng(0)
    for cls in ("benign", "malignant"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray((rng.random((size, size)) * 255).astype(np.uint8)).save(root / cls / f"{i}.png")
    return root


def test_defaults_per_dataset():
    a = train_app.parse_args([])
    assert (a.dataset, a.image_size, a.hidden, a.epochs, a.protocol, a.backend) == ("synthetic", 64, 128, 8, "patient", "auto")
    b = train_app.parse_args(["--dataset", "mias", "--data-dir", "x", "--optimizer", "sgd"])
    assert (b.image_size, b.hidden, b.lr) == (256, 1024, 0.01)


def usage_error(main, argv, capsys) -> str:
    """The argparse error main(argv) exits with (code 2); its message."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--image-size", "30"], "--image-size must be at least 31"),
    (["--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["--lr", "-1"], "--lr must be > 0, got -1.0"),
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
    (["--bootstrap", "0"], "--bootstrap must be >= 1, got 0"),
    (["--resume", "--overwrite"], "choose one"),
])
def test_nonsense_options_are_usage_errors(argv, message, capsys):
    assert message in usage_error(train_app.parse_args, argv, capsys)


def test_the_smallest_image_size_trains(run):
    rc, out, err = run("--synthetic-count", "8", "--image-size", "31", "--no-baseline")
    assert rc == 0, err
    assert "1x1x128" in out  # the conv stack ends in one pixel


def test_out_is_never_silently_replaced(run, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert "is a file, not a folder" in usage_error(train_app.parse_args, ["--out", str(tmp_path / "afile")], capsys)
    assert run("--synthetic-count", "8", "--no-baseline")[0] == 0
    before = (tmp_path / "run" / "last.npz").read_bytes()
    rc, _, err = run("--synthetic-count", "8", "--no-baseline")  # checked under the run folder's lock
    assert rc == 2 and "already holds a run: --resume continues it, --overwrite replaces it" in err
    assert (tmp_path / "run" / "last.npz").read_bytes() == before
    rc, out, err = run("--synthetic-count", "8", "--no-baseline", "--overwrite", "--seed", "1")
    assert rc == 0, err
    assert (tmp_path / "run" / "last.npz").read_bytes() != before


def test_default_out_numbers_new_runs_and_resumes_the_newest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_out("synthetic", resume=False) == Path("runs/synthetic")
    assert default_out("synthetic", resume=True) == Path("runs/synthetic")
    for name in ("synthetic", "synthetic-2"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "last.npz").write_bytes(b"")
    assert default_out("synthetic", resume=False) == Path("runs/synthetic-3")
    assert default_out("synthetic", resume=True) == Path("runs/synthetic-2")
    assert default_out("cbis-ddsm", resume=False) == Path("runs/cbis-ddsm")


def test_resume_with_more_epochs_says_the_schedule_changes(run):
    assert run("--synthetic-count", "8", "--no-baseline")[0] == 0
    rc, out, err = run("--synthetic-count", "8", "--no-baseline", "--resume", "--epochs", "2")
    assert rc == 0, err
    assert "planned for 1 epochs and now for 2" in out


def test_synthetic_run_writes_metrics_plots_checkpoints_and_table(run, tmp_path):
    rc, out, err = run("--synthetic-count", "16")
    assert rc == 0, err
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("accuracy", "auc", "auc_ci95", "sensitivity", "specificity", "confusion_matrix", "baseline_auc",
                "history", "config", "preprocessing", "dataset"):
        assert key in m, key
    assert len(m["history"]) == 1 and m["config"]["hidden"] == 8 and m["config"]["backend_resolved"] == "numpy"
    assert np.sum(m["confusion_matrix"]) == m["n"]
    for f in ("accuracy.png", "loss.png", "roc.png", "confusion_matrix.png", "last.npz", "best.npz"):
        assert (tmp_path / "run" / f).stat().st_size > 0, f
    assert "total parameters" in out and "backend  numpy" in out and "split    patient train" in out
    assert "logistic regression on pixels" in out and "95.25%" in out and "AUC [95% CI]" in out


def test_both_protocols_warn_and_report_both(run, tmp_path):
    rc, out, err = run("--synthetic-count", "10", "--protocol", "both", "--no-baseline")
    assert rc == 0, err
    assert "WARNING: --protocol paper" in err and "copies of ROIs" in err
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(m["protocols"]) == {"patient", "paper"} and m["protocol"] == "patient"
    assert m["protocols"]["paper"]["leaked_test_samples"] > 0
    assert (tmp_path / "run" / "paper" / "last.npz").exists() and (tmp_path / "run" / "patient" / "roc.png").exists()
    assert "paper order: augment, then split" in out


def test_resume_continues_a_run(run, tmp_path):
    assert run("--synthetic-count", "10", "--no-baseline")[0] == 0
    rc, out, err = run("--synthetic-count", "10", "--no-baseline", "--resume", "--epochs", "2")
    assert rc == 0, err
    assert "resumed from" in out
    assert len(json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]) == 2


def test_resume_without_a_checkpoint(run, tmp_path):
    rc, out, err = run("--synthetic-count", "10", "--resume")
    assert rc == 2 and "nothing to resume" in err


def test_resume_with_another_architecture_is_a_clear_error(run, tmp_path):
    assert run("--synthetic-count", "10", "--no-baseline")[0] == 0
    rc, out, err = run("--synthetic-count", "10", "--no-baseline", "--resume", "--hidden", "16")
    assert rc == 2 and "layer 13 differs" in err


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")  # the blow-up it provokes
def test_nan_loss_stops_with_the_step(run, tmp_path):
    rc, out, err = run("--synthetic-count", "10", "--lr", "1e30", "--optimizer", "sgd", "--lr-schedule", "constant")
    assert rc == 3 and "loss is" in err and "global step" in err
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_bad_data_directories(run, tmp_path):
    rc, _, err = run("--dataset", "folder", "--data-dir", str(tmp_path / "missing"))
    assert rc == 2 and "not found" in err
    (tmp_path / "empty").mkdir()
    rc, _, err = run("--dataset", "folder", "--data-dir", str(tmp_path / "empty"))
    assert rc == 2 and "neither a benign/ nor a malignant/" in err
    rc, _, err = run("--dataset", "folder")
    assert rc == 2 and "needs --data-dir" in err
    one = make_rois(tmp_path / "one")
    for f in (one / "malignant").iterdir():
        f.unlink()
    rc, _, err = run("--dataset", "folder", "--data-dir", str(one))
    assert rc == 2 and "only one class" in err


def test_cbis_csv_missing_column_is_named(run, tmp_path):
    d = tmp_path / "cbis"
    d.mkdir()
    (d / "mass_case_description_train_set.csv").write_text("patient_id,pathology,image file path\nP_1,BENIGN,x\n")
    rc, _, err = run("--dataset", "cbis-ddsm", "--data-dir", str(d))
    assert rc == 2 and "missing required column 'cropped image file path'" in err


def test_folder_run_then_classify(run, tmp_path, capsys):
    rois = make_rois(tmp_path / "rois", n=8)
    (rois / "benign" / "corrupt.png").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="skipped benign/corrupt.png: cannot read image"):
        rc, out, err = run("--dataset", "folder", "--data-dir", str(rois), "--no-baseline")
    assert rc == 0, err
    assert "1 unreadable input(s) skipped" in out
    rc, _, err = run("--dataset", "folder", "--data-dir", str(rois), "--strict", out="strict")
    assert rc == 2 and "corrupt.png" in err

    ckpt = tmp_path / "run"
    rc = classify.main([str(ckpt), str(rois / "malignant"), str(rois / "benign" / "0.png"),
                        "--csv", str(tmp_path / "p.csv"), "--backend", "numpy"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert len(rows) == 9 and set(rows[0]) == {"file", "p_malignant", "prediction"}
    assert all(0 <= float(r["p_malignant"]) <= 1 for r in rows)
    # the same numbers as the trained network on the same preprocessing
    from tinycnn.mammo.data.preprocess import load_preprocessed
    from tinycnn.mammo.metrics import softmax_positive
    from tinycnn.model import load_model
    net, _ = load_model(ckpt / "best.npz")
    x = load_preprocessed(rois / "benign" / "0.png", 32)[None, None]
    assert abs(softmax_positive(net.forward(x))[0] - float(rows[-1]["p_malignant"])) < 1e-5

    rc = classify.main([str(ckpt), str(rois / "benign"), "--backend", "numpy"])
    out, err = capsys.readouterr()
    assert rc == 0 and "1 unreadable image(s) skipped" in err
    rc = classify.main([str(ckpt), str(rois / "benign"), "--strict", "--backend", "numpy"])
    out, err = capsys.readouterr()
    assert rc == 2 and "corrupt.png" in err


def test_classify_rejects_nonsense_options(tmp_path, capsys):
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(img)
    for argv, message in (([ "--batch-size", "0"], "--batch-size must be >= 1"),
                          (["--threshold", "5"], "between 0 and 1"),
                          (["--csv", str(tmp_path / "nodir" / "p.csv")], "no folder"),
                          (["--csv", str(tmp_path)], "is a folder")):
        assert message in usage_error(classify.main, [str(tmp_path), str(img), *argv], capsys)


def test_classify_bad_checkpoints(tmp_path, capsys):
    from tinycnn.model import paper_net

    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(img)
    assert classify.main([str(tmp_path / "none.npz"), str(img)]) == 2
    assert "not found" in capsys.readouterr().err
    paper_net(hidden=4, in_size=32).save(tmp_path / "plain.npz")  # weights without preprocessing settings
    assert classify.main([str(tmp_path / "plain.npz"), str(img)]) == 2
    assert "no preprocessing settings" in capsys.readouterr().err
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert classify.main([str(tmp_path / "junk.npz"), str(img)]) == 2
    assert "not a tinycnn checkpoint (not an .npz archive)" in capsys.readouterr().err


def test_precision_is_chosen_printed_and_recorded(run, tmp_path, capsys):
    """--precision runs end to end (the numpy reference computes the tensor-core modes'
    roundings on the CPU): the banner and metrics.json say which ran, a checkpoint
    remembers it, and classify runs in the mode it is given."""
    rc, out, err = run("--synthetic-count", "8", "--no-baseline", "--precision", "bf16")
    assert rc == 0, err
    assert "precision bf16: conv and dense products on BF16 operands" in out
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["precision"] == "bf16" and m["config"]["precision"] == "bf16"
    assert m["config"]["precision_resolved"] == "bf16"
    rc, out, err = run("--synthetic-count", "8", "--no-baseline", "--resume", "--epochs", "2")  # auto: fp32 here
    assert rc == 0, err
    assert "trained in precision bf16 and continues in fp32" in out
    rc = classify.main([str(tmp_path / "run"), str(tmp_path / "run" / "roc.png"), "--backend", "numpy",
                        "--precision", "tf32"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "precision tf32: conv and dense products on TF32 operands" in out


def test_a_precision_the_backend_cannot_run_is_a_clear_error(run, tmp_path, capsys):
    pytest.importorskip("numba")
    rc, out, err = run("--synthetic-count", "8", "--backend", "numba", "--precision", "tf32")
    assert rc == 2 and "--precision tf32: precision 'tf32': the numba backend runs fp32" in err
    assert not (tmp_path / "run").exists()
    assert "invalid choice: 'fp16'" in usage_error(train_app.parse_args, ["--precision", "fp16"], capsys)


def test_the_app_answers_to_its_earlier_name_too():
    """apps/train_ddsm.py (the name in older commands: python apps/train_ddsm.py --backend
    cuda) is apps/train.py: the same main, the same options, as a script too."""
    import train_ddsm

    assert train_ddsm.main is train_app.main and train_ddsm.parse_args is train_app.parse_args
    apps = Path(__file__).resolve().parent.parent / "apps"
    done = subprocess.run([sys.executable, str(apps / "train_ddsm.py"), "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--backend {auto,numpy,numba,cuda,cuda-emu}" in done.stdout


def test_every_app_chooses_and_opens_its_backend_the_same_way(tmp_path):
    """One --backend/--precision pair, default auto, in the three apps; open_backend
    resolves auto, sets the precision, and says in one line why a backend cannot run."""
    import scan_film
    from tinycnn import backends
    from tinycnn.mammo.cli import BackendError, open_backend

    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(img)
    for options in (train_app.parse_args([]), classify.parse_args([str(tmp_path), str(img)]),
                    scan_film.parse_args([str(tmp_path), str(img), "--out", str(tmp_path / "scans")])):
        assert (options.backend, options.precision) == ("auto", "auto")
    assert open_backend("auto", "auto").name == backends.resolve("auto")
    assert open_backend("numpy", "bf16") is backends.get("numpy", "bf16")
    with pytest.raises(BackendError, match=r"^--precision fp16: "):
        open_backend("numpy", "fp16")
    if not backends.available("cuda"):
        with pytest.raises(BackendError, match=r"^backend 'cuda' is not available here: "):
            open_backend("cuda", "auto")
