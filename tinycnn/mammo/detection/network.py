"""The detector network: a small patch classifier (normal tissue vs lesion) whose
every layer can also run over a whole film at once (fcn.py) with the same numbers.

[conv 3x3 valid, ReLU, max-pool 2x2/2] x B, flatten, dense(hidden), ReLU, dropout,
dense(classes). The window side is chosen so that every pool sees an even input and
no pooling window hangs over an edge (ceil mode and floor mode agree): then a window
placed at a multiple of the network's stride 2^B on a film covers exactly the pooling
cells the film-wide pass computes, and the first dense layer is a convolution with
the last feature map's size. With B = 4 blocks the exact sides are 16k + 30 (46, 62,
78, ...), the last feature map k x k, the stride 16.
"""

from __future__ import annotations

from tinycnn.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from tinycnn.model import Sequential

DEFAULT_WIDTHS = (16, 32, 48, 64)


def final_size(side: int, blocks: int) -> int | None:
    """The last feature map's side for a window of `side` pixels after `blocks` conv +
    pool blocks, or None when some pool would see an odd size (not exact) or nothing is
    left."""
    size = side
    for _ in range(blocks):
        size -= 2  # valid 3x3 conv
        if size < 2 or size % 2:
            return None
        size //= 2
    return size


def exact_side(final: int, blocks: int) -> int:
    """The window side whose last feature map is final x final: (final + 2 - 2^-B ...)
    computed backwards; 16 * final + 30 for 4 blocks."""
    if final < 1:
        raise ValueError("the last feature map needs at least one pixel")
    size = final
    for _ in range(blocks):
        size = 2 * size + 2
    return size


def stride_of(blocks: int) -> int:
    """Pixels between neighbouring windows of one film-wide pass: 2 per pool."""
    return 2 ** blocks


def detector_net(side: int = 62, widths=DEFAULT_WIDTHS, hidden: int = 128, classes: int = 2,
                 dropout: float = 0.5, seed: int = 0, backend="numpy") -> Sequential:
    """The detector for side x side windows (one channel), initialised from seed.
    ValueError for a side that is not exact for len(widths) blocks (it names the
    nearest exact sides)."""
    blocks = len(widths)
    k = final_size(side, blocks)
    if k is None:
        sides = [exact_side(f, blocks) for f in range(1, 64)]
        near = sorted(sides, key=lambda s: abs(s - side))[:2]
        raise ValueError(f"window side {side} is not exact for {blocks} conv + pool blocks "
                         f"(every pool must see an even size); nearest: {sorted(near)}")
    layers, c = [], 1
    for f in widths:
        layers += [Conv2D(c, f, 3), ReLU(), MaxPool2D(2, 2, ceil_mode=False)]
        c = f
    layers += [Flatten(), Dense(c * k * k, hidden), ReLU(), Dropout(dropout, seed=seed * 2 + 1),
               Dense(hidden, classes, gain=1.0)]
    net = Sequential(layers, (1, side, side))
    net.init_params(seed)
    return net.to(backend)
