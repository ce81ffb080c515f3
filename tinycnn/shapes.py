"""Output-shape arithmetic shared by every backend (and by the kernel launchers).

Keeping it in one place is what makes the backends agree on ceil-mode pooling.
"""

from __future__ import annotations


def conv_out_size(size: int, kernel: int, stride: int = 1, pad: int = 0) -> int:
    """Output length of a convolution along one axis: floor((size + 2*pad - kernel) / stride) + 1."""
    out = (size + 2 * pad - kernel) // stride + 1
    if out < 1:
        raise ValueError(
            f"convolution of size {size} with kernel {kernel}, stride {stride}, pad {pad} has no output"
        )
    return out


def pool_out_size(size: int, window: int, stride: int, ceil_mode: bool = True) -> int:
    """Output length of a max-pool along one axis.

    ceil mode: ceil((size - window) / stride) + 1, so a window may hang over the
    bottom/right edge and takes the max of the pixels it covers (125 -> 63,
    61 -> 31, 29 -> 15 for window 2, stride 2). A window that would START past
    the last pixel is dropped, so every window covers at least one pixel.
    floor mode: floor((size - window) / stride) + 1.
    """
    if window < 1 or stride < 1:
        raise ValueError(f"pool window {window} and stride {stride} must be positive")
    if ceil_mode:
        out = -((window - size) // stride) + 1  # ceil((size - window) / stride) + 1
        if (out - 1) * stride >= size:
            out -= 1
    else:
        out = (size - window) // stride + 1
    if out < 1:
        raise ValueError(f"max-pool of size {size} with window {window}, stride {stride} has no output")
    return out
