"""Verification of a backend against the exact result of its precision mode, for one op
or for a whole training step, by bounds derived from the arithmetic: no tolerance is
chosen, so a correct kernel cannot fail, and a wrong one fails wherever its error
exceeds what rounding can explain.

    from tinycnn.verify import verify_step
    report = verify_step("cuda", lambda be: paper_net(hidden=1024, backend=be), x, y)
    assert report.ok, report.explain()

THE BOUNDS. The exact result of a mode is the float64 reference of that mode
(``numpy64``, tinycnn/precision.py: its products of rounded operands are exact) on the
TESTED side's float32 inputs.

- A product (conv2d, dense: forward and every gradient): each element within
  gamma(n) sum|terms| of the exact one, for FP32 sums of n terms in any order (Higham,
  sec. 4.2; tinycnn.precision.fp32_sum_error_bound), plus the float64 reference's own
  gamma(n) at unit 2**-53. sum|terms| is the same op run on |inputs| with |dout| (the
  ops are bilinear and the roundings odd); n is counted from the shapes (an upper
  bound: gamma grows with n).
- The fused block maxpool2x2(relu(conv)) (ConvBlock): the forward output is within the
  largest conv bound of its window whatever the decisions, since ReLU and max are
  1-Lipschitz. A window is FRAGILE when its decision (which member wins, and whether it
  passes a gradient) could change for conv outputs within their bounds (``fragile``);
  elsewhere the tested side routes dout exactly as the reference. In a fragile window
  either side sends dout to at most one member, one that some conv outputs within the
  bounds make the winner (a candidate), so their routed gradients differ by at most
  |dout| at each candidate. With D = |dout| on every candidate of every fragile window
  (0 elsewhere) and U = max(|dconv_ref|, D) bounding the tested side's routed gradient,
  every gradient g (dx, dw, db) obeys
      |g_tested - g_ref| <= sum_bound(conv_backward(|x|, |w|, U)) + conv_backward(|x|, |w|, D)
  (the first term: the tested side's FP32 sums of its own routed gradient; the second:
  the gradient of the routing difference, exact in float64 up to its gamma). Fragile
  windows are counted: an upper bound on the decisions that flipped.
- ReLU, max-pool, dropout, flatten and the SGD update: bit for bit the float32 NumPy
  reference (the contract: the same comparisons and roundings on every backend).
- The loss: softmax cross-entropy within a bound derived from its few operations
  (``softmax_cross_entropy_bounds``).

A TRAINING STEP (``verify_step``) is verified layer by layer on the TESTED backend's own
intermediates: its run plan is run step by step, each step's input, output and upstream
gradient copied to the host, and each step held to the exact result of that step on those
inputs. The step is verified when every step is (each one consumes what the previous one
produced), and no decision can differ between two chains, because every check uses one
chain's inputs. The end-to-end difference from the float64 reference's own chain is
reported beside it (loss, logits, gradients), not enforced: there a flipped decision
early in the chain moves everything after it.

RESOLUTION. gamma(n) sum|terms| is a worst case over every order: for a sum of n terms
of random signs it exceeds the value itself (about sum|terms| / sqrt(n)) once n^1.5 u > 1,
n > ~4e4 (u = 2**-23). So a check of a weight gradient summed over many positions (the
paper's first conv at batch 4: n = 258064) cannot tell a wrong value from a right one;
each Check reports its resolution (largest bound / largest |exact|; >= 1: blind) so a
reader sees which ones hold something. Smaller shapes (the parity table) hold those
kernels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import backends
from .gradcheck import OPS, rel_error
from .precision import FP32_ULP, fp32_sum_error_bound, round_operands
from .shapes import pool_out_size

F64_UNIT = 2.0**-53  # float64's unit roundoff: the reference's own sums

#: A step with a fused block whose fragile windows exceed this fraction of its windows is
#: not verified. Each fragile window adds its whole contribution to the bounds of dw and
#: db, which sum over all N OH OW positions: a fraction f of fragile windows adds about
#: f sqrt(N OH OW) times the largest |dw| (the value is ~ sum|terms| / sqrt(n) for random
#: signs), about 0.6 at f = 1% for paper_net's fourth block at batch 4 (3364 positions);
#: beyond that those checks would pass a weight gradient wrong by its own size. Measured
#: on tests/test_gpu.py's step (seed 0), float32 NumPy and cuda-emu, every mode: at most
#: 0.5% (the fourth block), 0.16% in the third, 0.04% in the second, 1e-5 in the first.
MAX_FRAGILE_FRACTION = 1e-2

#: The loss's exp and log: at most this many units in the last place of their result.
#: CUDA's expf and logf: 2 and 1 ulp (CUDA C++ Programming Guide, "Mathematical
#: Functions", single precision); NumPy's float32 SIMD exp and log: 2.52 and 3.83 ulp
#: (NumPy 1.17 release notes); glibc's expf/logf: under 1 ulp.
ELEMENTARY_ULPS = 4


def sum_bound(abs_total, n: int) -> np.ndarray:
    """Bound on |FP32 sum - float64 reference| of n exact terms whose absolute values add
    to abs_total, in any order on both sides: gamma_n at FP32's ulp plus gamma_n at
    float64's unit roundoff."""
    n = max(int(n), 1)
    gamma = float(fp32_sum_error_bound(1.0, n) + fp32_sum_error_bound(1.0, n, unit=F64_UNIT))
    # abs_total is a float64 sum itself, short of the true one by at most its own gamma_n
    return np.multiply(abs_total, gamma * (1 + 2 * n * F64_UNIT), dtype=np.float64)


# ------------------------------------------------------------------ results
@dataclass
class Check:
    """One array of one step against its exact value."""

    step: str          # e.g. "2 ConvBlock conv 16->32"
    what: str          # "out", "dx", "dw", "db", "loss", ...
    elements: int
    violations: int    # elements farther from the exact value than their bound (NaN counts)
    worst_ratio: float  # max |got - exact| / bound (<= 1 passes; exact checks: 0 or inf)
    worst_excess: float  # max(|got - exact| - bound) (<= 0 passes)
    resolution: float  # max bound / max |exact| (0 for exact checks; >= 1: the check is blind)
    detail: str = ""   # the worst element, when it fails

    @property
    def ok(self) -> bool:
        return self.violations == 0

    def line(self) -> str:
        status = "ok" if self.ok else "FAIL"
        return (f"{self.step:<34} {self.what:<8} {status:<4} worst |err|/bound {self.worst_ratio:9.3g}  "
                f"excess {self.worst_excess:10.3g}  resolution {self.resolution:8.2g}"
                + (f"  {self.detail}" if self.detail else ""))


@dataclass
class Fragility:
    """The fragile windows of one fused block (an upper bound on its flipped decisions)."""

    step: str
    windows: int
    fragile: int

    @property
    def fraction(self) -> float:
        return self.fragile / self.windows if self.windows else 0.0


@dataclass
class Report:
    """The checks of one op or one training step (see the module docstring)."""

    backend: str
    precision: str
    checks: list[Check] = field(default_factory=list)
    fragility: list[Fragility] = field(default_factory=list)
    max_fragile_fraction: float = MAX_FRAGILE_FRACTION
    summary: dict = field(default_factory=dict)  # end to end, reported only

    @property
    def fragile(self) -> int:
        return sum(f.fragile for f in self.fragility)

    @property
    def windows(self) -> int:
        return sum(f.windows for f in self.fragility)

    @property
    def well_posed(self) -> bool:
        """Few enough fragile windows in every fused block for its gradient checks to hold
        something (MAX_FRAGILE_FRACTION)."""
        return all(f.fragile <= self.max_fragile_fraction * f.windows for f in self.fragility)

    @property
    def ok(self) -> bool:
        return self.well_posed and all(c.ok for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def worst(self) -> dict[str, float]:
        """{step: its largest |err| / bound}: under 1 everywhere when the step passes."""
        out: dict[str, float] = {}
        for c in self.checks:
            out[c.step] = max(out.get(c.step, 0.0), c.worst_ratio)
        return out

    def explain(self) -> str:
        head = (f"{self.backend} ({self.precision}): "
                + ("verified" if self.ok else f"NOT verified ({len(self.failures())} failing checks"
                   + ("" if self.well_posed else ", too many fragile windows") + ")"))
        lines = [head]
        if self.fragility:
            lines.append(f"fragile windows (decisions that rounding could flip; at most a fraction "
                         f"{self.max_fragile_fraction:g} of each block's): "
                         + ", ".join(f"{f.step}: {f.fragile}/{f.windows}" for f in self.fragility))
        lines += [c.line() for c in self.checks]
        if self.summary:
            s = self.summary
            errors = s["gradient rel. errors"]
            worst = max(errors, key=errors.get)
            lines.append(f"end to end, against the float64 reference's own chain (reported, not enforced): loss "
                         f"{s['loss']:.9g} ({s['float64 chain loss']:.9g}), logits rel. error "
                         f"{s['logits rel. error']:.2e}, worst gradient rel. error {errors[worst]:.2e} ({worst})")
        return "\n".join(lines)

    __str__ = explain


# ------------------------------------------------------------------ elementwise comparisons
def _host64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def within(step: str, what: str, got, exact, bound) -> Check:
    """Each element of `got` within `bound` of `exact` (arrays of one shape)."""
    got, exact, bound = _host64(got), _host64(exact), _host64(bound)
    if got.shape != exact.shape:
        return Check(step, what, int(exact.size), int(exact.size), math.inf, math.inf, 0.0,
                     f"shape {got.shape}, expected {exact.shape}")
    if not exact.size:
        return Check(step, what, 0, 0, 0.0, 0.0, 0.0)
    shape = exact.shape
    got, exact, bound = got.reshape(-1), exact.reshape(-1), np.broadcast_to(bound, shape).reshape(-1)
    diff = np.subtract(got, exact)
    np.abs(diff, out=diff)
    diff[np.isnan(diff)] = math.inf  # NaN fails
    violations = int(np.count_nonzero(diff > bound))
    scale = float(np.max(np.abs(exact)))
    top = float(np.max(bound))
    resolution = top / scale if scale > 0 else (0.0 if top == 0 else math.inf)
    excess = np.subtract(diff, bound)
    worst_excess = float(np.max(excess))
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(diff, bound, out=excess)  # the ratio, in the same memory
    excess[diff == 0] = 0.0
    worst_ratio = float(np.max(excess))
    detail = ""
    if violations:
        excess[~(diff > bound)] = -1.0
        i = int(np.argmax(excess))
        idx = np.unravel_index(i, shape)
        detail = (f"{violations} elements out; at {tuple(int(j) for j in idx)}: got {got[i]:.9g}, "
                  f"exact {exact[i]:.9g}, bound {bound[i]:.3g}")
    return Check(step, what, int(exact.size), violations, worst_ratio, worst_excess, resolution, detail)


def equal(step: str, what: str, got, want) -> Check:
    """`got` equal to `want` element for element (as values: -0 == 0)."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return Check(step, what, int(want.size), int(want.size), math.inf, math.inf, 0.0,
                     f"shape {got.shape}, expected {want.shape}")
    bad = ~(got == want)
    violations = int(np.count_nonzero(bad))
    detail = ""
    worst = 0.0
    if violations:
        i = int(np.argmax(bad))
        idx = np.unravel_index(i, want.shape) if want.ndim else ()
        worst = float(np.nanmax(np.abs(_host64(got) - _host64(want))[bad], initial=math.inf))
        detail = (f"{violations} elements differ; first at {tuple(int(j) for j in idx)}: got {got.flat[i]!r}, "
                  f"want {want.flat[i]!r}")
    return Check(step, what, int(want.size), violations, math.inf if violations else 0.0, worst, 0.0, detail)


# ------------------------------------------------------------------ products
def _reference(precision: str):
    return backends.get("numpy64", precision)


def check_dense(step: str, precision: str, x, w, b, out, dout=None, dx=None, dw=None, db=None) -> list[Check]:
    """Dense y = x @ w + b (x (N, D), w (D, M), b (M,)) of the tested side, its output
    `out` (N, M) and, given `dout` (N, M), its gradients dx (N, D) (None: not computed),
    dw (D, M), db (M,), each within its FP32-sum bound of the exact result of `precision`."""
    ref = _reference(precision)
    x, w, b = _host64(x), _host64(w), _host64(b)
    n, d = x.shape
    m = w.shape[1]
    want, cache = ref.dense_forward(x, w, b)
    absolute, abs_cache = ref.dense_forward(np.abs(x), np.abs(w), np.abs(b))
    checks = [within(step, "out", out, want, sum_bound(absolute, d + 1))]
    if dout is None:
        return checks
    dout = _host64(dout)
    want_dx, want_dw, want_db = ref.dense_backward(dout, cache, need_dx=dx is not None)
    abs_dx, abs_dw, abs_db = ref.dense_backward(np.abs(dout), abs_cache, need_dx=dx is not None)
    if dx is not None:
        checks.append(within(step, "dx", dx, want_dx, sum_bound(abs_dx, m)))
    checks.append(within(step, "dw", dw, want_dw, sum_bound(abs_dw, n)))
    checks.append(within(step, "db", db, want_db, sum_bound(abs_db, n)))
    return checks


def _conv_counts(x_shape, w_shape, out_shape) -> dict[str, int]:
    """Upper bounds on the terms of each sum of conv2d: forward C KH KW products and the
    bias; dx at most F KH KW; dw and db one per output position."""
    n, c = x_shape[:2]
    f, _, kh, kw = w_shape
    positions = n * out_shape[2] * out_shape[3]
    return {"out": c * kh * kw + 1, "dx": f * kh * kw, "dw": positions, "db": positions}


def check_conv2d(step: str, precision: str, x, w, b, out, dout=None, dx=None, dw=None, db=None, *,
                 stride: int = 1, pad: int = 0) -> list[Check]:
    """conv2d (x (N, C, H, W), w (F, C, KH, KW), b (F,)) of the tested side, its output
    `out` (N, F, OH, OW) and, given `dout`, its gradients (dx None: not computed), each
    within its FP32-sum bound of the exact result of `precision`."""
    ref = _reference(precision)
    x, w, b = _host64(x), _host64(w), _host64(b)
    want, cache = ref.conv2d_forward(x, w, b, stride=stride, pad=pad)
    absolute, abs_cache = ref.conv2d_forward(np.abs(x), np.abs(w), np.abs(b), stride=stride, pad=pad)
    counts = _conv_counts(x.shape, w.shape, want.shape)
    checks = [within(step, "out", out, want, sum_bound(absolute, counts["out"]))]
    if dout is None:
        return checks
    dout = _host64(dout)
    grads = ref.conv2d_backward(dout, cache, dx is not None)
    abs_grads = ref.conv2d_backward(np.abs(dout), abs_cache, dx is not None)
    for what, got, g, a in zip(("dx", "dw", "db"), (dx, dw, db), grads, abs_grads):
        if g is not None:  # dx: None when not computed
            checks.append(within(step, what, got, g, sum_bound(a, counts[what])))
    return checks


# ------------------------------------------------------------------ the fused block
def _members(a: np.ndarray, ph: int, pw: int, fill) -> np.ndarray:
    """(N, F, OH, OW) -> (N, F, PH, PW, 4): each 2x2 window's members in row-major order;
    members past the edge (ceil mode) hold `fill`, rows and columns in no window (floor
    mode) are left out."""
    n, f = a.shape[:2]
    a = a[:, :, :2 * ph, :2 * pw]
    pad = ((0, 0), (0, 0), (0, 2 * ph - a.shape[2]), (0, 2 * pw - a.shape[3]))
    a = np.pad(a, pad, constant_values=fill)
    return a.reshape(n, f, ph, 2, pw, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, f, ph, pw, 4)


def _unmembers(m: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """The inverse of _members: (N, F, PH, PW, 4) -> (N, F, OH, OW), 0 outside every window."""
    n, f, ph, pw, _ = m.shape
    a = m.reshape(n, f, ph, pw, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, f, 2 * ph, 2 * pw)
    out = np.zeros((n, f, oh, ow), dtype=m.dtype)
    h, w = min(oh, 2 * ph), min(ow, 2 * pw)
    out[:, :, :h, :w] = a[:, :, :h, :w]
    return out


def fragile_windows(conv, bound, ceil_mode: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The 2x2 windows of relu(conv) whose decision could change for conv outputs within
    `bound` of `conv` (both (N, F, OH, OW)): (fragile (N, F, PH, PW) bool, candidates
    (N, F, PH, PW, 4) bool: in a fragile window, the members that some such outputs make
    the winner). A window whose largest member c_j is positive keeps its winner and its
    gradient if c_j - B_j exceeds 0 and c_i + B_i of every other member (then the winner
    is the strict maximum under any perturbation); a window with no positive member keeps
    passing nothing if every member has c_i + B_i <= 0. Every other window is fragile; in
    it, member i can win only if c_i + B_i > 0 and c_i + B_i >= c_k - B_k for every k."""
    conv, bound = _host64(conv), _host64(bound)
    _, _, oh, ow = conv.shape
    ph, pw = pool_out_size(oh, 2, 2, ceil_mode), pool_out_size(ow, 2, 2, ceil_mode)
    c = _members(conv, ph, pw, -np.inf)
    hi = _members(conv + bound, ph, pw, -np.inf)  # the largest each member can be
    lo = _members(conv - bound, ph, pw, -np.inf)
    win = np.argmax(c, axis=-1)[..., None]  # the first maximum, as the reference
    top = np.take_along_axis(c, win, -1)[..., 0]
    top_lo = np.take_along_axis(lo, win, -1)[..., 0]
    others_hi = np.max(np.where(np.arange(4) == win, -np.inf, hi), axis=-1)
    alive = top > 0
    kept_alive = top_lo > np.maximum(others_hi, 0.0)
    kept_dead = np.max(hi, axis=-1) <= 0
    fragile = np.where(alive, ~kept_alive, ~kept_dead)
    candidates = fragile[..., None] & (hi > 0) & (hi >= np.max(lo, axis=-1, keepdims=True))
    return fragile, candidates


def sparse_conv_backward(precision: str, dout, x, w, stride: int = 1, pad: int = 0, need_dx: bool = True):
    """conv2d_backward of `precision` in float64 (dx (N, C, H, W) or None, dw, db) for a
    dout (N, F, OH, OW) that is 0 but at a few positions (the fragile windows' members),
    from those positions' patches alone: what numpy64's conv2d_backward gives, up to the
    order of its float64 sums."""
    n_i, f_i, oh_i, ow_i = np.nonzero(dout)
    f, c, kh, kw = w.shape
    h, wd = x.shape[2:]
    vals = dout[n_i, f_i, oh_i, ow_i]
    db = np.bincount(f_i, weights=vals, minlength=f).astype(np.float64)
    d = _host64(round_operands(vals, precision))[:, None, None, None]
    xp = np.pad(_host64(round_operands(x, precision)), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    at = (n_i[:, None, None, None], np.arange(c)[None, :, None, None],
          (oh_i * stride)[:, None, None, None] + np.arange(kh)[None, None, :, None],
          (ow_i * stride)[:, None, None, None] + np.arange(kw)[None, None, None, :])  # (E, C, KH, KW) each
    dw = np.zeros((f, c, kh, kw))
    np.add.at(dw, f_i, d * xp[at])
    if not need_dx:
        return None, dw, db
    dxp = np.zeros_like(xp)
    np.add.at(dxp, at, d * _host64(round_operands(w, precision))[f_i])
    return np.ascontiguousarray(dxp[:, :, pad:pad + h, pad:pad + wd]), dw, db


def block_fragility(precision: str, x, w, b, *, stride: int = 1, pad: int = 0, ceil_mode: bool = True,
                    step: str = "conv block") -> Fragility:
    """The fragile windows of the fused block on inputs x (N, C, H, W), w (F, C, KH, KW),
    b (F,) in `precision`, from the exact conv and its bound alone (no backend runs)."""
    ref = _reference(precision)
    x, w, b = _host64(x), _host64(w), _host64(b)
    conv, _ = ref.conv2d_forward(x, w, b, stride=stride, pad=pad)
    absolute, _ = ref.conv2d_forward(np.abs(x), np.abs(w), np.abs(b), stride=stride, pad=pad)
    bound = sum_bound(absolute, _conv_counts(x.shape, w.shape, conv.shape)["out"])
    fragile, _ = fragile_windows(conv, bound, ceil_mode)
    return Fragility(step, int(fragile.size), int(np.count_nonzero(fragile)))


def check_conv_block(step: str, precision: str, x, w, b, out, dout=None, dx=None, dw=None, db=None, *,
                     stride: int = 1, pad: int = 0, ceil_mode: bool = True) -> tuple[list[Check], Fragility]:
    """The fused block maxpool2x2(relu(conv2d(x, w, b))) of the tested side: its output
    `out` (N, F, PH, PW) and, given `dout` (N, F, PH, PW), its gradients dx (N, C, H, W)
    (None: not computed), dw, db, against the exact result of `precision` on the same
    inputs, whatever decisions the tested side's sums made (module docstring). Returns
    the checks and the block's fragile windows."""
    ref = _reference(precision)
    x, w, b = _host64(x), _host64(w), _host64(b)
    conv, cache = ref.conv2d_forward(x, w, b, stride=stride, pad=pad)
    absolute, abs_cache = ref.conv2d_forward(np.abs(x), np.abs(w), np.abs(b), stride=stride, pad=pad)
    counts = _conv_counts(x.shape, w.shape, conv.shape)
    bound = sum_bound(absolute, counts["out"])  # of each conv output, tested against exact
    act, relu_cache = ref.relu_forward(conv)
    want, pool_cache = ref.maxpool2d_forward(act, 2, 2, ceil_mode)
    _, _, oh, ow = conv.shape
    ph, pw = want.shape[2], want.shape[3]
    pooled_bound = np.max(_members(bound, ph, pw, 0.0), axis=-1)
    checks = [within(step, "out", out, want, pooled_bound)]
    fragile, candidates = fragile_windows(conv, bound, ceil_mode)
    fragility = Fragility(step, int(fragile.size), int(np.count_nonzero(fragile)))
    if dout is None:
        return checks, fragility
    dout = _host64(dout)
    dconv = ref.relu_backward(ref.maxpool2d_backward(dout, pool_cache), relu_cache)
    # D: |dout| on each member that either side may route it to (the reference's winner
    # is a candidate when its window passes a gradient)
    flips = _unmembers(np.abs(dout)[..., None] * candidates, oh, ow)
    routed = np.maximum(np.abs(dconv), flips)  # U
    need_dx = dx is not None
    grads = ref.conv2d_backward(dconv, cache, need_dx)
    sums = ref.conv2d_backward(routed, abs_cache, need_dx)
    moved = (sparse_conv_backward(precision, flips, np.abs(x), np.abs(w), stride, pad, need_dx)
             if fragility.fragile else (None, None, None))
    for what, got, g, s, d in zip(("dx", "dw", "db"), (dx, dw, db), grads, sums, moved):
        if what == "dx" and not need_dx:
            continue
        bnd = sum_bound(s, counts[what])
        if d is not None:
            bnd = bnd + d * (1 + 2 * counts[what] * F64_UNIT)  # d in float64, to its own gamma
        checks.append(within(step, what, got, g, bnd))
    return checks, fragility


# ------------------------------------------------------------------ the loss
# Per row, with s = z - max z <= 0, e = exp(s), Z = sum e, p = e / Z, u = FP32's ulp
# (covers round to nearest and truncation) and eps = ELEMENTARY_ULPS u (exp and log to
# that many ulps), for FP32 arithmetic in the order of the reference and of
# kernels/softmax_ce.cu:
#   s_k is rounded once (|ds| <= u |s_k|) and exp adds eps: e_k to a relative
#   a_k = exp(u |s_k|)(1 + eps) - 1; Z, a sum of K positive terms, to
#   zeta = (1 + max a)(1 + gamma_K) - 1; p_k = e_k / Z, rounded, to
#   rho_k = (1 + a_k)(1 + u) / (1 - zeta) - 1.
# Subnormal results are covered by an absolute 2**-126 per element, float64's own rounding
# by 2**-45 of each value.
def _softmax_parts(logits):
    z = _host64(logits)
    k = z.shape[1]
    u, eps = FP32_ULP, ELEMENTARY_ULPS * FP32_ULP
    s = z - z.max(axis=1, keepdims=True)
    e = np.exp(s)
    zsum = e.sum(axis=1, keepdims=True)
    a = np.expm1(u * np.abs(s)) * (1 + eps) + eps
    zeta = (1 + a.max(axis=1, keepdims=True)) * (1 + k * u / (1 - k * u)) - 1
    rho = (1 + a) * (1 + u) / (1 - zeta) - 1
    return s, zsum, e / zsum, rho, zeta


def softmax_bounds(logits):
    """(exact class probabilities (N, K), their bound) of float32 `logits` (N, K) for
    FP32 arithmetic (above)."""
    _, _, p, rho, _ = _softmax_parts(logits)
    return p, rho * p + 2.0**-126 + 2.0**-45 * p


def softmax_cross_entropy_bounds(logits, labels):
    """(exact loss, exact dlogits (N, K), loss bound, dlogits bound) of the mean softmax
    cross-entropy of float32 `logits` (N, K) for FP32 arithmetic: with the softmax's
    rho_k (above) and q = p - onehot,
      q_k = p_k - 1 is rounded (label only), then / N:
        |dz_k| <= ((rho_k p_k + u [label] (|q_k| + rho_k p_k))(1 + u) + u |q_k|) / N;
      the row loss L = log Z - s_y >= 0: log Z to lam = -log(1 - zeta), log adds eps,
      s_y has its u, the difference its u:
        |dL| <= (lam + eps (|log Z| + lam) + u |s_y|)(1 + u) + u L;
      the mean adds N terms in any order (gamma_N of sum(L + dL)) and divides (u)."""
    s, zsum, p, rho, zeta = _softmax_parts(logits)
    labels = np.asarray(labels).astype(np.int64)
    n = p.shape[0]
    u, eps = FP32_ULP, ELEMENTARY_ULPS * FP32_ULP
    rows = np.arange(n)
    onehot = np.zeros_like(p)
    onehot[rows, labels] = 1.0
    q = p - onehot
    dlogits = q / n
    d_bound = ((rho * p + u * onehot * (np.abs(q) + rho * p)) * (1 + u) + u * np.abs(q)) / n
    d_bound += 2.0**-126 + 2.0**-45 * np.abs(dlogits)
    log_z = np.log(zsum[:, 0])
    loss_rows = log_z - s[rows, labels]
    loss = loss_rows.mean()
    lam = -np.log1p(-zeta[:, 0])
    row_bound = (lam + eps * (np.abs(log_z) + lam) + u * np.abs(s[rows, labels])) * (1 + u) + u * loss_rows
    gamma_n = n * u / (1 - n * u)
    loss_bound = ((row_bound.sum() + gamma_n * (loss_rows + row_bound).sum()) * (1 + u) + u * loss_rows.sum()) / n
    loss_bound += 2.0**-126 + 2.0**-45 * abs(loss)
    return loss, dlogits, loss_bound, d_bound


def check_softmax_cross_entropy(step: str, logits, labels, loss, dlogits) -> list[Check]:
    """The tested side's loss and dlogits (N, K) for its own float32 logits (N, K)."""
    want_loss, want_d, loss_bound, d_bound = softmax_cross_entropy_bounds(logits, labels)
    return [within(step, "loss", np.reshape(loss, ()), want_loss, loss_bound),
            within(step, "dlogits", dlogits, want_d, d_bound)]


# ------------------------------------------------------------------ one op
def verify_op(backend, op: str, arrays: dict, dout=None, dout_seed: int = 0,
              max_fragile_fraction: float = MAX_FRAGILE_FRACTION, **kw) -> Report:
    """Op `op` of tinycnn.gradcheck.OPS (conv2d, dense, conv2d_relu_maxpool) on `backend`,
    in its precision mode, on host `arrays` (float32), forward and backward with `dout`
    (default: N(0, 1) float32 numbers drawn from dout_seed), against the exact result of
    the mode (module docstring)."""
    be = backends.get(backend)
    precision = getattr(be, "precision", "fp32")
    spec = OPS[op]
    arrays = {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}
    be_arrays = {k: be.asarray(v) for k, v in arrays.items()}
    out, cache = spec.forward(be, be_arrays, **kw)
    out = np.array(be.to_numpy(out))
    if dout is None:
        dout = np.random.default_rng(dout_seed).standard_normal(out.shape).astype(np.float32)
    grads = [None if g is None else np.array(be.to_numpy(g)) for g in spec.backward(be, be.asarray(dout), cache)]
    report = Report(getattr(be, "name", str(be)), precision, max_fragile_fraction=max_fragile_fraction)
    a = (arrays["x"], arrays["w"], arrays["b"])
    step = f"{op} {tuple(arrays['x'].shape)} x {tuple(arrays['w'].shape)}"
    if op == "conv2d":
        report.checks += check_conv2d(step, precision, *a, out, dout, *grads, **kw)
    elif op == "dense":
        report.checks += check_dense(step, precision, *a, out, dout, *grads)
    elif op == "conv2d_relu_maxpool":
        checks, fragility = check_conv_block(step, precision, *a, out, dout, *grads, **kw)
        report.checks += checks
        report.fragility.append(fragility)
    else:
        raise ValueError(f"{op}: not a product op (conv2d, dense, conv2d_relu_maxpool)")
    return report


# ------------------------------------------------------------------ a training step
#: The training step's optimizer as tests/test_gpu.py runs it.
SGD_SETTINGS = {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4}


def _layer_label(i: int, block) -> str:
    from .layers import ConvBlock, Dense

    name = type(block).__name__
    if isinstance(block, ConvBlock):
        c = block.conv
        return f"{i} {name} conv {c.in_channels}->{c.out_channels}"
    if isinstance(block, Dense):
        return f"{i} {name} {block.in_features}->{block.out_features}"
    return f"{i} {name}"


def verify_step(backend, net_builder: Callable, x, y, train: bool = True, sgd: dict | None = SGD_SETTINGS,
                max_fragile_fraction: float = MAX_FRAGILE_FRACTION, end_to_end: bool = True) -> Report:
    """One training step of `net_builder(backend)` (a Sequential on that backend, e.g.
    ``lambda be: paper_net(hidden=1024, seed=0, backend=be)``) on the batch x (N, C, H, W)
    float32, y (N,) labels: forward (train: dropout on), mean softmax cross-entropy,
    backward, and with `sgd` (the SGD settings; None: no update) one SGD update; every
    step of its run plan verified against the exact result of the backend's precision
    mode on the tested side's own inputs (module docstring). end_to_end: also run the
    float64 reference's own chain from `net_builder(numpy64)` and report how far the
    loss, the logits and each gradient landed from it (not enforced).

    Returns a Report: .ok, .explain(), .worst() (per step, the largest |err| / bound),
    .fragility (per fused block, windows and fragile windows), .summary."""
    from .layers import Conv2D, ConvBlock, Dense, Dropout, Flatten, MaxPool2D, ReLU
    from .optim import SGD

    be = backends.get(backend)
    precision = getattr(be, "precision", "fp32")
    exact = backends.get("numpy")  # the ops computed bit for bit on every backend
    net = net_builder(be)
    report = Report(getattr(be, "name", str(be)), precision, max_fragile_fraction=max_fragile_fraction)

    def host(a):  # a copy: later steps may reuse device memory
        return np.array(be.to_numpy(a))

    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y)
    params_before = {name: host(p.value) for name, p in net.named_parameters()}

    # ---- forward, step by step, as Sequential.forward runs its plan
    plan = net.run_plan()
    records = []
    h = be.asarray(x)
    for i, block in enumerate(plan):
        rec = {"label": _layer_label(i, block), "block": block, "in": host(h)}
        if isinstance(block, Dropout):
            rec["seed"] = ((block.calls & 0xFFFFFFFF) << 32) | block.seed
        h = block.forward(h, train=train)
        rec["out"] = host(h)
        records.append(rec)
    logits = h
    loss, dlogits = be.softmax_cross_entropy(logits, y)
    report.checks += check_softmax_cross_entropy("loss", records[-1]["out"], y, host(loss), host(dlogits))

    # ---- backward, as Sequential.backward runs it (no input gradient for the first step)
    d = dlogits
    for i in reversed(range(len(plan))):
        rec, block = records[i], plan[i]
        rec["dout"] = host(d)
        d = block.backward(d, need_dx=i > 0)
        rec["dx"] = None if d is None else host(d)

    # ---- each step against the exact result on its own inputs
    for rec in records:
        block, label, xin, out, dout, dx = rec["block"], rec["label"], rec["in"], rec["out"], rec["dout"], rec["dx"]
        if isinstance(block, (ConvBlock, Conv2D, Dense)):
            layer = block.conv if isinstance(block, ConvBlock) else block
            w, b = host(layer.params["w"].value), host(layer.params["b"].value)
            dw, db = host(layer.params["w"].grad), host(layer.params["b"].grad)
            if isinstance(block, ConvBlock):
                checks, fragility = check_conv_block(label, precision, xin, w, b, out, dout, dx, dw, db,
                                                     stride=layer.stride, pad=layer.pad,
                                                     ceil_mode=block.pool.ceil_mode)
                report.fragility.append(fragility)
            elif isinstance(block, Conv2D):
                checks = check_conv2d(label, precision, xin, w, b, out, dout, dx, dw, db,
                                      stride=layer.stride, pad=layer.pad)
            else:
                checks = check_dense(label, precision, xin, w, b, out, dout, dx, dw, db)
            report.checks += checks
            continue
        if isinstance(block, ReLU):
            want, cache = exact.relu_forward(xin)
            want_dx = exact.relu_backward(dout, cache)
        elif isinstance(block, MaxPool2D):
            want, cache = exact.maxpool2d_forward(xin, block.size, block.stride, block.ceil_mode)
            want_dx = exact.maxpool2d_backward(dout, cache)
        elif isinstance(block, Dropout):
            want, cache = exact.dropout_forward(xin, block.p, rec["seed"], train=train)
            want_dx = exact.dropout_backward(dout, cache)
        elif isinstance(block, Flatten):
            want, want_dx = xin.reshape(xin.shape[0], -1), dout.reshape(xin.shape)
        else:
            raise TypeError(f"verify_step: no check for a {type(block).__name__} step")
        report.checks.append(equal(label, "out", out, want))
        if dx is not None:
            report.checks.append(equal(label, "dx", dx, want_dx))

    # ---- the update: bit for bit the reference's, on the tested side's gradients
    grads = {name: host(p.grad) for name, p in net.named_parameters()}
    if sgd is not None:
        opt = SGD(net.parameters(), backend=be, **sgd)
        velocity_before = [host(v) for v in opt.velocity]
        opt.step()
        be.synchronize()
        for (name, p), v_before, v_after in zip(net.named_parameters(), velocity_before, opt.velocity):
            value, velocity = params_before[name].copy(), v_before.copy()
            exact.sgd_update(value, grads[name], velocity, **sgd)
            report.checks.append(equal(f"sgd {name}", "value", host(p.value), value))
            report.checks.append(equal(f"sgd {name}", "velocity", host(v_after), velocity))

    if end_to_end:
        report.summary.update(_end_to_end(net_builder, precision, x, y, train, host(loss), records[-1]["out"],
                                          grads))
    return report


def _end_to_end(net_builder, precision, x, y, train, loss, logits, grads) -> dict:
    """How far the tested chain (its loss, logits and {parameter name: gradient}) landed
    from the float64 reference's own chain, from the same initial weights."""
    ref = backends.get("numpy64", precision)
    net = net_builder(ref)
    ref_logits = net.forward(ref.asarray(x), train=train)
    ref_loss, dlogits = ref.softmax_cross_entropy(ref_logits, y)
    net.backward(dlogits)
    errors = {name: rel_error(grads[name], p.grad) for name, p in net.named_parameters()}
    return {"loss": float(loss), "float64 chain loss": float(ref_loss),
            "logits rel. error": rel_error(logits, ref_logits), "gradient rel. errors": errors}
