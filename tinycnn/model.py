"""Sequential models, the paper's network, the summary table, and checkpoints.

Checkpoint format: one ``.npz`` written without pickle. ``__arch__`` holds the
architecture as a JSON string (input shape + each layer's config), ``__state__``
each layer's non-parameter state (dropout counters), ``layer{i}.{name}`` the
parameters, and ``extra.{key}`` whatever the caller adds (optimizer state, ...).
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile

import numpy as np

from . import backends
from .layers import Conv2D, Dense, Dropout, Flatten, Layer, MaxPool2D, ReLU, layer_from_config

CHECKPOINT_FORMAT = "tinycnn-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is unreadable or does not fit the model."""


class Sequential:
    """Layers applied in order. ``input_shape`` is one sample's (C, H, W)."""

    def __init__(self, layers: list[Layer], input_shape: tuple, backend="numpy"):
        self.layers = list(layers)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.backend = backends.get("numpy")
        self.shapes()  # fail now on layers that do not fit together
        self.to(backend)

    # ------------------------------------------------------------- running
    def forward(self, x, train: bool = False):
        """x: (N, *input_shape) -> logits (N, K)."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"model expects inputs of shape (N, {', '.join(map(str, self.input_shape))}), "
                             f"got {tuple(x.shape)}")
        for layer in self.layers:
            x = layer.forward(x, train=train)
        return x

    def backward(self, dout, input_grad: bool = False):
        """dout: gradient of the loss w.r.t. the logits. Fills every parameter's .grad.
        Returns the gradient w.r.t. the input (N, *input_shape) when input_grad is True
        (gradient checks, saliency maps); else None, and the first layer skips
        computing it (for the paper's first conv, a third of its backward pass)."""
        for i in reversed(range(len(self.layers))):
            dout = self.layers[i].backward(dout, need_dx=input_grad or i > 0)
        return dout

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
        """One sample's output shape after each layer."""
        out, shape = [], self.input_shape
        for layer in self.layers:
            shape = layer.output_shape(shape)
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
        """Write parameters, architecture and layer state to one .npz, atomically
        (a temporary file in the same folder, fsynced, then renamed over `path`),
        so a crash mid-write never destroys the previous checkpoint."""
        arrays = {name: self.backend.to_numpy(p.value) for name, p in self.named_parameters()}
        state = {str(i): layer.state() for i, layer in enumerate(self.layers) if layer.state()}
        arrays["__arch__"] = np.array(json.dumps(self.architecture()))
        arrays["__state__"] = np.array(json.dumps(state))
        arrays["__meta__"] = np.array(json.dumps(meta or {}))
        for key, value in (extra or {}).items():
            arrays[f"extra.{key}"] = np.asarray(value)
        atomic_savez(path, arrays)

    def load(self, path) -> dict:
        """Load a checkpoint into this model. Fails, naming the first layer that
        differs, if the checkpoint holds another architecture. Returns
        {"meta": ..., "extra": {...}} for the caller."""
        ckpt = read_checkpoint(path)
        check_architecture(ckpt["arch"], self.architecture(), path)
        for name, p in self.named_parameters():
            value = ckpt["params"][name]
            if value.shape != p.shape:
                raise CheckpointError(f"{path}: {name} has shape {value.shape}, the model expects {p.shape}")
            p.value = self.backend.asarray(value)
            p.grad = None
        for i, layer in enumerate(self.layers):
            layer.load_state(ckpt["state"].get(str(i), {}))
        return {"meta": ckpt["meta"], "extra": ckpt["extra"]}


def load_model(path, backend="numpy") -> tuple[Sequential, dict]:
    """Rebuild the model a checkpoint describes and load its weights."""
    ckpt = read_checkpoint(path)
    try:
        net = Sequential.from_architecture(ckpt["arch"], backend=backend)
    except (KeyError, TypeError, ValueError) as e:  # unknown layer type, bad arguments, misfit shapes
        raise CheckpointError(f"{path}: its architecture record cannot be built ({e})") from e
    info = net.load(path)
    return net, info


def read_checkpoint(path) -> dict:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):  # before np.load, whose message for other files is about pickles
        raise CheckpointError(f"{path} is not a tinycnn checkpoint (not an .npz archive)")
    try:
        with np.load(path, allow_pickle=False) as z:
            files = {k: z[k] for k in z.files}
    except Exception as e:  # truncated or damaged archive: name the file
        raise CheckpointError(f"{path} is not a readable tinycnn checkpoint ({e})") from e
    if "__arch__" not in files:
        raise CheckpointError(f"{path} is not a tinycnn checkpoint (no architecture record)")
    arch = _json_record(files, "__arch__", path)
    if not isinstance(arch, dict) or arch.get("format") != CHECKPOINT_FORMAT:
        found = arch.get("format") if isinstance(arch, dict) else type(arch).__name__
        raise CheckpointError(f"{path} is not a tinycnn checkpoint (format {found!r})")
    if not isinstance(arch.get("layers"), list) or not isinstance(arch.get("input_shape"), list):
        raise CheckpointError(f"{path}: damaged architecture record (no layer list or input shape)")
    return {
        "arch": arch,
        "state": _json_record(files, "__state__", path),
        "meta": _json_record(files, "__meta__", path),
        "params": {k: v for k, v in files.items() if k.startswith("layer")},
        "extra": {k[len("extra."):]: v for k, v in files.items() if k.startswith("extra.")},
    }


def _json_record(files: dict, key: str, path):
    try:
        return json.loads(str(files.get(key, "{}")))
    except ValueError as e:
        raise CheckpointError(f"{path}: damaged {key} record ({e})") from e


def check_architecture(found: dict, expected: dict, path="checkpoint") -> None:
    """Raise CheckpointError naming the first layer where two architectures differ."""
    if list(found["input_shape"]) != list(expected["input_shape"]):
        raise CheckpointError(f"{path}: checkpoint was trained on inputs {tuple(found['input_shape'])}, "
                              f"the model takes {tuple(expected['input_shape'])}")
    fl, el = found["layers"], expected["layers"]
    for i, (f, e) in enumerate(zip(fl, el)):
        if f != e:
            raise CheckpointError(f"{path}: layer {i} differs: checkpoint has {_cfg_str(f)}, "
                                  f"the model has {_cfg_str(e)}")
    if len(fl) != len(el):
        raise CheckpointError(f"{path}: checkpoint has {len(fl)} layers, the model has {len(el)}")


def atomic_savez(path, arrays: dict) -> None:
    """np.savez to `path` through a temporary file and an atomic rename."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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


def _cfg_str(cfg: dict) -> str:
    args = ", ".join(f"{k}={v}" for k, v in cfg.items() if k != "type")
    return f"{cfg.get('type')}({args})"
