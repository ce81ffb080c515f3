"""The semantics every backend must share (docs/design.md), pinned on the reference:
forward values against direct loop definitions, ceil-mode shapes, the tie rule,
dropout's generator and scaling, and a loss that never overflows."""

import numpy as np
import pytest

from tinycnn import backends
from tinycnn.philox import dropout_keep_mask, keep_threshold, philox4x32_10
from tinycnn.shapes import conv_out_size, pool_out_size

np_be = backends.get("numpy64")


def conv_loops(x, w, b, stride, pad):
    """conv2d straight from its definition, one output at a time."""
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, f, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * stride : i * stride + kh, j * stride : j * stride + kw]
            out[:, :, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3])) + b
    return out


@pytest.mark.parametrize("shape,f,k,stride,pad", [((2, 3, 7, 6), 4, 3, 1, 0), ((1, 2, 8, 9), 3, 3, 2, 1),
                                                  ((2, 1, 10, 10), 2, 5, 3, 2)])
def test_conv2d_forward_matches_definition(rng, shape, f, k, stride, pad):
    x, w, b = rng.standard_normal(shape), rng.standard_normal((f, shape[1], k, k)), rng.standard_normal(f)
    out, _ = np_be.conv2d_forward(x, w, b, stride=stride, pad=pad)
    np.testing.assert_allclose(out, conv_loops(x, w, b, stride, pad), rtol=1e-12, atol=1e-12)


def test_conv2d_rejects_channel_mismatch(rng):
    with pytest.raises(ValueError, match="channels"):
        np_be.conv2d_forward(rng.standard_normal((1, 2, 5, 5)), rng.standard_normal((1, 3, 3, 3)), np.zeros(1))


@pytest.mark.parametrize("size,expected", [(254, 127), (125, 63), (61, 31), (29, 15), (1, 1), (2, 1), (3, 2)])
def test_ceil_mode_pool_sizes(size, expected):
    assert pool_out_size(size, 2, 2, ceil_mode=True) == expected


def test_pool_sizes_floor_mode_and_dropped_windows():
    assert pool_out_size(125, 2, 2, ceil_mode=False) == 62
    # size 5, window 1, stride 3: windows start at 0, 3 (a third would start past the end)
    assert pool_out_size(5, 1, 3, ceil_mode=True) == 2
    assert conv_out_size(256, 3) == 254
    with pytest.raises(ValueError):
        conv_out_size(2, 3)


def test_maxpool_forward_matches_definition_at_the_edge(rng):
    x = rng.standard_normal((2, 3, 5, 7))
    out, _ = np_be.maxpool2d_forward(x, 2, 2, ceil_mode=True)
    assert out.shape == (2, 3, 3, 4)
    for i in range(3):
        for j in range(4):
            np.testing.assert_array_equal(out[:, :, i, j], x[:, :, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].max(axis=(2, 3)))


def test_maxpool_tie_gives_gradient_to_first_maximum():
    x = np.array([[[[1.0, 3.0, 3.0],
                    [3.0, 0.0, 2.0],
                    [3.0, 3.0, 5.0]]]])
    out, cache = np_be.maxpool2d_forward(x, 2, 2, ceil_mode=True)
    np.testing.assert_array_equal(out, [[[[3.0, 3.0], [3.0, 5.0]]]])
    dx = np_be.maxpool2d_backward(np.array([[[[10.0, 20.0], [30.0, 40.0]]]]), cache)
    # window (0,0) ties at (0,1) and (1,0): the first in row-major order, (0,1), wins.
    # window (1,0) covers row 2 only (it hangs over the edge): ties at (2,0) and (2,1) -> (2,0).
    expected = np.array([[[[0.0, 10.0, 20.0],
                           [0.0, 0.0, 0.0],
                           [30.0, 0.0, 40.0]]]])
    np.testing.assert_array_equal(dx, expected)


def test_maxpool_all_equal_window_and_overlap_accumulates():
    x = np.zeros((1, 1, 3, 3))
    _, cache = np_be.maxpool2d_forward(x, 3, 1, ceil_mode=True)  # one window of 9 equal values
    dx = np_be.maxpool2d_backward(np.ones((1, 1, 1, 1)), cache)
    assert dx[0, 0, 0, 0] == 1.0 and dx.sum() == 1.0
    # overlapping windows that pick the same pixel add their gradients
    x = np.array([[[[0.0, 0.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 0.0]]]])
    _, cache = np_be.maxpool2d_forward(x, 2, 1, ceil_mode=False)
    dx = np_be.maxpool2d_backward(np.ones((1, 1, 2, 2)), cache)
    assert dx[0, 0, 1, 1] == 4.0 and dx.sum() == 4.0


def test_philox_known_answers():
    """Known-answer vectors of Philox4x32-10 (Random123's kat_vectors)."""
    cases = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
             ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
             ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
              (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for ctr, key, expected in cases:
        assert tuple(int(v) for v in philox4x32_10(ctr, key)) == expected


def test_dropout_mask_is_a_function_of_seed_and_index():
    a = dropout_keep_mask(1000, seed=5, p=0.5)
    np.testing.assert_array_equal(a, dropout_keep_mask(1000, seed=5, p=0.5))
    assert (a != dropout_keep_mask(1000, seed=6, p=0.5)).any()
    # element i's fate does not depend on the tensor's size
    np.testing.assert_array_equal(a[:300], dropout_keep_mask(300, seed=5, p=0.5))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_p0_is_identity(rng, dtype):
    be = backends.get("numpy" if dtype == np.float32 else "numpy64")
    x = rng.standard_normal((3, 4, 5)).astype(dtype)
    out, cache = be.dropout_forward(x, 0.0, seed=1)
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(be.dropout_backward(x, cache), x)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
def test_dropout_scaling_and_rate(rng, p):
    be = backends.get("numpy")
    x = rng.standard_normal(200_000).astype(np.float32) + 3
    out, cache = be.dropout_forward(x, p, seed=11)
    kept = out != 0
    assert abs(kept.mean() - (1 - p)) < 0.005
    scale = np.float32(1 / (1 - p))  # inverted scaling, the float64 quotient rounded once
    np.testing.assert_array_equal(out[kept], x[kept] * scale)
    assert abs(out.mean() / x.mean() - 1) < 0.05  # expectation preserved
    dx = be.dropout_backward(np.ones_like(x), cache)
    np.testing.assert_array_equal(dx[kept], scale)
    assert (dx[~kept] == 0).all()


def test_dropout_eval_mode_is_identity(rng):
    x = rng.standard_normal((2, 3)).astype(np.float32)
    out, _ = backends.get("numpy").dropout_forward(x, 0.5, seed=0, train=False)
    np.testing.assert_array_equal(out, x)


def test_keep_threshold_bounds():
    assert keep_threshold(0.0) == 0 and keep_threshold(0.5) == 1 << 23
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError):
            keep_threshold(bad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_huge_logits_do_not_overflow(dtype):
    be = backends.get("numpy" if dtype == np.float32 else "numpy64")
    logits = np.array([[1e30, -1e30], [-3e38 if dtype == np.float32 else -1e300, 0.0], [1000.0, 1000.0]], dtype=dtype)
    loss, d = be.softmax_cross_entropy(logits, np.array([0, 1, 0]))
    assert np.isfinite(loss) and np.isfinite(d).all()
    # row 0 and row 1: the right class dominates, zero loss; row 2: a fair coin, log 2
    assert np.isclose(float(loss), np.log(2) / 3, rtol=1e-6)
    np.testing.assert_allclose(d.sum(axis=1), 0, atol=1e-7)


def test_cross_entropy_value_and_label_checks():
    be = backends.get("numpy64")
    logits = np.array([[2.0, 1.0, 0.0]])
    loss, _ = be.softmax_cross_entropy(logits, np.array([2]))
    assert np.isclose(float(loss), -np.log(np.exp(0) / np.exp([2.0, 1.0, 0.0]).sum()))
    with pytest.raises(ValueError, match="labels"):
        be.softmax_cross_entropy(logits, np.array([3]))


def test_float32_is_the_default_and_kept(rng):
    be = backends.get("numpy")
    x = be.asarray(rng.standard_normal((2, 1, 6, 6)))
    w, b = be.asarray(rng.standard_normal((2, 1, 3, 3))), be.asarray(np.zeros(2))
    out, cache = be.conv2d_forward(x, w, b)
    assert out.dtype == np.float32
    assert all(g.dtype == np.float32 for g in be.conv2d_backward(out, cache))


@pytest.mark.parametrize("name", ["numpy", "numba", "cuda-emu"])
def test_every_backend_rejects_bad_arguments_alike(name, rng):
    from helpers import backend_or_skip

    be = backend_or_skip(name)

    def f32(*shape):
        return be.asarray(rng.standard_normal(shape).astype(np.float32))

    with pytest.raises(ValueError, match="conv2d: input has 2 channels but the filters expect 3"):
        be.conv2d_forward(f32(1, 2, 5, 5), f32(1, 3, 3, 3), f32(1))
    with pytest.raises(ValueError, match=r"dense: input of shape \(2, 5\) does not fit weights of shape \(4, 3\)"):
        be.dense_forward(f32(2, 5), f32(4, 3), f32(3))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        be.softmax_cross_entropy(f32(3, 2), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="labels of shape"):
        be.softmax_cross_entropy(f32(3, 2), np.array([0, 1]))
