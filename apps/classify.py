"""Malignancy probability for ROI images, with a checkpoint from apps/train_ddsm.py.

    python apps/classify.py runs/synthetic/best.npz roi1.png roi2.tif folder_of_rois/
    python apps/classify.py runs/synthetic some/folder --csv predictions.csv

The checkpoint (a file, or a run folder: its best.npz, else last.npz) carries the
architecture and the preprocessing settings, so every image is read, resized and
normalised exactly as in training. Unreadable images are skipped and counted
(--strict stops at the first one).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path


import numpy as np  # noqa: E402

from tinycnn import backends  # noqa: E402
from tinycnn.mammo import metrics  # noqa: E402
from tinycnn.mammo.data.preprocess import IMAGE_EXTENSIONS, DataError, UnreadableImage, load_preprocessed  # noqa: E402
from tinycnn.model import CheckpointError, load_model  # noqa: E402


def find_checkpoint(path: Path) -> Path:
    if path.is_dir():
        for folder in (path, path / "patient"):  # a --protocol both run keeps its models per protocol
            for name in ("best.npz", "last.npz"):
                if (folder / name).is_file():
                    return folder / name
        raise DataError(f"no best.npz or last.npz in {path}")
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path}")
    return path


def list_inputs(paths) -> list[Path]:
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a .npz from train_ddsm.py, or its run folder")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--csv", help="write file,p_malignant,prediction rows here ('-' for stdout)")
    p.add_argument("--backend", default="numpy", choices=("auto", "numpy", "numba", "cuda", "cuda-emu"),
                   help="numpy by default: it starts at once, and a few images need no more; auto as in training")
    p.add_argument("--threshold", type=float, default=0.5, help="probability at which a ROI is called malignant")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        p.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if not 0.0 <= args.threshold <= 1.0:
        p.error(f"--threshold is a probability: between 0 and 1, got {args.threshold}")
    if args.csv and args.csv != "-":
        folder = Path(args.csv).resolve().parent
        if Path(args.csv).is_dir() or not folder.is_dir():
            p.error(f"--csv {args.csv}: " + ("is a folder" if Path(args.csv).is_dir() else f"no folder {folder}"))
    try:
        ckpt = find_checkpoint(Path(args.checkpoint))
        net, info = load_model(ckpt, backend=backends.resolve(args.backend))
        prep = info["meta"].get("preprocessing")
        if not prep or "image_size" not in prep:
            raise CheckpointError(f"{ckpt} has no preprocessing settings: not a train_ddsm.py checkpoint")
        size = int(prep["image_size"])
        if tuple(net.input_shape) != (1, size, size):
            raise CheckpointError(f"{ckpt}: network input {net.input_shape} does not match image_size {size}")
        files = list_inputs(args.inputs)
    except (DataError, CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except backends.BackendUnavailable as e:
        print(f"error: backend {args.backend!r} is not available here: {e}", file=sys.stderr)
        return 2

    names, images, skipped = [], [], []
    for f in files:
        try:
            images.append(load_preprocessed(f, size))
            names.append(str(f))
        except (UnreadableImage, DataError) as e:
            if args.strict:
                print(f"error: {e} (--strict)", file=sys.stderr)
                return 2
            skipped.append(f"{f}: {e}")
    if not images:
        print(f"error: none of the {len(files)} input(s) could be read (first: {skipped[0]})", file=sys.stderr)
        return 2
    be = net.backend
    x = np.stack(images)[:, None].astype(np.float32)
    logits = np.concatenate([be.to_numpy(net.forward(be.asarray(x[i:i + args.batch_size]), train=False))
                             for i in range(0, len(x), args.batch_size)])
    probs = metrics.softmax_positive(logits)
    calls = ["malignant" if q >= args.threshold else "benign" for q in probs]

    if args.csv:
        try:
            write_csv(args.csv, names, probs, calls)
        except OSError as e:
            print(f"error: cannot write {args.csv}: {e}", file=sys.stderr)
            return 2
    if args.csv != "-":
        width = max(len(n) for n in names)
        print(f"{'file':<{width}}  p(malignant)  call")
        for n, q, c in zip(names, probs, calls):
            print(f"{n:<{width}}  {q:12.4f}  {c}")
        print(f"{len(names)} image(s) classified with {ckpt} ({size}x{size}, {prep.get('normalisation', '?')})"
              + (f"; wrote {args.csv}" if args.csv else ""))
    if skipped:
        print(f"warning: {len(skipped)} unreadable image(s) skipped; first: {skipped[0]}", file=sys.stderr)
    return 0


def write_csv(target: str, names, probs, calls) -> None:
    """file,p_malignant,prediction rows to the file `target`, or to stdout for '-'."""
    def rows(f):
        w = csv.writer(f)
        w.writerow(["file", "p_malignant", "prediction"])
        for n, q, c in zip(names, probs, calls):
            w.writerow([n, f"{q:.6f}", c])

    if target == "-":
        rows(sys.stdout)
    else:
        with open(target, "w", newline="") as f:
            rows(f)


if __name__ == "__main__":
    sys.exit(main())
