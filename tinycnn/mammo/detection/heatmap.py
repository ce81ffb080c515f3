"""A film's lesion heat map from a trained detector: the lesion log-odds (lesion logit
minus normal logit) of the window centred on every grid cell, from the fully
convolutional pass (fcn.py), optionally averaged over the film's mirror images.

Mirrors: the window centred on working column c of a film of width w is, mirrored,
the window centred on column w - c of the mirrored film, so when the grid step
divides the film's sides the mirrored heat map, flipped back, lands on the same grid
cells. The film is padded with AIR at the bottom and right to a multiple of the step
first; that changes no window of the original grid, whose windows already reached
into the AIR border of fcn.pad_film there. Log-odds rather than
probabilities, because an over-confident network saturates many windows at P = 1.

Shapes: film.image (h, w) -> heat map (h' // g + 1, w' // g + 1) float32, h' and w'
the padded sides (multiples of g), cell (a, b) the window centred on working pixel
(a * g, b * g).
"""

from __future__ import annotations

import numpy as np

from .fcn import scan_logits
from .films import AIR

MIRRORS = {0: ((),), 2: ((), (1,)), 4: ((), (1,), (0,), (0, 1))}  # flip axes per pass


def padded_to_step(image: np.ndarray, step: int) -> np.ndarray:
    """image (h, w) padded with AIR at the bottom and right to multiples of step."""
    h, w = image.shape
    return np.pad(image, ((0, -h % step), (0, -w % step)), constant_values=AIR)


def heat_map(net, image: np.ndarray, shifts: int = 2, mirrors: int = 0) -> np.ndarray:
    """Lesion log-odds on the grid of step S / shifts (S the network's stride), the mean
    over `mirrors` mirror images (0 or 1: the film only; 2: and its left-right mirror;
    4: and the up-down ones)."""
    pools = sum(1 for l in net.layers if type(l).__name__ == "MaxPool2D")
    step = 2 ** pools // shifts
    if mirrors not in (0, 1, 2, 4):
        raise ValueError(f"mirrors must be 0, 1, 2 or 4, got {mirrors}")
    film = padded_to_step(np.asarray(image, dtype=np.float32), step)
    total = None
    passes = MIRRORS[0 if mirrors <= 1 else mirrors]
    for axes in passes:
        view = np.flip(film, axes) if axes else film
        logits = scan_logits(net, np.ascontiguousarray(view), shifts)
        odds = (logits[1] - logits[0]).astype(np.float64)
        odds = np.flip(odds, axes) if axes else odds
        total = odds if total is None else total + odds
    return (total / len(passes)).astype(np.float32)


def grid_step(net, shifts: int) -> int:
    pools = sum(1 for l in net.layers if type(l).__name__ == "MaxPool2D")
    return 2 ** pools // shifts
