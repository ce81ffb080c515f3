"""Memory estimates made before allocating, and what the machine has.

A network or a dataset that does not fit used to die in the allocator with a
traceback (or be killed by the kernel) minutes into a run. The apps now estimate
first, from shapes alone, and refuse with the estimate and what is available.
The estimates are rough (float32 arrays, no allocator overhead) and lean high.
"""

from __future__ import annotations

import math

from tinycnn.backends import host_memory
from tinycnn.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, ArchitectureShapes
from tinycnn.model import Sequential, paper_conv_stack


class NotEnoughMemory(Exception):
    """The work would need more memory than the machine has available."""


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


def host_available() -> int | None:
    """Bytes of host memory available now, or None where that cannot be told."""
    return host_memory.available_bytes()


def device_available(backend) -> int | None:
    """Free bytes where `backend` keeps its arrays (backend.memory_available: the GPU's
    on cuda, the host's otherwise), or None where that cannot be told."""
    return backend.memory_available()


def require(need: int, available: int | None, what: str, fix: str, where: str = "this machine") -> None:
    """NotEnoughMemory when `need` bytes exceed `available` (None: unknown, let it try)."""
    if available is not None and need > available:
        raise NotEnoughMemory(f"{what} needs about {fmt_bytes(need)} of memory; {where} has "
                              f"{fmt_bytes(available)} available: {fix}")


# ------------------------------------------------------------ what the app allocates
EVAL_BATCH = 128  # TrainConfig.eval_batch_size's default, the batch evaluation runs at


def paper_architecture(hidden: int, in_size: int, in_channels: int = 1, classes: int = 2,
                       dropout: float = 0.5) -> dict:
    """paper_net(hidden, in_size).architecture() without building the network (its dense
    layers may be what does not fit: that is what is being checked). Held equal to
    paper_net's record by the tests."""
    conv = Sequential(paper_conv_stack(in_channels), (in_channels, in_size, in_size))  # a few KiB
    flat = math.prod(conv.shapes()[-1])

    def dense(n_in, n_out):
        return {"type": "Dense", "in_features": n_in, "out_features": n_out}

    layers = [layer.config() for layer in conv.layers] + [
        {"type": "Flatten"},
        dense(flat, hidden), {"type": "ReLU"}, {"type": "Dropout", "p": dropout},
        dense(hidden, hidden), {"type": "ReLU"}, {"type": "Dropout", "p": dropout},
        dense(hidden, classes),
    ]
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "input_shape": [in_channels, in_size, in_size], "layers": layers}


def training_bytes(shapes: ArchitectureShapes, batch_size: int, eval_batch: int = EVAL_BATCH) -> int:
    """A training run's peak: parameters, gradients and two optimizer buffers (4x the
    parameters), plus the larger of a training step's activations and their gradients
    (2x, as Sequential.memory_estimate counts) and an evaluation batch's activations."""
    return 4 * (4 * shapes.num_parameters() + shapes.activations() * max(2 * batch_size, eval_batch))


def inference_bytes(shapes: ArchitectureShapes, batch_size: int) -> int:
    """Parameters plus one forward pass's activations at batch_size."""
    return 4 * (shapes.num_parameters() + shapes.activations() * batch_size)


def explain_bytes(shapes: ArchitectureShapes, batch_size: int) -> int:
    """A saliency pass (forward and backward to the input): parameters and their
    gradients, every activation and its gradient at batch_size."""
    return 4 * (2 * shapes.num_parameters() + 2 * shapes.activations() * batch_size)


def dataset_bytes(n_rois: int, image_size: int) -> int:
    """A preprocessed set (float32) while it is read: the ROIs one by one, then stacked."""
    return 2 * 4 * n_rois * image_size * image_size
