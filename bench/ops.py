"""The benchmark op cases, defined once for the pytest suite (bench/test_ops.py) and
the report (python -m bench.report).

A *case* is one op of paper_net() at the paper's layer shapes (256x256 input,
hidden 1024): each conv layer forward and backward (data + filter + bias as one
backward), ReLU, each max-pool forward and backward, the first dense layer
(28800 x 1024) forward and backward, dropout, softmax cross-entropy, the
SGD-momentum update of every paper_net parameter, and the whole training step.
It knows its inputs, its FLOPs and its minimum memory traffic.

An *implementation* runs a case: one of our backends (numpy, numba, cuda) or
PyTorch (torch-cpu; on a GPU torch-cuda with cuDNN autotuned and TF32 off, and
torch-cuda-default with PyTorch's defaults, i.e. TF32 convolutions).

Validate, then time: ``prepare(case, batch, impl)`` first runs the op on the same
inputs as the NumPy reference and raises ``ValidationError`` unless the output and
every gradient agree (relative error, fwd 1e-5, grad 1e-4; our whole training step
layer by layer against the exact result of its precision mode, tinycnn.verify, whose
derived bounds no flipped ReLU or pooling decision can fail; PyTorch's step against
the float64 reference, see STEP_TOL), and only then returns the function to time. On a GPU the inputs are rotated among copies whose total exceeds twice the L2 cache, so
a timed call reads cold data; GPU time comes from device events, never from a host
clock around asynchronous launches.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from bench.steps import training_step
from bench.torch_net import torch_available, torch_mirror
from tinycnn import backends
from tinycnn.gradcheck import rel_error
from tinycnn.op_table import OPS, run_op, to_backend
from tinycnn.model import Sequential, paper_conv_stack, paper_net
from tinycnn.verify import verify_step

FWD_TOL, GRAD_TOL = 1e-5, 1e-4
TF32_TOL = 1e-2  # torch-cuda-default: TF32 convolutions keep a 10-bit mantissa
# PyTorch's whole step, against the float64 NumPy reference: loss and logits at GRAD_TOL,
# the gradients at STEP_TOL (ours is verified by tinycnn.verify instead). A conv filter gradient sums N*OH*OW
# products (2 M for conv1 at batch 32) with heavy cancellation: measured at batch 32,
# the float32 NumPy reference itself is 6e-4 .. 1e-3 from float64 on the conv filter
# gradients (numba 1.2e-4), so 1e-4 would fail on rounding alone. Each op is held to
# FWD_TOL / GRAD_TOL in its own entry.
STEP_TOL = 5e-3
IN_SIZE, HIDDEN, CLASSES = 256, 1024, 2
DROPOUT_P, DROPOUT_SEED = 0.5, 1234
LR, MOMENTUM, WEIGHT_DECAY = 1e-3, 0.9, 5e-4
DEFAULT_L2_BYTES = 50 * 2**20  # H100; the device's own value is used when known
MAX_COPIES = 64


class ValidationError(AssertionError):
    """An implementation disagrees with the NumPy reference."""


# ------------------------------------------------------------------ the cases
@dataclass(frozen=True)
class Case:
    """One op at one layer's shape; every per-batch quantity is a function of the batch.

    kind: "op" (an entry of tinycnn.op_table.OPS), "sgd" or "step".
    direction: "forward" or "backward" for "op" cases (backward times the op's whole
    backward pass from a cache made once); softmax cross-entropy is one fused
    forward that also returns the gradient.
    """

    name: str
    kind: str
    op: str = ""
    direction: str = "forward"
    shapes: Callable[[int], dict] = None   # batch -> {input name: shape}
    kwargs: dict = field(default_factory=dict)
    flops: Callable[[int], float] = None
    bytes: Callable[[int], float] = None   # minimum DRAM traffic, float32
    label: Callable[[int], str] = None     # batch -> shape text for tables

    def make_inputs(self, batch: int, seed: int = 0) -> dict:
        """Random normal float32 inputs (never all-zero), labels as int64."""
        rng = np.random.default_rng(seed)
        out = {}
        for name, shape in self.shapes(batch).items():
            if name == "labels":
                out[name] = rng.integers(0, CLASSES, shape[0])
            else:
                out[name] = rng.standard_normal(shape, dtype=np.float32)
        return out


def paper_geometry(in_size: int = IN_SIZE):
    """[(in_channels, filters, conv input size, conv output size, pool output size)] of
    the four conv blocks, and the flattened size (28800 at 256)."""
    shapes = Sequential(paper_conv_stack(1), (1, in_size, in_size)).shapes()  # (C, H, W) after each layer
    blocks, c, size = [], 1, in_size
    for (f, conv, _), (_, pool, _) in zip(shapes[0::3], shapes[2::3]):  # each block's conv and pool
        blocks.append((c, f, size, conv, pool))
        c, size = f, pool
    return blocks, c * size * size


def _fmt(shape) -> str:
    return "x".join(str(s) for s in shape)


def make_cases(hidden: int = HIDDEN, in_size: int = IN_SIZE) -> list[Case]:
    """Every case, in the order of the network."""
    blocks, flat = paper_geometry(in_size)
    cases = []
    for i, (c, f, h, oh, ph) in enumerate(blocks, 1):
        def conv_shapes(n, c=c, f=f, h=h):
            return {"x": (n, c, h, h), "w": (f, c, 3, 3), "b": (f,)}

        def conv_flops(n, c=c, f=f, oh=oh):
            return 2.0 * n * f * oh * oh * c * 9

        def conv_fwd_bytes(n, c=c, f=f, h=h, oh=oh):
            return 4.0 * (n * c * h * h + f * c * 9 + f + n * f * oh * oh)

        def conv_label(n, c=c, f=f, h=h):
            return f"{_fmt((n, c, h, h))} * {f}x{c}x3x3"

        cases.append(Case(f"conv{i} forward", "op", "conv2d", "forward", conv_shapes, {}, conv_flops, conv_fwd_bytes,
                          conv_label))
        # backward: reads dout, x, w; writes dx, dw, db. Twice the forward's FLOPs (dx and dw).
        cases.append(Case(f"conv{i} backward", "op", "conv2d", "backward", conv_shapes, {},
                          lambda n, g=conv_flops: 2 * g(n),
                          lambda n, g=conv_fwd_bytes, c=c, h=h, f=f: g(n) + 4.0 * (n * c * h * h + f * c * 9 + f),
                          conv_label))
        if i == 1:  # ReLU at the largest activation of the network (conv1's output)
            def relu_shapes(n, f=f, oh=oh):
                return {"x": (n, f, oh, oh)}

            def relu_label(n, f=f, oh=oh):
                return _fmt((n, f, oh, oh))

            def elems(n, f=f, oh=oh):
                return float(n * f * oh * oh)

            cases.append(Case("relu forward", "op", "relu", "forward", relu_shapes, {}, elems,
                              lambda n, e=elems: 8 * e(n), relu_label))
            cases.append(Case("relu backward", "op", "relu", "backward", relu_shapes, {}, elems,
                              lambda n, e=elems: 12 * e(n), relu_label))

        def pool_shapes(n, f=f, oh=oh):
            return {"x": (n, f, oh, oh)}

        def pool_label(n, f=f, oh=oh):
            return f"{_fmt((n, f, oh, oh))} 2x2/2"

        # forward: 3 comparisons per output, reads the input, writes output + int32 winner
        cases.append(Case(f"pool{i} forward", "op", "maxpool2d", "forward", pool_shapes, {"size": 2, "stride": 2},
                          lambda n, f=f, ph=ph: 3.0 * n * f * ph * ph,
                          lambda n, f=f, oh=oh, ph=ph: 4.0 * (n * f * oh * oh + 2 * n * f * ph * ph), pool_label))
        # backward: reads dout and the winners, writes dx (no arithmetic: count 1 per input)
        cases.append(Case(f"pool{i} backward", "op", "maxpool2d", "backward", pool_shapes, {"size": 2, "stride": 2},
                          lambda n, f=f, oh=oh: 1.0 * n * f * oh * oh,
                          lambda n, f=f, oh=oh, ph=ph: 4.0 * (n * f * oh * oh + 2 * n * f * ph * ph), pool_label))

    def dense_shapes(n):
        return {"x": (n, flat), "w": (flat, hidden), "b": (hidden,)}

    def dense_label(n):
        return f"{n}x{flat} . {flat}x{hidden}"

    dense_fwd_bytes = lambda n: 4.0 * (n * flat + flat * hidden + hidden + n * hidden)  # noqa: E731
    cases.append(Case("dense1 forward", "op", "dense", "forward", dense_shapes, {},
                      lambda n: 2.0 * n * flat * hidden, dense_fwd_bytes, dense_label))
    cases.append(Case("dense1 backward", "op", "dense", "backward", dense_shapes, {},
                      lambda n: 4.0 * n * flat * hidden,
                      lambda n: 4.0 * (n * hidden + flat * hidden + n * flat + n * flat + flat * hidden + hidden),
                      dense_label))

    def hidden_shapes(n):
        return {"x": (n, hidden)}

    drop_kw = {"p": DROPOUT_P, "seed": DROPOUT_SEED}
    cases.append(Case("dropout forward", "op", "dropout", "forward", hidden_shapes, drop_kw,
                      lambda n: 2.0 * n * hidden, lambda n: 8.0 * n * hidden, lambda n: f"{n}x{hidden} p=0.5"))
    cases.append(Case("dropout backward", "op", "dropout", "backward", hidden_shapes, drop_kw,
                      lambda n: 2.0 * n * hidden, lambda n: 8.0 * n * hidden, lambda n: f"{n}x{hidden} p=0.5"))
    cases.append(Case("softmax CE (loss+grad)", "op", "softmax_cross_entropy", "forward",
                      lambda n: {"logits": (n, CLASSES), "labels": (n,)}, {},
                      lambda n: 6.0 * n * CLASSES, lambda n: 4.0 * (2 * n * CLASSES + n),
                      lambda n: f"{n}x{CLASSES}"))

    n_params = sum(int(np.prod(s)) for s in paper_param_shapes(hidden, in_size))
    # g = grad + wd p; v = m v + g; p -= lr v: 5 FLOPs; reads p, g, v, writes p, v
    cases.append(Case("sgd momentum update", "sgd", shapes=lambda n: {}, flops=lambda n: 5.0 * n_params,
                      bytes=lambda n: 20.0 * n_params, label=lambda n: f"{n_params / 1e6:.1f} M params"))

    def step_flops(n):
        conv = sum(3 * 2.0 * n * f * oh * oh * c * 9 for c, f, h, oh, ph in blocks)
        dense = 3 * 2.0 * n * (flat * hidden + hidden * hidden + hidden * CLASSES)
        return conv + dense

    def step_bytes(n):  # parameters, gradients, velocity; activations written and read back
        acts = sum(n * f * (oh * oh + ph * ph) for c, f, h, oh, ph in blocks) + n * in_size * in_size
        return 4.0 * (5 * n_params + 4 * acts)

    cases.append(Case("training step", "step", shapes=lambda n: {"x": (n, 1, in_size, in_size), "labels": (n,)},
                      flops=step_flops, bytes=step_bytes,
                      label=lambda n: f"{n}x1x{in_size}x{in_size}, hidden {hidden}"))
    return cases


def paper_param_shapes(hidden: int = HIDDEN, in_size: int = IN_SIZE) -> list[tuple]:
    """Shapes of every paper_net parameter, in the model's order (no weights drawn)."""
    blocks, flat = paper_geometry(in_size)
    shapes = []
    for c, f, *_ in blocks:
        shapes += [(f, c, 3, 3), (f,)]
    for d, m in ((flat, hidden), (hidden, hidden), (hidden, CLASSES)):
        shapes += [(d, m), (m,)]
    return shapes


CASES = make_cases()


# --------------------------------------------------------- the reference data
@dataclass
class Reference:
    """A case's inputs and the NumPy reference's results on them."""

    case: Case
    batch: int
    arrays: dict
    dout: np.ndarray | None = None
    out: object = None
    grads: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


_ref_cache: dict = {}


def reference(case: Case, batch: int) -> Reference:
    """The reference for (case, batch). One entry is kept: the suite and the report
    run every implementation of a case one after another."""
    key = (case.name, batch)
    if key not in _ref_cache:
        _ref_cache.clear()
        _ref_cache[key] = _compute_reference(case, batch)
    return _ref_cache[key]


def clear_reference() -> None:
    """Drop the kept reference (its arrays can be hundreds of MB)."""
    _ref_cache.clear()


def _compute_reference(case: Case, batch: int) -> Reference:
    ref = Reference(case, batch, case.make_inputs(batch))
    if case.kind == "op":
        # as run_op does, but the upstream gradient's shape is known only after the forward pass
        spec, be = OPS[case.op], backends.get("numpy")
        out, cache = spec.forward(be, to_backend(be, ref.arrays), **case.kwargs)
        ref.out = be.to_numpy(out).copy()
        if case.direction == "backward" or case.op == "softmax_cross_entropy":
            ref.dout = np.random.default_rng(1).standard_normal(np.shape(out)).astype(np.float32)
            grads = spec.backward(be, be.asarray(ref.dout), cache)
            ref.grads = {name: be.to_numpy(g) for name, g in zip(spec.inputs, grads)}
    elif case.kind == "sgd":
        rng = np.random.default_rng(0)
        ref.arrays = {"params": [], "grads": [], "velocity": []}
        for shape in paper_param_shapes():
            for key in ref.arrays:
                ref.arrays[key].append(rng.standard_normal(shape, dtype=np.float32))
        be = backends.get("numpy")
        params = [p.copy() for p in ref.arrays["params"]]
        vel = [v.copy() for v in ref.arrays["velocity"]]
        for p, g, v in zip(params, ref.arrays["grads"], vel):
            be.sgd_update(p, g, v, LR, MOMENTUM, WEIGHT_DECAY)
        ref.out = {"params": params, "velocity": vel}
    return ref


def verify_our_step(backend: str, ref: Reference, what: str) -> float:
    """bench.steps.training_step of a fresh paper_net(seed=0) on `backend` (dropout on, SGD
    momentum), verified layer by layer against the exact result of its precision mode
    (tinycnn.verify.verify_step); the largest |error| / bound (< 1), or ValidationError."""
    report = verify_step(backend, lambda be: paper_net(hidden=HIDDEN, in_size=IN_SIZE, seed=0, backend=be),
                         ref.arrays["x"], ref.arrays["labels"], train=True,
                         sgd={"lr": LR, "momentum": MOMENTUM, "weight_decay": 0.0}, end_to_end=False)
    if not report.ok:
        raise ValidationError(f"{what}: " + "\n".join(c.line() for c in report.failures())
                              + ("" if report.well_posed else " (too many fragile windows)"))
    return max(report.worst().values())


def _check(what: str, err: float, tol: float) -> float:
    if not err <= tol:  # also catches NaN
        raise ValidationError(f"{what}: rel. error {err:.2e} > {tol:g} against the NumPy reference")
    return err


def _worst(pairs, what: str, tol: float) -> float:
    return max(_check(f"{what}[{i}]", rel_error(a, b), tol) for i, (a, b) in enumerate(pairs))


# -------------------------------------------------------------- the GPU timers
class CupyEventTimer:
    """A pytest-benchmark timer that reads CUDA events: each call records an event on
    the current stream, waits for it, and returns the device time elapsed since the
    first call (accumulated between consecutive events, so the float32 milliseconds
    CUDA returns stay precise). The difference of two calls is the device time of the
    work launched between them."""

    def __init__(self):
        self._last, self._total = None, 0.0

    def _event(self):
        import cupy

        ev = cupy.cuda.Event()
        ev.record()
        ev.synchronize()
        return ev, lambda a, b: cupy.cuda.get_elapsed_time(a, b)

    def __call__(self) -> float:
        ev, elapsed_ms = self._event()
        if self._last is not None:
            self._total += elapsed_ms(self._last, ev) / 1e3
        self._last = ev
        return self._total

    def __repr__(self) -> str:
        return type(self).__name__


class TorchEventTimer(CupyEventTimer):
    """The same with torch.cuda.Event."""

    def _event(self):
        import torch

        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        ev.synchronize()
        return ev, lambda a, b: a.elapsed_time(b)


# ------------------------------------------------------------ implementations
def gpu_properties() -> dict | None:
    """The GPU's name, arch and the peaks derived from its own properties, or None.

    FP32 peak = SMs x FP32 lanes per SM x 2 (an FMA) x SM clock; bandwidth =
    2 (DDR) x memory clock x bus width / 8. FP32 lanes per SM by compute capability
    (NVIDIA's architecture whitepapers): 64 on sm_60, sm_70, sm_75 and sm_80 (A100);
    128 on sm_50-53, sm_61, sm_86-89, sm_90 (H100) and later.
    """
    try:
        import cupy

        dev = cupy.cuda.runtime.getDevice()
        props = cupy.cuda.runtime.getDeviceProperties(dev)
    except Exception:
        return None

    def attr(key, attr_id):  # CUDA 13 drops some fields from cudaDeviceProp
        if props.get(key):
            return props[key]
        return cupy.cuda.runtime.deviceGetAttribute(attr_id, dev)

    sms = props["multiProcessorCount"]
    clock_khz = attr("clockRate", 13)
    mem_khz, bus_bits = attr("memoryClockRate", 36), attr("memoryBusWidth", 37)
    major, minor = props["major"], props["minor"]
    lanes = 64 if (major, minor) in ((6, 0), (7, 0), (7, 2), (7, 5), (8, 0)) else 128
    name = props["name"]
    name = name.decode() if isinstance(name, bytes) else str(name)
    return {"name": name, "sm": f"sm_{major}{minor}", "sms": sms, "clock_ghz": clock_khz / 1e6,
            "fp32_lanes_per_sm": lanes, "fp32_peak_flops": sms * lanes * 2 * clock_khz * 1e3,
            "mem_clock_ghz": mem_khz / 1e6, "bus_width_bits": bus_bits,
            "bandwidth_bytes": 2 * mem_khz * 1e3 * bus_bits / 8, "l2_bytes": props.get("l2CacheSize") or None}


def l2_bytes() -> int:
    props = gpu_properties()
    if props and props["l2_bytes"]:
        return props["l2_bytes"]
    try:
        import torch

        return torch.cuda.get_device_properties(0).L2_cache_size
    except Exception:
        return DEFAULT_L2_BYTES


def rotation_copies(nbytes: float) -> int:
    """Input copies to cycle through on a GPU so that consecutive calls read cold data:
    together more than twice the L2 cache (at least 2, at most MAX_COPIES)."""
    if nbytes <= 0:
        return 1
    return int(min(MAX_COPIES, max(2, math.ceil(2 * l2_bytes() / nbytes) + 1)))


class Impl:
    """How one implementation validates and runs a case (see the module docstring)."""

    name = ""
    gpu = False

    def unavailable(self) -> str | None:
        """None if it runs here, else why not."""
        raise NotImplementedError

    def timer(self):
        """A pytest-benchmark timer for this implementation (None: the host clock)."""
        return None

    def synchronize(self) -> None:
        pass

    def validate(self, ref: Reference) -> float:
        raise NotImplementedError

    def runner(self, ref: Reference, copies: int) -> Callable[[], object]:
        raise NotImplementedError

    def time_calls(self, fn, repeats: int, warmup: int = 1) -> list[float]:
        """Seconds per call: the host clock on the CPU (synchronous work)."""
        for _ in range(warmup):
            fn()
        self.synchronize()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            self.synchronize()
            times.append(time.perf_counter() - t0)
        return times


class Ours(Impl):
    """A tinycnn backend: numpy (the reference itself), numba, cuda."""

    def __init__(self, backend: str):
        self.name = self.backend_name = backend
        self.gpu = backend == "cuda"

    def unavailable(self):
        try:
            backends.get(self.backend_name)
        except (backends.BackendUnavailable, ImportError) as e:
            return f"backend {self.backend_name!r} unavailable: {e}"
        return None

    @property
    def be(self):
        return backends.get(self.backend_name)

    def timer(self):
        return CupyEventTimer() if self.gpu else None

    def synchronize(self):
        self.be.synchronize()

    def validate(self, ref: Reference) -> float:
        """Worst relative error against the reference. The numpy entries are the float32
        reference itself, so they are held to its float64 twin (numpy64) instead."""
        case = ref.case
        subject = "numpy64" if self.backend_name == "numpy" and case.kind != "step" else self.backend_name
        if case.kind == "op":
            out, grads = run_op(OPS[case.op], subject, ref.arrays, dout=ref.dout, **case.kwargs)
            worst = _check(f"{case.name} on {self.name}: output", rel_error(out, ref.out), FWD_TOL)
            for name, g in ref.grads.items():
                worst = max(worst, _check(f"{case.name} on {self.name}: d{name}", rel_error(grads[name], g),
                                          GRAD_TOL))
            return worst
        if case.kind == "sgd":
            be = backends.get(subject)  # copies: asarray does not copy on the CPU backends, and the update is in place
            params = [be.asarray(p.copy()) for p in ref.arrays["params"]]
            vel = [be.asarray(v.copy()) for v in ref.arrays["velocity"]]
            for p, g, v in zip(params, ref.arrays["grads"], vel):
                be.sgd_update(p, be.asarray(g), v, LR, MOMENTUM, WEIGHT_DECAY)
            what = f"{case.name} on {self.name}"
            return max(_worst(zip(map(be.to_numpy, params), ref.out["params"]), what + ": param", FWD_TOL),
                       _worst(zip(map(be.to_numpy, vel), ref.out["velocity"]), what + ": velocity", FWD_TOL))
        return verify_our_step(self.backend_name, ref, f"{case.name} on {self.name}")

    def runner(self, ref: Reference, copies: int = 1):
        be, case = self.be, ref.case
        if case.kind == "op":
            spec = OPS[case.op]
            sets = [to_backend(be, ref.arrays) for _ in range(copies)]
            if case.direction == "forward":
                calls = [lambda a=a: spec.forward(be, a, **case.kwargs) for a in sets]
            else:
                douts = [be.asarray(ref.dout) for _ in range(copies)]
                caches = [spec.forward(be, a, **case.kwargs)[1] for a in sets]
                calls = [lambda d=d, c=c: spec.backward(be, d, c) for d, c in zip(douts, caches)]
        elif case.kind == "sgd":
            sets = [[(be.asarray(p.copy()), be.asarray(g), be.asarray(v.copy()))
                     for p, g, v in zip(ref.arrays["params"], ref.arrays["grads"], ref.arrays["velocity"])]
                    for _ in range(copies)]

            def update(params):
                for p, g, v in params:
                    be.sgd_update(p, g, v, LR, MOMENTUM, WEIGHT_DECAY)

            calls = [lambda s=s: update(s) for s in sets]
        else:  # the step moves GBs per call: nothing to rotate
            net = paper_net(hidden=HIDDEN, in_size=IN_SIZE, seed=0, backend=self.backend_name)
            calls = [training_step(net, ref.arrays["x"], ref.arrays["labels"])]
        return _rotating(calls)

    def time_calls(self, fn, repeats: int, warmup: int = 3) -> list[float]:
        if self.gpu:
            import cupy

            return time_with_events(fn, repeats, warmup, cupy.cuda.Event, cupy.cuda.get_elapsed_time,
                                     self.synchronize)
        return super().time_calls(fn, repeats, warmup=1)


def _rotating(calls: list) -> Callable[[], object]:
    """One function that runs calls[0], calls[1], ... in turn."""
    if len(calls) == 1:
        return calls[0]
    state = {"i": 0}

    def fn():
        i = state["i"]
        state["i"] = (i + 1) % len(calls)
        return calls[i]()

    return fn


def time_with_events(fn, repeats, warmup, make_event, elapsed_ms, synchronize) -> list[float]:
    """Device seconds per call from events around `inner` calls, `inner` chosen so a
    sample lasts about a millisecond (launch gaps of tiny ops amortised)."""
    for _ in range(warmup):
        fn()
    synchronize()
    start, stop = make_event(), make_event()
    start.record()
    fn()
    stop.record()
    stop.synchronize()
    single = max(elapsed_ms(start, stop) / 1e3, 1e-7)
    inner = int(min(100, max(1, math.ceil(1e-3 / single))))
    times = []
    for _ in range(repeats):
        start.record()
        for _ in range(inner):
            fn()
        stop.record()
        stop.synchronize()
        times.append(elapsed_ms(start, stop) / 1e3 / inner)
    return times


# ------------------------------------------------------------------- PyTorch
def _torch_op(op: str, t: dict, kw: dict):
    import torch
    import torch.nn.functional as F

    if op == "conv2d":
        return F.conv2d(t["x"], t["w"], t["b"], kw.get("stride", 1), kw.get("pad", 0))
    if op == "relu":
        return F.relu(t["x"])
    if op == "maxpool2d":
        return F.max_pool2d(t["x"], kw["size"], kw["stride"], ceil_mode=True)
    if op == "dense":  # tinycnn's w is (in, out): y = x w + b
        return torch.addmm(t["b"], t["x"], t["w"])
    if op == "dropout":
        return F.dropout(t["x"], kw["p"], training=True)
    if op == "softmax_cross_entropy":
        return F.cross_entropy(t["logits"], t["labels"])
    raise KeyError(op)


class Torch(Impl):
    """PyTorch on the CPU, or on the GPU with cuDNN FP32 (TF32 off, cuDNN autotuned:
    its best FP32 algorithm) or with PyTorch's defaults (TF32 convolutions, no autotuning)."""

    def __init__(self, name: str, device: str, strict_fp32: bool = True):
        self.name, self.device, self.strict_fp32 = name, device, strict_fp32
        self.gpu = device == "cuda"

    def unavailable(self):
        if not torch_available():
            return "torch is not installed"
        import torch

        if self.gpu and not torch.cuda.is_available():
            return "torch sees no CUDA GPU"
        return None

    def timer(self):
        return TorchEventTimer() if self.gpu else None

    def synchronize(self):
        if self.gpu:
            import torch

            torch.cuda.synchronize()

    def _flags(self):
        """Set the global TF32/autotuning flags this entry stands for (set before each
        call: the GPU entries of the two modes alternate in one process)."""
        if self.gpu:
            import torch

            torch.backends.cudnn.allow_tf32 = not self.strict_fp32
            torch.backends.cuda.matmul.allow_tf32 = False  # PyTorch's default too
            torch.backends.cudnn.benchmark = self.strict_fp32

    def _tensors(self, arrays: dict, grad: bool = False) -> dict:
        import torch

        out = {}
        for k, v in arrays.items():
            t = torch.from_numpy(np.asarray(v, dtype=np.int64) if k == "labels" else v).to(self.device)
            out[k] = t.requires_grad_(grad) if k != "labels" else t
        return out

    @property
    def tol(self):
        return (FWD_TOL, GRAD_TOL) if self.strict_fp32 else (TF32_TOL, TF32_TOL)

    def validate(self, ref: Reference) -> float:
        import torch

        self._flags()
        case, what = ref.case, f"{ref.case.name} on {self.name}"
        fwd_tol, grad_tol = self.tol
        if case.kind == "op":
            spec = OPS[case.op]
            t = self._tensors(ref.arrays, grad=ref.dout is not None)
            out = _torch_op(case.op, t, case.kwargs)
            if case.op == "dropout":  # another generator: check the semantics, not the mask
                return self._check_dropout(ref, t, out)
            worst = _check(what + ": output", rel_error(out.detach().cpu().numpy(), ref.out), fwd_tol)
            if ref.dout is not None:
                names = list(spec.inputs)
                g = torch.autograd.grad(out, [t[k] for k in names], torch.from_numpy(ref.dout).to(self.device))
                for name, gi in zip(names, g):
                    worst = max(worst, _check(f"{what}: d{name}", rel_error(gi.cpu().numpy(), ref.grads[name]),
                                              grad_tol))
            return worst
        if case.kind == "sgd":
            params, opt = self._sgd_state(ref)
            opt.step()
            return _worst(zip((p.detach().cpu().numpy() for p in params), ref.out["params"]), what + ": param",
                          fwd_tol)
        return self._validate_step(ref, what, max(grad_tol, STEP_TOL))

    def _check_dropout(self, ref: Reference, t: dict, out) -> float:
        import torch

        x, y = ref.arrays["x"], out.detach().cpu().numpy()
        keep = y != 0
        scale = np.float32(1 / (1 - DROPOUT_P))
        err = rel_error(y[keep], x[keep] * scale)
        _check(f"{ref.case.name} on {self.name}: kept values", err, FWD_TOL)
        frac, n = keep.mean(), keep.size
        if abs(frac - (1 - DROPOUT_P)) > 6 * math.sqrt(DROPOUT_P * (1 - DROPOUT_P) / n):
            raise ValidationError(f"dropout on {self.name}: kept {frac:.3f} of {n}, expected {1 - DROPOUT_P}")
        if ref.dout is not None:
            (g,) = torch.autograd.grad(out, [t["x"]], torch.from_numpy(ref.dout).to(self.device))
            err = max(err, _check(f"{ref.case.name} on {self.name}: dx", rel_error(
                g.cpu().numpy(), ref.dout * keep * scale), GRAD_TOL))
        return err

    def _sgd_state(self, ref: Reference):
        import torch

        params = [torch.from_numpy(p.copy()).to(self.device).requires_grad_() for p in ref.arrays["params"]]
        for p, g in zip(params, ref.arrays["grads"]):
            p.grad = torch.from_numpy(g).to(self.device)
        opt = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
        for p, v in zip(params, ref.arrays["velocity"]):
            opt.state[p]["momentum_buffer"] = torch.from_numpy(v.copy()).to(self.device)
        return params, opt

    def _validate_step(self, ref: Reference, what: str, tol: float) -> float:
        """Torch's dropout draws other masks, so the step is checked with dropout off:
        loss and every gradient of one forward + backward in eval mode, against ours."""
        import torch

        if "eval" not in ref.extra:
            net = paper_net(hidden=HIDDEN, in_size=IN_SIZE, seed=0, backend="numpy64")
            logits = net.forward(net.backend.asarray(ref.arrays["x"]), train=False)
            loss, dlogits = net.backend.softmax_cross_entropy(logits, ref.arrays["labels"])
            net.backward(dlogits)
            ref.extra["eval"] = (float(loss), [p.grad.copy() for p in net.parameters()])
        loss_ref, grads_ref = ref.extra["eval"]
        tnet = torch_mirror(paper_net(hidden=HIDDEN, in_size=IN_SIZE, seed=0), self.device).eval()
        t = self._tensors(ref.arrays)
        loss = torch.nn.functional.cross_entropy(tnet(t["x"]), t["labels"])
        loss.backward()
        grads = [(p.grad.T if p.grad.ndim == 2 else p.grad).cpu().numpy() for p in tnet.parameters()]
        loss_tol = GRAD_TOL if self.strict_fp32 else TF32_TOL
        return max(_check(what + ": loss (dropout off)", rel_error(loss.item(), loss_ref), loss_tol),
                   _worst(zip(grads, grads_ref), what + ": grad (dropout off)", tol))

    def runner(self, ref: Reference, copies: int = 1):
        import torch

        case = ref.case
        if case.kind == "op":
            sets = [self._tensors(ref.arrays, grad=case.direction == "backward" or case.op == "softmax_cross_entropy")
                    for _ in range(copies)]
            if case.op == "softmax_cross_entropy":  # loss and its gradient, as ours
                def call(t):
                    return torch.autograd.grad(_torch_op(case.op, t, case.kwargs), [t["logits"]])
            elif case.direction == "forward":
                def call(t):
                    with torch.no_grad():
                        return _torch_op(case.op, t, case.kwargs)
            else:  # one forward, its graph kept; the timed call is the whole backward
                names = list(OPS[case.op].inputs)
                for t in sets:
                    t["__out"] = _torch_op(case.op, t, case.kwargs)
                    t["__dout"] = torch.from_numpy(ref.dout).to(self.device)

                def call(t):
                    return torch.autograd.grad(t["__out"], [t[k] for k in names], t["__dout"], retain_graph=True)
            calls = [lambda t=t: call(t) for t in sets]
        elif case.kind == "sgd":
            states = [self._sgd_state(ref)[1] for _ in range(copies)]
            calls = [opt.step for opt in states]
        else:
            tnet = torch_mirror(paper_net(hidden=HIDDEN, in_size=IN_SIZE, seed=0), self.device).train()
            t = self._tensors(ref.arrays)
            opt = torch.optim.SGD(tnet.parameters(), lr=LR, momentum=MOMENTUM)

            def step():  # as bench/steps.torch_training_step, on device tensors
                opt.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(tnet(t["x"]), t["labels"])
                loss.backward()
                opt.step()
                return loss

            calls = [step]
        inner = _rotating(calls)

        def fn():
            self._flags()
            return inner()

        return fn

    def time_calls(self, fn, repeats: int, warmup: int = 3) -> list[float]:
        if self.gpu:
            import torch

            return time_with_events(fn, repeats, warmup, lambda: torch.cuda.Event(enable_timing=True),
                                     lambda a, b: a.elapsed_time(b), self.synchronize)
        return super().time_calls(fn, repeats, warmup=1)


IMPLS = {impl.name: impl for impl in (
    Ours("numpy"), Ours("numba"), Ours("cuda"),
    Torch("torch-cpu", "cpu"), Torch("torch-cuda", "cuda", strict_fp32=True),
    Torch("torch-cuda-default", "cuda", strict_fp32=False))}
CPU_IMPLS = ("numpy", "numba", "torch-cpu")
GPU_IMPLS = ("cuda", "torch-cuda", "torch-cuda-default")


def input_bytes(ref: Reference) -> float:
    """Bytes of one set of a case's inputs (what a rotation copy costs)."""
    total = 0.0
    for v in ref.arrays.values():
        for a in (v if isinstance(v, list) else [v]):
            total += np.asarray(a).nbytes
    if ref.dout is not None:
        total += ref.dout.nbytes
    return total


def prepare(case: Case, batch: int, impl: Impl, rotate: bool = True):
    """Validate `impl` on `case` at `batch` against the NumPy reference (raises
    ValidationError), then return (fn, worst relative error): fn runs the op once,
    cycling through input copies on a GPU when `rotate`."""
    ref = reference(case, batch)
    worst = impl.validate(ref)
    copies = rotation_copies(input_bytes(ref)) if (impl.gpu and rotate and case.kind != "step") else 1
    return impl.runner(ref, copies), worst


def summarize(times: list[float]) -> dict:
    """Median, quartiles and extremes of per-call seconds."""
    q1, med, q3 = np.percentile(times, [25, 50, 75]) if len(times) > 1 else (times[0],) * 3
    return {"median": float(med), "q1": float(q1), "q3": float(q3), "min": min(times), "max": max(times),
            "n": len(times), "samples": list(times), "mean": statistics.fmean(times)}
