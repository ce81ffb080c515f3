"""The paper's six transforms: identity, horizontal mirror, vertical mirror, and
rotations by 90, 180 and 270 degrees. An augmented set is never materialised: a
sample is a pair (ROI index, transform index), applied when its batch is built."""

from __future__ import annotations

import numpy as np

TRANSFORMS = ("identity", "mirror-h", "mirror-v", "rot90", "rot180", "rot270")


def apply(images: np.ndarray, transform: int) -> np.ndarray:
    """Transform the last two axes of `images` (one image or a batch)."""
    if transform == 0:
        return images
    if transform == 1:
        return images[..., :, ::-1]
    if transform == 2:
        return images[..., ::-1, :]
    if transform in (3, 4, 5):
        return np.rot90(images, k=transform - 2, axes=(-2, -1))
    raise ValueError(f"transform index must be 0..5, got {transform}")


def expand(indices: np.ndarray, transforms=range(len(TRANSFORMS))) -> np.ndarray:
    """Every (ROI index, transform) pair for the given ROIs: shape (len(indices) * T, 2)."""
    indices = np.asarray(indices, dtype=np.int64)
    t = np.asarray(list(transforms), dtype=np.int64)
    return np.stack([np.repeat(indices, len(t)), np.tile(t, len(indices))], axis=1)


def gather(images: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """A batch (B, 1, H, W) float32 for samples [(ROI index, transform), ...]."""
    out = np.empty((len(samples), 1) + images.shape[1:], dtype=np.float32)
    for k, (i, t) in enumerate(samples):
        out[k, 0] = apply(images[i], int(t))
    return out
