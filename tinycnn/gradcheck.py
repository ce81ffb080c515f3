"""Gradient checking: analytic backward passes against centred finite differences.

For an op y = f(x) and a fixed random "upstream gradient" g (the shape of y), the
scalar L = sum(y * g) has dL/dx = backward(g). Each entry of the numerical gradient
is the centred difference (L(x + h e_i) - L(x - h e_i)) / 2h, with error O(h^2);
in float64 with h = 1e-6 the two agree to about 1e-9 where the op is smooth.

    python -m tinycnn.gradcheck            # every op, then the whole paper_net

Every op comes from the op table (tinycnn/op_table.py), which describes each op once
for these checks, the parity tests, tinycnn.verify and the benchmarks alike.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

import numpy as np

from . import backends
from .op_table import OPS, OpSpec, run_op

TOLERANCE = 1e-6


def rel_error(a, b) -> float:
    """||a - b|| / max(||a||, ||b||): scale-free, and 0 when both are zero."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    denom = max(np.linalg.norm(a), np.linalg.norm(b))
    return 0.0 if denom == 0 else float(np.linalg.norm(a - b) / denom)


def numerical_gradient(f: Callable[[], float], x: np.ndarray, h: float = 1e-6, indices=None) -> np.ndarray:
    """Centred differences of the scalar f() w.r.t. x (perturbed in place and restored).
    With `indices` (flat positions), only those entries are computed; the rest stay 0."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(x.size) if indices is None else indices:
        old = flat[i]
        flat[i] = old + h
        fp = f()
        flat[i] = old - h
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * h)
    return grad


def check_op(spec: OpSpec, arrays: dict, dout_seed: int = 0, h: float = 1e-6, **kw) -> dict[str, float]:
    """Relative error of each input gradient of `spec` on the float64 NumPy backend."""
    be = backends.get("numpy64")
    arrays = {k: (np.array(v, dtype=np.float64) if k != "labels" else np.asarray(v)) for k, v in arrays.items()}
    out, _ = run_op(spec, be, arrays, **kw)
    dout = np.random.default_rng(dout_seed).standard_normal(np.shape(out))
    _, grads = run_op(spec, be, arrays, dout=dout, **kw)

    def loss():
        return float(np.sum(run_op(spec, be, arrays, **kw)[0] * dout))

    return {name: rel_error(grads[name], numerical_gradient(loss, arrays[name], h)) for name in spec.inputs}


def check_model(net, x: np.ndarray, labels: np.ndarray, samples_per_param: int = 12, seed: int = 0,
                h: float = 1e-5) -> dict[str, float]:
    """Relative error of every parameter's gradient (and the input's) of a whole
    network + cross-entropy loss, in training mode (dropout on, with its mask held
    fixed by rewinding the dropout counters before every evaluation). Checks a
    random sample of entries per parameter to stay fast. The step h is larger than
    for single ops: gradients deep in a network are small, so the roundoff term
    (machine eps * |L| / h) of a 1e-6 step would dominate them."""
    be = net.backend
    states = [layer.state() for layer in net.layers]

    def rewind():
        for layer, st in zip(net.layers, states):
            layer.load_state(st)

    def loss():
        rewind()
        return float(be.softmax_cross_entropy(net.forward(x, train=True), labels)[0])

    rewind()
    _, dlogits = be.softmax_cross_entropy(net.forward(x, train=True), labels)
    dx = net.backward(dlogits, input_grad=True)
    rng = np.random.default_rng(seed)
    errors = {}
    targets = [("input", x, dx)] + [(name, p.value, p.grad) for name, p in net.named_parameters()]
    for name, value, grad in targets:
        idx = _sample_indices(rng, grad, samples_per_param)
        num = numerical_gradient(loss, value, h, indices=idx)
        errors[name] = rel_error(grad.reshape(-1)[idx], num.reshape(-1)[idx])
    rewind()
    return errors


def _sample_indices(rng, grad, k: int) -> np.ndarray:
    """Up to k flat positions, non-zero gradient entries first: behind ReLUs most
    entries of a gradient can be exactly 0, and a sample of zeros would agree with
    the finite differences without checking anything."""
    flat = np.asarray(grad).reshape(-1)
    nonzero = np.flatnonzero(flat)
    take = rng.choice(nonzero, size=min(k, nonzero.size), replace=False)
    if take.size < k:
        rest = np.setdiff1d(np.arange(flat.size), take)
        take = np.concatenate([take, rng.choice(rest, size=min(k - take.size, rest.size), replace=False)])
    return take


# ------------------------------------------------------------------ the CLI
def _cases(rng):
    """(label, op, arrays, kwargs) for the command-line check: every op, with the
    awkward cases (stride, padding, ceil-mode edges, batch of one)."""
    r = rng.standard_normal

    def away_from_zero(shape):  # ReLU/max-pool kinks make finite differences lie
        v = r(shape)
        return v + np.sign(v) * 0.05

    def distinct(shape):  # max-pool: no near-ties inside a window
        return rng.permutation(np.prod(shape)).reshape(shape) * 0.1 + 0.01 * r(shape)

    return [
        ("conv2d 3x3 valid", "conv2d", {"x": r((2, 3, 7, 6)), "w": r((4, 3, 3, 3)), "b": r(4)}, {}),
        ("conv2d 3x3 stride 2 pad 1", "conv2d", {"x": r((2, 2, 7, 8)), "w": r((3, 2, 3, 3)), "b": r(3)},
         {"stride": 2, "pad": 1}),
        ("conv2d 5x5 batch 1", "conv2d", {"x": r((1, 1, 9, 9)), "w": r((2, 1, 5, 5)), "b": r(2)}, {}),
        ("relu", "relu", {"x": away_from_zero((3, 4, 5))}, {}),
        ("maxpool 2/2 ceil 7x9", "maxpool2d", {"x": distinct((2, 2, 7, 9))}, {"size": 2, "stride": 2}),
        ("maxpool 3/2 overlapping", "maxpool2d", {"x": distinct((1, 2, 8, 7))}, {"size": 3, "stride": 2}),
        ("dense", "dense", {"x": r((5, 7)), "w": r((7, 3)), "b": r(3)}, {}),
        ("dropout p=0.5", "dropout", {"x": r((4, 6))}, {"p": 0.5, "seed": 7}),
        ("softmax cross-entropy", "softmax_cross_entropy",
         {"logits": r((6, 3)) * 3, "labels": rng.integers(0, 3, 6)}, {}),
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tinycnn.gradcheck",
                                 description="Check every backward pass against finite differences (float64).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--in-size", type=int, default=32, help="input size of the paper_net check (default 32)")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    worst = 0.0
    print(f"{'op':<30} {'grad':<8} {'rel. error':>10}")
    for label, op, arrays, kw in _cases(rng):
        for name, err in check_op(OPS[op], arrays, dout_seed=args.seed, **kw).items():
            worst = max(worst, err)
            print(f"{label:<30} {'d' + name:<8} {err:10.2e}{'' if err <= TOLERANCE else '  FAIL'}")

    from .model import paper_net
    net = paper_net(hidden=16, in_size=args.in_size, seed=args.seed, backend=backends.get("numpy64"))
    x = rng.standard_normal((2, 1, args.in_size, args.in_size))
    y = np.array([0, 1])
    print(f"\npaper_net(in_size={args.in_size}, hidden=16), batch 2, training mode, float64")
    for name, err in check_model(net, x, y, seed=args.seed).items():
        worst = max(worst, err)
        print(f"{name:<30} {'':<8} {err:10.2e}{'' if err <= TOLERANCE else '  FAIL'}")
    ok = worst <= TOLERANCE
    print(f"\nworst relative error {worst:.2e}: {'all gradients agree' if ok else 'FAILED'} (tolerance {TOLERANCE:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
