"""Backend registry: ``get("numpy")``, ``get("cuda")``, ``get("cuda-emu")``, ...

A backend is an object that implements the op contract, ``contract.Backend``
(tinycnn/backends/contract.py: every op and array helper with its signature, shapes,
cache and gradients; tests/test_contract.py holds every registered backend to it).
Backends are imported lazily, so that ``get("numpy")`` never imports CuPy.
"""

from __future__ import annotations

import importlib
from typing import Callable

# name -> "module:factory" (imported on first use) or a callable
_REGISTRY: dict[str, str | Callable] = {
    "numpy": "tinycnn.backends.numpy_backend:NumpyBackend",
    "numpy64": "tinycnn.backends.numpy_backend:NumpyBackend64",  # float64, for gradient checks
    "cuda": "tinycnn.backends.cuda_backend:CudaBackend",
    "cuda-emu": "tinycnn.backends.cuda_emu:EmulatedBackend",
    "numba": "tinycnn.backends.numba_backend:NumbaBackend",
}
_INSTANCES: dict[tuple, object] = {}  # (name, precision or None) -> backend


class BackendUnavailable(RuntimeError):
    """The backend exists but cannot run on this machine (no GPU, no compiler, ...)."""


def register(name: str, factory: str | Callable) -> None:
    """Add a backend: a zero-argument callable, or "package.module:Factory"."""
    _REGISTRY[name] = factory
    for key in [k for k in _INSTANCES if k[0] == name]:
        del _INSTANCES[key]


def names() -> list[str]:
    """Every registered backend name (available on this machine or not)."""
    return sorted(_REGISTRY)


def get(name_or_backend="numpy", precision: str | None = None):
    """The backend called `name` (one shared instance per name and precision mode), or
    `name` itself if it is already a backend object.

    precision (tinycnn/precision.py): 'fp32', 'tf32' or 'bf16'; None takes the backend's
    default ('tf32' for cuda on a GPU with tensor cores, else 'fp32'). A mode the backend
    does not run is a ValueError that says which it runs."""
    if not isinstance(name_or_backend, str):
        have = name_or_backend.precision
        if precision is not None and precision != have:
            raise ValueError(f"{getattr(name_or_backend, 'name', name_or_backend)!s} runs precision {have!r}, "
                             f"not {precision!r}: get a backend of that precision by name")
        return name_or_backend
    name = name_or_backend
    if (name, precision) in _INSTANCES:
        return _INSTANCES[(name, precision)]
    if name not in _REGISTRY:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(names())}")
    factory = _REGISTRY[name]
    if isinstance(factory, str):
        module_name, attr = factory.split(":")
        factory = getattr(importlib.import_module(module_name), attr)
    backend = factory() if precision is None else factory(precision=precision)
    # get(name) and get(name, its default) are one instance
    backend = _INSTANCES.setdefault((name, backend.precision), backend)
    _INSTANCES[(name, precision)] = backend
    return backend


def available(name: str) -> bool:
    """True if `get(name)` works on this machine."""
    try:
        get(name)
        return True
    except (BackendUnavailable, ImportError):
        return False


AUTO_ORDER = ("cuda", "numba", "numpy")


def resolve(name: str) -> str:
    """The backend name to use for `name`: "auto" is the first of AUTO_ORDER that works
    here (cuda on a GPU, else numba when installed, else numpy); any other name is
    checked and returned, or BackendUnavailable says why it cannot run here.

    numba is taken whenever it imports because it was faster than numpy in every CPU
    run we timed (a 3-5x shorter paper_net step in bench/RESULTS.md, and the default
    synthetic run 89 s against 127 s in docs/paper.md), so no probe run is spent on
    deciding."""
    if name == "auto":
        return next(n for n in AUTO_ORDER if available(n))
    try:
        get(name)
    except ImportError as e:  # an optional dependency (numba, ...) is not installed
        raise BackendUnavailable(str(e)) from e
    return name
