"""Each op of a network against the exact result of its precision mode on the tested
side's own inputs: dense and conv2d by the FP32-sum bound, the fused conv block with
its fragile windows (decisions that rounding could flip) and the routing term they add
to the gradients' bounds, and the softmax cross-entropy by its own derived bound."""

from __future__ import annotations

import numpy as np

from .. import backends
from ..precision import FP32_ULP, round_operands
from ..shapes import pool_out_size
from .report import ELEMENTARY_ULPS, F64_UNIT, Check, Fragility, host64, sum_bound, within

# ------------------------------------------------------------------ products
def _reference(precision: str):
    return backends.get("numpy64", precision)


def check_dense(step: str, precision: str, x, w, b, out, dout=None, dx=None, dw=None, db=None) -> list[Check]:
    """Dense y = x @ w + b (x (N, D), w (D, M), b (M,)) of the tested side, its output
    `out` (N, M) and, given `dout` (N, M), its gradients dx (N, D) (None: not computed),
    dw (D, M), db (M,), each within its FP32-sum bound of the exact result of `precision`."""
    ref = _reference(precision)
    x, w, b = host64(x), host64(w), host64(b)
    n, d = x.shape
    m = w.shape[1]
    want, cache = ref.dense_forward(x, w, b)
    absolute, abs_cache = ref.dense_forward(np.abs(x), np.abs(w), np.abs(b))
    checks = [within(step, "out", out, want, sum_bound(absolute, d + 1))]
    if dout is None:
        return checks
    dout = host64(dout)
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
    x, w, b = host64(x), host64(w), host64(b)
    want, cache = ref.conv2d_forward(x, w, b, stride=stride, pad=pad)
    absolute, abs_cache = ref.conv2d_forward(np.abs(x), np.abs(w), np.abs(b), stride=stride, pad=pad)
    counts = _conv_counts(x.shape, w.shape, want.shape)
    checks = [within(step, "out", out, want, sum_bound(absolute, counts["out"]))]
    if dout is None:
        return checks
    dout = host64(dout)
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
    conv, bound = host64(conv), host64(bound)
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
    d = host64(round_operands(vals, precision))[:, None, None, None]
    xp = np.pad(host64(round_operands(x, precision)), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    at = (n_i[:, None, None, None], np.arange(c)[None, :, None, None],
          (oh_i * stride)[:, None, None, None] + np.arange(kh)[None, None, :, None],
          (ow_i * stride)[:, None, None, None] + np.arange(kw)[None, None, None, :])  # (E, C, KH, KW) each
    dw = np.zeros((f, c, kh, kw))
    np.add.at(dw, f_i, d * xp[at])
    if not need_dx:
        return None, dw, db
    dxp = np.zeros_like(xp)
    np.add.at(dxp, at, d * host64(round_operands(w, precision))[f_i])
    return np.ascontiguousarray(dxp[:, :, pad:pad + h, pad:pad + wd]), dw, db


def block_fragility(precision: str, x, w, b, *, stride: int = 1, pad: int = 0, ceil_mode: bool = True,
                    step: str = "conv block") -> Fragility:
    """The fragile windows of the fused block on inputs x (N, C, H, W), w (F, C, KH, KW),
    b (F,) in `precision`, from the exact conv and its bound alone (no backend runs)."""
    ref = _reference(precision)
    x, w, b = host64(x), host64(w), host64(b)
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
    x, w, b = host64(x), host64(w), host64(b)
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
    dout = host64(dout)
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
    z = host64(logits)
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
