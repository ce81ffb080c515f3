"""Parity: every backend against the NumPy reference, backend x op x case, from the one
table in tests/op_cases.py (cases, and what each backend is held to). Test ids read BACKEND-OP-CASE, e.g.
cuda-emu-conv2d-stride2_pad1.

numba and cuda-emu run wherever they are installed (else they skip, saying why); cuda
cases carry the `gpu` mark and run only on a machine with CuPy and a GPU."""

from __future__ import annotations

import pytest

from helpers import backend_or_skip, split_name
from op_cases import CASES, DECISIONS, PARITY_BACKENDS, SUM_BOUND, check_case, tolerance

GPU_BACKENDS = ("cuda",)


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
    check_case(backend_or_skip(backend), case, tol, rng)


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
