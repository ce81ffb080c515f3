"""The op table: each op of the contract described once, by the names of its
differentiable inputs, a forward(backend, arrays, **kw) -> (out, cache) and a
backward(backend, dout, cache) -> gradients, so that one piece of code can run any op
on any backend (``run_op``). The gradient checks (gradcheck.py), the parity tests, the
verification of the GPU (tinycnn/verify/) and the benchmarks all read this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import backends


@dataclass
class OpSpec:
    """One op of the contract, described for generic checking.

    inputs: names of the differentiable arrays, in the order backward returns
    their gradients. forward(backend, arrays, **kw) -> (out, cache);
    backward(backend, dout, cache) -> tuple of gradients (same order as inputs),
    a tuple even for one input. Labels travel in `arrays` as integers, never
    differentiated.
    """

    name: str
    inputs: tuple[str, ...]
    forward: Callable
    backward: Callable


def to_backend(be, arrays: dict) -> dict:
    """Host arrays -> the backend's arrays: floats in the backend's dtype, labels int32."""
    return {k: be.asarray(v, dtype=np.int32) if k == "labels" else be.asarray(v) for k, v in arrays.items()}


OPS = {
    "conv2d": OpSpec(
        "conv2d", ("x", "w", "b"),
        lambda be, a, **kw: be.conv2d_forward(a["x"], a["w"], a["b"], **kw),
        lambda be, d, c: be.conv2d_backward(d, c)),
    # The paper's conv block (conv, ReLU, 2x2 max-pool) as one op: fused on the kernel
    # backends, the three ops in turn everywhere else.
    "conv2d_relu_maxpool": OpSpec(
        "conv2d_relu_maxpool", ("x", "w", "b"),
        lambda be, a, **kw: be.conv2d_relu_maxpool_forward(a["x"], a["w"], a["b"], **kw),
        lambda be, d, c: be.conv2d_relu_maxpool_backward(d, c)),
    "relu": OpSpec(
        "relu", ("x",),
        lambda be, a, **kw: be.relu_forward(a["x"]),
        lambda be, d, c: (be.relu_backward(d, c),)),
    "maxpool2d": OpSpec(
        "maxpool2d", ("x",),
        lambda be, a, **kw: be.maxpool2d_forward(a["x"], **kw),
        lambda be, d, c: (be.maxpool2d_backward(d, c),)),
    "dense": OpSpec(
        "dense", ("x", "w", "b"),
        lambda be, a, **kw: be.dense_forward(a["x"], a["w"], a["b"]),
        lambda be, d, c: be.dense_backward(d, c)),
    "dropout": OpSpec(
        "dropout", ("x",),
        lambda be, a, **kw: be.dropout_forward(a["x"], **kw),
        lambda be, d, c: (be.dropout_backward(d, c),)),
    # The loss returns its gradient with the forward pass; as an op, its "backward"
    # scales that gradient by the upstream scalar.
    "softmax_cross_entropy": OpSpec(
        "softmax_cross_entropy", ("logits",),
        lambda be, a, **kw: be.softmax_cross_entropy(a["logits"], a["labels"]),
        lambda be, d, c: (c * d,)),
}


def run_op(spec: OpSpec, backend, arrays: dict, dout=None, **kw):
    """Forward (and backward when dout is given) of one op on one backend, with host
    NumPy arrays in and out. Returns (out, grads) with grads a dict by input name."""
    be = backends.get(backend)
    out, cache = spec.forward(be, to_backend(be, arrays), **kw)
    grads = {}
    if dout is not None:
        g = spec.backward(be, be.asarray(dout), cache)
        grads = {name: be.to_numpy(gi) for name, gi in zip(spec.inputs, g)}
    return be.to_numpy(out), grads
