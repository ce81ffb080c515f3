"""One helper to compare any backend's op (forward and backward) with the NumPy
reference, in the manner of tinygrad's helper_test_op: the op is described once in
tinycnn.op_table.OPS, its cases once in tests/op_cases.py, and every backend is held
to the same numbers."""

from __future__ import annotations

import numpy as np
import pytest

from tinycnn import backends, verify
from tinycnn.gradcheck import rel_error
from tinycnn.op_table import OPS, run_op, to_backend
EXACT = 0.0  # a tolerance of 0: bit for bit


def split_name(name: str) -> tuple[str, str]:
    """'cuda-emu:bf16' -> ('cuda-emu', 'bf16'); a bare name means its 'fp32' mode (the
    tests name a tensor-core mode when they mean one, whatever a backend's default)."""
    backend, _, precision = name.partition(":")
    return backend, precision or "fp32"


def backend_or_skip(name: str):
    """The backend `name` ('cuda', 'cuda-emu:tf32', ...: see split_name), or skip the test
    with the reason it is unavailable here (no GPU, no compiler, an optional dependency
    such as numba not installed)."""
    backend, precision = split_name(name)
    try:
        return backends.get(backend, precision)
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
    """Run `op` (a name in tinycnn.op_table.OPS, or an OpSpec) on `backend` and on the
    float32 NumPy reference (in the backend's precision mode) with the same inputs and the same upstream gradient; assert
    the output agrees to a relative error of fwd_tol and every input gradient to
    grad_tol (EXACT, or exact=True for both: bit for bit). Returns the errors."""
    spec = OPS[op] if isinstance(op, str) else op
    if exact:
        fwd_tol = grad_tol = EXACT
    reference = backends.get("numpy", getattr(backends.get(backend), "precision", "fp32"))
    ref_out, _ = run_op(spec, reference, arrays, **kw)
    dout = np.random.default_rng(dout_seed).standard_normal(np.shape(ref_out)).astype(np.float32)
    ref_out, ref_grads = run_op(spec, reference, arrays, dout=dout, **kw)
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


# ------------------------------------------------------------------ derived bounds
# The products (conv2d, dense, the fused block) and the loss are held to bounds derived
# from their arithmetic (tinycnn/verify.py: the exact result of the precision mode, the
# FP32-sum bound of every element, the fused block's decisions), no tolerance to choose.
# A small fused-block case must be well posed: no window whose decision rounding could
# flip (else IllPosed, before the backend runs, and the test draws other inputs), so
# that every gradient is held to its sums alone. A case at the paper's shapes always
# has some such windows (a few per thousand): it counts them instead
# (max_fragile_fraction), and the gradients' bounds carry each one's whole contribution.
PRODUCT_OPS = ("conv2d", "dense", "conv2d_relu_maxpool")
LOSS_OPS = ("softmax_cross_entropy", "softmax")


class IllPosed(AssertionError):
    """The inputs leave a near tie that an FP32 sum order may break either way."""


def compare_within_sum_bound(backend, op: str, arrays: dict, dout_seed: int = 0,
                             max_fragile_fraction: float | None = None, **kw):
    """`op` (conv2d, dense, conv2d_relu_maxpool, softmax_cross_entropy, softmax) on
    `backend`, in its precision mode, against the exact result of that mode, every output
    and gradient element within its derived bound (tinycnn.verify). For the fused block:
    max_fragile_fraction None refuses any fragile window (IllPosed, before the backend
    runs); a fraction counts them and allows that share of the windows."""
    be = backends.get(backend)
    where = f"{op} on {be.name} ({be.precision})"
    if op in LOSS_OPS:
        return _compare_loss(be, op, arrays, dout_seed, where)
    if op not in PRODUCT_OPS:
        raise ValueError(f"{op}: not a product or loss op")
    if op == "conv2d_relu_maxpool" and max_fragile_fraction is None:
        fragility = verify.block_fragility(be.precision, arrays["x"], arrays["w"], arrays["b"], **kw)
        if fragility.fragile:
            raise IllPosed(f"{where}: {fragility.fragile} of {fragility.windows} pooling windows have a near tie "
                           "or a winner within its bound of 0: draw other inputs")
    report = verify.verify_op(be, op, arrays, dout_seed=dout_seed,
                              max_fragile_fraction=max_fragile_fraction or 0.0, **kw)
    assert report.ok, f"{where}:\n{report.explain()}"


def _compare_loss(be, op: str, arrays: dict, dout_seed: int, where: str) -> None:
    logits = np.asarray(arrays["logits"], np.float32)
    if op == "softmax":
        probs, bound = verify.softmax_bounds(logits)
        check = verify.within(where, "probs", be.to_numpy(be.softmax(be.asarray(logits))), probs, bound)
        assert check.ok, check.line()
        return
    out, cache = OPS[op].forward(be, to_backend(be, arrays))
    loss, dlogits = be.to_numpy(out), be.to_numpy(cache)
    for check in verify.check_softmax_cross_entropy(where, logits, arrays["labels"], loss, dlogits):
        assert check.ok, check.line()


# ------------------------------------------------------------------ the training step at the paper's shapes
def paper_batch(batch: int = 4, size: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The GPU tier's training-step batch: x (batch, 1, size, size) N(0, 1) float32 from
    default_rng(seed), labels (batch,) 0, 1, 1, 0, ... At 256 x 256 with seed 0 the float32
    reference and float64 take a different ReLU or pooling decision in the first blocks
    (tests/test_step_verification.py measures it), the case a comparison must survive."""
    x = np.random.default_rng(seed).standard_normal((batch, 1, size, size)).astype(np.float32)
    return x, np.array([0, 1, 1, 0] * (batch // 4 + 1))[:batch]


def paper_net_builder(hidden: int = 1024, size: int = 256, seed: int = 0):
    """backend -> paper_net(hidden, in_size=size, seed) on it: the net of a verified step."""
    from tinycnn.model import paper_net

    return lambda be: paper_net(hidden=hidden, in_size=size, seed=seed, backend=be)
