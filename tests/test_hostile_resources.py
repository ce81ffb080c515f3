"""Hostile input that used to end in a traceback: sizes that do not fit in memory,
inf and nan options, non-finite weights, file names that are not UTF-8, and signals
(Ctrl-C while reading, SIGTERM, a second Ctrl-C, Ctrl-C during the report)."""

import csv
import os
import signal

import numpy as np
import pytest

from test_hostile_support import (  # noqa: F401  (fixtures)
    GIB, classify, ctrl_c, edit_checkpoint, fresh_run, make_rois, memory_available, one_error, read_npz,
    run_classify, small_image, train, train_app, trained_run, usage_error)
from tinycnn.mammo import memory, metrics
from tinycnn.mammo.cli import printable
from tinycnn.checkpoint import CheckpointError, architecture_shapes
from tinycnn.model import load_model

pytestmark = pytest.mark.usefixtures("ctrl_c")  # the Ctrl-C tests below get it however pytest was started


# ------------------------------------------------------------ memory
@pytest.mark.parametrize("hidden, size", [(8, 31), (8, 32), (16, 64), (3, 100)])
def test_the_estimate_describes_the_network_the_run_builds(hidden, size):
    # the estimate never builds the network: its record and shapes must still be paper_net's
    from tinycnn.model import paper_net

    net = paper_net(hidden=hidden, in_size=size)
    arch = memory.paper_architecture(hidden, size)
    assert arch == net.architecture()
    shapes = architecture_shapes(arch)
    assert shapes.outputs == net.shapes()
    assert shapes.params == {name: p.shape for name, p in net.named_parameters()}
    assert memory.training_bytes(shapes, 64, eval_batch=1) == net.memory_estimate(64)  # the banner's number


@pytest.mark.parametrize("argv, named", [
    (["--hidden", "100000000"], "--hidden 100000000"),  # the cases
    (["--image-size", "4096"], "--image-size 4096"),
    (["--batch-size", "10000000", "--synthetic-count", "2000000"], "--batch-size 10000000"),  # 24 M samples
])
def test_a_network_that_cannot_fit_is_refused_with_the_estimate(train, tmp_path, memory_available, argv, named):
    memory_available(8 * GIB)
    rc, _, err = train(*argv)
    line = one_error(err)
    assert rc == 2 and named in line and "needs about" in line and "this machine has 8.0 GiB available" in line
    assert not (tmp_path / "run").exists()  # refused before the run folder was even made


def test_a_synthetic_set_that_cannot_fit_is_refused_before_rendering(train, memory_available):
    memory_available(8 * GIB)
    rc, _, err = train("--synthetic-count", "1000000000")
    line = one_error(err)
    assert rc == 2 and "2000000000 ROIs" in line and "--synthetic-count" in line and "8.0 GiB" in line


def test_a_folder_set_that_cannot_fit_is_refused_before_reading(train, tmp_path, memory_available):
    rois = make_rois(tmp_path / "rois", n=6)
    network = memory.training_bytes(architecture_shapes(memory.paper_architecture(8, 32)), 16)
    memory_available(network + 1000)  # the network fits, 12 ROIs do not
    rc, _, err = train("--dataset", "folder", "--data-dir", str(rois))
    assert rc == 2 and "reading 12 ROIs at 32x32" in one_error(err) and "use fewer images" in err


def test_when_free_memory_cannot_be_told_the_run_goes_ahead(train, memory_available):
    memory_available(None)
    rc, _, err = train()
    assert rc == 0, err


def test_a_record_claiming_a_huge_layer_is_refused_without_allocating(fresh_run, tmp_path):
    def huge(arch):  # dense layers 13 and 16 agree on 10^12 hidden units; the stored weights do not
        arch["layers"][13]["out_features"] = 10**12
        arch["layers"][16]["in_features"] = 10**12
        return arch

    ckpt = edit_checkpoint(fresh_run / "best.npz", tmp_path / "huge.npz", arch=huge)
    with pytest.raises(CheckpointError, match=r"layer13.w has shape \(128, 8\), the model expects \(128, 10+\)"):
        load_model(ckpt)


def test_classify_refuses_a_network_too_big_for_the_machine(fresh_run, run_classify, tmp_path, memory_available):
    memory_available(100_000)
    rc, _, err = run_classify(fresh_run, small_image(tmp_path / "roi.png"))
    assert rc == 2 and "running the network" in one_error(err) and "lower --batch-size" in err


def test_classify_sizes_its_batch_by_the_images_it_has(fresh_run, run_classify, tmp_path, memory_available):
    memory_available(1 * GIB)  # --batch-size 10^9 with one image is one image's worth
    rc, out, err = run_classify(fresh_run, small_image(tmp_path / "roi.png"), "--batch-size", "1000000000")
    assert rc == 0, err


# ------------------------------------------------------------ inf, nan and other odd numbers
@pytest.mark.parametrize("argv, message", [
    (["--lr", "inf"], "argument --lr: must be a finite number, got 'inf'"),
    (["--lr", "nan"], "argument --lr: must be a finite number, got 'nan'"),
    (["--lr=-inf"], "argument --lr: must be a finite number"),
    (["--mias-margin", "inf"], "argument --mias-margin: must be a finite number, got 'inf'"),
    (["--mias-margin", "NaN"], "argument --mias-margin: must be a finite number"),
    (["--lr", "fast"], "argument --lr: not a number: 'fast'"),
    (["--threads", "0"], "--threads must be >= 1, got 0"),
    (["--bootstrap", "1000000000"], "--bootstrap must be <= 100000"),
])
def test_odd_numbers_for_training_are_usage_errors(argv, message, capsys):
    assert message in usage_error(train_app.parse_args, argv, capsys)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_threshold_is_a_usage_error(value, tmp_path, capsys):
    err = usage_error(classify.main, [str(tmp_path), str(tmp_path), f"--threshold={value}"], capsys)
    assert "argument --threshold: must be a finite number" in err


def test_a_seed_beyond_64_bits_trains(train):
    rc, _, err = train("--seed", str(2**64 + 5))
    assert rc == 0, err


# ------------------------------------------------------------ non-finite weights
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_classify_refuses_non_finite_weights(fresh_run, run_classify, tmp_path, bad):
    w = read_npz(fresh_run / "best.npz")["layer0.w"].copy()
    w[0, 0, 0, 0] = bad
    ckpt = edit_checkpoint(fresh_run / "best.npz", tmp_path / "nan.npz", arrays={"layer0.w": w})
    rc, out, err = run_classify(ckpt, small_image(tmp_path / "roi.png"))
    assert rc == 2 and "layer0.w holds 1 NaN or infinite value(s)" in one_error(err)
    assert "benign" not in out and "malignant" not in out


def test_resume_refuses_non_finite_weights(fresh_run, train):
    w = read_npz(fresh_run / "last.npz")["layer13.w"].copy()
    w[:] = np.nan
    edit_checkpoint(fresh_run / "last.npz", fresh_run / "last.npz", arrays={"layer13.w": w})
    rc, _, err = train("--resume", "--epochs", "2")
    assert rc == 2 and "layer13.w holds" in one_error(err)


def test_weights_that_diverge_at_an_epoch_end_are_not_saved(tmp_path):
    from tinycnn.mammo.data import load_dataset
    from tinycnn.mammo.data.split import make_split
    from tinycnn.mammo.train import NonFiniteLoss, TrainConfig, Trainer
    from tinycnn.model import paper_net
    from tinycnn.optim import make_optimizer

    rois = load_dataset("synthetic", image_size=32, cache_dir=tmp_path / "c", benign=6, malignant=6)
    split = make_split("patient", rois.labels, rois.patients)
    net = paper_net(hidden=4, in_size=32)
    t = Trainer(net, make_optimizer("adam", net, 1e-3), rois.images, rois.labels, split.train, split.test,
                TrainConfig(epochs=1), tmp_path / "run", progress=False, log=lambda *a: None)
    net.layers[-1].params["b"].value[:] = np.nan  # what a last step can do with a finite loss
    with pytest.raises(NonFiniteLoss, match="held-out outputs are NaN or infinite.*no checkpoint was written"):
        t.evaluate()


# ------------------------------------------------------------ file names that are not UTF-8
BAD = os.fsdecode(b"bad\xff")  # what Python makes of the bytes: a lone surrogate


@pytest.mark.parametrize("text, shown", [
    ("plain.png", "plain.png"), ("caf\u00e9/\u6f22.png", "caf\u00e9/\u6f22.png"),  # valid UTF-8 stays as it is
    (BAD + ".png", "bad\\xff.png"),
])
def test_printable_escapes_only_what_utf8_cannot_carry(text, shown):
    assert printable(text) == shown


@pytest.mark.skipif(os.name != "posix", reason="POSIX file names are bytes")
def test_training_banner_with_a_non_utf8_data_folder_and_file(train, tmp_path):
    rois = make_rois(tmp_path / BAD, n=6)
    (rois / "benign" / (BAD + ".png")).write_bytes(b"not an image")  # skipped: named in the banner
    with pytest.warns(UserWarning, match="skipped"):
        rc, out, err = train("--dataset", "folder", "--data-dir", str(rois))
    assert rc == 0, err
    assert "bad\\xff/" in out and "first: benign/bad\\xff.png" in out


@pytest.mark.skipif(os.name != "posix", reason="POSIX file names are bytes")
def test_classify_prints_and_writes_a_non_utf8_file_name(fresh_run, run_classify, tmp_path):
    img = small_image(tmp_path / (BAD + ".png"))
    rc, out, err = run_classify(fresh_run, img, "--csv", tmp_path / "p.csv")
    assert rc == 0, err
    assert "bad\\xff.png" in out
    rows = list(csv.DictReader(open(tmp_path / "p.csv", encoding="utf-8")))  # valid UTF-8 throughout
    assert rows[0]["file"].endswith("bad\\xff.png")


# ------------------------------------------------------------ signals
def _signal_on_call(monkeypatch, owner, name, signum, at: int = 1):
    """Make owner.name send `signum` to this process on its at-th call (the real signal
    through the real handlers)."""
    real, calls = getattr(owner, name), []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == at:
            os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_reading_the_data_ends_cleanly(train, tmp_path, monkeypatch, signum):
    from tinycnn.mammo.data import synthetic

    _signal_on_call(monkeypatch, synthetic, "render_roi", signum, at=3)
    rc, _, err = train()
    assert rc == 130 and "interrupted while reading the data" in one_error(err)
    assert not (tmp_path / "run").exists()


def test_sigterm_during_training_saves_like_ctrl_c_and_resumes(train, tmp_path, monkeypatch):
    from tinycnn.mammo.train import Trainer

    before = signal.getsignal(signal.SIGTERM)
    _signal_on_call(monkeypatch, Trainer, "train_step", signal.SIGTERM, at=2)
    rc, out, err = train("--epochs", "2")
    assert rc == 130 and "SIGTERM: stopping after this step and saving" in err
    assert (tmp_path / "run" / "last.npz").exists()
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler, back in place
    monkeypatch.undo()
    rc, out, err = train("--epochs", "2", "--resume")
    assert rc == 0 and "batch 2, step 2" in out, err


def test_a_second_ctrl_c_aborts_at_once_with_one_line(train, tmp_path, monkeypatch):
    from tinycnn.mammo.train import Trainer

    _signal_on_call(monkeypatch, Trainer, "train_step", signal.SIGINT, at=1)
    _signal_on_call(monkeypatch, Trainer, "train_step", signal.SIGINT, at=1)  # the same step, twice
    rc, _, err = train()
    assert rc == 130 and "the last checkpoint on disk is intact" in one_error(err)


def test_ctrl_c_during_the_report_keeps_the_checkpoints_and_resume_finishes(train, tmp_path, monkeypatch):
    _signal_on_call(monkeypatch, metrics, "binary_report", signal.SIGINT)
    rc, _, err = train()
    assert rc == 130 and "interrupted" in one_error(err)
    assert (tmp_path / "run" / "last.npz").exists() and not (tmp_path / "run" / "metrics.json").exists()
    monkeypatch.undo()
    rc, _, err = train("--resume")
    assert rc == 0 and (tmp_path / "run" / "metrics.json").exists(), err


def test_ctrl_c_in_classify_writes_nothing(fresh_run, run_classify, tmp_path, monkeypatch):
    _signal_on_call(monkeypatch, classify, "load_preprocessed", signal.SIGINT)
    rc, _, err = run_classify(fresh_run, small_image(tmp_path / "roi.png"), "--csv", tmp_path / "p.csv")
    assert rc == 130 and "interrupted" in one_error(err)
    assert not (tmp_path / "p.csv").exists()
