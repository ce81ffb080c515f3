"""What the network looks at: the input gradient and Grad-CAM, from the engine's own
backward passes (no autograd; docs/backprop.md, "Saliency").

- Input gradient: d(malignant logit)/d(input pixel). Training never needs it (the
  first layer skips it), but it is one more step of the same backward pass: the
  first conv's dx, asked for explicitly.
- Grad-CAM (Selvaraju et al. 2017): at the last conv block, weight each channel of
  its ReLU output A by the mean over positions of d(malignant logit)/dA, sum the
  weighted channels, keep the positive part and stretch it over the input.

The network is run layer by layer through the layers' public forward and backward,
so the last conv block's activation and its gradient can be kept on the way; the
numbers are those of Sequential.forward and Sequential.backward(input_grad=True).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from tinycnn.layers import Conv2D, ReLU
from tinycnn.paths import atomic_write

MALIGNANT = 1  # the class whose logit is explained
PNG_MARK = ("Software", "tinycnn saliency overlay")  # written into every overlay; an existing file without it is not ours


def last_conv_block(net) -> int:
    """Index of the layer whose output Grad-CAM uses: the ReLU after the last Conv2D
    (the conv itself when no ReLU follows)."""
    convs = [i for i, layer in enumerate(net.layers) if isinstance(layer, Conv2D)]
    if not convs:
        raise ValueError("Grad-CAM needs a network with a convolution")
    i = convs[-1]
    return i + 1 if i + 1 < len(net.layers) and isinstance(net.layers[i + 1], ReLU) else i


def explain(net, x, target: int = MALIGNANT) -> dict:
    """Saliency of a batch x (N, C, H, W) on the network's backend.

    Returns host arrays: "logits" (N, K), "input_grad" (N, H, W) (the gradient of the
    target logit with respect to each pixel, channel-summed), "gradcam" (N, H, W) in
    [0, 1] per image (0 everywhere where no channel speaks for the target), and
    "cam_shape" (the feature map's h, w)."""
    be = net.backend
    keep = last_conv_block(net)
    a = None
    h = x
    for i, layer in enumerate(net.layers):  # Sequential.forward, keeping one activation
        h = layer.forward(h, train=False)
        if i == keep:
            a = h
    logits = be.to_numpy(h)
    seed = np.zeros(logits.shape, dtype=np.float32)
    seed[:, target] = 1.0  # d(sum over the batch of the target logit): each sample's own gradient
    d = be.asarray(seed)
    da = None
    for i in reversed(range(len(net.layers))):  # Sequential.backward(input_grad=True), keeping dA
        d = net.layers[i].backward(d, need_dx=True)
        if i == keep + 1:
            da = d
    if da is None:  # the kept layer is the last one: its gradient is the seed itself
        da = be.asarray(seed)
    grad = be.to_numpy(d).sum(axis=1)
    a, da = be.to_numpy(a), be.to_numpy(da)
    weights = da.mean(axis=(2, 3))  # (N, channels): how much each channel speaks for the target
    cam = np.maximum(np.einsum("nc,nchw->nhw", weights, a), 0.0)
    size = x.shape[2:]
    cam_up = np.stack([_resize(c, size) for c in cam])
    top = cam_up.max(axis=(1, 2), keepdims=True)
    cam_up = np.where(top > 0, cam_up / np.where(top > 0, top, 1.0), 0.0)
    return {"logits": logits, "input_grad": grad, "gradcam": cam_up, "cam_shape": tuple(cam.shape[1:])}


def _resize(image: np.ndarray, size) -> np.ndarray:
    """Bilinear stretch of a feature map over the input (h, w) -> size."""
    img = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32))
    return np.asarray(img.resize((int(size[1]), int(size[0])), Image.BILINEAR), dtype=np.float64)


def share_inside(saliency: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of the total |saliency| that falls inside mask."""
    s = np.abs(np.asarray(saliency, dtype=np.float64))
    total = s.sum()
    return float(s[mask].sum() / total) if total > 0 else float("nan")


# ------------------------------------------------------------ overlays
def _colour(values: np.ndarray) -> np.ndarray:
    """A heat colour (black-red-yellow-white) for values in [0, 1]: (H, W, 3) in [0, 1]."""
    v = np.clip(values, 0, 1)[..., None]
    return np.clip(np.concatenate([3 * v, 3 * v - 1, 3 * v - 2], axis=-1), 0, 1)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """image (H, W) any scale, heat (H, W) in [0, 1] -> (H, W, 3) uint8: the ROI in grey
    with the heat blended in where it is strong."""
    g = np.asarray(image, dtype=np.float64)
    lo, hi = np.percentile(g, [1, 99])
    g = np.clip((g - lo) / (hi - lo if hi > lo else 1.0), 0, 1)[..., None].repeat(3, axis=-1)
    w = alpha * np.clip(heat, 0, 1)[..., None]
    return np.round(255 * ((1 - w) * g + w * _colour(heat))).astype(np.uint8)


def gradient_heat(grad: np.ndarray) -> np.ndarray:
    """|input gradient| scaled to [0, 1] by its 99.5th percentile (a few extreme pixels
    would otherwise leave the rest black)."""
    s = np.abs(grad)
    top = np.percentile(s, 99.5)
    return np.clip(s / top, 0, 1) if top > 0 else np.zeros_like(s)


def is_overlay(path: Path) -> bool:
    """A PNG this module wrote (it carries PNG_MARK in a text chunk)."""
    try:
        with Image.open(path) as img:
            return img.format == "PNG" and img.info.get(PNG_MARK[0]) == PNG_MARK[1]
    except Exception:
        return False


def write_png(path: Path, rgb: np.ndarray, upscale: int = 1) -> None:
    """An RGB overlay to path, whole or not at all (tinycnn.paths.atomic_write), marked
    as ours. upscale: nearest-neighbour enlargement for small ROIs."""
    img = Image.fromarray(rgb)
    if upscale > 1:
        img = img.resize((img.width * upscale, img.height * upscale), Image.NEAREST)
    info = PngImagePlugin.PngInfo()
    info.add_text(*PNG_MARK)
    with atomic_write(path) as f:
        img.save(f, format="PNG", pnginfo=info)
