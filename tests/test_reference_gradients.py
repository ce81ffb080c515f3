"""Tier 1: every op's backward pass against centred finite differences, float64."""

import numpy as np
import pytest

from tinycnn.gradcheck import TOLERANCE, check_model, check_op
from tinycnn.model import paper_net
from tinycnn.op_table import OPS


def away_from_zero(rng, shape):
    """Values at least 0.05 from ReLU's kink, so a finite difference never crosses it."""
    v = rng.standard_normal(shape)
    return v + np.sign(v) * 0.05


def distinct(rng, shape):
    """Values at least ~0.07 apart, so no max-pool window has a near-tie."""
    return rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1 + 0.03 * rng.random(shape)


def assert_grads_ok(errors):
    for name, err in errors.items():
        assert err <= TOLERANCE, f"d{name}: relative error {err:.2e} > {TOLERANCE:g}"


@pytest.mark.parametrize("n,c,h,w,f,k,stride,pad", [
    (2, 3, 7, 6, 4, 3, 1, 0),   # non-square input
    (2, 2, 7, 8, 3, 3, 2, 1),   # stride 2, padding 1
    (1, 1, 9, 9, 2, 5, 1, 0),   # batch of one, 5x5 kernel
    (3, 2, 6, 5, 2, 3, 1, 1),   # "same" padding
    (2, 2, 8, 9, 3, 2, 3, 2),   # stride larger than the kernel, pad 2
    (1, 1, 3, 3, 1, 3, 1, 0),   # a single output pixel
])
def test_conv2d_gradients(rng, n, c, h, w, f, k, stride, pad):
    arrays = {"x": rng.standard_normal((n, c, h, w)), "w": rng.standard_normal((f, c, k, k)),
              "b": rng.standard_normal(f)}
    assert_grads_ok(check_op(OPS["conv2d"], arrays, stride=stride, pad=pad))


@pytest.mark.parametrize("shape", [(3, 4, 5), (1, 2, 3, 3), (7,)])
def test_relu_gradient(rng, shape):
    assert_grads_ok(check_op(OPS["relu"], {"x": away_from_zero(rng, shape)}))


@pytest.mark.parametrize("shape,size,stride", [
    ((2, 2, 8, 8), 2, 2),     # exact fit
    ((2, 2, 7, 9), 2, 2),     # ceil mode: last row and column hang over the edge
    ((1, 3, 5, 5), 2, 2),     # batch of one, odd size
    ((1, 2, 8, 7), 3, 2),     # overlapping windows
    ((2, 1, 6, 7), 3, 3),     # window 3, stride 3, ragged edge
    ((1, 1, 1, 1), 2, 2),     # a single pixel under a 2x2 window
])
def test_maxpool_gradients(rng, shape, size, stride):
    assert_grads_ok(check_op(OPS["maxpool2d"], {"x": distinct(rng, shape)}, size=size, stride=stride))


@pytest.mark.parametrize("shape,size,stride", [((2, 2, 7, 9), 2, 2), ((1, 1, 8, 7), 3, 2)])
def test_maxpool_floor_mode_gradients(rng, shape, size, stride):
    """Floor mode leaves the last row/column uncovered: dx keeps the input's shape,
    with zeros there."""
    x = distinct(rng, shape)
    assert_grads_ok(check_op(OPS["maxpool2d"], {"x": x}, size=size, stride=stride, ceil_mode=False))
    from tinycnn import backends

    be = backends.get("numpy64")
    out, cache = be.maxpool2d_forward(x, size, stride, ceil_mode=False)
    dx = be.maxpool2d_backward(np.ones_like(out), cache)
    assert dx.shape == x.shape
    assert (dx[:, :, -1, :] == 0).all()  # the last row lies in no window


@pytest.mark.parametrize("n,d,m", [(5, 7, 3), (1, 4, 2), (8, 1, 5)])
def test_dense_gradients(rng, n, d, m):
    arrays = {"x": rng.standard_normal((n, d)), "w": rng.standard_normal((d, m)), "b": rng.standard_normal(m)}
    assert_grads_ok(check_op(OPS["dense"], arrays))


@pytest.mark.parametrize("p", [0.0, 0.5, 0.9])
def test_dropout_gradient(rng, p):
    assert_grads_ok(check_op(OPS["dropout"], {"x": rng.standard_normal((4, 3, 5))}, p=p, seed=99))


@pytest.mark.parametrize("n,k,scale", [(6, 3, 3.0), (1, 2, 1.0), (4, 10, 20.0)])
def test_softmax_cross_entropy_gradient(rng, n, k, scale):
    arrays = {"logits": rng.standard_normal((n, k)) * scale, "labels": rng.integers(0, k, n)}
    assert_grads_ok(check_op(OPS["softmax_cross_entropy"], arrays))


def test_whole_paper_net_gradients(rng):
    """Every parameter of a small paper_net, through the loss, dropout on."""
    from tinycnn import backends

    net = paper_net(hidden=16, in_size=32, seed=3, backend=backends.get("numpy64"))
    x = rng.standard_normal((2, 1, 32, 32))
    errors = check_model(net, x, np.array([1, 0]), seed=3)
    assert len(errors) == 1 + 2 * 7  # the input + w and b of 4 convs and 3 dense layers
    assert_grads_ok(errors)


def test_gradcheck_detects_a_wrong_backward(rng):
    """The checker itself must fail on a broken gradient (here: dx of ReLU doubled)."""
    from tinycnn.op_table import OpSpec
    broken = OpSpec("relu", ("x",), OPS["relu"].forward, lambda be, d, c: (2 * be.relu_backward(d, c),))
    errors = check_op(broken, {"x": away_from_zero(rng, (3, 4))})
    assert errors["x"] > 0.1


def test_gradcheck_cli_passes():
    from tinycnn.gradcheck import main

    assert main([]) == 0
