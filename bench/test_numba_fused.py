"""The fused conv + ReLU + max-pool experiment (bench/numba_fused.py) against the three
reference ops, forward and backward, on its direct and im2col paths; and a network
with fused conv blocks against the same network unfused.

Skipped when numba is not installed. Shapes stay small: the first run compiles."""

import numpy as np
import pytest

pytest.importorskip("numba")

from bench import numba_fused  # noqa: E402
from tinycnn import backends  # noqa: E402
from tinycnn.gradcheck import rel_error  # noqa: E402
from tinycnn.model import paper_net  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("shape,f,k,stride,pad,size,pstride", [
    ((2, 1, 12, 11), 4, 3, 1, 0, 2, 2),   # direct conv, ceil edge on the right
    ((2, 6, 11, 9), 5, 3, 1, 0, 2, 2),    # im2col, 9x7 -> 5x4
    ((1, 4, 10, 10), 3, 3, 2, 1, 3, 2),   # im2col, stride, pad, overlapping pool
])
def test_conv_relu_pool_matches_the_three_reference_ops(rng, shape, f, k, stride, pad, size, pstride):
    ref = backends.get("numpy")
    x, w, b = f32(rng, *shape), f32(rng, f, shape[1], k, k), f32(rng, f)
    c_out, c_cache = ref.conv2d_forward(x, w, b, stride, pad)
    r_out, r_cache = ref.relu_forward(c_out)
    expected, p_cache = ref.maxpool2d_forward(r_out, size, pstride)
    dout = f32(rng, *expected.shape)
    ex_dx, ex_dw, ex_db = ref.conv2d_backward(ref.relu_backward(ref.maxpool2d_backward(dout, p_cache), r_cache),
                                              c_cache)
    out, cache = numba_fused.conv_relu_pool_forward(x, w, b, stride, pad, size, pstride)
    dx, dw, db = numba_fused.conv_relu_pool_backward(dout, cache)
    assert out.shape == expected.shape
    assert rel_error(out, expected) <= 1e-5
    for got, want in ((dx, ex_dx), (dw, ex_dw), (db, ex_db)):
        assert got.shape == want.shape
        assert rel_error(got, want) <= 1e-4


def test_fused_network_matches_the_unfused_one(rng):
    """fuse_conv_blocks keeps the parameters and the numbers: one forward + backward
    of a small paper_net, fused against unfused, both on numba."""
    net = paper_net(hidden=8, in_size=32, seed=0, backend="numba")
    fused = numba_fused.fuse_conv_blocks(paper_net(hidden=8, in_size=32, seed=0, backend="numba"))
    assert sum(isinstance(layer, numba_fused.ConvReluPool) for layer in fused.layers) == 4
    x = rng.random((2, 1, 32, 32), dtype=np.float32)
    dlogits = f32(rng, 2, 2)
    results = []
    for model in (net, fused):
        logits = model.forward(x, train=False)
        model.backward(dlogits)
        results.append((logits, [p.grad for p in model.parameters()]))
    (l0, g0), (l1, g1) = results
    assert rel_error(l1, l0) <= 1e-5
    assert len(g0) == len(g1)
    for a, b in zip(g0, g1):
        assert rel_error(b, a) <= 1e-4
