"""The fully convolutional scan equals the window-by-window one at the same (per-film)
normalisation: film-wide pass, shift and stitch, mirrors; and the network refuses
window sides whose pools would not be exact. Small nets and films, NumPy backend."""

import numpy as np
import pytest

from tinycnn.mammo.detection.fcn import grid_centres, pad_film, scan_logits, window_logits
from tinycnn.mammo.detection.heatmap import heat_map
from tinycnn.mammo.detection.network import detector_net, exact_side, final_size


@pytest.mark.parametrize("side, widths, shifts", [
    (46, (4, 6, 8, 8), 1),   # 4 blocks, last map 1x1: the dense layer is a 1x1 conv too
    (62, (4, 6, 8, 8), 2),   # 4 blocks, 2x2 last map, half-stride grid
    (30, (4, 6, 8), 4),      # 3 blocks (stride 8), grid step 2
])
def test_film_wide_scan_equals_windows(rng, side, widths, shifts):
    net = detector_net(side, widths, hidden=8, seed=3)
    image = rng.standard_normal((45, 38)).astype(np.float32)  # sides that are no multiple of the stride
    logits = scan_logits(net, image, shifts)
    step = 2 ** len(widths) // shifts
    rows, cols = grid_centres(image.shape, step)
    assert logits.shape == (2, len(rows), len(cols))
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    windows = window_logits(net, image, rr.ravel(), cc.ravel())
    np.testing.assert_allclose(logits.reshape(2, -1).T, windows, rtol=1e-4, atol=1e-5)


def test_window_centre_and_padding():
    # pad_film puts side/2 of AIR around: the window at (t, l) of the padded film is centred on pixel (t, l).
    image = np.arange(20 * 20, dtype=np.float32).reshape(20, 20)
    padded = pad_film(image, 8)
    assert padded.shape == (28, 28)
    assert padded[5:5 + 8, 7:7 + 8][4, 4] == image[5, 7]


def test_mirrored_heat_map_is_the_mean_of_a_window_and_its_mirror(rng):
    net = detector_net(46, (4, 6, 8, 8), hidden=8, seed=5)
    image = rng.standard_normal((32, 48)).astype(np.float32)  # sides multiples of the step 8
    heat = heat_map(net, image, shifts=2, mirrors=2)
    rows, cols = grid_centres(image.shape, 8)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    plain = window_logits(net, image, rr.ravel(), cc.ravel())
    # The window centred on column c is, mirrored, the one centred on column w - c.
    mirrored = window_logits(net, np.ascontiguousarray(image[:, ::-1]), rr.ravel(), 48 - cc.ravel())
    odds = ((plain[:, 1] - plain[:, 0]) + (mirrored[:, 1] - mirrored[:, 0])) / 2
    np.testing.assert_allclose(heat.ravel(), odds, rtol=1e-4, atol=1e-5)


def test_exact_sides():
    assert [exact_side(k, 4) for k in (1, 2, 3)] == [46, 62, 78]  # 16k + 30
    assert final_size(62, 4) == 2 and final_size(64, 4) is None and final_size(30, 3) == 2
    with pytest.raises(ValueError, match="nearest: \\[62, 78\\]"):
        detector_net(64)
