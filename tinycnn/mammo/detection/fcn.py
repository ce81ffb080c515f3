"""Running a trained patch network over a whole film at once (fully convolutional),
and window by window, for the same heat map.

The film-wide pass runs every conv + ReLU + pool block once over the (padded) film;
the first dense layer after the flatten becomes a convolution whose kernel is the
window's last feature map (its weights reshaped in the flatten's channel, row,
column order), every later dense layer a 1 x 1 convolution; dropout is the identity
at evaluation. Output cell (i, j) is then the logits of the window whose top-left
corner sits at (i * S, j * S) of the padded film (S = 2^blocks, the stride), exactly
the window-by-window numbers when the network's pools are exact (network.py) and the
film is normalised once (films.py), up to float rounding of the differently shaped
products.

A finer grid comes from shift and stitch: the pass is repeated on the film shifted
by multiples of S / shifts pixels and the outputs interleaved, so the grid step is
S / shifts at shifts^2 passes.

Film geometry: the working image (h, w) is padded by side / 2 pixels of AIR on every
side (pad_film), so the window whose top-left corner is (t, l) in the padded film is
centred on working pixel (t, l) of the film. A heat map cell (a, b) of step g is the
window centred on working pixel (a * g, b * g); cells cover centres 0 .. h and 0 .. w.
"""

from __future__ import annotations

import numpy as np

from tinycnn.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU

from .films import AIR
from .network import final_size


def pad_film(image: np.ndarray, side: int) -> np.ndarray:
    """(h, w) -> (h + side, w + side) float32, AIR around: window (t, l) of the result is
    centred on pixel (t, l) of image (side even)."""
    if side % 2:
        raise ValueError(f"window side must be even, got {side}")
    p = side // 2
    return np.pad(np.asarray(image, dtype=np.float32), p, constant_values=AIR)


def _check_exact(net) -> tuple[int, int]:
    """(window side, number of pools) of a network fcn can run exactly; ValueError else."""
    _, side, width = net.input_shape
    pools = [l for l in net.layers if isinstance(l, MaxPool2D)]
    if side != width or any(p.size != 2 or p.stride != 2 for p in pools):
        raise ValueError("fully convolutional scans need square windows and 2x2/2 pools")
    convs = [l for l in net.layers if isinstance(l, Conv2D)]
    if any(c.stride != 1 or c.pad != 0 for c in convs):
        raise ValueError("fully convolutional scans need valid, stride-1 convolutions")
    if final_size(side, len(pools)) is None:
        raise ValueError(f"window side {side} is not exact for {len(pools)} pools: some pool sees an odd size")
    return side, len(pools)


def film_logits(net, padded: np.ndarray) -> np.ndarray:
    """One film-wide pass: padded (Hp, Wp) -> logits (classes, (Hp - side) // S + 1,
    (Wp - side) // S + 1); cell (i, j) is the window at (i * S, j * S)."""
    side, pools = _check_exact(net)
    be = net.backend
    stride = 2 ** pools
    hp, wp = padded.shape
    if hp < side or wp < side:
        raise ValueError(f"a {hp}x{wp} film is smaller than one {side}x{side} window")
    # Crop to whole windows of the grid, so every pool below sees an even size.
    hp, wp = side + (hp - side) // stride * stride, side + (wp - side) // stride * stride
    x = be.asarray(np.ascontiguousarray(padded[None, None, :hp, :wp], dtype=np.float32))
    shapes = net.shapes()
    layers, i, dense_seen = net.layers, 0, False
    while i < len(layers):
        layer = layers[i]
        if (isinstance(layer, Conv2D) and i + 2 < len(layers) and isinstance(layers[i + 1], ReLU)
                and isinstance(layers[i + 2], MaxPool2D)):
            x, _ = be.conv2d_relu_maxpool_forward(x, layer.params["w"].value, layer.params["b"].value,
                                                  stride=1, pad=0, ceil_mode=False)
            i += 3
            continue
        if isinstance(layer, Conv2D):
            x, _ = be.conv2d_forward(x, layer.params["w"].value, layer.params["b"].value, stride=1, pad=0)
        elif isinstance(layer, ReLU):
            x, _ = be.relu_forward(x)
        elif isinstance(layer, MaxPool2D):
            x, _ = be.maxpool2d_forward(x, 2, 2, False)
        elif isinstance(layer, Flatten):
            c, kh, kw = shapes[i - 1] if i > 0 else net.input_shape
            flat = (c, kh, kw)
        elif isinstance(layer, Dense):
            w = be.to_numpy(layer.params["w"].value)  # (D, M)
            if not dense_seen:  # the flatten's (c, row, col) order is a conv kernel's
                kernel = w.T.reshape(layer.out_features, *flat)
                dense_seen = True
            else:
                kernel = w.T.reshape(layer.out_features, layer.in_features, 1, 1)
            x, _ = be.conv2d_forward(x, be.asarray(np.ascontiguousarray(kernel)), layer.params["b"].value,
                                     stride=1, pad=0)
        elif isinstance(layer, Dropout):
            pass  # identity at evaluation
        else:
            raise ValueError(f"fully convolutional scans do not know layer {layer.name}")
        i += 1
    return be.to_numpy(x)[0]


def scan_logits(net, image: np.ndarray, shifts: int = 1) -> np.ndarray:
    """The film-wide heat map: image (h, w) normalised working film -> logits
    (classes, h // g + 1, w // g + 1), g = S / shifts the grid step; cell (a, b) is
    the window centred on working pixel (a * g, b * g)."""
    side, pools = _check_exact(net)
    stride = 2 ** pools
    if shifts < 1 or stride % shifts:
        raise ValueError(f"shifts must divide the network's stride {stride}, got {shifts}")
    step = stride // shifts
    padded = pad_film(image, side)
    h, w = image.shape
    rows, cols = h // step + 1, w // step + 1
    out = None
    for a in range(shifts):
        for b in range(shifts):
            part = film_logits(net, padded[a * step:, b * step:])
            if out is None:
                out = np.full((part.shape[0], rows, cols), np.nan, dtype=np.float32)
            r, c = out[:, a::shifts].shape[1], out[:, :, b::shifts].shape[2]
            out[:, a::shifts, b::shifts] = part[:, :r, :c]
    return out


def window_logits(net, image: np.ndarray, centres_rows, centres_cols, batch_size: int = 256) -> np.ndarray:
    """The reference: every window cut out and classified one by one (in batches).
    image (h, w); centres (M,) working pixels -> logits (M, classes)."""
    side = net.input_shape[1]
    padded = pad_film(image, side)
    be = net.backend
    rows, cols = np.asarray(centres_rows, dtype=np.int64), np.asarray(centres_cols, dtype=np.int64)
    out = []
    for start in range(0, len(rows), batch_size):
        r, c = rows[start:start + batch_size], cols[start:start + batch_size]
        x = np.stack([padded[i:i + side, j:j + side] for i, j in zip(r, c)])[:, None]
        out.append(be.to_numpy(net.forward(be.asarray(np.ascontiguousarray(x)), train=False)))
    return np.concatenate(out) if out else np.zeros((0, 2), np.float32)


def grid_centres(shape: tuple, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Working-pixel centres (rows, cols) of a heat map's cells: rows (R,), cols (C,)."""
    h, w = shape
    return np.arange(h // step + 1) * step, np.arange(w // step + 1) * step
