"""One helper to compare any backend's op (forward and backward) with the NumPy
reference, in the manner of tinygrad's helper_test_op: the op is described once in
tinycnn.gradcheck.OPS, its cases once in tests/op_cases.py, and every backend is held
to the same numbers."""

from __future__ import annotations

import numpy as np
import pytest

from tinycnn import backends
from tinycnn.gradcheck import OPS, rel_error, run_op

EXACT = 0.0  # a tolerance of 0: bit for bit


def backend_or_skip(name: str):
    """The backend `name`, or skip the test with the reason it is unavailable here (no
    GPU, no compiler, an optional dependency such as numba not installed)."""
    try:
        return backends.get(name)
    except (backends.BackendUnavailable, ImportError) as e:
        pytest.skip(f"{name}: {e}")


def _assert_agree(got, want, tol: float, what: str) -> None:
    if tol == EXACT:
        np.testing.assert_array_equal(got, want, err_msg=what)
    else:
        e = rel_error(got, want)
        assert e <= tol, f"{what}: rel. error {e:.2e} > {tol:g}"


def compare_with_reference(backend, op, arrays: dict, fwd_tol: float = 1e-5, grad_tol: float = 1e-4,
                           exact: bool = False, dout_seed: int = 0, **kw):
    """Run `op` (a name in tinycnn.gradcheck.OPS, or an OpSpec) on `backend` and on the
    float32 NumPy reference with the same inputs and the same upstream gradient; assert
    the output agrees to a relative error of fwd_tol and every input gradient to
    grad_tol (EXACT, or exact=True for both: bit for bit). Returns the errors."""
    spec = OPS[op] if isinstance(op, str) else op
    if exact:
        fwd_tol = grad_tol = EXACT
    ref_out, _ = run_op(spec, "numpy", arrays, **kw)
    dout = np.random.default_rng(dout_seed).standard_normal(np.shape(ref_out)).astype(np.float32)
    ref_out, ref_grads = run_op(spec, "numpy", arrays, dout=dout, **kw)
    out, grads = run_op(spec, backend, arrays, dout=dout, **kw)
    where = f"{spec.name} on {getattr(backend, 'name', backend)}"
    assert np.shape(out) == np.shape(ref_out), f"{where}: output shape {np.shape(out)} != {np.shape(ref_out)}"
    errors = {"out": rel_error(out, ref_out)}
    for name in spec.inputs:
        assert grads[name].shape == ref_grads[name].shape, f"{where}: d{name} shape"
        errors["d" + name] = rel_error(grads[name], ref_grads[name])
    _assert_agree(out, ref_out, fwd_tol, f"{where}, forward")
    for name in spec.inputs:
        _assert_agree(grads[name], ref_grads[name], grad_tol, f"{where}, d{name}")
    return errors
