"""Sequential models, the paper's network, the summary table, and checkpoints.

Checkpoint format: one ``.npz`` written without pickle. ``__arch__`` holds the
architecture as a JSON string (input shape + each layer's config), ``__state__``
each layer's non-parameter state (dropout counters), ``layer{i}.{name}`` the
parameters, and ``extra.{key}`` whatever the caller adds (optimizer state, ...).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
from dataclasses import dataclass

import numpy as np

from . import backends
from .layers import Conv2D, ConvBlock, Dense, Dropout, Flatten, Layer, MaxPool2D, ReLU, layer_from_config
from .shapes import conv_out_size, pool_out_size

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
        self._steps = self.steps()
        self.to(backend)

    # ------------------------------------------------------------- running
    def forward(self, x, train: bool = False):
        """x: (N, *input_shape) -> logits (N, K)."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"model expects inputs of shape (N, {', '.join(map(str, self.input_shape))}), "
                             f"got {tuple(x.shape)}")
        self._steps = self.steps()
        for step in self._steps:
            x = step.forward(x, train=train)
        return x

    def backward(self, dout, input_grad: bool = False):
        """dout: gradient of the loss w.r.t. the logits. Fills every parameter's .grad.
        Returns the gradient w.r.t. the input (N, *input_shape) when input_grad is True
        (gradient checks, saliency maps); else None, and the first layer skips
        computing it (for the paper's first conv, a third of its backward pass)."""
        for i in reversed(range(len(self._steps))):
            dout = self._steps[i].backward(dout, need_dx=input_grad or i > 0)
        return dout

    def steps(self) -> list:
        """What forward runs, in order: the layers, with every Conv2D + ReLU +
        MaxPool2D(2, 2) run as one ConvBlock (the backend's fused block)."""
        steps, i = [], 0
        while i < len(self.layers):
            if ConvBlock.fits(self.layers[i:i + 3]):
                steps.append(ConvBlock(*self.layers[i:i + 3]))
                i += 3
            else:
                steps.append(self.layers[i])
                i += 1
        return steps

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
        architecture_shapes(ckpt["arch"], path)  # a malformed record is named before it is compared
        check_architecture(ckpt["arch"], self.architecture(), path)
        expected = {name: p.shape for name, p in self.named_parameters()}
        check_parameters(ckpt["params"], expected, path)  # all of them, before any is replaced
        states = [_layer_state(ckpt["state"], i, path) for i in range(len(self.layers))]
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
    _check_arch_header(arch, path)
    return {
        "arch": arch,
        "state": _json_object(files, "__state__", path),
        "meta": _json_object(files, "__meta__", path),
        "params": {k: v for k, v in files.items() if k.startswith("layer")},
        "extra": {k[len("extra."):]: v for k, v in files.items() if k.startswith("extra.")},
    }


def read_checkpoint_records(path) -> dict:
    """{"arch": ..., "meta": ...} of a checkpoint without reading its arrays: cheap, for
    checks made before a long job starts (e.g. that --resume has something that fits)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not a tinycnn checkpoint (not an .npz archive)")
    try:
        with np.load(path, allow_pickle=False) as z:  # an NpzFile reads a member only when asked
            files = {k: z[k] for k in ("__arch__", "__meta__") if k in z.files}
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable tinycnn checkpoint ({e})") from e
    if "__arch__" not in files:
        raise CheckpointError(f"{path} is not a tinycnn checkpoint (no architecture record)")
    arch = _json_record(files, "__arch__", path)
    if not isinstance(arch, dict) or arch.get("format") != CHECKPOINT_FORMAT:
        found = arch.get("format") if isinstance(arch, dict) else type(arch).__name__
        raise CheckpointError(f"{path} is not a tinycnn checkpoint (format {found!r})")
    _check_arch_header(arch, path)
    return {"arch": arch, "meta": _json_object(files, "__meta__", path)}


def _check_arch_header(arch: dict, path) -> None:
    if not isinstance(arch.get("layers"), list) or not isinstance(arch.get("input_shape"), list):
        raise CheckpointError(f"{path}: damaged architecture record (no layer list or input shape)")
    version = arch.get("version")
    if not _is_int(version) or version < 1:
        raise CheckpointError(f"{path}: architecture record field 'version' should be a positive whole number, "
                              f"found {_short(version)}")
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version} is newer than this tinycnn reads "
                              f"({CHECKPOINT_VERSION}): update tinycnn")


def _json_record(files: dict, key: str, path):
    try:
        return json.loads(str(files.get(key, "{}")))
    except ValueError as e:
        raise CheckpointError(f"{path}: damaged {key} record ({e})") from e


def _json_object(files: dict, key: str, path) -> dict:
    """A record that must be a JSON object (a dict): hand edits that leave a list or a
    number there are named here, not met later as an AttributeError."""
    record = _json_record(files, key, path)
    if not isinstance(record, dict):
        raise CheckpointError(f"{path}: damaged {key} record (a JSON object expected, found {_json_type(record)})")
    return record


# ------------------------------------------------------------- validating records
# A checkpoint is input like any other: the fields below are checked by type and
# range, so a hand-edited or foreign file fails with a CheckpointError that names the
# field, never an IndexError, a TypeError or a huge allocation.

def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_type(value) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null",
             int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


def _short(value, limit: int = 60) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list, str, bool, type(None))) else repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


_POSITIVE = ("a positive whole number", lambda v: _is_int(v) and v >= 1)
_NON_NEGATIVE = ("a whole number >= 0", lambda v: _is_int(v) and v >= 0)
_BOOL = ("true or false", lambda v: isinstance(v, bool))
_PROBABILITY = ("a number in [0, 1)", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                and math.isfinite(v) and 0 <= v < 1)

# Every field each layer's config() writes, with what it must hold.
LAYER_FIELDS = {
    "Conv2D": {"in_channels": _POSITIVE, "out_channels": _POSITIVE, "kernel_size": _POSITIVE,
               "stride": _POSITIVE, "pad": _NON_NEGATIVE},
    "MaxPool2D": {"size": _POSITIVE, "stride": _POSITIVE, "ceil_mode": _BOOL},
    "Dense": {"in_features": _POSITIVE, "out_features": _POSITIVE},
    "Dropout": {"p": _PROBABILITY},
    "ReLU": {},
    "Flatten": {},
}


@dataclass(frozen=True)
class ArchitectureShapes:
    """What an architecture record declares: each parameter's shape by checkpoint name
    (layer{i}.w, ...) and one sample's output shape after each layer."""

    params: dict
    outputs: list

    def num_parameters(self) -> int:
        return sum(math.prod(s) for s in self.params.values())

    def activations(self) -> int:
        """Floats of every layer's output for one sample (what memory_estimate counts)."""
        return sum(math.prod(s) for s in self.outputs)


def architecture_shapes(arch: dict, path="architecture") -> ArchitectureShapes:
    """Validate an architecture record field by field and work out its parameter and
    output shapes by arithmetic alone (nothing is allocated, so a record that claims a
    layer of 10^16 weights costs nothing). CheckpointError names the layer and field."""
    where = f"{path}: its architecture record cannot be built"
    shape = arch.get("input_shape")
    if not isinstance(shape, list) or not shape or not all(_is_int(s) and s >= 1 for s in shape):
        raise CheckpointError(f"{where} (field 'input_shape' should be a list of positive whole numbers, "
                              f"found {_short(shape)})")
    shape = tuple(shape)
    params, outputs = {}, []
    for i, cfg in enumerate(arch["layers"]):
        kind = _check_layer_config(cfg, i, where)
        try:
            shape, layer_params = _layer_shapes(kind, cfg, shape)
        except ValueError as e:
            raise CheckpointError(f"{where} (layer {i} {kind}: {e})") from e
        params.update({f"layer{i}.{name}": s for name, s in layer_params.items()})
        outputs.append(shape)
    return ArchitectureShapes(params, outputs)


def _check_layer_config(cfg, i: int, where: str) -> str:
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{where} (layer {i}: an object expected, found {_json_type(cfg)})")
    kind = cfg.get("type")
    if kind not in LAYER_FIELDS:
        raise CheckpointError(f"{where} (layer {i}: unknown layer type {_short(kind)}; "
                              f"known: {', '.join(LAYER_FIELDS)})")
    fields = LAYER_FIELDS[kind]
    unknown = sorted(set(cfg) - set(fields) - {"type"})
    if unknown:
        raise CheckpointError(f"{where} (layer {i} {kind}: unknown field {unknown[0]!r})")
    for name, (rule, ok) in fields.items():
        if name not in cfg:
            raise CheckpointError(f"{where} (layer {i} {kind}: field {name!r} is missing)")
        if not ok(cfg[name]):
            raise CheckpointError(f"{where} (layer {i} {kind}: field {name!r} should be {rule}, "
                                  f"found {_short(cfg[name])})")
    return kind


def _layer_shapes(kind: str, cfg: dict, shape: tuple) -> tuple[tuple, dict]:
    """(output shape, {param name: shape}) of one validated layer config; ValueError
    when the layer does not fit its input. The same arithmetic as the layers'
    output_shape (tinycnn.shapes), held to it by the tests."""
    if kind == "Conv2D":
        c, h, w = _image_shape(shape, kind)
        if c != cfg["in_channels"]:
            raise ValueError(f"expects {cfg['in_channels']} input channels, gets {c}")
        k, s, p, f = cfg["kernel_size"], cfg["stride"], cfg["pad"], cfg["out_channels"]
        out = (f, conv_out_size(h, k, s, p), conv_out_size(w, k, s, p))
        return out, {"w": (f, c, k, k), "b": (f,)}
    if kind == "MaxPool2D":
        c, h, w = _image_shape(shape, kind)
        args = (cfg["size"], cfg["stride"], cfg["ceil_mode"])
        return (c, pool_out_size(h, *args), pool_out_size(w, *args)), {}
    if kind == "Flatten":
        return (math.prod(shape),), {}
    if kind == "Dense":
        if shape != (cfg["in_features"],):
            raise ValueError(f"expects {cfg['in_features']} features, gets shape {shape}")
        m = cfg["out_features"]
        return (m,), {"w": (cfg["in_features"], m), "b": (m,)}
    return shape, {}  # ReLU, Dropout


def _image_shape(shape: tuple, kind: str) -> tuple:
    if len(shape) != 3:
        raise ValueError(f"needs a (channels, height, width) input, gets shape {shape}")
    return shape


def check_parameters(found: dict, expected: dict, path="checkpoint") -> None:
    """Every expected parameter is in the file with its shape, as finite floats; no
    other parameter is. CheckpointError names the first that is not."""
    for name, shape in expected.items():
        if name not in found:
            raise CheckpointError(f"{path}: parameter {name} is missing")
        value = found[name]
        if tuple(value.shape) != tuple(shape):
            raise CheckpointError(f"{path}: {name} has shape {tuple(value.shape)}, the model expects {tuple(shape)}")
        if value.dtype.kind != "f":
            raise CheckpointError(f"{path}: {name} holds {value.dtype} values, not floating point")
        bad = value.size - int(np.count_nonzero(np.isfinite(value)))
        if bad:
            raise CheckpointError(f"{path}: {name} holds {bad} NaN or infinite value(s): the run that wrote it "
                                  "diverged; use an earlier checkpoint")
    extra = sorted(set(found) - set(expected))
    if extra:
        raise CheckpointError(f"{path}: parameter {extra[0]} is not part of the architecture record")


def _layer_state(state: dict, i: int, path) -> dict:
    """Layer i's entry of the __state__ record: an object of whole numbers."""
    entry = state.get(str(i), {})
    if not isinstance(entry, dict):
        raise CheckpointError(f"{path}: __state__ record, layer {i}: an object expected, found {_json_type(entry)}")
    for key, value in entry.items():
        if not _is_int(value):
            raise CheckpointError(f"{path}: __state__ record, layer {i}: field {key!r} should be a whole number, "
                                  f"found {_short(value)}")
    return entry


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
