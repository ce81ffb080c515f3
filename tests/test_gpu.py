"""Tier 3 (-m gpu): the kernels on a real GPU through the "cuda" backend, beyond op
parity (which tests/test_parity.py runs on the GPU too, with the shared cases of
tests/op_cases.py and the large ones that only the GPU runs): the loss stays on the
device, bit-exact optimizer updates, a full 256x256 paper_net training step verified in
every precision mode, two seeded runs bitwise identical, and the literal reading of the
paper (hidden=28800) completing a step. Skipped without CuPy and a GPU (tests/conftest.py).

The training step is not compared with another chain of the reference by a tolerance: at
256 x 256 the float32 reference itself takes another ReLU or pooling decision than
float64 in the first blocks, which moves conv1's weight gradient by 6e-3. It is verified
step by step on the GPU's own intermediates against the exact result of its mode
(tinycnn.verify.verify_step), which a correct kernel cannot fail whatever its sum order;
tests/test_step_verification.py shows the same comparison passing the float32 reference
against float64 at this shape and cuda-emu at 256 x 256, and failing planted bugs."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import backend_or_skip, paper_batch, paper_net_builder
from op_cases import normal
from tinycnn import backends
from tinycnn.verify import verify_step

pytestmark = pytest.mark.gpu
BACKEND = "cuda"


@pytest.fixture(scope="module")
def gpu():
    return backend_or_skip(BACKEND)


def test_loss_stays_on_the_device(gpu, rng):
    import cupy

    loss, dlogits = gpu.softmax_cross_entropy(gpu.asarray(normal(rng, (4, 2))), np.array([0, 1, 1, 0]))
    assert isinstance(loss, cupy.ndarray) and loss.shape == ()
    assert isinstance(dlogits, cupy.ndarray)


def test_optimizer_updates_are_bit_exact(gpu, rng):
    ref = backends.get("numpy")
    p, g, v = (normal(rng, (1000, 37)) for _ in range(3))
    p1, v1 = p.copy(), v.copy()
    p2, g2, v2 = gpu.asarray(p), gpu.asarray(g), gpu.asarray(v)
    ref.sgd_update(p1, g, v1, 0.01, 0.9, 5e-4)
    gpu.sgd_update(p2, g2, v2, 0.01, 0.9, 5e-4)
    np.testing.assert_array_equal(gpu.to_numpy(p2), p1)
    m1, s1 = np.zeros_like(p), np.zeros_like(p)
    m2, s2 = gpu.zeros(p.shape), gpu.zeros(p.shape)
    for step in (1, 2):
        ref.adam_update(p1, g, m1, s1, 1e-3, 0.9, 0.999, 1e-8, 1e-4, step)
        gpu.adam_update(p2, g2, m2, s2, 1e-3, 0.9, 0.999, 1e-8, 1e-4, step)
    np.testing.assert_array_equal(gpu.to_numpy(p2), p1)


# ------------------------------------------------------------------- training steps
def _train_step(backend, x, y, hidden=1024, in_size=256, seed=0):
    """One forward/backward/SGD step from a seeded init; host copies of what it produced."""
    from tinycnn.model import paper_net
    from tinycnn.optim import SGD

    net = paper_net(hidden=hidden, in_size=in_size, seed=seed, backend=backend)
    be = net.backend
    opt = SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4, backend=be)
    logits = net.forward(be.asarray(x), train=True)
    loss, dlogits = be.softmax_cross_entropy(logits, y)
    net.backward(dlogits)
    grads = {n: be.to_numpy(p.grad).copy() for n, p in net.named_parameters()}
    opt.step()
    be.synchronize()
    params = {n: be.to_numpy(p.value) for n, p in net.named_parameters()}
    return float(be.to_numpy(loss)), be.to_numpy(logits), grads, params


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_paper_net_256_training_step_is_verified(precision):
    """paper_net (hidden 1024) at 256 x 256, batch 4, seed 0: forward (dropout on), loss,
    backward and one SGD-momentum update on the GPU in each precision mode (fp32 on the
    fp32 backend object: cuda defaults to tf32), every step against the exact result of
    its mode; the fragile windows (decisions that rounding could flip) counted."""
    be = backend_or_skip(f"{BACKEND}:{precision}")
    x, y = paper_batch()
    report = verify_step(be, paper_net_builder(), x, y, end_to_end=False)
    print(report.explain())
    assert report.ok, report.explain()


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_two_seeded_runs_are_bitwise_identical(rng, precision):
    be = backend_or_skip(f"cuda:{precision}")
    x, y = normal(rng, (8, 1, 256, 256)), np.array([0, 1] * 4)
    a, b = _train_step(be, x, y), _train_step(be, x, y)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])
    for n in a[2]:
        np.testing.assert_array_equal(a[2][n], b[2][n], err_msg=f"gradient of {n}")
        np.testing.assert_array_equal(a[3][n], b[3][n], err_msg=f"updated {n}")


def _free_device_bytes() -> int:
    try:
        import cupy

        return int(cupy.cuda.runtime.memGetInfo()[0])
    except Exception:
        return 0


@pytest.mark.slow
def test_paper_net_hidden_28800_completes_a_step_at_batch_8(gpu, rng):
    """The paper's Table I read literally: two 28800 x 28800 layers (1.66 G parameters;
    ~20 GB of weights, gradients and momentum), in bf16. Needs a large GPU."""
    if _free_device_bytes() < 70 * 10**9:
        pytest.skip("needs >= 70 GB of free device memory")
    from tinycnn.model import paper_net
    from tinycnn.optim import SGD

    net = paper_net(hidden=28800, backend=backends.get(BACKEND, "bf16"))  # the case: bf16
    be = net.backend
    opt = SGD(net.parameters(), lr=1e-3, momentum=0.9, backend=be)
    before = be.to_numpy(net.layers[-1].params["w"].value).copy()
    logits = net.forward(be.asarray(normal(rng, (8, 1, 256, 256))), train=True)
    loss, dlogits = be.softmax_cross_entropy(logits, np.array([0, 1] * 4))
    net.backward(dlogits)
    opt.step()
    be.synchronize()
    assert np.isfinite(float(be.to_numpy(loss)))
    assert not np.array_equal(be.to_numpy(net.layers[-1].params["w"].value), before)
