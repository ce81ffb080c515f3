"""Detection arithmetic on hand-made cases whose answers are worked out in the comments:
hits, top-1 / top-3, the pooled FROC (ties, duplicate hits, thresholds), the Wilson
interval, non-maximum suppression, the breakdown by lesion class and radius, the
random-point share and the brightest-window baseline."""

import numpy as np
import pytest

from tinycnn.mammo.detection import evaluate as ev
from tinycnn.mammo.detection.fcn import pad_film
from tinycnn.mammo.detection.films import Film, Mark


def film(ref, marks, shape=(128, 128), scale=4, mask=None):
    h, w = shape
    return Film(ref, ref, np.zeros(shape, np.float32), np.ones(shape, bool) if mask is None else mask, marks,
                scale, (h * scale, w * scale))


# Film A: two lesions; film B: one. Worked by hand:
# pooled, best first: 0.95 B FP (fp 1) | 0.9 A hits L1 (found 1) | 0.8 A FP (fp 2) |
# 0.7 A hits L1 again (nothing) | 0.4 A hits L2 (found 2) | 0.3 B hits L3 (found 3).
L1, L2, L3 = Mark(100, 100, 10, "CIRC", "B"), Mark(300, 300, 10, "CALC", "M"), Mark(100, 100, 10, "CALC", "B")
A = film("A", [L1, L2])
B = film("B", [L3])
CAND_A = np.array([[100, 100, 0.9], [500, 500, 0.8], [102, 101, 0.7], [300, 305, 0.4]])
CAND_B = np.array([[400, 400, 0.95], [100, 100, 0.3]])


def test_froc_on_a_worked_case():
    fr = ev.froc([CAND_A, CAND_B], [A.marks, B.marks])
    # 0.5 FP/film = 1 FP over 2 films: reached after the 0.9 candidate, 1 of 3 found.
    # 1 FP/film = 2 FPs: everything after the 0.8 FP is free: all 3 found.
    assert fr["sensitivity"] == pytest.approx({"0.5": 1 / 3, "1": 1.0, "2": 1.0, "4": 1.0})
    assert fr["thresholds"]["0.5"] == 0.9 and fr["thresholds"]["1"] == 0.3
    assert fr["curve"]["fp_per_film"] == [0, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0]
    assert fr["curve"]["sensitivity"] == pytest.approx([0, 0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 1])


def test_froc_ties_enter_together():
    # One film, a false positive and a hit of equal score: there is no point between
    # them, so at 0.5 FP/film nothing is found yet; at 1 the lesion is.
    f = film("F", [Mark(50, 50, 5)])
    cand = np.array([[200, 200, 0.5], [50, 50, 0.5]])
    assert ev.froc([cand], [f.marks])["sensitivity"] == {"0.5": 0.0, "1": 1.0, "2": 1.0, "4": 1.0}


def test_froc_without_candidates_and_a_candidate_in_two_marks():
    # Two overlapping marks, one candidate in both: both found by it, no FP.
    f = film("F", [Mark(50, 50, 10), Mark(55, 55, 10)])
    assert ev.froc([np.array([[52, 52, 1.0]])], [f.marks])["sensitivity"]["0.5"] == 1.0
    assert ev.froc([np.zeros((0, 3))], [f.marks])["sensitivity"]["4"] == 0.0


def test_summary_top1_top3_and_groups():
    s = ev.summarise([A, B], [CAND_A, CAND_B])
    # top-1: A's first candidate is in L1, B's first is a FP -> 1 of 2; top-3: B's second hits L3 -> 2 of 2.
    assert (s["top1_hits"], s["top1_hit_rate"], s["top3_hit_rate"]) == (1, 0.5, 1.0)
    assert s["n_films"] == 2 and s["n_lesions"] == 3
    assert s["top1_ci95"] == pytest.approx(ev.wilson(1, 2))
    assert set(s["froc"]) == {"0.5", "1", "2", "4"}
    # By class: CIRC = L1, hit by its film's first candidate. CALC = L2 (A's first three miss it,
    # its 0.4 candidate is fourth) and L3 (B's second candidate): top-1 0 of 2, top-3 1 of 2.
    circ, calc = s["by_class"]["CIRC"], s["by_class"]["CALC"]
    assert (circ["n_lesions"], circ["top1_hit_rate"], circ["top3_hit_rate"]) == (1, 1.0, 1.0)
    assert (calc["n_lesions"], calc["n_films"], calc["top1_hit_rate"], calc["top3_hit_rate"]) == (2, 2, 0.0, 0.5)
    # FROC by class at the pooled thresholds: 0.5 FP/film keeps scores >= 0.9 (L1 only); 1 keeps all.
    assert circ["froc"]["0.5"] == 1.0 and calc["froc"]["0.5"] == 0.0 and calc["froc"]["1"] == 1.0
    assert s["by_class"]["SPIC"]["n_lesions"] == 0
    assert s["by_radius"]["0-20"]["n_lesions"] == 3 and s["by_radius"]["80+"]["n_lesions"] == 0


def test_wilson_known_values():
    assert ev.wilson(0, 10) == pytest.approx([0.0, 0.27753], abs=1e-5)  # upper = z^2 / (n + z^2)
    assert ev.wilson(5, 10) == pytest.approx([0.23659, 0.76341], abs=1e-5)
    assert ev.wilson(10, 10)[1] == pytest.approx(1.0)
    assert all(np.isnan(ev.wilson(0, 0)))


def test_nms_keeps_the_best_and_suppresses_its_neighbours():
    scores = np.array([0.1, 0.9, 0.8, 0.7, np.nan, 0.95])
    rows = np.array([0, 0, 0, 10, 0, 50])
    cols = np.array([0, 0, 3, 0, 1, 50])
    # 0.95 at (50, 50); 0.9 at (0, 0); 0.8 at (0, 3) lies within 5 of it: gone; 0.7 at (10, 0) stays;
    # 0.1 at (0, 0) gone; the NaN never counts.
    assert ev.nms(scores, rows, cols, radius=5, k=10).tolist() == [5, 1, 3]
    assert ev.nms(scores, rows, cols, radius=5, k=2).tolist() == [5, 1]


def test_film_candidates_skip_cells_off_the_breast_and_map_to_full_resolution():
    mask = np.zeros((32, 32), bool)
    mask[:, 16:] = True
    f = film("F", [], shape=(32, 32), scale=4, mask=mask)
    heat = np.zeros((5, 5), np.float32)  # step 8: centres 0, 8, 16, 24, 32
    heat[1, 1] = 9  # column 8: off the breast, never a candidate
    heat[2, 3] = 5  # working (16, 24) -> full resolution (16 * 4 + 1.5, 24 * 4 + 1.5)
    cand = ev.film_candidates(f, heat, step=8, nms_radius=1, k=3)
    assert cand[0].tolist() == [65.5, 97.5, 5.0]
    assert len(cand) == 3 and np.all(f.mask[(cand[:, 0] // 4).astype(int), (cand[:, 1] // 4).astype(int)])


def test_random_share_of_a_mark():
    f = film("F", [Mark(0, 0, 0.5)], shape=(10, 10), scale=1)  # covers pixel (0, 0) only
    assert ev.breast_share_of_marks(f) == pytest.approx(0.01)
    half = np.zeros((10, 10), bool)
    half[:5] = True  # the same mark on a breast half the size: twice the share
    assert ev.breast_share_of_marks(film("G", [Mark(0, 0, 0.5)], (10, 10), 1, half)) == pytest.approx(0.02)


def test_brightest_window_map_is_the_mean_of_each_window(rng):
    f = film("F", [], shape=(20, 24), scale=4)
    f.image = rng.standard_normal((20, 24)).astype(np.float32)
    side, step = 6, 4
    got = ev.brightest_window_map(f, side, step)
    padded = pad_film(f.image, side)
    for a, r in enumerate(range(0, 21, step)):
        for b, c in enumerate(range(0, 25, step)):
            assert got[a, b] == pytest.approx(padded[r:r + side, c:c + side].mean(), abs=1e-6)
