"""The synthetic dataset behind the registry (the generator itself is synthetic.py)."""

from __future__ import annotations

import numpy as np

from . import synthetic
from .preprocess import normalise

VERSION = synthetic.GENERATOR_VERSION


def fingerprint(data_dir=None, benign: int = 600, malignant: int = 600, seed: int = 0) -> dict:
    return {"generator": synthetic.GENERATOR_VERSION}


def read(data_dir=None, image_size: int = synthetic.DEFAULT_SIZE, strict: bool = False,
         benign: int = 600, malignant: int = 600, seed: int = 0):
    """Rendered directly at image_size (no resize), then normalised like every ROI."""
    from . import RoiSet

    images, labels, patients, ids = synthetic.generate(benign, malignant, image_size, seed)
    images = np.stack([normalise(im) for im in images])
    return RoiSet("synthetic", images, labels, patients, ids,
                  notes=[f"synthetic ROIs rendered at {image_size}x{image_size} (generator v{VERSION}, seed {seed})"])
