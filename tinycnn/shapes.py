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


# ------------------------------------------------------------ argument checks
# Every backend checks its inputs the same way, with the same messages.

def conv2d_out_hw(x_shape, w_shape, stride: int = 1, pad: int = 0) -> tuple[int, int]:
    """(OH, OW) of a convolution of x (N, C, H, W) by w (F, C, KH, KW); ValueError if the
    channels disagree or the output would be empty."""
    _, c, h, wd = x_shape
    _, c_w, kh, kw = w_shape
    if c != c_w:
        raise ValueError(f"conv2d: input has {c} channels but the filters expect {c_w}")
    return conv_out_size(h, kh, stride, pad), conv_out_size(wd, kw, stride, pad)


def check_dense(x_shape, w_shape) -> None:
    """x (N, D) and w (D, M) fit together."""
    if len(x_shape) != 2 or len(w_shape) != 2 or x_shape[1] != w_shape[0]:
        raise ValueError(f"dense: input of shape {tuple(x_shape)} does not fit weights of shape {tuple(w_shape)} "
                         "(expected x (N, D), w (D, M))")


def check_labels(labels, n: int, k: int) -> None:
    """Host labels (n,) of class indices in [0, k)."""
    if labels.shape != (n,):
        raise ValueError(f"softmax_cross_entropy: labels of shape {labels.shape} for {n} logits rows")
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"softmax_cross_entropy: labels must lie in [0, {k})")
