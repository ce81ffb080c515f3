"""tinycnn.mammo.metrics against numbers worked out by hand, and the pixel baseline's data."""

import numpy as np
import pytest

from tinycnn.mammo import metrics

# Five test ROIs: truth and P(malignant). At threshold 0.5 the calls are 0 1 1 1 0:
# one true negative (0.1), one false positive (0.6), two true positives (0.7, 0.8),
# one false negative (0.3). AUC: of the 3 x 2 (malignant, benign) pairs, only
# (0.3, 0.6) is ordered wrongly, so 5/6.
LABELS = np.array([0, 0, 1, 1, 1])
PROBS = np.array([0.1, 0.6, 0.7, 0.8, 0.3])


def test_binary_report_by_hand():
    r = metrics.binary_report(LABELS, PROBS, n_boot=200)
    assert r["confusion_matrix"] == [[1, 1], [1, 2]]  # [[TN, FP], [FN, TP]]: rows are the truth
    assert r["sensitivity"] == pytest.approx(2 / 3) and r["specificity"] == pytest.approx(1 / 2)
    assert r["accuracy"] == pytest.approx(3 / 5) and r["auc"] == pytest.approx(5 / 6)
    assert r["n"] == 5


def test_threshold_moves_the_calls():
    r = metrics.binary_report(LABELS, PROBS, threshold=0.25, n_boot=10)
    assert r["confusion_matrix"] == [[1, 1], [0, 3]]  # 0.3 is now called malignant
    assert r["sensitivity"] == 1.0


def test_bootstrap_interval():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.35 * y + rng.random(200) * 0.65, 0, 1)  # informative, not perfect
    value = metrics.auc(y, p)
    lo95, hi95 = metrics.bootstrap_auc_ci(y, p, n_boot=400)
    lo50, hi50 = metrics.bootstrap_auc_ci(y, p, n_boot=400, level=0.5)
    assert lo95 < lo50 <= value <= hi50 < hi95  # a 50% interval sits inside the 95% one
    assert 0.02 < hi95 - lo95 < 0.3
    assert metrics.bootstrap_auc_ci([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], n_boot=100) == [1.0, 1.0]
    assert all(np.isnan(metrics.bootstrap_auc_ci([1, 1, 1], [0.2, 0.5, 0.9])))  # one class: no AUC


def test_auc_of_one_class_is_nan_and_roc_spans_the_square():
    assert np.isnan(metrics.auc([1, 1], [0.3, 0.4]))
    roc = metrics.roc_points(LABELS, PROBS)
    assert (roc["fpr"][0], roc["tpr"][0], roc["fpr"][-1], roc["tpr"][-1]) == (0.0, 0.0, 1.0, 1.0)


def test_softmax_positive_is_stable():
    p = metrics.softmax_positive(np.array([[0.0, 0.0], [0.0, np.log(3.0)], [1000.0, 1001.0], [-1e4, 1e4]]))
    np.testing.assert_allclose(p, [0.5, 0.75, 1 / (1 + np.exp(-1.0)), 1.0])


def test_pixel_baseline_trains_on_the_training_samples_only(monkeypatch):
    from sklearn.linear_model import LogisticRegression

    # bright ROIs are malignant: a linear model on pixels must get this right
    labels = np.array([0, 1] * 10)
    images = np.stack([np.full((8, 8), float(y)) + 0.1 * np.random.default_rng(i).random((8, 8))
                       for i, y in enumerate(labels)]).astype(np.float32)
    train = np.array([[i, 0] for i in range(14)])
    test = np.array([[i, 0] for i in range(14, 20)])
    seen = []
    real_fit = LogisticRegression.fit

    def recording_fit(self, x, y, *a, **k):
        seen.append(len(x))
        return real_fit(self, x, y, *a, **k)

    monkeypatch.setattr(LogisticRegression, "fit", recording_fit)
    probs = metrics.pixel_baseline(images, labels, train, test)
    assert seen == [len(train)]  # never the test samples
    assert probs.shape == (6,) and metrics.auc(labels[14:], probs) == 1.0
