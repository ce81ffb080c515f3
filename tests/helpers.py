"""One helper to compare any backend's op (forward and backward) with the NumPy
reference, in the manner of tinygrad's helper_test_op: the op is described once in
tinycnn.gradcheck.OPS, its cases once in tests/op_cases.py, and every backend is held
to the same numbers."""

from __future__ import annotations

import numpy as np
import pytest

from tinycnn import backends
from tinycnn.gradcheck import OPS, rel_error, run_op
from tinycnn.precision import fp32_sum_error_bound

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
    """Run `op` (a name in tinycnn.gradcheck.OPS, or an OpSpec) on `backend` and on the
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


# ------------------------------------------------------------------ the tensor-core modes
# In 'tf32' and 'bf16' a product of conv2d or dense multiplies rounded operands (exact in
# FP32) and adds the products in FP32 in an order the hardware does not document. So
# the test asks for no bits and no tuned tolerance: it computes the exact result of
# the mode (the float64 reference of that precision, whose products of rounded
# operands are exact) and holds every element to the bound of an FP32 sum in any order,
# gamma(n) * sum|terms| (tinycnn.precision.fp32_sum_error_bound), where
#   sum|terms|  is the same op run on |inputs| with |dout| (the ops are bilinear in
#               their inputs, and the roundings are odd functions),
#   n           is the number of terms of that sum: the same op run on ones.
# The float64 reference's own error (unit 2**-53) is added to the bound.
BILINEAR_OPS = ("conv2d", "dense")


def _sum_bounds(spec, reference, arrays: dict, dout, **kw):
    """{output: elementwise bound} of op `spec` with FP32 sums, see above."""
    absolute = {k: np.abs(v) for k, v in arrays.items()}
    ones = {k: np.ones_like(v) for k, v in arrays.items()}
    abs_out, abs_grads = run_op(spec, reference, absolute, dout=np.abs(dout), **kw)
    n_out, n_grads = run_op(spec, backends.get("numpy64"), ones, dout=np.ones_like(dout), **kw)
    bounds = {}
    for name, total, terms in [("out", abs_out, n_out)] + [(k, abs_grads[k], n_grads[k]) for k in spec.inputs]:
        n = int(np.max(terms)) if np.size(terms) else 1
        bounds[name] = fp32_sum_error_bound(total, n) + fp32_sum_error_bound(total, n, unit=2.0**-53)
    return bounds


def _assert_within(got, want, bound, what: str) -> None:
    excess = np.abs(np.asarray(got, np.float64) - want) - bound
    worst = int(np.argmax(excess)) if excess.size else 0
    assert excess.size == 0 or excess.flat[worst] <= 0, (
        f"{what}: element {worst} is {np.asarray(got).flat[worst]!r}, the exact result of the mode "
        f"{np.asarray(want).flat[worst]!r}, more than the FP32-sum bound {np.asarray(bound).flat[worst]:.3g} apart")


def compare_within_sum_bound(backend, op: str, arrays: dict, dout_seed: int = 0, **kw) -> None:
    """`op` (conv2d, dense or conv2d_relu_maxpool) on `backend`, in its precision mode,
    against the exact result of that mode, every output and gradient element within the
    bound of FP32 sums (see above). For the fused block the bound is the conv's, carried
    through ReLU and the max (both 1-Lipschitz), and the case must leave every pooling
    window a margin over twice the bound, and every winner's conv output farther than it
    from 0, so that no sum order can change a window's winner or a ReLU's mask (else
    IllPosed, before the backend runs); then the gradients are the conv's backward pass
    of the reference's routed gradient."""
    be = backends.get(backend)
    precision = be.precision
    reference = backends.get("numpy64", precision)
    a64 = {k: np.asarray(v, np.float64) for k, v in arrays.items()}
    spec = OPS[op]
    where = f"{op} on {be.name} ({precision})"
    if op in BILINEAR_OPS:
        want, _ = run_op(spec, reference, a64, **kw)
        dout = np.random.default_rng(dout_seed).standard_normal(np.shape(want)).astype(np.float32)
        want, want_grads = run_op(spec, reference, a64, dout=dout.astype(np.float64), **kw)
        bounds = _sum_bounds(spec, reference, a64, dout.astype(np.float64), **kw)
    elif op == "conv2d_relu_maxpool":
        conv_kw = {"stride": kw["stride"], "pad": kw["pad"]}
        conv, cache = reference.conv2d_forward(a64["x"], a64["w"], a64["b"], **conv_kw)
        act, _ = reference.relu_forward(conv)
        want, pool_cache = reference.maxpool2d_forward(act, 2, 2, kw["ceil_mode"])
        dout = np.random.default_rng(dout_seed).standard_normal(np.shape(want)).astype(np.float32)
        dconv = reference.relu_backward(reference.maxpool2d_backward(dout.astype(np.float64), pool_cache), act)
        conv_spec = OPS["conv2d"]
        _, want_conv_grads = run_op(conv_spec, reference, a64, dout=dconv, **conv_kw)
        conv_bounds = _sum_bounds(conv_spec, reference, a64, dconv, **conv_kw)
        pooled_bound, _ = reference.maxpool2d_forward(conv_bounds["out"], 2, 2, kw["ceil_mode"])
        _check_margins(conv, conv_bounds["out"], where)
        want_grads, bounds = want_conv_grads, {"out": pooled_bound, **{k: conv_bounds[k] for k in spec.inputs}}
    else:
        raise ValueError(f"{op}: not a product of a precision mode")
    out, grads = run_op(spec, be, arrays, dout=dout, **kw)
    assert np.shape(out) == np.shape(want), f"{where}: output shape {np.shape(out)} != {np.shape(want)}"
    _assert_within(out, want, bounds["out"], f"{where}, forward")
    for name in spec.inputs:
        _assert_within(grads[name], want_grads[name], bounds[name], f"{where}, d{name}")


class IllPosed(AssertionError):
    """The inputs leave a near tie that an FP32 sum order may break either way."""


def _check_margins(conv, bound, where: str) -> None:
    """The fused block's case is well posed: in a window whose largest conv output is
    positive, it beats every other member by more than both their bounds and exceeds its
    own bound; in every other window, every member is below minus its bound (all stay
    dead under any sum order)."""
    n, f, oh, ow = conv.shape
    ph, pw = -(-oh // 2), -(-ow // 2)  # ceil: windows may hang over; floor windows are a subset
    pad = ((0, 0), (0, 0), (0, 2 * ph - oh), (0, 2 * pw - ow))
    c = np.pad(conv, pad, constant_values=-np.inf)
    b = np.pad(bound, pad)

    def members(a):  # (N, F, PH, PW, 4): each window's members in row-major order
        return a.reshape(n, f, ph, 2, pw, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, f, ph, pw, 4)

    c, b = members(c), members(b)
    win = np.argmax(c, axis=-1)[..., None]
    top, top_bound = np.take_along_axis(c, win, -1), np.take_along_axis(b, win, -1)
    alive = top[..., 0] > 0
    others = np.where(np.arange(4) == win, -np.inf, c)
    if not (np.all((top - others - top_bound - b)[alive] > 0) and np.all((top - top_bound)[alive] > 0)):
        raise IllPosed(f"{where}: the inputs have a near tie in a pooling window, or a winner within its bound "
                       "of 0: draw others")
    if not np.all((c + b)[~alive] < 0):
        raise IllPosed(f"{where}: a dead window has a member within its bound of 0: draw other inputs")
