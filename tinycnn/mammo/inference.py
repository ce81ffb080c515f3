"""Using a trained checkpoint: find it in a run folder, and check from its records alone
(before any weight is read) that it is a two-class classifier with its preprocessing
settings and that it fits in memory. Shared by apps/classify.py and apps/scan_film.py."""

from __future__ import annotations

from pathlib import Path

from . import memory
from .data.preprocess import IMAGE_EXTENSIONS, DataError
from tinycnn.checkpoint import CheckpointError, architecture_shapes, read_checkpoint

CLASSES = 2  # benign, malignant: the network's outputs


def list_images(paths) -> list[Path]:
    """The image files named on a command line: files as given, folders searched
    recursively for images (hidden files left out). DataError for a missing path or a
    folder without images."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
                           and not f.name.startswith("."))
            if not found:
                raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {p}")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"not found: {p}")
    return files


def find_checkpoint(path: Path) -> Path:
    """A checkpoint file, or the one a run folder holds: its best.npz, else last.npz (in
    the patient/ subfolder of a --protocol both run). A --cv run holds one model per
    fold: the error names them."""
    if path.is_dir():
        for folder in (path, path / "patient"):  # a --protocol both run keeps its models per protocol
            for name in ("best.npz", "last.npz"):
                if (folder / name).is_file():
                    return folder / name
        for folder in (path, path / "patient", path / "paper"):
            folds = sorted(folder.glob("fold-*")) if folder.is_dir() else []
            if folds:
                raise DataError(f"{path} is a --cv run: it holds one model per fold, each trained without its "
                                f"fold's women; give one of them, e.g. {folds[0]}")
        raise DataError(f"no best.npz or last.npz in {path}")
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path}")
    return path


def check_checkpoint(ckpt: Path, batch_size: int, backend, backward: bool = False,
                     app: str = "classify.py") -> tuple[int, dict]:
    """From the checkpoint's records alone, before any weight is read: it is a
    classifier with two outputs, its preprocessing settings fit its network, and the
    network fits in memory at batch_size. Returns (image size, preprocessing settings)."""
    records = read_checkpoint(ckpt, arrays=False)
    shapes = architecture_shapes(records["arch"], ckpt)
    if shapes.outputs and shapes.outputs[-1] != (CLASSES,):
        raise CheckpointError(f"{ckpt}: the network ends in outputs of shape {shapes.outputs[-1]}; {app} "
                              f"needs {CLASSES} (benign, malignant)")
    prep = records["meta"].get("preprocessing")
    if not isinstance(prep, dict) or "image_size" not in prep:
        raise CheckpointError(f"{ckpt} has no preprocessing settings: not a checkpoint of apps/train.py")
    size = prep["image_size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise CheckpointError(f"{ckpt}: meta field 'preprocessing.image_size' should be a positive whole number, "
                              f"found {size!r}")
    if tuple(records["arch"]["input_shape"]) != (1, size, size):
        raise CheckpointError(f"{ckpt}: network input {tuple(records['arch']['input_shape'])} does not match "
                              f"image_size {size}")
    need = (memory.explain_bytes if backward else memory.inference_bytes)(shapes, batch_size)
    memory.require(need, memory.device_available(backend),
                   f"{'explaining' if backward else 'running'} the network of {ckpt} "
                   f"({shapes.num_parameters():,} parameters) at batch {batch_size}",
                   "lower --batch-size", backend.memory_where)
    return size, prep
