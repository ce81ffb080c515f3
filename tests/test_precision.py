"""The precision switch (tinycnn/precision.py): choosing a mode, what runs in it, and
determinism in every mode. The numbers each mode computes are held to the reference in
tests/test_parity.py (the derived FP32-sum bound) and tests/test_tensor_core_kernels.py."""

from __future__ import annotations

import re

import numpy as np
import pytest

from helpers import backend_or_skip
from tinycnn import backends
from tinycnn.model import paper_net
from tinycnn.optim import SGD
from tinycnn.precision import PRECISIONS, choose, round_bf16, round_operands, round_tf32


def test_get_keeps_one_backend_per_name_and_mode():
    ref = backends.get("numpy")
    assert ref.precision == "fp32" and backends.get("numpy", "fp32") is ref
    tf32 = backends.get("numpy", "tf32")
    assert tf32 is not ref and tf32.precision == "tf32" and backends.get("numpy", "tf32") is tf32
    assert backends.get(tf32) is tf32 and backends.get(tf32, "tf32") is tf32
    with pytest.raises(ValueError, match="runs precision 'tf32', not 'bf16'"):
        backends.get(tf32, "bf16")


def test_a_mode_a_backend_cannot_run_says_what_it_runs():
    with pytest.raises(ValueError, match="the numpy backend runs fp32, tf32, bf16 .the modes are"):
        backends.get("numpy", "fp16")
    with pytest.raises(ValueError, match="runs fp32; the tensor-core modes run on the cuda backend"):
        choose("bf16", ("fp32",), "fp32", "numba")
    assert choose(None, PRECISIONS, "tf32", "cuda") == "tf32"


def test_the_reference_rounds_both_operands_of_every_product():
    """numpy in tf32 / bf16 = numpy in fp32 on rounded operands (dense: x and w forward,
    dout and w for dx, x and dout for dw; the bias and its gradient are not rounded)."""
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((3, 7)), rng.standard_normal((7, 4)), rng.standard_normal(4)
    dout = rng.standard_normal((3, 4))
    exact = backends.get("numpy64")
    for precision, rnd in (("tf32", round_tf32), ("bf16", round_bf16)):
        be = backends.get("numpy64", precision)
        y, cache = be.dense_forward(x, w, b)
        dx, dw, db = be.dense_backward(dout, cache)
        r = lambda a: rnd(a).astype(np.float64)  # noqa: E731
        y2, cache2 = exact.dense_forward(r(x), r(w), b)
        dx2, dw2, db2 = exact.dense_backward(r(dout), cache2)
        np.testing.assert_array_equal(y, y2)
        np.testing.assert_array_equal(dx, dx2)
        np.testing.assert_array_equal(dw, dw2)
        np.testing.assert_array_equal(db, dout.sum(axis=0))
        assert not np.array_equal(y, exact.dense_forward(x, w, b)[0])  # the mode changed something
    assert round_operands(x, "fp32") is x


def _one_step(be, seed: int = 0):
    """A fresh paper_net (31x31 input, the smallest) and one SGD step on a fixed batch:
    the parameters after it, on the host."""
    net = paper_net(hidden=8, in_size=31, backend=be, seed=seed)
    opt = SGD(net.parameters(), lr=0.05, momentum=0.9, backend=be)
    rng = np.random.default_rng(1)
    x = be.asarray(rng.standard_normal((2, 1, 31, 31)).astype(np.float32))
    labels = np.array([0, 1])
    logits = net.forward(x, train=True)
    loss, dlogits = be.softmax_cross_entropy(logits, labels)
    net.backward(dlogits)
    opt.step()
    return float(be.to_numpy(loss)), [be.to_numpy(p.value).copy() for p in net.parameters()]


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_two_runs_with_one_seed_give_the_same_bits(precision):
    """Determinism in the tensor-core modes on the kernels themselves (cuda-emu): every
    split and every sum order depends on the shapes alone."""
    be = backend_or_skip(f"cuda-emu:{precision}")
    loss_a, params_a = _one_step(be)
    loss_b, params_b = _one_step(be)
    assert loss_a == loss_b
    for a, b in zip(params_a, params_b):
        np.testing.assert_array_equal(a, b)
    _, params_fp32 = _one_step(backend_or_skip("cuda-emu"))
    assert any(not np.array_equal(a, b) for a, b in zip(params_a, params_fp32))


def test_a_tensor_core_step_runs_every_product_in_its_mode(monkeypatch):
    """In bf16 every conv and dense product of a training step is a bf16 kernel (the
    tensor-core ones, and the first layer's few-taps forward and weight gradient with
    rounded operands); no FP32 product kernel runs."""
    be = backend_or_skip("cuda-emu:bf16")
    names = []
    run = type(be)._run
    monkeypatch.setattr(be, "_run", lambda name, *a: (names.append(name), run(be, name, *a)))
    _one_step(be)
    product = re.compile(r"conv2d_(forward|relu_maxpool|backward_data|backward_filter)_\w+_\d+x\d+"
                         r"|conv2d_(backward_filter|relu_maxpool)_smallk\w*|sgemm\w*")
    products = [n for n in names if product.fullmatch(n)]
    assert products and all("bf16" in n for n in products), sorted(set(products))
    assert {"conv2d_relu_maxpool_smallk_bf16", "conv2d_backward_filter_smallk_bf16", "sgemm_bf16_strided"} <= set(names)
    assert any(n.startswith("conv2d_relu_maxpool_bf16_") for n in names)


def test_the_paper_literal_network_fits_an_80_gb_gpu_in_bf16():
    """hidden=28800 at batch 64: the shape-based estimate of a training run (FP32 storage
    in every mode) is under 80 GB, and no dense product of the step splits K (which
    would add a (splits, M, N) workspace)."""
    pytest.importorskip("PIL")  # tinycnn.mammo needs the app extra
    from tinycnn.backends import geometry
    from tinycnn.mammo import memory
    from tinycnn.checkpoint import architecture_shapes

    shapes = architecture_shapes(memory.paper_architecture(28800, 256))
    assert shapes.num_parameters() > 1.6e9
    assert memory.training_bytes(shapes, 64) < 80e9 / 2
    batch, d, hidden = 64, 28800, 28800
    for m, n, k in [(batch, hidden, d), (batch, d, hidden), (d, hidden, batch)]:  # y = x w; dx; dw
        assert geometry.gemm("bf16", m, n, k).splits == 1, (m, n, k)


def test_the_parity_table_runs_every_product_kernel_in_every_mode():
    """Every conv and GEMM kernel of kernels/*.cu (each pass, tile and precision, the
    few-taps forward and weight gradient in each mode) is launched by some case of tests/op_cases.py
    on cuda-emu, so tests/test_parity.py holds each to the reference of its mode. The
    launches are recorded, not run (the backend's dry pass)."""
    from op_cases import CASES

    from tinycnn.backends.kernel_sources import kernel_sources
    from tinycnn.op_table import OPS, run_op
    product = re.compile(r"conv2d_(forward|relu_maxpool|backward_data|backward_filter)_\w+_\d+x\d+"
                         r"|conv2d_(backward_filter|relu_maxpool)_smallk\w*|sgemm\w*_strided")
    kernels = {n for f in ("conv2d.cu", "conv2d_tc.cu", "gemm.cu", "gemm_tc.cu")
               for n in kernel_sources()[f][1] if product.fullmatch(n)}
    launched = set()
    for name in ("cuda-emu", "cuda-emu:tf32", "cuda-emu:bf16"):
        be = backend_or_skip(name)
        for case in CASES:
            if case.op not in ("conv2d", "dense", "conv2d_relu_maxpool") or name not in case.backends:
                continue
            recorded = []
            with be._stepping(None, recorded):
                arrays = case.arrays(np.random.default_rng(0))
                out, _ = run_op(OPS[case.op], be, arrays, **case.kw)
                run_op(OPS[case.op], be, arrays, dout=np.zeros(out.shape, np.float32), **case.kw)
            launched |= {r[0] for r in recorded}
    assert kernels - launched == set(), f"kernels no parity case launches: {sorted(kernels - launched)}"
