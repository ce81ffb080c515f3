"""The Numba CPU backend: what is specific to it. Op parity against the NumPy reference
(every op, forward and backward, on the shared cases: strides, padding, ceil-mode edges,
ties, exact dropout masks) lives in tests/test_parity.py, with the cases and tolerances
in tests/op_cases.py.

Here: the backend's arrays; im2col chunk boundaries (a shared case rerun with one image
per chunk); max-pool keeping the reference's window offsets; dense and the loss
delegated to the reference's code; dropout returning its input when off; Philox
counters past 32 bits; bit-exact optimizer steps, also on a non-contiguous parameter;
and two paper_net training steps (the fused conv+ReLU+pool experiment is tested in
bench/test_numba_fused.py).

Skipped when numba is not installed (pip install -e ".[numba]"). Shapes stay small:
the first run compiles every kernel once (cached on disk afterwards)."""

import numpy as np
import pytest

pytest.importorskip("numba")

from helpers import compare_with_reference  # noqa: E402
from op_cases import case, cases, tolerance  # noqa: E402

from tinycnn import backends  # noqa: E402
from tinycnn.gradcheck import rel_error  # noqa: E402
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
def test_conv2d_many_chunks(rng, monkeypatch):
    """Chunk boundaries: the shared im2col case over five images, rerun with one image per
    chunk of columns."""
    from tinycnn.backends import numba_backend

    c = case("conv2d", "five_images_pad1")
    n, ch, _, _ = c.inputs["x"]
    _, _, kh, kw = c.inputs["w"]
    assert ch * kh * kw > numba_backend.DIRECT_MAX_K and n > 1  # im2col, and more than one chunk
    monkeypatch.setattr(numba_backend, "CHUNK_BYTES", 1)
    tol = tolerance(BE, c)
    compare_with_reference(BE, c.spec, c.arrays(rng), fwd_tol=tol.fwd, grad_tol=tol.grad, **c.kw)


def test_conv2d_rejects_channel_mismatch(rng):
    with pytest.raises(ValueError, match="channels"):
        backends.get(BE).conv2d_forward(f32(rng, 1, 2, 5, 5), f32(rng, 1, 3, 3, 3), np.zeros(1, np.float32))


# ----------------------------------------------------------------- maxpool
@pytest.mark.parametrize("c", cases("maxpool2d", BE), ids=lambda c: c.name)
def test_maxpool_keeps_the_reference_window_offsets(rng, c):
    """The winner of each window (its offset u*size + v in the cache, which the backward
    pass reads) is the reference's, ties included, for every shared max-pool case."""
    x = c.arrays(rng)["x"]
    _, (_, arg, _, _) = backends.get(BE).maxpool2d_forward(x, **c.kw)
    _, (_, arg_ref, _, _) = backends.get("numpy").maxpool2d_forward(x, **c.kw)
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
def test_dropout_identity_when_not_training(rng):
    x = f32(rng, 4, 5)
    out, cache = backends.get(BE).dropout_forward(x, 0.5, 1, train=False)
    assert out is x and cache is None
    out, cache = backends.get(BE).dropout_forward(x, 0.0, 1, train=True)
    assert out is x and cache is None


def test_philox_word_beyond_32_bit_counters():
    """Element indices >= 2**32 use the counter's second word."""
    from tinycnn.backends.numba_kernels import philox_word0 as _philox_word0

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
