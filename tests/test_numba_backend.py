"""The Numba CPU backend against the NumPy reference: every op (forward and backward)
through tests/helpers.compare_with_reference on random shapes, ceil-mode edges, ties,
stride and padding; exact dropout masks and optimizer steps; the fused
conv+ReLU+pool path; and one full training step of paper_net.

Skipped when numba is not installed (pip install -e ".[numba]"). Shapes stay small:
the first run compiles every kernel once (cached on disk afterwards)."""

import numpy as np
import pytest

pytest.importorskip("numba")

from helpers import compare_with_reference  # noqa: E402

from tinycnn import backends  # noqa: E402
from tinycnn.gradcheck import OPS, rel_error, run_op  # noqa: E402
from tinycnn.model import paper_net  # noqa: E402
from tinycnn.optim import SGD, Adam  # noqa: E402
from tinycnn.philox import philox4x32_10, seed_to_key  # noqa: E402

BE = "numba"


def f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def test_registered_and_float32():
    be = backends.get(BE)
    assert be.name == "numba" and be.dtype == np.float32 and be.xp is np
    a = be.asarray(np.arange(6.0).reshape(2, 3))
    assert a.dtype == np.float32 and a.flags.c_contiguous
    assert be.zeros((2, 3)).dtype == np.float32
    assert "Numba" in be.device_name()
    be.synchronize()


# ------------------------------------------------------------------ conv2d
# (N, C, H, W), F, (KH, KW), stride, pad: the direct path (C*KH*KW <= 32) and the
# im2col path, odd sizes, batch of one, 1x1 and rectangular kernels.
CONV_CASES = [
    ((2, 1, 9, 8), 4, (3, 3), 1, 0),     # direct, the first layer's shape
    ((3, 1, 11, 10), 5, (3, 3), 2, 1),   # direct, stride and pad
    ((1, 3, 9, 9), 2, (5, 5), 3, 2),     # im2col (75 taps), batch of one
    ((2, 3, 7, 6), 4, (3, 3), 1, 0),     # direct (27 taps)
    ((2, 8, 9, 8), 6, (3, 3), 2, 1),     # im2col
    ((3, 16, 13, 11), 8, (3, 3), 1, 0),  # im2col, several chunks below
    ((2, 40, 5, 6), 3, (1, 1), 1, 0),    # im2col, 1x1
    ((2, 5, 8, 10), 7, (2, 4), 2, 1),    # rectangular kernel
]


@pytest.mark.parametrize("shape,f,k,stride,pad", CONV_CASES)
def test_conv2d(rng, shape, f, k, stride, pad):
    arrays = {"x": f32(rng, *shape), "w": f32(rng, f, shape[1], *k), "b": f32(rng, f)}
    compare_with_reference(BE, "conv2d", arrays, stride=stride, pad=pad)


def test_conv2d_many_chunks(rng, monkeypatch):
    """Chunk boundaries: force one image per chunk of columns."""
    from tinycnn.backends import numba_backend

    monkeypatch.setattr(numba_backend, "CHUNK_BYTES", 1)
    arrays = {"x": f32(rng, 5, 6, 9, 7), "w": f32(rng, 4, 6, 3, 3), "b": f32(rng, 4)}
    compare_with_reference(BE, "conv2d", arrays, stride=1, pad=1)


def test_conv2d_rejects_channel_mismatch(rng):
    with pytest.raises(ValueError, match="channels"):
        backends.get(BE).conv2d_forward(f32(rng, 1, 2, 5, 5), f32(rng, 1, 3, 3, 3), np.zeros(1, np.float32))


# -------------------------------------------------------------------- relu
def test_relu_exact(rng):
    x = f32(rng, 3, 4, 5, 6)
    x[0, 0, 0, :3] = 0.0  # the kink passes no gradient
    compare_with_reference(BE, "relu", {"x": x}, exact=True)


# ----------------------------------------------------------------- maxpool
@pytest.mark.parametrize("shape,size,stride,ceil", [
    ((2, 3, 8, 8), 2, 2, True),     # exact fit
    ((2, 3, 7, 9), 2, 2, True),     # windows hang over the bottom and the right edge
    ((1, 2, 125, 5), 2, 2, True),   # 125 -> 63
    ((2, 2, 1, 1), 2, 2, True),     # one pixel
    ((2, 2, 3, 2), 2, 2, False),    # floor mode drops the last row
    ((2, 2, 8, 7), 3, 2, True),     # overlapping windows
    ((1, 3, 10, 11), 3, 3, True),   # 3x3 windows, ragged edge
    ((2, 2, 9, 7), 2, 3, True),     # stride > size: pixels in no window
    ((1, 2, 5, 5), 1, 3, True),     # window 1, stride 3
])
def test_maxpool(rng, shape, size, stride, ceil):
    exact = stride >= size  # overlapping windows may add gradients in another order
    compare_with_reference(BE, "maxpool2d", {"x": f32(rng, *shape)}, exact=exact, size=size, stride=stride,
                           ceil_mode=ceil)


@pytest.mark.parametrize("size,stride", [(2, 2), (3, 2), (3, 3)])
def test_maxpool_ties_go_to_the_first_maximum(rng, size, stride):
    """Few distinct values, so most windows have ties; all-equal planes too."""
    x = rng.integers(0, 3, (2, 3, 9, 11)).astype(np.float32)
    x[1, 2] = 1.0
    compare_with_reference(BE, "maxpool2d", {"x": x}, exact=stride >= size, size=size, stride=stride)
    be = backends.get(BE)
    ref = backends.get("numpy")
    _, (_, arg, _, _) = be.maxpool2d_forward(x, size, stride)
    _, (_, arg_ref, _, _) = ref.maxpool2d_forward(x, size, stride)
    np.testing.assert_array_equal(arg, arg_ref)


# ------------------------------------------------- dense and the loss: delegated
def test_dense_and_the_loss_are_the_reference_code(monkeypatch):
    """numba adds nothing to one BLAS product or a (N, 2) loss, so it runs the reference's
    code; a parity test would compare numpy with itself, so check the delegation."""
    be = backends.get(BE)
    calls = []
    for name in ("dense_forward", "dense_backward", "softmax_cross_entropy", "softmax"):
        monkeypatch.setattr(be._ref, name, lambda *a, name=name: calls.append(name) or name)
    assert be.dense_forward(1, 2, 3) == "dense_forward" and be.dense_backward(1, 2) == "dense_backward"
    assert be.softmax_cross_entropy(1, 2) == "softmax_cross_entropy" and be.softmax(1) == "softmax"
    assert calls == ["dense_forward", "dense_backward", "softmax_cross_entropy", "softmax"]


# ----------------------------------------------------------------- dropout
@pytest.mark.parametrize("shape,p,seed", [
    ((40, 60), 0.5, 7),
    ((3, 1000), 0.1, (12 << 32) | 5),   # a layer's seed: (call counter << 32) | layer seed
    ((7,), 0.9, 2**64 - 1),
    ((2, 3, 4, 5), 0.25, 123456789),
])
def test_dropout_masks_are_bit_identical(rng, shape, p, seed):
    # (compare_with_reference's own `seed` argument is the upstream gradient's, so the
    # op's seed is passed through run_op here.)
    x, dout = f32(rng, *shape), f32(rng, *shape)
    ref_out, ref_g = run_op(OPS["dropout"], "numpy", {"x": x}, dout=dout, p=p, seed=seed)
    out, g = run_op(OPS["dropout"], BE, {"x": x}, dout=dout, p=p, seed=seed)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(g["x"], ref_g["x"])


def test_dropout_identity_when_not_training(rng):
    x = f32(rng, 4, 5)
    out, cache = backends.get(BE).dropout_forward(x, 0.5, 1, train=False)
    assert out is x and cache is None
    out, cache = backends.get(BE).dropout_forward(x, 0.0, 1, train=True)
    assert out is x and cache is None


def test_philox_word_beyond_32_bit_counters():
    """Element indices >= 2**32 use the counter's second word."""
    from tinycnn.backends.numba_backend import _philox_word0

    key = seed_to_key((99 << 32) | 42)
    for i in (0, 1, 2**32 - 1, 2**32, 2**32 + 5, 3 * 2**40 + 17):
        ref = philox4x32_10((i & 0xFFFFFFFF, i >> 32, 0, 0), key)[0]
        assert int(_philox_word0(np.uint64(i), np.uint64(key[0]), np.uint64(key[1]))) == int(ref)


# ---------------------------------------------------------- optimizer steps
def _run_optimizer(name, backend, values, grads, steps=3):
    be = backends.get(backend)

    class P:  # the optimizer needs .value, .grad, .shape, .name
        def __init__(self, v, g):
            self.value, self.grad, self.shape, self.name = be.asarray(v), be.asarray(g), v.shape, "p"

    params = [P(v, g) for v, g in zip(values, grads)]
    if name == "sgd":
        opt = SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-3, backend=be)
    else:
        opt = Adam(params, lr=1e-2, weight_decay=1e-3, backend=be)
    for _ in range(steps):
        opt.step()
    return [be.to_numpy(p.value) for p in params]


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_optimizer_steps_are_bit_identical(rng, name):
    values = [f32(rng, 17, 5), f32(rng, 3), f32(rng, 2, 3, 3, 3)]
    grads = [f32(rng, *v.shape) for v in values]
    ref = _run_optimizer(name, "numpy", values, grads)
    ours = _run_optimizer(name, BE, values, grads)
    for a, b in zip(ours, ref):
        np.testing.assert_array_equal(a, b)


def test_sgd_update_on_a_non_contiguous_parameter(rng):
    """Falls back to the reference arithmetic instead of updating a copy."""
    param = f32(rng, 6, 4)[:, ::2]
    grad, vel = f32(rng, 6, 2), np.zeros((6, 2), np.float32)
    expected = param.copy()
    backends.get("numpy").sgd_update(expected, grad, vel.copy(), 0.1, 0.9, 0.0)
    backends.get(BE).sgd_update(param, grad, vel, 0.1, 0.9, 0.0)
    np.testing.assert_array_equal(param, expected)


# ------------------------------------------------ fused conv + ReLU + pool
@pytest.mark.parametrize("shape,f,k,stride,pad,size,pstride", [
    ((2, 1, 12, 11), 4, 3, 1, 0, 2, 2),   # direct conv, ceil edge on the right
    ((2, 6, 11, 9), 5, 3, 1, 0, 2, 2),    # im2col, 9x7 -> 5x4
    ((1, 4, 10, 10), 3, 3, 2, 1, 3, 2),   # im2col, stride, pad, overlapping pool
])
def test_conv_relu_pool_matches_the_three_reference_ops(rng, shape, f, k, stride, pad, size, pstride):
    ref, be = backends.get("numpy"), backends.get(BE)
    x, w, b = f32(rng, *shape), f32(rng, f, shape[1], k, k), f32(rng, f)
    c_out, c_cache = ref.conv2d_forward(x, w, b, stride, pad)
    r_out, r_cache = ref.relu_forward(c_out)
    expected, p_cache = ref.maxpool2d_forward(r_out, size, pstride)
    dout = f32(rng, *expected.shape)
    ex_dx, ex_dw, ex_db = ref.conv2d_backward(ref.relu_backward(ref.maxpool2d_backward(dout, p_cache), r_cache),
                                              c_cache)
    out, cache = be.conv_relu_pool_forward(x, w, b, stride, pad, size, pstride)
    dx, dw, db = be.conv_relu_pool_backward(dout, cache)
    assert out.shape == expected.shape
    assert rel_error(out, expected) <= 1e-5
    for got, want in ((dx, ex_dx), (dw, ex_dw), (db, ex_db)):
        assert got.shape == want.shape
        assert rel_error(got, want) <= 1e-4


# ------------------------------------------------- one paper_net training step
def test_paper_net_training_step_matches_numpy():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 1, 64, 64)).astype(np.float32)
    y = np.array([0, 1, 1, 0])
    results = {}
    for name in ("numpy", BE):
        net = paper_net(hidden=32, in_size=64, seed=3, backend=name)
        be = net.backend
        opt = SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4, backend=be)
        losses = []
        for _ in range(2):  # the second step uses the momentum and new dropout masks
            loss, dlogits = be.softmax_cross_entropy(net.forward(be.asarray(x), train=True), y)
            net.backward(dlogits)
            grads = {k: be.to_numpy(p.grad).copy() for k, p in net.named_parameters()}
            opt.step()
            losses.append(float(loss))
        params = {k: be.to_numpy(p.value) for k, p in net.named_parameters()}
        results[name] = (losses, grads, params)
    (ref_losses, ref_grads, ref_params), (losses, grads, params) = results["numpy"], results[BE]
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    for k in ref_params:
        assert rel_error(grads[k], ref_grads[k]) <= 1e-4, k
        assert rel_error(params[k], ref_params[k]) <= 1e-5, k
