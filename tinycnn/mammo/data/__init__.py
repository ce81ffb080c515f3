"""Datasets of mammography ROIs: a registry of readers, and the set they return.

    from tinycnn.mammo.data import load_dataset
    rois = load_dataset("mias", data_dir="path/to/mias", image_size=64)

Every reader returns a RoiSet of preprocessed images (see preprocess.py), labels
(0 benign, 1 malignant), a patient id per ROI (for the patient split), a source id
per ROI, and an official train/test side where the dataset has one (CBIS-DDSM).
Results are cached on disk (cache.py), keyed by the source files and the settings.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .. import memory
from . import cache
from .preprocess import DataError, UnreadableImage, settings as preprocess_settings
from .roiset import RoiSet

__all__ = ["RoiSet", "DataError", "UnreadableImage", "DATASETS", "load_dataset", "default_image_size", "count_rois"]


def check_classes(name: str, labels, where: str, skipped=()) -> None:
    """A classifier needs both classes: name the missing one (and the unreadable
    inputs, which may be where it went)."""
    labels = np.asarray(labels)
    also = f"; {len(skipped)} unreadable input(s) were skipped (first: {skipped[0]})" if skipped else ""
    if len(labels) == 0:
        raise DataError(f"{name}: no usable ROI found in {where}{also}")
    for cls, word in ((0, "benign"), (1, "malignant")):
        if not (labels == cls).any():
            raise DataError(f"{name}: only one class in {where}: no {word} ROI "
                            f"({len(labels)} {'malignant' if cls == 0 else 'benign'}){also}")


def _readers():
    from . import cbis_ddsm, folder, mias, synthetic
    return {"synthetic": synthetic, "folder": folder, "cbis-ddsm": cbis_ddsm, "mias": mias}


DATASETS = ("synthetic", "folder", "cbis-ddsm", "mias")


def default_image_size(name: str) -> int:
    """The synthetic set renders at 64 (so the default run fits a 2-core CPU); real
    data defaults to the paper's 256."""
    from .synthetic import DEFAULT_SIZE
    return DEFAULT_SIZE if name == "synthetic" else 256


def count_rois(name: str, data_dir=None, **options) -> int | None:
    """How many ROIs the reader `name` can give at most, from its tables and folder
    listings alone (no image is read); None where that cannot be told before reading
    (the read then says why)."""
    reader = _readers().get(name)
    if reader is None:
        return None
    try:
        return int(reader.count(None if data_dir is None else Path(data_dir), **options))
    except (DataError, OSError, ValueError, TypeError):
        return None


def load_dataset(name: str, data_dir=None, image_size: int | None = None, strict: bool = False,
                 cache_dir=None, use_cache: bool = True, progress: bool = False,
                 memory_available: int | None = None, **options) -> RoiSet:
    """Read (or fetch from the cache) the dataset `name` preprocessed at image_size.

    strict: stop at the first unreadable image instead of skipping and counting it.
    progress: a progress bar while reading (not while loading from the cache).
    memory_available: bytes the set may take; NotEnoughMemory before reading anything
    if it would take more (None: no check)."""
    readers = _readers()
    if name not in readers:
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    reader = readers[name]
    image_size = int(image_size or default_image_size(name))
    if image_size < 8:
        raise DataError(f"--image-size must be at least 8, got {image_size}")
    if name != "synthetic":
        if data_dir is None:
            raise DataError(f"--dataset {name} needs --data-dir")
        data_dir = Path(data_dir)
        if data_dir.exists() and not data_dir.is_dir():
            raise DataError(f"{name}: --data-dir {data_dir} is a file, not a folder")
        if not data_dir.is_dir():
            raise DataError(f"{name}: data directory not found: {data_dir}")
    parts = {"reader": name, "version": reader.VERSION, "settings": preprocess_settings(image_size),
             "options": options, "source": reader.fingerprint(data_dir, **options)}
    n_rois = reader.count(data_dir, **options)
    memory.require(memory.dataset_bytes(n_rois, image_size), memory_available,
                   f"{name}: reading {n_rois} ROIs at {image_size}x{image_size} pixels",
                   "lower --image-size" + (" or --synthetic-count" if name == "synthetic" else " or use fewer images"))
    path = cache.cache_path(cache_dir or cache.default_cache_dir(), name, cache.cache_key(parts))
    cached, damaged = None, None
    if use_cache:
        try:
            cached = cache.load(path)
            problem = None if cached is None else RoiSet.check_arrays(cached, image_size)
            if problem:
                raise cache.Damaged(problem)
        except cache.Damaged as e:  # a killed write, a full disk, an edited file: rebuilt, and said
            cached, damaged = None, f"the cache file {path} could not be used ({e}): rebuilt from the data"
    stored = True  # the arrays are in the cache file (read from it, or written to it)
    if cached is not None:
        rois = RoiSet.from_arrays(name, cached)
        if strict and rois.skipped:  # a fresh strict read stops at the first instead
            raise UnreadableImage(f"{name}: {len(rois.skipped)} unreadable input(s) (--strict): {rois.skipped[0]}")
    else:
        rois = reader.read(data_dir, image_size=image_size, strict=strict, progress=progress, **options)
        check_classes(name, rois.labels, str(data_dir or "the generator"), rois.skipped)
        failure = cache.save(path, rois.to_arrays()) if use_cache else None
        if failure:
            rois.notes.append(f"preprocessed arrays not cached ({failure})")
        if damaged:  # after the save: the rebuilt file's own notes must not say it
            rois.notes.append(damaged)
        stored = use_cache and not failure
    rois.cache_file = str(path) if stored else None
    rois.from_cache = cached is not None
    if strict and rois.strict_errors:  # checked here so a cached set is refused too
        raise DataError(f"{rois.strict_errors[0]} (--strict)")
    for msg in rois.skipped[:3]:
        warnings.warn(f"skipped {msg}", stacklevel=2)
    return rois
