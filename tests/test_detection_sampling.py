"""Breast masks and training windows: air is never breast, the per-film normalisation,
negatives never overlap a mark (checked pixel by pixel at full resolution), positives
lie inside their marks, batches are balanced and repeat from their seed."""

import numpy as np
import pytest

from tinycnn.mammo.detection.fcn import pad_film
from tinycnn.mammo.detection.films import AIR, Mark, make_film, shrink
from tinycnn.mammo.detection.masks import breast_mask
from tinycnn.mammo.detection.sampling import WindowSampler, clear_of_marks, dihedral, negative_centres


def synthetic_film(rng, marks=(), label=True, size=256):
    """A half-ellipse 'breast' against the left edge on a dark background, a bright
    detached label in a corner."""
    yy, xx = np.mgrid[0:size, 0:size]
    breast = ((yy - size / 2) / (0.45 * size)) ** 2 + (xx / (0.6 * size)) ** 2 <= 1
    raw = np.where(breast, 150 + 20 * rng.standard_normal((size, size)), 5 + rng.random((size, size)))
    if label:
        raw[size - 20:size - 8, size - 40:size - 10] = 255  # a film label: bright but small
    return raw.astype(np.float32), breast


def test_mask_is_the_breast_not_the_air_nor_the_label(rng):
    raw, breast = synthetic_film(rng)
    mask = breast_mask(raw)
    assert not mask[raw.shape[0] - 14, raw.shape[1] - 20]  # the label
    assert not mask[:, 160:210].any() and not mask[5, 200]  # air (the ellipse ends at column 153)
    agree = (mask == breast).mean()
    assert agree > 0.99


def test_mask_of_a_flat_film_is_everything():
    assert breast_mask(np.full((16, 16), 7.0)).all()


def test_per_film_normalisation(rng):
    raw, _ = synthetic_film(rng)
    f = make_film("F", "W", raw, [], scale=4)
    assert f.image.shape == (64, 64) and f.mask.shape == (64, 64)
    assert f.image[f.mask].mean() == pytest.approx(0, abs=1e-4)
    assert f.image[f.mask].std() == pytest.approx(1, abs=1e-3)
    assert np.all(f.image[~f.mask] == AIR)
    np.testing.assert_allclose(shrink(np.arange(16.0).reshape(4, 4), 2), [[2.5, 4.5], [10.5, 12.5]])


def test_negatives_never_overlap_a_mark(rng):
    raw, _ = synthetic_film(rng)
    marks = [Mark(128, 60, 25, "CIRC", "B"), Mark(60, 100, 6, "CALC", "M")]
    f = make_film("F", "W", raw, marks, scale=4)
    side = 14
    allowed = clear_of_marks(f, side)
    # Full-resolution disc of every mark, then each allowed centre's window (side * 4 film pixels) checked.
    yy, xx = np.mgrid[0:256, 0:256]
    disc = np.zeros((256, 256), bool)
    for m in marks:
        disc |= (yy - m.row) ** 2 + (xx - m.col) ** 2 <= m.radius ** 2
    integral = np.pad(disc.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    h = side // 2
    for r, c in np.argwhere(allowed):
        t, l = max((r - h) * 4, 0), max((c - h) * 4, 0)
        b, rt = min((r + h) * 4, 256), min((c + h) * 4, 256)
        if b > t and rt > l:
            assert integral[b, rt] - integral[t, rt] - integral[b, l] + integral[t, l] == 0, (r, c)
    # ... and the rule is not vacuous: windows near the marks are excluded, far ones allowed.
    assert not allowed[32, 15] and allowed[5, 5]
    centres = negative_centres(f, side)
    assert len(centres) and np.all(f.mask[centres[:, 0], centres[:, 1]])  # never air
    assert np.all(allowed[centres[:, 0], centres[:, 1]])


def test_batches_balanced_inside_marks_and_repeatable(rng):
    raw, _ = synthetic_film(rng)
    # The second mark is so small that no working pixel's centre (4 film pixels apart) lies in it:
    # its positives are the working pixel nearest its centre, (15, 25), centre (61.5, 101.5).
    marks = [Mark(128, 60, 25, "CIRC", "B"), Mark(60, 100, 2, "CALC", "M")]
    f = make_film("F", "W", raw, marks, scale=4)
    sampler = WindowSampler([f], side=14, jitter=1.0)
    x, y, where = sampler.draw(64, np.random.default_rng(7))
    assert x.shape == (64, 1, 14, 14) and x.dtype == np.float32 and y.sum() == 32
    for (i, r, c), label in zip(where, y):
        full = f.to_full(r, c)
        if label:  # positives: a working pixel whose centre lies in a mark, or the pixel nearest the tiny one
            assert f.in_any_mark(*full) or (r, c) == (15, 25)
        else:
            assert f.mask[r, c] and clear_of_marks(f, 14)[r, c]
    assert {(int(r), int(c)) for (_, r, c), label in zip(where, y) if label} >= {(15, 25)}  # both lesions drawn
    x2, y2, where2 = sampler.draw(64, np.random.default_rng(7))
    assert np.array_equal(x, x2) and np.array_equal(y, y2) and np.array_equal(where, where2)
    assert not np.array_equal(where, sampler.draw(64, np.random.default_rng(8))[2])


def test_training_windows_are_the_scanned_windows_and_augmentation_keeps_air(rng):
    raw, _ = synthetic_film(rng)
    f = make_film("F", "W", raw, [Mark(128, 60, 25)], scale=4)
    sampler = WindowSampler([f], side=14)
    padded = pad_film(f.image, 14)  # what the scan cuts its windows from
    for r, c in [(0, 0), (5, 40), (63, 63), (30, 2)]:
        assert np.array_equal(sampler.window(0, r, c), padded[r:r + 14, c:c + 14])
    aug = WindowSampler([f], side=14, zoom=0.3, contrast=0.2)
    x, _, where = aug.draw(32, np.random.default_rng(3))
    assert x.shape == (32, 1, 14, 14) and np.isfinite(x).all()
    corner = aug._augmented(0, 0, 0, 0, np.random.default_rng(4))  # the film's corner: mostly padding and air
    assert corner.shape == (14, 14) and (corner == AIR).mean() > 0.5  # AIR stays AIR under the contrast change


def test_a_film_with_an_unmarked_lesion_gives_no_negatives(rng):
    raw, _ = synthetic_film(rng)
    f = make_film("F", "W", raw, [Mark(128, 60, 25)], scale=4, complete=False)
    assert len(negative_centres(f, 14)) == 0
    with pytest.raises(ValueError, match="no breast tissue clear"):
        WindowSampler([f], side=14)


def test_dihedral_gives_eight_distinct_symmetries():
    x = np.arange(9.0).reshape(3, 3)
    outs = {dihedral(x, k).tobytes() for k in range(8)}
    assert len(outs) == 8
