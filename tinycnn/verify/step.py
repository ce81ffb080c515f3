"""One op, or one whole training step of a Sequential, verified on a backend: the op or
each step of the net's run plan run on the tested backend, its inputs, outputs and
upstream gradients copied to the host, and each held to the exact result of its mode
on those inputs (ops.py); ReLU, max-pool, dropout, flatten and the SGD update bit for
bit against the float32 reference."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import backends
from ..gradcheck import rel_error
from ..op_table import OPS
from ..layers import Conv2D, ConvBlock, Dense, Dropout, Flatten, MaxPool2D, ReLU
from ..optim import SGD
from .ops import check_conv2d, check_conv_block, check_dense, check_softmax_cross_entropy
from .report import MAX_FRAGILE_FRACTION, Report, equal

# ------------------------------------------------------------------ one op
def verify_op(backend, op: str, arrays: dict, dout=None, dout_seed: int = 0,
              max_fragile_fraction: float = MAX_FRAGILE_FRACTION, **kw) -> Report:
    """Op `op` of tinycnn.op_table.OPS (conv2d, dense, conv2d_relu_maxpool) on `backend`,
    in its precision mode, on host `arrays` (float32), forward and backward with `dout`
    (default: N(0, 1) float32 numbers drawn from dout_seed), against the exact result of
    the mode (module docstring)."""
    be = backends.get(backend)
    precision = be.precision
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
    be = backends.get(backend)
    precision = be.precision
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
