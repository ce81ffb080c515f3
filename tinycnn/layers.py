"""Layers: thin stateful wrappers over a backend's functional ops.

A layer holds its parameters (value + gradient), calls ``backend.X_forward`` in
``forward`` and keeps the cache for ``backward``, which calls ``backend.X_backward``
and stores the parameter gradients. All math lives in the backends; a layer only
does bookkeeping, so every layer works on every backend unchanged.

Each layer describes itself with ``config()`` (a JSON-able dict of its ``FIELDS``),
which is what a checkpoint stores as the architecture, and owns the arithmetic from a
config to shapes (``param_shapes``, ``output_shape_of``): the layer, a checkpoint's
record (tinycnn.checkpoint) and a memory estimate all compute shapes the one way.
"""

from __future__ import annotations

import math

import numpy as np

from . import backends
from .shapes import conv_out_size, pool_out_size


# What a config field must hold: (the rule in words, the check). A checkpoint's
# architecture record is input like any other, checked against these field by field
# before any arithmetic (tinycnn.checkpoint).
def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


POSITIVE = ("a positive whole number", lambda v: _is_int(v) and v >= 1)
NON_NEGATIVE = ("a whole number >= 0", lambda v: _is_int(v) and v >= 0)
BOOL = ("true or false", lambda v: isinstance(v, bool))
PROBABILITY = ("a number in [0, 1)", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
               and math.isfinite(v) and 0 <= v < 1)


class Parameter:
    """A trainable array and its gradient, both arrays of the layer's backend."""

    def __init__(self, name: str, value):
        self.name = name
        self.value = value
        self.grad = None

    @property
    def shape(self):
        return tuple(self.value.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.value.shape))

    def __repr__(self) -> str:
        return f"Parameter({self.name}, shape={self.shape})"


class Layer:
    """Base class. Subclasses implement ``forward(x, train)`` and ``backward(dy,
    need_dx)``, name their config fields in ``FIELDS`` (attributes of the same names),
    and give the shapes a config implies (``param_shapes``, ``output_shape_of``);
    ``self.params`` (name -> Parameter) holds zeros of those shapes until
    ``init_params``. ``backward`` fills the parameters' gradients and returns the
    gradient with respect to the layer's input, or None when need_dx is False (the
    first layer of a network, whose input gradient nobody uses: it skips that work)."""

    FIELDS: dict = {}  # config field -> (what it must hold, check), besides "type"

    def __init__(self):
        self.backend = backends.get("numpy")
        self.params: dict[str, Parameter] = {}
        self.cache = None
        self.name = type(self).__name__

    def forward(self, x, train: bool = False):
        raise NotImplementedError

    def backward(self, dy, need_dx: bool = True):
        raise NotImplementedError

    @classmethod
    def param_shapes(cls, cfg: dict) -> dict:
        """{parameter name: shape} of a layer with config `cfg` (nothing allocated)."""
        return {}

    @classmethod
    def output_shape_of(cls, cfg: dict, in_shape: tuple) -> tuple:
        """One sample's output shape (no batch axis) of a layer with config `cfg` on one
        sample of `in_shape`, by arithmetic alone; ValueError when it does not fit."""
        return tuple(in_shape)

    def output_shape(self, in_shape: tuple) -> tuple:
        return self.output_shape_of(self.config(), tuple(in_shape))

    def config(self) -> dict:
        return {"type": type(self).__name__, **{name: getattr(self, name) for name in self.FIELDS}}

    def _zero_params(self) -> dict:
        shapes = self.param_shapes(self.config())
        return {name: Parameter(name, self.backend.zeros(shape)) for name, shape in shapes.items()}

    def state(self) -> dict:
        """Non-parameter state a checkpoint must keep to resume exactly (ints only)."""
        return {}

    def load_state(self, state: dict) -> None:
        pass

    def init_params(self, rng: np.random.Generator) -> None:
        """Draw fresh parameters from a seeded NumPy generator (host side, so every
        backend starts from the same numbers)."""

    def to(self, backend) -> "Layer":
        """Move parameters to another backend (through host memory)."""
        backend = backends.get(backend)
        for p in self.params.values():
            p.value = backend.asarray(self.backend.to_numpy(p.value))
            p.grad = None
        self.backend = backend
        self.cache = None
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "type")
        return f"{type(self).__name__}({args})"


def _image_shape(in_shape: tuple) -> tuple:
    if len(in_shape) != 3:
        raise ValueError(f"needs a (channels, height, width) input, gets shape {tuple(in_shape)}")
    return tuple(in_shape)


class Conv2D(Layer):
    """Convolution with F filters of size k x k. (N, C, H, W) -> (N, F, OH, OW)."""

    FIELDS = {"in_channels": POSITIVE, "out_channels": POSITIVE, "kernel_size": POSITIVE, "stride": POSITIVE,
              "pad": NON_NEGATIVE}

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, pad: int = 0):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride, self.pad = int(kernel_size), int(stride), int(pad)
        self.params = self._zero_params()

    @classmethod
    def param_shapes(cls, cfg):
        f, c, k = cfg["out_channels"], cfg["in_channels"], cfg["kernel_size"]
        return {"w": (f, c, k, k), "b": (f,)}

    @classmethod
    def output_shape_of(cls, cfg, in_shape):
        c, h, w = _image_shape(in_shape)
        if c != cfg["in_channels"]:
            raise ValueError(f"expects {cfg['in_channels']} input channels, gets {c}")
        k, s, p = cfg["kernel_size"], cfg["stride"], cfg["pad"]
        return (cfg["out_channels"], conv_out_size(h, k, s, p), conv_out_size(w, k, s, p))

    def init_params(self, rng):
        # He et al. 2015: var(w) = 2 / fan_in keeps ReLU activations' variance steady.
        fan_in = self.in_channels * self.kernel_size**2
        w = rng.standard_normal(self.params["w"].shape) * np.sqrt(2.0 / fan_in)
        self.params["w"].value = self.backend.asarray(w)
        self.params["b"].value = self.backend.zeros((self.out_channels,))

    def forward(self, x, train=False):
        out, self.cache = self.backend.conv2d_forward(
            x, self.params["w"].value, self.params["b"].value, stride=self.stride, pad=self.pad
        )
        return out

    def backward(self, dy, need_dx=True):
        dx, self.params["w"].grad, self.params["b"].grad = self.backend.conv2d_backward(dy, self.cache, need_dx)
        self.cache = None
        return dx


class ReLU(Layer):
    def forward(self, x, train=False):
        out, self.cache = self.backend.relu_forward(x)
        return out

    def backward(self, dy, need_dx=True):
        dx = self.backend.relu_backward(dy, self.cache) if need_dx else None
        self.cache = None
        return dx


class MaxPool2D(Layer):
    """Max-pool, ceil mode by default (the paper's 125 -> 63 -> ... -> 15)."""

    FIELDS = {"size": POSITIVE, "stride": POSITIVE, "ceil_mode": BOOL}

    def __init__(self, size: int = 2, stride: int = 2, ceil_mode: bool = True):
        super().__init__()
        self.size, self.stride, self.ceil_mode = int(size), int(stride), bool(ceil_mode)

    def forward(self, x, train=False):
        out, self.cache = self.backend.maxpool2d_forward(x, self.size, self.stride, self.ceil_mode)
        return out

    def backward(self, dy, need_dx=True):
        dx = self.backend.maxpool2d_backward(dy, self.cache) if need_dx else None
        self.cache = None
        return dx

    @classmethod
    def output_shape_of(cls, cfg, in_shape):
        c, h, w = _image_shape(in_shape)
        window = (cfg["size"], cfg["stride"], cfg["ceil_mode"])
        return (c, pool_out_size(h, *window), pool_out_size(w, *window))


class ConvBlock:
    """Conv2D, ReLU and MaxPool2D(2, stride 2) of a network run as the backend's fused
    block (``conv2d_relu_maxpool_forward/backward``): the numbers of the three layers
    in turn, in one kernel on the kernel backends, where the full-size conv output
    never reaches memory. Not a layer of its own: the three layers keep their
    parameters and describe the architecture; ``Sequential`` runs them through this."""

    def __init__(self, conv: "Conv2D", relu: "ReLU", pool: "MaxPool2D"):
        self.conv, self.relu, self.pool = conv, relu, pool
        self.cache = None

    @staticmethod
    def fits(layers) -> bool:
        """Whether three consecutive layers are such a block."""
        return (len(layers) == 3 and isinstance(layers[0], Conv2D) and isinstance(layers[1], ReLU)
                and isinstance(layers[2], MaxPool2D) and layers[2].size == layers[2].stride == 2)

    def forward(self, x, train=False):
        conv = self.conv
        out, self.cache = conv.backend.conv2d_relu_maxpool_forward(
            x, conv.params["w"].value, conv.params["b"].value, stride=conv.stride, pad=conv.pad,
            ceil_mode=self.pool.ceil_mode)
        return out

    def backward(self, dy, need_dx=True):
        conv = self.conv
        dx, conv.params["w"].grad, conv.params["b"].grad = conv.backend.conv2d_relu_maxpool_backward(
            dy, self.cache, need_dx)
        self.cache = None
        return dx


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W), row-major (channel slowest), a view on every backend."""

    def forward(self, x, train=False):
        self.cache = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy, need_dx=True):
        shape, self.cache = self.cache, None
        return dy.reshape(shape) if need_dx else None

    @classmethod
    def output_shape_of(cls, cfg, in_shape):
        return (math.prod(in_shape),)


class Dense(Layer):
    """Fully connected: y = x @ w + b. (N, D) -> (N, M)."""

    FIELDS = {"in_features": POSITIVE, "out_features": POSITIVE}

    def __init__(self, in_features: int, out_features: int, gain: float = 2.0):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.gain = float(gain)  # init only (not architecture): 2 before a ReLU (He), 1 for logits (LeCun)
        self.params = self._zero_params()

    @classmethod
    def param_shapes(cls, cfg):
        return {"w": (cfg["in_features"], cfg["out_features"]), "b": (cfg["out_features"],)}

    @classmethod
    def output_shape_of(cls, cfg, in_shape):
        if tuple(in_shape) != (cfg["in_features"],):
            raise ValueError(f"expects {cfg['in_features']} features, gets shape {tuple(in_shape)}")
        return (cfg["out_features"],)

    def init_params(self, rng):
        # var(w) = gain / fan_in; drawn in float32 to spare host memory on huge layers.
        shape = self.params["w"].shape
        w = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(self.gain / self.in_features))
        self.params["w"].value = self.backend.asarray(w)
        self.params["b"].value = self.backend.zeros((self.out_features,))

    def forward(self, x, train=False):
        out, self.cache = self.backend.dense_forward(x, self.params["w"].value, self.params["b"].value)
        return out

    def backward(self, dy, need_dx=True):
        dx, self.params["w"].grad, self.params["b"].grad = self.backend.dense_backward(dy, self.cache, need_dx)
        self.cache = None
        return dx


class Dropout(Layer):
    """Inverted dropout with probability p. Each training forward draws a new mask:
    the op's 64-bit seed is (call counter << 32) | layer seed, so a run is reproducible
    and a resumed run continues the same sequence (the counter is checkpointed)."""

    FIELDS = {"p": PROBABILITY}

    def __init__(self, p: float = 0.5, seed: int = 0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p, self.seed, self.calls = float(p), int(seed) & 0xFFFFFFFF, 0

    def forward(self, x, train=False):
        if not train:
            self.cache = None
            return x
        op_seed = ((self.calls & 0xFFFFFFFF) << 32) | self.seed
        self.calls += 1
        out, self.cache = self.backend.dropout_forward(x, self.p, op_seed, train=True)
        return out

    def backward(self, dy, need_dx=True):
        dx = self.backend.dropout_backward(dy, self.cache) if need_dx else None
        self.cache = None
        return dx

    # The seed and counter are state, not architecture: a checkpoint loads into a
    # model built with another seed and carries on with the checkpoint's masks.
    def state(self):
        return {"seed": self.seed, "calls": self.calls}

    def load_state(self, state):
        self.seed = int(state.get("seed", self.seed))
        self.calls = int(state.get("calls", 0))


class SoftmaxCrossEntropy:
    """The loss "layer": mean softmax cross-entropy over the batch.

    ``loss = criterion.forward(logits, labels)`` (a 0-d backend array), then
    ``dlogits = criterion.backward()`` (N, K). Not part of a Sequential: the
    network ends in logits, and the loss is applied by the training loop.
    """

    def __init__(self, backend="numpy"):
        self.backend = backends.get(backend)
        self.dlogits = None

    def forward(self, logits, labels):
        loss, self.dlogits = self.backend.softmax_cross_entropy(logits, labels)
        return loss

    def backward(self):
        if self.dlogits is None:
            raise RuntimeError("SoftmaxCrossEntropy.backward() called before forward()")
        d, self.dlogits = self.dlogits, None
        return d


LAYER_TYPES = {cls.__name__: cls for cls in (Conv2D, ReLU, MaxPool2D, Flatten, Dense, Dropout)}


def layer_from_config(cfg: dict) -> Layer:
    cfg = dict(cfg)
    kind = cfg.pop("type")
    if kind not in LAYER_TYPES:
        raise ValueError(f"unknown layer type {kind!r} in architecture")
    return LAYER_TYPES[kind](**cfg)
