"""Optimizers and learning-rate schedules.

The update arithmetic is a backend op (``sgd_update``, ``adam_update``), so on the
GPU it is one of our kernels and the parameters never leave the device. The
optimizers here only keep the buffers and the step count.
"""

from __future__ import annotations

import math

import numpy as np

from . import backends


class Optimizer:
    """The parameters, the learning rate, the step count and the backend whose update
    op does the arithmetic; subclasses add their buffers (on that backend)."""

    def __init__(self, params, lr: float, backend=None):
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got no parameters")
        self.lr = float(lr)
        self.steps = 0
        self.backend = backends.get(backend or "numpy")

    def _zeros_like_params(self) -> list:
        return [self.backend.zeros(p.shape, dtype=p.value.dtype) for p in self.params]

    def step(self, guard=None) -> None:
        """Update every parameter from its gradient, in one backend call. `guard`: the
        training loop's step statistics (backend.step_stats_update); the update is
        skipped once they record a non-finite loss."""
        raise NotImplementedError

    def _check_grads(self) -> None:
        for p in self.params:
            if p.grad is None:
                raise RuntimeError(f"parameter {p.name} {p.shape} has no gradient: call backward() first")

    def _buffers(self) -> dict[str, list]:
        return {}

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Optimizer state as host arrays (for checkpoints): step count and buffers."""
        out = {"steps": np.array(self.steps)}
        for name, bufs in self._buffers().items():
            for i, b in enumerate(bufs):
                out[f"{name}.{i}"] = self.backend.to_numpy(b)
        return out

    def load_state_arrays(self, arrays: dict) -> None:
        """The inverse of state_arrays: buffers back onto this optimizer's backend."""
        self.steps = int(arrays["steps"])
        for name, bufs in self._buffers().items():
            for i in range(len(bufs)):
                key = f"{name}.{i}"
                if key not in arrays:
                    raise ValueError(f"optimizer state has no buffer {key}")
                if tuple(arrays[key].shape) != tuple(bufs[i].shape):
                    raise ValueError(f"optimizer buffer {key} has shape {arrays[key].shape}, "
                                     f"the parameter has {tuple(bufs[i].shape)}")
                bufs[i] = self.backend.asarray(arrays[key])


class SGD(Optimizer):
    """SGD with momentum and L2 weight decay:
    v = momentum * v + (grad + weight_decay * w);  w -= lr * v."""

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0, backend=None):
        super().__init__(params, lr, backend)
        self.momentum, self.weight_decay = float(momentum), float(weight_decay)
        self.velocity = self._zeros_like_params()

    def _buffers(self):
        return {"velocity": self.velocity}

    def step(self, guard=None):
        self._check_grads()
        self.steps += 1
        self.backend.sgd_update_many([p.value for p in self.params], [p.grad for p in self.params], self.velocity,
                                     self.lr, self.momentum, self.weight_decay, guard=guard)


class Adam(Optimizer):
    """Adam with bias correction (Kingma & Ba 2015) and optional L2 weight decay."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, backend=None):
        super().__init__(params, lr, backend)
        self.beta1, self.beta2 = map(float, betas)
        self.eps, self.weight_decay = float(eps), float(weight_decay)
        self.m, self.v = self._zeros_like_params(), self._zeros_like_params()

    def _buffers(self):
        return {"m": self.m, "v": self.v}

    def step(self, guard=None):
        self._check_grads()
        self.steps += 1
        self.backend.adam_update_many([p.value for p in self.params], [p.grad for p in self.params], self.m, self.v,
                                      self.lr, self.beta1, self.beta2, self.eps, self.weight_decay, self.steps,
                                      guard=guard)


def make_optimizer(name: str, model, lr: float, **kwargs) -> Optimizer:
    """An optimizer for every parameter of `model`, on the model's backend."""
    name = name.lower()
    if name == "sgd":
        return SGD(model.parameters(), lr=lr, backend=model.backend, **kwargs)
    if name == "adam":
        return Adam(model.parameters(), lr=lr, backend=model.backend, **kwargs)
    raise ValueError(f"unknown optimizer {name!r}; choose sgd or adam")


# ----------------------------------------------------------------- schedules
class StepLR:
    """lr = base * gamma ** (epoch // step_size)."""

    def __init__(self, base_lr: float, step_size: int, gamma: float = 0.1):
        if step_size < 1:
            raise ValueError("step_size must be >= 1")
        self.base_lr, self.step_size, self.gamma = base_lr, step_size, gamma

    def __call__(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineLR:
    """Cosine annealing from base to min_lr over `total` epochs (or steps), with an
    optional linear warm-up."""

    def __init__(self, base_lr: float, total: int, min_lr: float = 0.0, warmup: int = 0):
        if total < 1:
            raise ValueError("total must be >= 1")
        self.base_lr, self.total, self.min_lr, self.warmup = base_lr, total, min_lr, warmup

    def __call__(self, t: int) -> float:
        if t < self.warmup:
            return self.base_lr * (t + 1) / self.warmup
        frac = min(1.0, (t - self.warmup) / max(1, self.total - self.warmup))
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * frac))


class ConstantLR:
    def __init__(self, base_lr: float):
        self.base_lr = base_lr

    def __call__(self, t: int) -> float:
        return self.base_lr
