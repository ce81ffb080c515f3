"""--cv K: patient-grouped folds on every reader, the cluster bootstrap against hand-worked
cases, the paired leak interval, and the app's folds, report and per-fold resume (numpy
backend, 32 px, hidden 8: seconds)."""

import json
import os
import signal
import sys

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from tinycnn.mammo import cv, metrics
from tinycnn.mammo.data import DataError, augment, load_dataset
from tinycnn.mammo.data.split import PatientLeak, assert_patient_disjoint
from tinycnn.mammo.experiment.results import baseline_notes
from tinycnn.mammo.experiment.tables import protocol_label

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "apps"))

import classify  # noqa: E402
import train as train_app  # noqa: E402

TINY = ["--image-size", "32", "--hidden", "8", "--epochs", "1", "--batch-size", "16", "--backend", "numpy",
        "--bootstrap", "50", "--no-progress"]


def assert_folds(folds, labels, patients):
    """The promises of patient_folds, checked from the outside."""
    n = len(labels)
    tested = np.concatenate(folds)
    assert sorted(tested.tolist()) == list(range(n))  # every ROI tested exactly once
    for test in folds:
        train = np.setdiff1d(np.arange(n), test)
        assert not set(patients[train]) & set(patients[test])  # no woman on both sides
        assert set(labels[test]) == {0, 1} and set(labels[train]) == {0, 1}


# ------------------------------------------------------------ folds on every reader
def test_folds_on_the_synthetic_reader(tmp_path):
    rois = load_dataset("synthetic", image_size=16, cache_dir=tmp_path, benign=30, malignant=30)
    for k in (2, 3, 5):
        folds = cv.patient_folds(rois.labels, rois.patients, k, seed=1)
        assert_folds(folds, rois.labels, rois.patients)
        for cls in (0, 1):  # stratified and balanced: per class, folds differ by one woman (2 ROIs) at most
            sizes = [int((rois.labels[f] == cls).sum()) for f in folds]
            assert max(sizes) - min(sizes) <= 2


def test_folds_on_the_folder_reader_keep_each_woman_whole(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "rois"
    rows = ["file,patient_id"]
    for cls in ("benign", "malignant"):
        (root / cls).mkdir(parents=True)
        for i in range(9):
            Image.fromarray((rng.random((20, 20)) * 255).astype(np.uint8)).save(root / cls / f"{i}.png")
            # women with two or three ROIs of one class, and one woman with both (the 8s)
            rows.append(f"{cls}/{i}.png," + ("Wmix" if i == 8 else f"W{i % 4}{cls[0]}"))
    (root / "patients.csv").write_text("\n".join(rows) + "\n")
    rois = load_dataset("folder", root, image_size=16, cache_dir=tmp_path / "c")
    folds = cv.patient_folds(rois.labels, rois.patients, 3)
    assert_folds(folds, rois.labels, rois.patients)
    mixed = [i for i, p in enumerate(rois.patients) if p == "Wmix"]
    assert any(set(mixed) <= set(f.tolist()) for f in folds)


def test_folds_on_the_mias_reader_keep_both_breasts_together(tmp_path):
    from test_scan import fake_mias  # a fake MIAS with 16 women

    root = fake_mias(tmp_path / "mias")
    rois = load_dataset("mias", root, image_size=16, cache_dir=tmp_path / "c")
    folds = cv.patient_folds(rois.labels, rois.patients, 3)
    assert_folds(folds, rois.labels, rois.patients)
    for test in folds:  # mdb(2k-1) and mdb(2k) on one side
        films = {str(i).split(":")[0] for i in rois.ids[test]}
        for f in films:
            n = int(f[3:])
            twin = f"mdb{n + 1 if n % 2 else n - 1:03d}"
            assert twin in films or twin not in {str(i).split(":")[0] for i in rois.ids}


def test_folds_on_the_cbis_reader_ignore_the_official_split(tmp_path):
    from test_data_cbis import build

    build(tmp_path / "cbis", np.random.default_rng(0), layout="jpeg")
    rois = load_dataset("cbis-ddsm", tmp_path / "cbis", image_size=16, cache_dir=tmp_path / "c")
    assert rois.side is not None
    folds = cv.patient_folds(rois.labels, rois.patients, 2)
    assert_folds(folds, rois.labels, rois.patients)


def test_too_many_folds_for_the_patients_is_a_clear_error():
    labels = np.array([0, 0, 0, 1, 1])
    patients = np.array(["a", "b", "c", "d", "e"])
    with pytest.raises(DataError, match=r"--cv 3: only 2 patient\(s\) with a malignant ROI.*lower --cv to 2"):
        cv.patient_folds(labels, patients, 3)


def test_check_folds_catches_a_leak_and_a_missing_roi():
    labels, patients = np.array([0, 1, 0, 1]), np.array(["a", "a", "b", "c"])
    with pytest.raises(PatientLeak):
        cv.check_folds([np.array([0, 3]), np.array([1, 2])], labels, patients)  # woman a on both sides
    with pytest.raises(AssertionError, match="exactly once"):
        cv.check_folds([np.array([0, 1]), np.array([2])], labels, patients)


def test_the_papers_order_on_the_same_folds():
    labels = np.array([0, 1] * 10)
    patients = np.array([f"p{i // 2}" for i in range(20)])  # ten women with one ROI of each class
    splits = cv.cv_splits(["patient", "paper"], labels, patients, 4, seed=3)
    every = []
    for fold in splits:
        pat, pap = fold["patient"], fold["paper"]
        assert_patient_disjoint(patients, pat.train[:, 0], pat.test[:, 0])
        assert (pat.test[:, 1] == 0).all() and len(pat.train) == 6 * len(np.unique(pat.train[:, 0]))
        originals = pap.test[pap.test[:, 1] == 0, 0]
        assert sorted(originals) == sorted(pat.test[:, 0])  # the same untransformed ROIs per fold
        assert pap.leaked_samples > 0  # copies of the fold's test ROIs sit in its training
        assert len(pap.train) + len(pap.test) == 6 * len(labels)
        every += [tuple(s) for s in pap.test]
    assert sorted(every) == sorted(map(tuple, augment.expand(np.arange(20))))  # every sample tested once


# ------------------------------------------------------------ the cluster bootstrap, by hand
def test_weighted_auc_is_the_auc_of_the_duplicated_set():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, 40), np.round(rng.random(40), 1)  # many ties
    w = rng.integers(0, 4, 40)
    idx = np.repeat(np.arange(40), w)
    assert metrics.weighted_auc(y, p, w) == pytest.approx(roc_auc_score(y[idx], p[idx]))
    assert np.isnan(metrics.weighted_auc([0, 1], [0.2, 0.4], [1, 0]))  # weight only on one class


def test_one_roi_per_patient_is_the_per_roi_bootstrap():
    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 2, 30), rng.random(30)
    groups = [f"w{i:02d}" for i in range(30)]  # sorted order = sample order: the same draws
    per_roi = metrics.bootstrap_auc_ci(y, p, n_boot=300, seed=4)
    cluster = metrics.cluster_bootstrap_auc_ci(y, p, groups, n_boot=300, seed=4)
    assert cluster == pytest.approx(per_roi)


def test_two_women_by_hand():
    """Woman A: benign 0.1, malignant 0.9 (AUC 1 alone). Woman B: benign 0.6, malignant
    0.4 (AUC 0 alone). Resampling two women gives {A, A}: 1, {B, B}: 0, {A, B} or
    {B, A}: of the four (malignant, benign) pairs only (0.4, 0.6) is wrong, 3/4; with
    probabilities 1/4, 1/4 and 1/2."""
    y = np.array([0, 1, 0, 1])
    p = np.array([0.1, 0.9, 0.6, 0.4])
    g = np.array(["A", "A", "B", "B"])
    values = metrics.cluster_bootstrap_aucs(y, p, g, n_boot=4000, seed=0)
    assert set(np.round(values, 12)) == {0.0, 0.75, 1.0}
    assert np.mean(values == 1.0) == pytest.approx(0.25, abs=0.03)
    assert np.mean(values == 0.0) == pytest.approx(0.25, abs=0.03)
    assert np.mean(values == 0.75) == pytest.approx(0.5, abs=0.03)
    assert metrics.cluster_bootstrap_auc_ci(y, p, g, n_boot=4000) == [0.0, 1.0]
    assert metrics.cluster_bootstrap_auc_ci(y, p, g, n_boot=4000, level=0.4) == [0.75, 0.75]


def test_copies_do_not_narrow_the_cluster_interval():
    """Six copies of every ROI (the paper's augmentation, scored alike) change nothing
    for the cluster bootstrap (each woman brings all of them), while a bootstrap over
    the samples treats them as six times the evidence and narrows."""
    rng = np.random.default_rng(2)
    y = np.array([0, 1] * 15)
    p = np.clip(0.3 * y + rng.random(30) * 0.7, 0, 1)
    g = np.array([f"w{i // 2:02d}" for i in range(30)])
    y6, p6, g6 = np.repeat(y, 6), np.repeat(p, 6), np.repeat(g, 6)
    once = metrics.cluster_bootstrap_auc_ci(y, p, g, n_boot=500, seed=5)
    assert metrics.cluster_bootstrap_auc_ci(y6, p6, g6, n_boot=500, seed=5) == pytest.approx(once)
    naive = metrics.bootstrap_auc_ci(y6, p6, n_boot=500, seed=5)
    assert naive[1] - naive[0] < 0.6 * (once[1] - once[0])


def test_binary_report_says_which_interval():
    y, p = np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.6, 0.4])
    r = metrics.binary_report(y, p, n_boot=100, groups=np.array(["A", "A", "B", "B"]))
    assert r["patients"] == 2 and "cluster bootstrap over the 2 test patients" in r["ci_method"]
    assert "bootstrap over the 4 test samples" in metrics.binary_report(y, p, n_boot=10)["ci_method"]


def test_paired_difference_by_hand():
    """a: the two women above; b: a model that scores everyone alike (AUC 1/2 on any
    draw). The paired differences are 1/2, -1/2 and 1/4 with probabilities 1/4, 1/4,
    1/2; the same model twice differs by exactly 0."""
    y = np.array([0, 1, 0, 1])
    g = np.array(["A", "A", "B", "B"])
    a = (y, np.array([0.1, 0.9, 0.6, 0.4]), g)
    b = (y, np.full(4, 0.5), g)
    r = metrics.paired_auc_difference(a, b, n_boot=4000)
    assert r["auc_difference"] == pytest.approx(0.75 - 0.5)
    assert r["ci95"] == [-0.5, 0.5] and r["patients"] == 2
    assert metrics.paired_auc_difference(a, a, n_boot=200)["ci95"] == [0.0, 0.0]


def test_paired_difference_resamples_the_union_of_patients():
    """Two evaluations with different test samples of the same women (the paper's six
    copies beside the patient split's one): each draw takes the same women for both."""
    y = np.array([0, 1, 0, 1])
    g = np.array(["A", "A", "B", "B"])
    p = np.array([0.1, 0.9, 0.6, 0.4])
    copies = (np.repeat(y, 6), np.repeat(p, 6), np.repeat(g, 6))
    r = metrics.paired_auc_difference(copies, (y, p, g), n_boot=300)
    assert r["auc_difference"] == pytest.approx(0.0) and r["ci95"] == [0.0, 0.0]


# ------------------------------------------------------------ the app
@pytest.fixture
def run(tmp_path, capsys):
    def _run(*args, out="run"):
        rc = train_app.main([*TINY, "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / out), *args])
        captured = capsys.readouterr()
        return rc, captured.out, captured.err
    return _run


def test_cv_both_protocols_report_folds_pooled_auc_and_the_leak(run, tmp_path):
    rc, out, err = run("--synthetic-count", "12", "--cv", "3", "--protocol", "both")
    assert rc == 0, err
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["cv"]["k"] == 3 and len(m["cv"]["folds"]) == 3 and m["protocol"] == "patient"
    preds = m["predictions"]
    assert len(preds) == 24 and len({p["roi"] for p in preds}) == 24  # every ROI once
    for fold in (1, 2, 3):  # no woman both tested and trained on in one fold
        tested = {p["patient"] for p in preds if p["fold"] == fold}
        trained = {p["patient"] for p in preds if p["fold"] != fold}
        assert not tested & trained
    paper = m["protocols"]["paper"]
    assert len(paper["predictions"]) == 6 * 24 and paper["leaked_test_samples"] == 6 * 24
    assert "cluster bootstrap" in m["ci_method"] and m["patients"] == 12
    leak = m["leak"]
    assert leak["auc_difference"] == pytest.approx(paper["auc"] - m["auc"])
    assert leak["ci95"][0] <= leak["auc_difference"] <= leak["ci95"][1] and "paired" in leak["method"]
    assert {"mean", "sd", "min", "max"} <= set(m["cv"]["fold_auc"])
    for sub in ("patient", "paper"):
        for f in ("roc.png", "accuracy.png", "loss.png", "confusion_matrix.png"):
            assert (tmp_path / "run" / sub / f).stat().st_size > 0
        for k in (1, 2, 3):
            assert (tmp_path / "run" / sub / f"fold-{k}" / "last.npz").exists()
    assert "patient split, 3-fold CV" in out and "pooled out-of-fold: 24 test samples, 12 patients" in out
    assert "leak (paper order minus patient split): AUC" in out and "3-fold CV pooled" in out


def test_cv_resumes_the_interrupted_fold_and_reaches_the_same_weights(run, tmp_path, monkeypatch):
    from tinycnn.mammo.train import Trainer
    from tinycnn.model import load_model

    assert run("--synthetic-count", "12", "--cv", "3", "--no-baseline", "--epochs", "2", out="full")[0] == 0
    real, calls = Trainer.train_step, []

    def step(self, *a):
        calls.append(1)
        if len(calls) == 14:  # fold 1: 2 epochs of 6 steps (16 ROIs x 6 / 16); this is fold 2's second
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, *a)

    monkeypatch.setattr(Trainer, "train_step", step)
    rc, out, err = run("--synthetic-count", "12", "--cv", "3", "--no-baseline", "--epochs", "2")
    assert rc == 130 and (tmp_path / "run" / "fold-2" / "last.npz").exists()
    assert not (tmp_path / "run" / "fold-3").exists() and not (tmp_path / "run" / "metrics.json").exists()
    monkeypatch.undo()
    rc, out, err = run("--synthetic-count", "12", "--cv", "3", "--no-baseline", "--epochs", "2", "--resume")
    assert rc == 0, err
    assert "fold-1/last.npz: epoch 3, batch 0" in out  # finished: evaluated, not retrained
    assert "fold-2/last.npz: epoch 1, batch 2" in out and "nothing saved for protocol patient, fold 3/3" in out
    for k in (1, 2, 3):
        a, _ = load_model(tmp_path / "full" / f"fold-{k}" / "last.npz")
        b, _ = load_model(tmp_path / "run" / f"fold-{k}" / "last.npz")
        for p, q in zip(a.parameters(), b.parameters()):
            np.testing.assert_array_equal(p.value, q.value)
    full = json.loads((tmp_path / "full" / "metrics.json").read_text())
    resumed = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert full["predictions"] == resumed["predictions"] and full["auc_ci95"] == resumed["auc_ci95"]


def test_cv_resume_refuses_another_layout(run, tmp_path):
    assert run("--synthetic-count", "8", "--cv", "2", "--no-baseline")[0] == 0
    rc, _, err = run("--synthetic-count", "8", "--cv", "3", "--no-baseline", "--resume")
    assert rc == 2 and "a fold of a --cv 2 run, and this run asks --cv 3" in err
    rc, _, err = run("--synthetic-count", "8", "--no-baseline", "--resume")
    assert rc == 2 and "holds a --cv run (fold-N folders): resume it with the same --cv" in err
    rc, _, err = run("--synthetic-count", "8", "--cv", "2", "--no-baseline")
    assert rc == 2 and "already holds a run" in err  # fold folders count as a run
    rc, _, err = run("--synthetic-count", "8", "--cv", "2", "--no-baseline", "--overwrite", "--seed", "1")
    assert rc == 0, err


def test_cv_option_errors(run, capsys):
    for argv, message in ((["--cv", "1"], "--cv must be >= 2"), (["--cv", "0"], "--cv must be >= 2")):
        with pytest.raises(SystemExit):
            train_app.parse_args(argv)
        assert message in capsys.readouterr().err
    rc, _, err = run("--synthetic-count", "4", "--cv", "3", "--no-baseline")  # 2 women a class
    assert rc == 2 and "--cv 3: only 2 patient(s)" in err


def test_classify_names_a_fold_of_a_cv_run(run, tmp_path, capsys):
    assert run("--synthetic-count", "8", "--cv", "2", "--no-baseline")[0] == 0
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(img)
    assert classify.main([str(tmp_path / "run"), str(img)]) == 2
    assert "is a --cv run: it holds one model per fold" in capsys.readouterr().err
    assert classify.main([str(tmp_path / "run" / "fold-1"), str(img), "--backend", "numpy"]) == 0


def test_single_split_both_protocols_print_the_leak_and_honest_labels(run, tmp_path):
    rc, out, err = run("--synthetic-count", "10", "--protocol", "both", "--no-baseline")
    assert rc == 0, err
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["leak"]["auc_difference"] == pytest.approx(m["protocols"]["paper"]["auc"] - m["auc"])
    assert "leak (paper order minus patient split)" in out
    assert "cluster bootstrap" in m["protocols"]["paper"]["ci_method"]  # copies of one woman resampled together
    results = {"patient": {"auc": 0.7}, "paper": {"auc": 0.6}}
    assert "not above the patient split" in protocol_label("paper", results)
    assert "optimistic" not in protocol_label("paper", results)
    assert "optimistic: +0.100" in protocol_label("paper", {"patient": {"auc": 0.5}, "paper": {"auc": 0.6}})


def test_a_baseline_that_beats_the_cnn_is_said(capsys):
    results = {"patient": {"auc": 0.55, "baseline_auc": 0.61}}
    notes = baseline_notes(results)
    assert len(notes) == 1 and "scored at or above the CNN" in notes[0] and results["patient"]["baseline_beats_cnn"]
    assert baseline_notes({"patient": {"auc": 0.9, "baseline_auc": 0.6}}) == []
