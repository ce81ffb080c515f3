"""The breast mask of a film: which pixels are breast tissue, so that air, labels and
film edges are never sampled as normal tissue nor reported as a lesion.

The film is smoothed, thresholded with Otsu's method (the threshold that best splits
the grey levels into two classes), and the largest bright connected region is kept
with its holes filled: the breast (pectoral muscle included) is by far the largest
bright object on a mammogram, while labels and markers are small and detached. A
film without contrast is all breast. Works at any resolution; the detector uses it
at its working resolution (a quarter of MIAS's 200 micron pixels).
"""

from __future__ import annotations

import numpy as np


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The grey level that maximises the between-class variance of values (Otsu 1979)."""
    hist, edges = np.histogram(np.asarray(values, dtype=np.float64).ravel(), bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(centres[int(np.argmax(between))])


def breast_mask(image: np.ndarray, smooth: int | None = None) -> np.ndarray:
    """image (H, W), raw or normalised grey levels -> (H, W) bool, True on the breast.

    smooth: side of the box filter applied before thresholding (default: 1/64 of the
    shorter side, at least 3), so film grain and thin dark ducts do not punch holes."""
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"a film is 2-D, got shape {image.shape}")
    if float(image.max()) <= float(image.min()):
        return np.ones(image.shape, dtype=bool)
    size = smooth if smooth is not None else max(3, min(image.shape) // 64)
    blurred = ndimage.uniform_filter(image, size=size)
    bright = blurred > otsu_threshold(blurred)
    labels, n = ndimage.label(bright)
    if n == 0:
        return np.ones(image.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return ndimage.binary_fill_holes(labels == int(np.argmax(sizes)))

