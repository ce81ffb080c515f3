"""Parity: every backend against the NumPy reference, backend x op x case, from the one
table in tests/op_cases.py (cases, and what each backend is held to). Test ids read BACKEND-OP-CASE, e.g.
cuda-emu-conv2d-stride2_pad1.

numba and cuda-emu run wherever they are installed (else they skip, saying why); cuda
cases carry the `gpu` mark and run only on a machine with CuPy and a GPU."""

from __future__ import annotations

import pytest

from helpers import IllPosed, backend_or_skip, compare_with_reference, compare_within_sum_bound, split_name
from op_cases import CASES, DECISIONS, PARITY_BACKENDS, SUM_BOUND, tolerance
from tinycnn.verify import MAX_FRAGILE_FRACTION

GPU_BACKENDS = ("cuda",)
DRAWS = 10  # inputs drawn for a fused-block case until one has no near tie (IllPosed)


def _parameters():
    for case in CASES:
        for backend in case.backends:
            tol = tolerance(backend, case)
            if tol is None:  # the backend runs the reference's code for this op
                continue
            marks = [pytest.mark.gpu] if split_name(backend)[0] in GPU_BACKENDS else []
            yield pytest.param(backend, case, tol, id=f"{backend}-{case.id}", marks=marks)


@pytest.mark.parametrize("backend, case, tol", list(_parameters()))
def test_parity(rng, backend, case, tol):
    be = backend_or_skip(backend)
    if tol == DECISIONS:
        compare_within_sum_bound(be, case.op, case.arrays(rng), max_fragile_fraction=MAX_FRAGILE_FRACTION, **case.kw)
        return
    if tol != SUM_BOUND:
        compare_with_reference(be, case.spec, case.arrays(rng), fwd_tol=tol.fwd, grad_tol=tol.grad, **case.kw)
        return
    for draw in range(DRAWS):
        try:
            return compare_within_sum_bound(be, case.op, case.arrays(rng), **case.kw)
        except IllPosed:
            continue
    pytest.fail(f"{case.id}: {DRAWS} draws of inputs, each with a near tie")


def test_every_case_is_named_once_explained_and_runs_somewhere():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    for c in CASES:
        assert c.why, f"{c.id}: say why the case exists"
        assert c.backends and set(c.backends) <= set(PARITY_BACKENDS), c.id
        assert not c.count_fragile or c.op == "conv2d_relu_maxpool", c.id


def test_the_gpu_compares_products_and_the_loss_by_derived_bounds_only():
    """No tolerance measured on a CPU decides a GPU comparison of a sum: every product and
    loss case on cuda (every mode) is held to a derived bound, and the other ops bit for bit."""
    for c in CASES:
        for backend in c.backends:
            if split_name(backend)[0] == "cuda":
                tol = tolerance(backend, c)
                assert tol in (SUM_BOUND, DECISIONS, None) or tol == (0.0, 0.0), f"{backend}-{c.id}: {tol}"
