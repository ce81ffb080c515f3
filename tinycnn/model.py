"""Sequential models, the paper's network and its summary table.

A Sequential holds its layers, runs them forward and backward (every Conv2D + ReLU +
MaxPool2D(2, 2) as one fused ConvBlock: its run plan), describes itself (shapes, the
architecture record, a Table I-style summary, a memory estimate) and saves or loads
itself through tinycnn.checkpoint, whose format and checks it leaves to that module.
"""

from __future__ import annotations

import numpy as np

from . import backends
from .checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, CheckpointError, architecture_shapes,
                         check_architecture, check_parameters, layer_state, read_checkpoint, write_checkpoint)
from .layers import Conv2D, ConvBlock, Dense, Dropout, Flatten, Layer, MaxPool2D, ReLU, layer_from_config


class Sequential:
    """Layers applied in order. ``input_shape`` is one sample's (C, H, W)."""

    def __init__(self, layers: list[Layer], input_shape: tuple, backend="numpy"):
        self.layers = list(layers)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.backend = backends.get("numpy")
        self.shapes()  # fail now on layers that do not fit together
        self._plan = self.run_plan()
        self.to(backend)

    # ------------------------------------------------------------- running
    def forward(self, x, train: bool = False):
        """x: (N, *input_shape) -> logits (N, K)."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"model expects inputs of shape (N, {', '.join(map(str, self.input_shape))}), "
                             f"got {tuple(x.shape)}")
        self._plan = self.run_plan()
        for block in self._plan:
            x = block.forward(x, train=train)
        return x

    def backward(self, dout, input_grad: bool = False):
        """dout: gradient of the loss w.r.t. the logits. Fills every parameter's .grad.
        Returns the gradient w.r.t. the input (N, *input_shape) when input_grad is True
        (gradient checks, saliency maps); else None, and the first layer skips
        computing it (for the paper's first conv, a third of its backward pass)."""
        for i in reversed(range(len(self._plan))):
            dout = self._plan[i].backward(dout, need_dx=input_grad or i > 0)
        return dout

    def run_plan(self) -> list:
        """What forward runs, in order: the layers, with every Conv2D + ReLU +
        MaxPool2D(2, 2) run as one ConvBlock (the backend's fused block)."""
        plan, i = [], 0
        while i < len(self.layers):
            if ConvBlock.fits(self.layers[i:i + 3]):
                plan.append(ConvBlock(*self.layers[i:i + 3]))
                i += 3
            else:
                plan.append(self.layers[i])
                i += 1
        return plan

    __call__ = forward

    def parameters(self):
        for layer in self.layers:
            yield from layer.params.values()

    def named_parameters(self):
        for i, layer in enumerate(self.layers):
            for name, p in layer.params.items():
                yield f"layer{i}.{name}", p

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    def init_params(self, seed: int = 0) -> "Sequential":
        """Initialise every layer from one seeded generator: He-normal weights (each
        Dense's `gain` sets the scale; the logits layer uses gain 1, LeCun), zero biases."""
        rng = np.random.default_rng(seed)
        for layer in self.layers:
            layer.init_params(rng)
        return self

    def to(self, backend) -> "Sequential":
        backend = backends.get(backend)
        for layer in self.layers:
            layer.to(backend)
        self.backend = backend
        return self

    # ------------------------------------------------------------- describing
    def shapes(self) -> list[tuple]:
        """One sample's output shape after each layer; ValueError naming the first
        layer that does not fit its input."""
        out, shape = [], self.input_shape
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.output_shape(shape)
            except ValueError as e:
                raise ValueError(f"layer {i} {layer.name}: {e}") from e
            out.append(shape)
        return out

    def architecture(self) -> dict:
        return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                "input_shape": list(self.input_shape), "layers": [layer.config() for layer in self.layers]}

    @classmethod
    def from_architecture(cls, arch: dict, backend="numpy") -> "Sequential":
        layers = [layer_from_config(cfg) for cfg in arch["layers"]]
        return cls(layers, tuple(arch["input_shape"]), backend=backend)

    def summary(self, batch_size: int | None = None, compact: bool = False) -> str:
        """The network as a table in the manner of the paper's Table I:
        layer, output shape (H x W x C), parameters; then totals and memory.
        compact: one row per block, the parameter-free ReLU, max-pool and dropout
        layers joined to the layer before them (the output is the block's)."""
        rows = [["input", _fmt_shape(self.input_shape), 0]]
        for layer, shape in zip(self.layers, self.shapes()):
            n_params = sum(p.size for p in layer.params.values())
            if compact and isinstance(layer, (ReLU, MaxPool2D, Dropout)) and len(rows) > 1:
                rows[-1][0] += " + " + _layer_label(layer)
                rows[-1][1] = _fmt_shape(shape)
            else:
                rows.append([_layer_label(layer), _fmt_shape(shape), n_params])
        rows = [(a, b, f"{c:,}" if i else "") for i, (a, b, c) in enumerate(rows)]
        w0, w1 = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
        w2 = max(max(len(r[2]) for r in rows), len("parameters"))
        lines = [f"{'layer':<{w0}}  {'output':<{w1}}  {'parameters':>{w2}}", "-" * (w0 + w1 + w2 + 4)]
        lines += [f"{a:<{w0}}  {b:<{w1}}  {c:>{w2}}" for a, b, c in rows]
        n = self.num_parameters()
        lines.append("-" * (w0 + w1 + w2 + 4))
        lines.append(f"total parameters: {n:,} ({_fmt_bytes(4 * n)} as float32)")
        if batch_size:
            lines.append(f"training memory at batch {batch_size}: ~{_fmt_bytes(self.memory_estimate(batch_size))}")
        return "\n".join(lines)

    def memory_estimate(self, batch_size: int) -> int:
        """Rough float32 bytes for one training step: parameters, gradients and two
        optimizer buffers (4x the parameters), plus every activation kept for the
        backward pass and its gradient (2x the activations)."""
        act = sum(int(np.prod(s)) for s in self.shapes()) * batch_size
        return 4 * (4 * self.num_parameters() + 2 * act)

    # ------------------------------------------------------------- checkpoints
    def save(self, path, extra: dict | None = None, meta: dict | None = None) -> None:
        """Write parameters, architecture and layer state to one .npz, atomically, so a
        crash mid-write never destroys the previous checkpoint (tinycnn.checkpoint).
        extra: arrays of the caller's (optimizer state, ...); meta: a JSON-able record."""
        params = {name: self.backend.to_numpy(p.value) for name, p in self.named_parameters()}
        state = {str(i): layer.state() for i, layer in enumerate(self.layers) if layer.state()}
        write_checkpoint(path, self.architecture(), params, state, meta, extra)

    def load(self, path) -> dict:
        """Load a checkpoint into this model. Fails, naming the first layer that
        differs, if the checkpoint holds another architecture. Returns
        {"meta": ..., "extra": {...}} for the caller."""
        ckpt = read_checkpoint(path)
        architecture_shapes(ckpt["arch"], path)  # a malformed record is named before it is compared
        check_architecture(ckpt["arch"], self.architecture(), path)
        expected = {name: p.shape for name, p in self.named_parameters()}
        check_parameters(ckpt["params"], expected, path)  # all of them, before any is replaced
        states = [layer_state(ckpt["state"], i, path) for i in range(len(self.layers))]
        for name, p in self.named_parameters():
            p.value = self.backend.asarray(ckpt["params"][name])
            p.grad = None
        for layer, state in zip(self.layers, states):
            layer.load_state(state)
        return {"meta": ckpt["meta"], "extra": ckpt["extra"]}


def load_model(path, backend="numpy") -> tuple[Sequential, dict]:
    """Rebuild the model a checkpoint describes and load its weights."""
    ckpt = read_checkpoint(path)
    # Checked from the records alone, before any layer allocates: a hand-edited record
    # that claims a huge layer must not get to allocate it.
    declared = architecture_shapes(ckpt["arch"], path)
    check_parameters(ckpt["params"], declared.params, path)
    try:
        net = Sequential.from_architecture(ckpt["arch"], backend=backend)
    except (KeyError, TypeError, ValueError) as e:  # what architecture_shapes does not foresee
        raise CheckpointError(f"{path}: its architecture record cannot be built ({e})") from e
    info = net.load(path)
    return net, info


def paper_net(hidden: int = 1024, in_size: int = 256, in_channels: int = 1, classes: int = 2,
              dropout: float = 0.5, backend="numpy", seed: int = 0) -> Sequential:
    """The paper's network: [conv3x3 valid, ReLU, maxpool 2x2/2 ceil] x 4 with 16, 32,
    64, 128 filters, flatten, FC(hidden), ReLU, dropout, FC(hidden), ReLU, dropout,
    FC(classes). The softmax is applied by the loss.

    For in_size=256 the conv stack goes 254x254x16 -> 127 -> 125x125x32 -> 63 ->
    61x61x64 -> 31 -> 29x29x128 -> 15, and flatten gives 15*15*128 = 28800.
    `hidden` is the FC width (the paper's table, read literally, says 28800).
    """
    layers = paper_conv_stack(in_channels)
    probe = Sequential(layers, (in_channels, in_size, in_size))
    flat = int(np.prod(probe.shapes()[-1]))
    layers += [
        Flatten(),
        Dense(flat, hidden), ReLU(), Dropout(dropout, seed=seed * 2 + 1),
        Dense(hidden, hidden), ReLU(), Dropout(dropout, seed=seed * 2 + 2),
        Dense(hidden, classes, gain=1.0),  # no ReLU after the logits: LeCun, not He
    ]
    net = Sequential(layers, (in_channels, in_size, in_size))
    net.init_params(seed)
    return net.to(backend)


def paper_conv_stack(in_channels: int = 1) -> list[Layer]:
    """The paper's four blocks: [conv 3x3 valid, ReLU, max-pool 2x2/2 ceil] with 16, 32,
    64, 128 filters."""
    layers: list[Layer] = []
    c = in_channels
    for f in (16, 32, 64, 128):
        layers += [Conv2D(c, f, 3), ReLU(), MaxPool2D(2, 2, ceil_mode=True)]
        c = f
    return layers


def paper_net_min_size(in_channels: int = 1) -> int:
    """The smallest in_size whose four conv+pool blocks still have an output (31:
    each valid 3x3 conv takes 2 pixels, each pool halves, rounding up)."""
    layers = paper_conv_stack(in_channels)
    for size in range(1, 1024):
        try:
            Sequential(layers, (in_channels, size, size))
            return size
        except ValueError:
            continue
    raise AssertionError("no input size fits the paper's conv stack")


def _layer_label(layer: Layer) -> str:
    if isinstance(layer, Conv2D):
        return f"conv {layer.kernel_size}x{layer.kernel_size}/{layer.stride}, {layer.out_channels}"
    if isinstance(layer, MaxPool2D):
        return f"maxpool {layer.size}x{layer.size}/{layer.stride}" + (" ceil" if layer.ceil_mode else "")
    if isinstance(layer, Dense):
        return f"fc {layer.out_features}"
    if isinstance(layer, Dropout):
        return f"dropout {layer.p:g}"
    return type(layer).__name__.lower()


def _fmt_shape(shape) -> str:
    if len(shape) == 3:  # (C, H, W) printed as the paper does: H x W x C
        c, h, w = shape
        return f"{h}x{w}x{c}"
    return "x".join(str(s) for s in shape)


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
