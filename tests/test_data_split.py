"""Splits, the six transforms, the synthetic generator and the pixel baseline."""

import numpy as np
import pytest

from tinycnn.mammo.data import augment, load_dataset, synthetic
from tinycnn.mammo.data.split import PatientLeak, assert_patient_disjoint, make_split, patient_split


def test_six_transforms():
    a = np.arange(6).reshape(2, 3)
    got = [augment.apply(a, t) for t in range(6)]
    want = [a, a[:, ::-1], a[::-1, :], np.rot90(a, 1), np.rot90(a, 2), np.rot90(a, 3)]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert len({g.tobytes() + bytes(g.shape) for g in got}) == 6
    with pytest.raises(ValueError):
        augment.apply(a, 6)


def test_gather_applies_each_samples_transform():
    images = np.random.default_rng(0).random((3, 4, 4)).astype(np.float32)
    batch = augment.gather(images, np.array([[2, 0], [1, 3], [0, 1]]))
    assert batch.shape == (3, 1, 4, 4)
    np.testing.assert_array_equal(batch[1, 0], np.rot90(images[1]))
    np.testing.assert_array_equal(batch[2, 0], images[0][:, ::-1])


def _patients(n_pat, per, rng):
    labels = np.repeat(rng.integers(0, 2, n_pat), per)
    patients = np.repeat([f"p{i}" for i in range(n_pat)], per)
    return labels, patients


def test_patient_split_is_disjoint_stratified_and_seeded(rng):
    labels, patients = _patients(100, 3, rng)
    train, test = patient_split(labels, patients, seed=1)
    assert not set(patients[train]) & set(patients[test])
    assert len(train) + len(test) == len(labels)
    assert abs(len(set(patients[test])) - 20) <= 1  # 4:1 by patient
    for cls in (0, 1):  # both classes on both sides, about 1/5 of each on the test side
        n_cls = len(set(patients[labels == cls]))
        assert abs(len(set(patients[test][labels[test] == cls])) - 0.2 * n_cls) <= 1
    again, _ = patient_split(labels, patients, seed=1)
    other, _ = patient_split(labels, patients, seed=2)
    np.testing.assert_array_equal(train, again)
    assert not np.array_equal(train, other)


def test_patient_protocol_augments_training_side_only(rng):
    labels, patients = _patients(30, 2, rng)
    s = make_split("patient", labels, patients, seed=0)
    assert set(s.train[:, 1]) == set(range(6)) and set(s.test[:, 1]) == {0}
    assert len(s.train) == 6 * len(np.unique(s.train[:, 0]))
    assert not set(patients[s.train[:, 0]]) & set(patients[s.test[:, 0]])
    assert s.leaked_samples == 0


def test_leak_is_caught():
    patients = np.array(["a", "a", "b", "c"])
    with pytest.raises(PatientLeak, match="1 patient.*a"):
        assert_patient_disjoint(patients, [0, 2], [1, 3])
    with pytest.raises(PatientLeak):  # an official split that mixes a patient is refused too
        make_split("patient", np.array([0, 1, 0, 1]), patients, official_side=np.array([0, 1, 0, 1]))


def test_paper_protocol_leaks_copies_across_the_split(rng):
    labels, patients = _patients(50, 2, rng)
    s = make_split("paper", labels, patients, seed=0)
    assert len(s.train) + len(s.test) == 6 * len(labels)
    assert abs(len(s.test) - 0.2 * 6 * len(labels)) <= 1
    assert set(s.test[:, 1]) == set(range(6))
    assert s.leaked_samples > 0.9 * len(s.test)  # almost every test ROI has a rotated twin in training


def test_synthetic_is_deterministic_and_balanced():
    a = synthetic.generate(4, 4, size=32, seed=3)
    b = synthetic.generate(4, 4, size=32, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    assert list(a[1]) == [0] * 4 + [1] * 4
    assert len(set(a[2])) == 4  # two ROIs per pseudo patient
    c = synthetic.generate(6, 6, size=32, seed=3)  # a bigger set starts with the same ROIs
    np.testing.assert_array_equal(c[0][:4], a[0][:4])


def test_synthetic_registry_normalises(tmp_path):
    rois = load_dataset("synthetic", image_size=32, cache_dir=tmp_path, benign=5, malignant=5, seed=0)
    assert rois.images.shape == (10, 32, 32)
    np.testing.assert_allclose(rois.images.mean(axis=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(rois.images.std(axis=(1, 2)), 1, atol=1e-4)


def test_reading_shows_progress_when_asked(tmp_path, capsys):
    pytest.importorskip("tqdm")
    load_dataset("synthetic", image_size=32, benign=3, malignant=3, cache_dir=tmp_path, progress=True)
    assert "rendering synthetic ROIs" in capsys.readouterr().err
    load_dataset("synthetic", image_size=32, benign=4, malignant=4, cache_dir=tmp_path)
    assert "rendering" not in capsys.readouterr().err
