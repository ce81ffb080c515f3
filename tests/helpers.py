"""One helper to compare any backend's op (forward and backward) with the NumPy
reference, in the manner of tinygrad's helper_test_op: the op is described once in
tinycnn.gradcheck.OPS, and every backend is held to the same numbers."""

from __future__ import annotations

import numpy as np
import pytest

from tinycnn import backends
from tinycnn.gradcheck import OPS, rel_error, run_op


def backend_or_skip(name: str):
    """The backend `name`, or skip the test with the reason it is unavailable here."""
    try:
        return backends.get(name)
    except backends.BackendUnavailable as e:
        pytest.skip(str(e))


def compare_with_reference(backend, op: str, arrays: dict, fwd_tol: float = 1e-5, grad_tol: float = 1e-4,
                           exact: bool = False, dout_seed: int = 0, **kw):
    """Run `op` on `backend` and on the float32 NumPy reference with the same inputs
    and the same upstream gradient; assert the output and every input gradient agree
    (relative error, or bit for bit with exact=True). Returns the errors."""
    spec = OPS[op]
    ref_out, _ = run_op(spec, "numpy", arrays, **kw)
    dout = np.random.default_rng(dout_seed).standard_normal(np.shape(ref_out)).astype(np.float32)
    ref_out, ref_grads = run_op(spec, "numpy", arrays, dout=dout, **kw)
    out, grads = run_op(spec, backend, arrays, dout=dout, **kw)
    assert np.shape(out) == np.shape(ref_out), f"{op}: output shape {np.shape(out)} != {np.shape(ref_out)}"
    errors = {"out": rel_error(out, ref_out)}
    for name in spec.inputs:
        assert grads[name].shape == ref_grads[name].shape, f"{op}: d{name} shape"
        errors["d" + name] = rel_error(grads[name], ref_grads[name])
    if exact:
        np.testing.assert_array_equal(out, ref_out, err_msg=f"{op} forward on {backend}")
        for name in spec.inputs:
            np.testing.assert_array_equal(grads[name], ref_grads[name], err_msg=f"{op} d{name} on {backend}")
    else:
        assert errors["out"] <= fwd_tol, f"{op} forward on {backend}: rel. error {errors['out']:.2e}"
        for name in spec.inputs:
            e = errors["d" + name]
            assert e <= grad_tol, f"{op} d{name} on {backend}: rel. error {e:.2e}"
    return errors
