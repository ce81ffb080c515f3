"""A checkpoint ready to scan whole films (apps/scan_film.py): checked from its records
before any weight is read, loaded, its window, stride and batch chosen; each film's
memory checked from the image header before it is decoded, then read, checked and
scanned (tinycnn.mammo.scan)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import memory, scan
from .cli import shown
from .data.preprocess import UnreadableImage, read_image
from .inference import check_checkpoint
from tinycnn.checkpoint import architecture_shapes, read_checkpoint
from tinycnn.model import load_model


def window_default(meta: dict, size: int) -> tuple[int, str]:
    """(window side, why): the training ROIs' median crop side where the checkpoint
    records it (MIAS), else the network's input size."""
    pixels = meta.get("roi_pixels")
    if isinstance(pixels, dict) and isinstance(pixels.get("median"), int) and pixels["median"] >= 2:
        return pixels["median"], "the training ROIs' median crop side"
    return size, "the network's input size (the checkpoint records no ROI crop size)"


def image_shape(path) -> tuple[int, int] | None:
    """(height, width) from the file's header alone, or None where it cannot be told
    (the read then says what is wrong with the file)."""
    path = os.fspath(path)
    try:
        if path.lower().endswith(".dcm"):
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True)
            return int(ds.Rows), int(ds.Columns)
        from PIL import Image

        with Image.open(path) as img:  # lazy: the header only
            return img.height, img.width
    except Exception:  # any reader's error: the full read reports it
        return None


def read_film(path: Path, require) -> np.ndarray:
    """A film as a 2-D float32 array. require(path, height, width) raises
    NotEnoughMemory when a film of that size cannot be scanned: called from the header
    before the film is decoded (and again from the pixels when the header told nothing
    or something else). UnreadableImage, naming the file, for one that cannot be read,
    is not 2-D of at least 2x2 pixels, or holds non-finite values."""
    shape = image_shape(path)
    if shape is not None:
        require(path, *shape)
    film = read_image(path)
    if film.ndim != 2 or min(film.shape) < 2:
        raise UnreadableImage(f"{path}: a film must be a 2-D image of at least 2x2 pixels, got {film.shape}")
    if not np.isfinite(film).all():
        raise UnreadableImage(f"{path}: non-finite pixel values (NaN or inf)")
    if shape != film.shape:  # a header that told nothing, or something else
        require(path, *film.shape)
    return film


class Scanner:
    """One checkpoint, loaded and checked, ready to scan films with the options given.
    CheckpointError, NotEnoughMemory or OSError when it cannot be."""

    def __init__(self, ckpt: Path, backend, window: int | None = None, stride: int | None = None,
                 batch_size: int = 64, breast_mask: bool = True, min_inside: float = 0.5, progress: bool = False):
        self.ckpt = ckpt
        self.size, self.prep, self.notes = check_checkpoint(ckpt, 1, backend, app="scan_film.py")
        records = read_checkpoint(ckpt, arrays=False)
        self.meta = records["meta"]
        shapes = architecture_shapes(records["arch"], ckpt)
        self.batch = scan.batch_for(shapes, batch_size, memory.device_available(backend))
        # the batches live beside the film on the host unless the backend keeps them elsewhere
        self.batch_host_bytes = memory.inference_bytes(shapes, self.batch) if backend.memory_is_host else 0
        self.window, self.window_why = ((window, "as asked") if window else window_default(self.meta, self.size))
        self.stride = stride or max(1, self.window // 4)
        self.breast_mask, self.min_inside, self.progress = breast_mask, min_inside, progress
        self.net, _ = load_model(ckpt, backend=backend)

    def film_bytes(self, height: int, width: int) -> int:
        """Host memory one film of this size takes while it is scanned (scan.film_bytes
        and the network's batches where they are on the host)."""
        return scan.film_bytes(height, width) + self.batch_host_bytes

    def read(self, path: Path) -> np.ndarray:
        """A film as a 2-D float32 array (read_film, this checkpoint's memory needs)."""
        return read_film(path, self._require)

    def _require(self, path: Path, height: int, width: int) -> None:
        memory.require(self.film_bytes(height, width), memory.host_available(),
                       f"scanning {path} ({width}x{height} pixels, batches of {self.batch})",
                       "lower --batch-size or scan a smaller film")

    def run(self, film: np.ndarray, name: str):
        """(scan.ScanResult, the breast mask used or None). scan.ScanError, naming the
        window, when one cannot be classified."""
        mask = scan.breast_mask(film) if self.breast_mask else None
        desc = f"scanning {shown(name)}"
        result = scan.scan(self.net, film, self.size, self.window, self.stride, self.batch, mask=mask,
                           min_inside=self.min_inside, progress=self.progress, desc=desc)
        if len(result.probs) == 0:  # nothing in the breast mask was big enough: scan it all
            result = scan.scan(self.net, film, self.size, self.window, self.stride, self.batch,
                               progress=self.progress, desc=desc)
            mask = None
        return result, mask
