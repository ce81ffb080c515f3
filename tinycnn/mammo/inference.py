"""Using a trained checkpoint: find it in a run folder, and check from its records alone
(before any weight is read) that it is a two-class classifier with its preprocessing
settings and that it fits in memory. Shared by apps/classify.py and apps/scan_film.py."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from . import memory
from .data.preprocess import IMAGE_EXTENSIONS, DataError
from .outputs import is_regular_file, target_kind
from tinycnn.checkpoint import CheckpointError, architecture_shapes, read_checkpoint

CLASSES = 2  # benign, malignant: the network's outputs


def list_images(paths) -> tuple[list[Path], list[str]]:
    """(the image files named on a command line, notes): files as given, folders
    searched recursively for images (hidden files left out). A file reached twice (named
    twice, or named and inside a folder also named, or through a link) is kept once, in
    its first place, and a note says so. DataError for a missing path, a folder without
    images, or a path that is neither a file nor a folder (a named pipe is never read)."""
    files, seen, notes = [], {}, []
    for p in map(Path, paths):
        kind = target_kind(p)
        if kind == "folder":
            named = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS
                           and not f.name.startswith(".") and target_kind(f) != "folder")
            found = [f for f in named if is_regular_file(f)]
            notes += [f"{f} is {target_kind(f) or 'gone'}, not an image file: left out" for f in named
                      if f not in found]
            if not found:
                raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {p}")
        elif kind == "file":
            found = [p]
        elif kind is None:
            raise DataError(f"not found: {p}")
        else:
            raise DataError(f"{p} is {kind}, not an image file or a folder")
        for f in found:
            st = f.stat()
            first = seen.setdefault((st.st_dev, st.st_ino), f)
            if first is f:
                files.append(f)
            elif str(f) == str(first):
                notes.append(f"{f} is given more than once: used once")
            else:
                notes.append(f"{f} is {first} again (another spelling or a link): used once")
    return files, notes


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
    kind = target_kind(path)
    if kind is None:
        raise DataError(f"checkpoint not found: {path}")
    if kind != "file":
        raise DataError(f"checkpoint {path} is {kind}, not a file")
    return path


class CheckedCheckpoint(NamedTuple):
    size: int  # the network's input side, the images' after preprocessing
    prep: dict  # the preprocessing settings the checkpoint records
    notes: list  # lines for the user: parameters converted to float32


def check_checkpoint(ckpt: Path, batch_size: int, backend, backward: bool = False,
                     app: str = "classify.py") -> CheckedCheckpoint:
    """From the checkpoint's records and its members' headers alone, before any weight
    is read: it is a classifier with two outputs, its preprocessing settings fit its
    network, and the network fits in memory at batch_size."""
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
    return CheckedCheckpoint(size, prep, records["notes"])
