"""One training step of paper_net() on the CPU: the NumPy reference, the Numba backend
(layer by layer, and with its conv blocks fused: bench/numba_fused.py), and the same
network in PyTorch (when installed), in the same run; then op by op.

    python -m bench.bench_step_cpu [--batch 32] [--size 256] [--hidden 1024] [--repeats 5]
                                   [--backends numpy,numba,numba fused] [--no-ops] [--no-torch]

    python -m bench.bench_step_cpu --backends numpy --no-ops    # the reference against PyTorch alone

Validate, then time: first one forward + backward of numba (and fused) against numpy on
the same weights and inputs (loss, every gradient, and every parameter after one SGD
step), and the torch mirror's logits against ours; then forward + loss + backward +
SGD-momentum update, timed with the host clock (CPU work is synchronous) after a
warm-up step, as medians over `repeats` (the runs interleave, so a noisy neighbour
hurts all alike), with every ratio to numpy and to torch. The op table times each
layer's forward and its backward separately (one cache, or one retained torch graph,
reused) at the step's shapes. Without numba installed the numba entries are left out
(numpy against torch still runs).

Run from the repository root. Importable: ``run_step_bench(...)`` and
``run_op_bench(...)`` return the numbers.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time

import numpy as np

from bench.steps import cpu_description, describe, host_times, torch_training_step, training_step
from bench.torch_net import check_mirror, torch_available, torch_mirror
from tinycnn import backends
from tinycnn.gradcheck import rel_error
from tinycnn.layers import Conv2D, Dense, Dropout, MaxPool2D, ReLU
from tinycnn.model import paper_net
from tinycnn.optim import SGD

NAMES = ("numpy", "numba", "numba fused")  # "numba fused": numba with bench/numba_fused.py's conv blocks


# ------------------------------------------------------------------ the step
def make_net(name: str, hidden: int, size: int):
    """paper_net(seed=0) on backend `name` ("numba fused": on numba, conv blocks fused)."""
    net = paper_net(hidden=hidden, in_size=size, seed=0, backend=name.split()[0])
    if name.endswith("fused"):
        from bench.numba_fused import fuse_conv_blocks  # needs numba: imported only when asked for

        net = fuse_conv_blocks(net)
    return net


def validate_step(x, y, hidden: int, size: int, fwd_tol=1e-4, grad_tol=1e-3,
                  names=("numba", "numba fused")) -> dict[str, dict[str, float]]:
    """One training step of each of `names` (numba layer by layer, numba with fused
    conv blocks) and of numpy from the same weights: relative errors of the loss, every
    gradient, and every parameter after the SGD update, per variant."""
    nets = {name: make_net(name, hidden, size) for name in ("numpy",) + tuple(names)}
    results = {}
    for name, net in nets.items():
        be = net.backend
        opt = SGD(net.parameters(), lr=1e-2, momentum=0.9, backend=be)
        loss, dlogits = be.softmax_cross_entropy(net.forward(be.asarray(x), train=True), y)
        net.backward(dlogits)
        grads = [be.to_numpy(p.grad).copy() for p in net.parameters()]
        opt.step()
        params = [be.to_numpy(p.value) for p in net.parameters()]
        results[name] = (float(loss), grads, params)
    l0, g0, p0 = results["numpy"]
    report = {}
    for name in names:
        l1, g1, p1 = results[name]
        errors = {"loss": abs(l0 - l1) / max(abs(l0), 1e-12)}
        errors.update({f"grad {i}": rel_error(a, b) for i, (a, b) in enumerate(zip(g0, g1))})
        errors.update({f"param {i}": rel_error(a, b) for i, (a, b) in enumerate(zip(p0, p1))})
        worst_grad = max(v for k, v in errors.items() if k.startswith("grad"))
        if errors["loss"] > fwd_tol or worst_grad > grad_tol:
            raise AssertionError(f"{name} disagrees with numpy: loss {errors['loss']:.1e}, worst grad {worst_grad:.1e}")
        report[name] = errors
    return report


def run_step_bench(batch=32, size=256, hidden=1024, repeats=5, names=NAMES, with_torch=True,
                   log=print) -> dict[str, list[float]]:
    """Seconds per training step for each of `names` ("numba fused": numba with fused
    conv blocks) and "torch", interleaved runs."""
    rng = np.random.default_rng(0)
    x = rng.random((batch, 1, size, size), dtype=np.float32)
    y = rng.integers(0, 2, batch)
    steps = {}
    for name in names:
        steps[name] = training_step(make_net(name, hidden, size), x, y)
    if with_torch and torch_available():
        import torch

        ref = paper_net(hidden=hidden, in_size=size, seed=0)
        tnet = torch_mirror(ref)
        err = check_mirror(ref, tnet, x[:2])
        log(f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads); mirror validated: "
            f"logits rel. error {err:.1e}")
        steps["torch"] = torch_training_step(tnet, x, y)
    for step in steps.values():  # warm-up: compilation, first-touch pages, thread pools
        step()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    return times


# ------------------------------------------------------------------ op by op
def _layer_inputs(net, x):
    """Each layer with the input it sees in a training forward pass."""
    out = []
    for layer in net.layers:
        out.append((layer, x))
        x = layer.forward(x, train=True)
    return out


def _tinycnn_op(be, layer, x):
    """(forward, backward) closures for one layer's op on backend `be`."""
    if isinstance(layer, Conv2D):
        w, b = be.asarray(layer.params["w"].value), be.asarray(layer.params["b"].value)
        fwd = lambda: be.conv2d_forward(x, w, b, layer.stride, layer.pad)  # noqa: E731
        bwd = be.conv2d_backward
    elif isinstance(layer, ReLU):
        fwd = lambda: be.relu_forward(x)  # noqa: E731
        bwd = be.relu_backward
    elif isinstance(layer, MaxPool2D):
        fwd = lambda: be.maxpool2d_forward(x, layer.size, layer.stride, layer.ceil_mode)  # noqa: E731
        bwd = be.maxpool2d_backward
    elif isinstance(layer, Dense):
        w, b = be.asarray(layer.params["w"].value), be.asarray(layer.params["b"].value)
        fwd = lambda: be.dense_forward(x, w, b)  # noqa: E731
        bwd = be.dense_backward
    elif isinstance(layer, Dropout):
        fwd = lambda: be.dropout_forward(x, layer.p, 12345, train=True)  # noqa: E731
        bwd = be.dropout_backward
    else:
        return None
    return fwd, bwd


def _torch_layer_op(layer, x):
    """(forward, backward) closures for the same op in PyTorch; the backward pass runs
    on one retained graph, so it is timed alone."""
    import torch
    import torch.nn.functional as F

    xt = torch.from_numpy(np.ascontiguousarray(x)).requires_grad_(True)
    params = []
    if isinstance(layer, Conv2D):
        w = torch.from_numpy(np.asarray(layer.params["w"].value)).requires_grad_(True)
        b = torch.from_numpy(np.asarray(layer.params["b"].value)).requires_grad_(True)
        params = [w, b]
        op = lambda: F.conv2d(xt, w, b, layer.stride, layer.pad)  # noqa: E731
    elif isinstance(layer, ReLU):
        op = lambda: F.relu(xt)  # noqa: E731
    elif isinstance(layer, MaxPool2D):
        op = lambda: F.max_pool2d(xt, layer.size, layer.stride, ceil_mode=layer.ceil_mode)  # noqa: E731
    elif isinstance(layer, Dense):
        w = torch.from_numpy(np.asarray(layer.params["w"].value).T.copy()).requires_grad_(True)
        b = torch.from_numpy(np.asarray(layer.params["b"].value)).requires_grad_(True)
        params = [w, b]
        op = lambda: F.linear(xt, w, b)  # noqa: E731
    elif isinstance(layer, Dropout):
        op = lambda: F.dropout(xt, layer.p, training=True)  # noqa: E731
    else:
        return None
    out = op()
    dout = torch.randn(out.shape)

    def backward():
        torch.autograd.grad(out, [xt] + params, dout, retain_graph=True)

    return op, backward


def _sgd_row(net, repeats, has_torch, names=("numpy", "numba")):
    """One SGD-momentum update of every parameter of `net` (the update is all of it:
    reported in the forward column)."""
    times = {}
    for name in names:
        be = backends.get(name)
        params = [be.asarray(p.value) for p in net.parameters()]
        grads = [be.asarray(p.value) * 1e-3 for p in net.parameters()]
        vel = [be.zeros(p.shape) for p in params]

        def update():
            for p, g, v in zip(params, grads, vel):
                be.sgd_update(p, g, v, 1e-3, 0.9, 0.0)

        times[name] = (statistics.median(host_times(update, repeats)), 0.0)
    if has_torch:
        import torch

        tparams = [torch.nn.Parameter(torch.from_numpy(np.array(p.value))) for p in net.parameters()]
        for tp in tparams:
            tp.grad = tp.detach() * 1e-3
        opt = torch.optim.SGD(tparams, lr=1e-3, momentum=0.9)
        times["torch"] = (statistics.median(host_times(opt.step, repeats)), 0.0)
    return f"   sgd momentum update, {net.num_parameters() / 1e6:.1f} M params", times


def _label(i, layer, x):
    shape = "x".join(str(s) for s in x.shape[1:])
    if isinstance(layer, Conv2D):
        return f"{i:2d} conv {layer.in_channels}->{layer.out_channels} @{shape}"
    if isinstance(layer, MaxPool2D):
        return f"{i:2d} maxpool {layer.size}/{layer.stride} @{shape}"
    return f"{i:2d} {type(layer).__name__.lower()} @{shape}"


def run_op_bench(batch=32, size=256, hidden=1024, repeats=3, with_torch=True, fused=True,
                 names=("numpy", "numba")):
    """Rows (label, {impl: (fwd s, bwd s)}) for every layer of paper_net on each of
    `names` (and the fused conv+ReLU+pool blocks of bench/numba_fused.py when `fused`).
    Medians over `repeats`."""
    rng = np.random.default_rng(0)
    x = rng.random((batch, 1, size, size), dtype=np.float32)
    net = paper_net(hidden=hidden, in_size=size, seed=0)
    has_torch = with_torch and torch_available()
    rows = []
    for i, (layer, xin) in enumerate(_layer_inputs(net, x)):
        times = {}
        for name in names:
            ops = _tinycnn_op(backends.get(name), layer, xin)
            if ops is None:
                break
            fwd, bwd = ops
            out, cache = fwd()
            dout = rng.standard_normal(out.shape).astype(np.float32)
            tf = statistics.median(host_times(fwd, repeats))
            tb = statistics.median(host_times(lambda: bwd(dout, cache), repeats))  # ops leave caches intact
            times[name] = (tf, tb)
        if not times:
            continue
        if has_torch:
            op, bwd = _torch_layer_op(layer, xin)
            tf = statistics.median(host_times(op, repeats))
            tb = statistics.median(host_times(bwd, repeats))
            times["torch"] = (tf, tb)
        rows.append((_label(i, layer, xin), times))
    rows.append(_sgd_row(net, repeats, has_torch, names))
    if fused:
        from bench.numba_fused import conv_relu_pool_backward, conv_relu_pool_forward

        for i, (layer, xin) in enumerate(_layer_inputs(net, x)):
            if not isinstance(layer, Conv2D):
                continue
            w, b = layer.params["w"].value, layer.params["b"].value
            fwd = lambda: conv_relu_pool_forward(xin, w, b, layer.stride, layer.pad)  # noqa: E731
            out, cache = fwd()
            dout = rng.standard_normal(out.shape).astype(np.float32)
            tf = statistics.median(host_times(fwd, repeats))
            tb = statistics.median(host_times(lambda: conv_relu_pool_backward(dout, cache), repeats))
            rows.append((f"{i:2d}-{i + 2} fused conv+relu+pool", {"numba": (tf, tb)}))
    return rows


def format_op_table(rows) -> str:
    impls = ("numpy", "numba", "torch")
    head = f"| {'op (input shape)':<34} |" + "".join(f" {i} fwd | {i} bwd |" for i in impls)
    head += " numpy/numba | numba/torch |"
    lines = [head, "|" + "---|" * (1 + 2 * len(impls) + 2)]
    for label, t in rows:
        cells = []
        for impl in impls:
            if impl in t:
                cells += [f"{1e3 * t[impl][0]:.1f}", f"{1e3 * t[impl][1]:.1f}"]
            else:
                cells += ["", ""]
        tot = {k: sum(v) for k, v in t.items()}
        r1 = f"{tot['numpy'] / tot['numba']:.2f}x" if "numpy" in tot and tot.get("numba", 0) > 0 else ""
        r2 = f"{tot['numba'] / tot['torch']:.2f}" if "numba" in tot and tot.get("torch", 0) > 0 else ""
        lines.append(f"| {label:<34} | " + " | ".join(cells) + f" | {r1} | {r2} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_step_cpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--op-repeats", type=int, default=3)
    ap.add_argument("--backends", default=",".join(NAMES),
                    help=f"comma-separated subset of {', '.join(NAMES)} (default: all; numpy always runs)")
    ap.add_argument("--no-ops", action="store_true", help="skip the per-op table")
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args(argv)
    names = ["numpy"] + [n.strip() for n in args.backends.split(",") if n.strip() and n.strip() != "numpy"]
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        ap.error(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}")

    print(f"paper_net training step: batch {args.batch}, {args.size}x{args.size}, hidden {args.hidden}, "
          f"SGD momentum; {datetime.date.today()}")
    numba_names = [n for n in names if n.startswith("numba")]
    numba = None
    if numba_names:
        try:
            backends.get("numba")  # first: it picks Numba's threading layer before any thread starts
            import numba
        except (backends.BackendUnavailable, ImportError) as e:
            print(f"numba unavailable ({e}): {', '.join(numba_names)} left out")
            names = [n for n in names if n not in numba_names]
            numba_names = []
    print(f"CPU: {cpu_description()}; NumPy {np.__version__}"
          + (f"; Numba {numba.__version__} ({numba.get_num_threads()} threads)" if numba else ""))

    rng = np.random.default_rng(1)
    xv = rng.random((2, 1, args.size, args.size), dtype=np.float32)
    for name, errors in validate_step(xv, np.array([0, 1]), args.hidden, args.size, names=numba_names).items():
        grad = max(v for k, v in errors.items() if k.startswith("grad"))
        param = max(v for k, v in errors.items() if k.startswith("param"))
        print(f"{name} validated against numpy (one SGD step, batch 2): rel. error of the loss "
              f"{errors['loss']:.1e}, worst gradient {grad:.1e}, worst parameter after the step {param:.1e}")

    times = run_step_bench(args.batch, args.size, args.hidden, args.repeats, names=names,
                           with_torch=not args.no_torch)
    med = {k: statistics.median(v) for k, v in times.items()}
    if numba:
        print(f"Numba threading layer: {numba.threading_layer()}")
    for name, t in times.items():
        print(f"{name:<11} {describe(t)}  {args.batch / med[name]:6.1f} images/s")
    for name in names[1:]:
        print(f"numpy / {name} = {med['numpy'] / med[name]:.2f}x")
    if "torch" in med:
        for name in names:
            print(f"{name} / torch = {med[name] / med['torch']:.2f}  (below 1: faster than PyTorch)")
    elif not args.no_torch:
        print("torch  not installed: no comparison")

    if not args.no_ops:
        print(f"\nper op, ms (median of {args.op_repeats}), batch {args.batch}:")
        print(format_op_table(run_op_bench(args.batch, args.size, args.hidden, args.op_repeats,
                                           with_torch=not args.no_torch, fused="numba fused" in names,
                                           names=[n for n in names if n in ("numpy", "numba")])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
