"""Image reading and the paper's preprocessing, shared by training and classify.py.

Preprocessing (what docs/data.md states): every image is read as grayscale at its
own bit depth (8- or 16-bit, RGB converted to luminance, DICOM MONOCHROME1 inverted),
turned as its EXIF orientation tag says (as a viewer displays it: a phone's JPEG or
a scanner's TIFF may be stored sideways with the tag saying so),
resized to image_size x image_size with Pillow's antialiased bilinear filter (the
aspect ratio is not kept, as in the paper), and scaled to zero mean and unit
standard deviation per image. Per-image scaling makes 8- and 16-bit sources, films
of different exposure and the synthetic set comparable, and takes overall brightness
away as a cue.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".pgm", ".dcm")
NORMALISATION = "per-image zero mean, unit std"


class DataError(ValueError):
    """Input data that cannot be used: the message says what and where."""


class UnreadableImage(DataError):
    """One image that cannot be decoded (corrupt, truncated, unknown format)."""


def settings(image_size: int) -> dict:
    """The preprocessing settings a checkpoint stores so classify.py can repeat them."""
    return {"image_size": int(image_size), "grayscale": True, "resize": "bilinear-antialias",
            "normalisation": NORMALISATION}


def read_image(path) -> np.ndarray:
    """Any supported file as a 2-D float32 array at its own scale (no normalisation)."""
    path = os.fspath(path)
    if path.lower().endswith(".dcm"):
        return read_dicom(path)
    try:
        with Image.open(path) as img:
            img.load()
            return _pil_to_gray(ImageOps.exif_transpose(img))
    except Exception as e:  # Pillow raises OSError, ValueError, SyntaxError, struct.error, ... for bad files
        raise UnreadableImage(f"cannot read image {path}: {e}") from e


def _pil_to_gray(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return np.asarray(img, dtype=np.float32).copy()
    if img.mode not in ("L", "P", "1"):
        img = img.convert("RGB") if img.mode not in ("RGB", "LA") else img
    return np.asarray(img.convert("L"), dtype=np.float32).copy()


def read_dicom(path) -> np.ndarray:
    try:
        import pydicom
    except ImportError as e:
        raise DataError(f"{path} is a DICOM file and reading DICOM needs pydicom: "
                        "pip install 'tinycnn[app]' (or pip install pydicom)") from e
    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array.astype(np.float32)
    except Exception as e:  # pydicom raises many types for broken files
        raise UnreadableImage(f"cannot read DICOM {path}: {e}") from e
    if pixels.ndim == 3:  # colour or multi-frame: take luminance / first frame
        pixels = pixels.mean(axis=-1) if pixels.shape[-1] in (3, 4) else pixels[0]
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        pixels = pixels.max() - pixels
    return pixels


def resize(image: np.ndarray, image_size: int) -> np.ndarray:
    """Antialiased bilinear resize of a 2-D float array to image_size x image_size."""
    if image.shape == (image_size, image_size):
        return image.astype(np.float32)
    img = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32))
    return np.asarray(img.resize((image_size, image_size), Image.BILINEAR), dtype=np.float32)


# Above this magnitude float32 squares overflow (the std of 3e38-valued pixels is inf),
# so such an image is scaled down by a power of two first: exact, and the result of a
# per-image normalisation does not depend on the scale.
_SAFE_MAGNITUDE = 2.0**60


def normalise(image: np.ndarray) -> np.ndarray:
    """(image - mean) / std in float32 (std below 1e-6: no scaling). A ValueError if
    the image holds non-finite values or values too large to normalise."""
    image = image.astype(np.float32)
    peak = float(np.max(np.abs(image))) if image.size else 0.0
    if not np.isfinite(peak):
        raise ValueError("image has non-finite pixel values (NaN or inf)")
    if peak > _SAFE_MAGNITUDE:
        image = image * np.float32(2.0 ** -(int(np.log2(peak)) + 1))
    std = float(image.std())
    out = (image - float(image.mean())) / (std if std > 1e-6 else 1.0)
    if not np.isfinite(out).all():
        raise ValueError(f"pixel values up to {peak:.3g} could not be normalised to finite numbers")
    return out


def preprocess(image: np.ndarray, image_size: int) -> np.ndarray:
    """A raw 2-D image -> the network's (image_size, image_size) float32 input.
    Raises UnreadableImage for an image no ROI can come from (so readers skip it)."""
    if image.ndim != 2:
        raise UnreadableImage(f"expected a 2-D grayscale image, got an array of shape {image.shape}")
    if min(image.shape) < 2:
        raise UnreadableImage(f"image is {image.shape[0]}x{image.shape[1]} pixels, too small to resize")
    if not np.isfinite(image).all():  # a float TIFF with NaN would otherwise surface as a NaN loss
        raise UnreadableImage("image has non-finite pixel values (NaN or inf)")
    peak = float(np.max(np.abs(image)))
    if peak > _SAFE_MAGNITUDE:  # resize in float32 could overflow too: scale first (see normalise)
        image = image.astype(np.float32) * np.float32(2.0 ** -(int(np.log2(peak)) + 1))
    try:
        return normalise(resize(image, image_size))
    except ValueError as e:
        raise UnreadableImage(str(e)) from e


def load_preprocessed(path, image_size: int) -> np.ndarray:
    image = read_image(path)
    try:
        return preprocess(image, image_size)
    except UnreadableImage as e:
        raise UnreadableImage(f"{path}: {e}") from e
