"""Malignancy probability for ROI images, with a checkpoint from apps/train_ddsm.py.

    python apps/classify.py runs/synthetic/best.npz roi1.png roi2.tif folder_of_rois/
    python apps/classify.py runs/synthetic some/folder --csv predictions.csv

The checkpoint (a file, or a run folder: its best.npz, else last.npz) carries the
architecture and the preprocessing settings, so every image is read, resized and
normalised exactly as in training. Unreadable images are skipped and counted
(--strict stops at the first one).

Refused, with one line saying why and exit code 2 (before any image is read):
  - a checkpoint that is damaged, foreign or hand-edited into something that is not a
    network (the record and field are named), that holds NaN or infinite weights, or
    whose network has other than two outputs (benign, malignant);
  - a network that would not fit in memory at --batch-size (the estimate and what the
    machine has are printed);
  - a --csv that is the checkpoint or one of the inputs, or an existing file that is
    not an earlier predictions table (remove it or choose another name);
  - option values out of range, inf or nan.
Ctrl-C or SIGTERM stops with exit code 130, writing nothing. The CSV is written
whole or not at all; file names that are not valid UTF-8 appear with \\xNN escapes.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from tinycnn import backends
from tinycnn.mammo import memory, metrics
from tinycnn.mammo.cli import INTERRUPTED, error, finite_float, printable, sigterm_as_ctrl_c, tolerant_std_streams
from tinycnn.mammo.data.preprocess import IMAGE_EXTENSIONS, DataError, UnreadableImage, load_preprocessed
from tinycnn.mammo.memory import NotEnoughMemory
from tinycnn.model import CheckpointError, architecture_shapes, load_model, read_checkpoint_records

CSV_HEADER = ["file", "p_malignant", "prediction"]
CLASSES = 2  # benign, malignant: the network's outputs


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


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a .npz from train_ddsm.py, or its run folder")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--csv", help="write file,p_malignant,prediction rows here ('-' for stdout); never over the "
                                 "checkpoint, an input or a file that is not an earlier predictions table")
    p.add_argument("--backend", default="numpy", choices=("auto", "numpy", "numba", "cuda", "cuda-emu"),
                   help="numpy by default: it starts at once, and a few images need no more; auto as in training")
    p.add_argument("--threshold", type=finite_float, default=0.5,
                   help="probability at which a ROI is called malignant")
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
            p.error(printable(f"--csv {args.csv}: "
                              + ("is a folder" if Path(args.csv).is_dir() else f"no folder {folder}")))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        with sigterm_as_ctrl_c():
            return classify(args)
    except KeyboardInterrupt:
        return error("interrupted; nothing was written", INTERRUPTED)


def classify(args) -> int:
    try:
        ckpt = find_checkpoint(Path(args.checkpoint))
        files = list_inputs(args.inputs)
        check_csv_target(args.csv, ckpt, files)
        backend_name = backends.resolve(args.backend)
        size, prep = check_checkpoint(ckpt, min(args.batch_size, len(files)), backend_name)
        net, _ = load_model(ckpt, backend=backend_name)
    except (DataError, CheckpointError, FileNotFoundError, NotEnoughMemory) as e:
        return error(e)
    except OSError as e:  # a checkpoint that cannot be opened (permissions, ...)
        return error(f"cannot read {args.checkpoint}: {e}")
    except backends.BackendUnavailable as e:
        return error(f"backend {args.backend!r} is not available here: {e}")

    try:
        names, probs, skipped = predict(net, files, size, args.batch_size, args.strict)
    except (UnreadableImage, DataError) as e:
        return error(f"{e} (--strict)")
    if not names:
        return error(f"none of the {len(files)} input(s) could be read (first: {skipped[0]})")
    bad = [n for n, q in zip(names, probs) if not np.isfinite(q)]
    if bad:  # finite weights can still overflow: never print "nan benign"
        return error(f"the network's output is not finite for {len(bad)} image(s) (first: {bad[0]}): "
                     f"the weights in {ckpt} are unusable")
    calls = ["malignant" if q >= args.threshold else "benign" for q in probs]

    if args.csv:
        try:
            write_csv(args.csv, names, probs, calls)
        except OSError as e:
            return error(f"cannot write {args.csv}: {e}")
    if args.csv != "-":
        shown = [printable(n) for n in names]
        width = max(len(n) for n in shown)
        print(f"{'file':<{width}}  p(malignant)  call")
        for n, q, c in zip(shown, probs, calls):
            print(f"{n:<{width}}  {q:12.4f}  {c}")
        print(printable(f"{len(names)} image(s) classified with {ckpt} ({size}x{size}, "
                        f"{prep.get('normalisation', '?')})" + (f"; wrote {args.csv}" if args.csv else "")))
    if skipped:
        print(printable(f"warning: {len(skipped)} unreadable image(s) skipped; first: {skipped[0]}"), file=sys.stderr)
    return 0


def check_checkpoint(ckpt: Path, batch_size: int, backend_name: str) -> tuple[int, dict]:
    """From the checkpoint's records alone, before any weight is read: it is a
    classifier with two outputs, its preprocessing settings fit its network, and the
    network fits in memory at batch_size. Returns (image size, preprocessing settings)."""
    records = read_checkpoint_records(ckpt)
    shapes = architecture_shapes(records["arch"], ckpt)
    if shapes.outputs and shapes.outputs[-1] != (CLASSES,):
        raise CheckpointError(f"{ckpt}: the network ends in outputs of shape {shapes.outputs[-1]}; classify.py "
                              f"needs {CLASSES} (benign, malignant)")
    prep = records["meta"].get("preprocessing")
    if not isinstance(prep, dict) or "image_size" not in prep:
        raise CheckpointError(f"{ckpt} has no preprocessing settings: not a train_ddsm.py checkpoint")
    size = prep["image_size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise CheckpointError(f"{ckpt}: meta field 'preprocessing.image_size' should be a positive whole number, "
                              f"found {size!r}")
    if tuple(records["arch"]["input_shape"]) != (1, size, size):
        raise CheckpointError(f"{ckpt}: network input {tuple(records['arch']['input_shape'])} does not match "
                              f"image_size {size}")
    memory.require(memory.inference_bytes(shapes, batch_size), memory.device_available(backend_name),
                   f"running the network of {ckpt} ({shapes.num_parameters():,} parameters) at batch {batch_size}",
                   "lower --batch-size", "the GPU" if backend_name == "cuda" else "this machine")
    return size, prep


def predict(net, files, size: int, batch_size: int, strict: bool):
    """(names, P(malignant), skipped) for the files, read and classified one batch at a
    time so memory stays that of one batch however many images there are."""
    names, probs, skipped = [], [], []
    be = net.backend
    for start in range(0, len(files), batch_size):
        images = []
        for f in files[start:start + batch_size]:
            try:
                images.append(load_preprocessed(f, size))
                names.append(str(f))
            except (UnreadableImage, DataError) as e:
                if strict:
                    raise
                skipped.append(f"{f}: {e}")
        if images:
            x = np.stack(images)[:, None].astype(np.float32)
            probs.append(metrics.softmax_positive(be.to_numpy(net.forward(be.asarray(x), train=False))))
    return names, (np.concatenate(probs) if probs else np.zeros(0)), skipped


def check_csv_target(target, ckpt: Path, inputs: list[Path]) -> None:
    """--csv may create a file or replace an earlier predictions table; never the
    checkpoint, an input, or any other file the user did not ask to replace."""
    if target in (None, "-"):
        return
    path = Path(target)
    if not path.exists():
        return
    for what, protected in [("the checkpoint", ckpt)] + [("an input image", f) for f in inputs]:
        if os.path.samefile(path, protected):
            raise DataError(f"--csv {target} is {what}: writing there would destroy it; choose another file")
    if not is_predictions_table(path):
        raise DataError(f"--csv {target} exists and is not an earlier predictions table "
                        f"({','.join(CSV_HEADER)}): remove it or choose another file")


def is_predictions_table(path: Path) -> bool:
    """An empty file, or one whose first line is our header."""
    with open(path, "rb") as f:
        first = f.readline(200)
    return first == b"" or first.rstrip(b"\r\n") == ",".join(CSV_HEADER).encode()


def write_csv(target: str, names, probs, calls) -> None:
    """file,p_malignant,prediction rows to the file `target` (whole or not at all: a
    temporary file renamed over it), or to stdout for '-'."""
    def rows(f):
        w = csv.writer(f)
        w.writerow(CSV_HEADER)
        for n, q, c in zip(names, probs, calls):
            w.writerow([printable(n), f"{q:.6f}", c])

    if target == "-":
        rows(sys.stdout)
        return
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".csv", dir=os.path.dirname(os.path.abspath(target)))
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            rows(f)
        os.chmod(tmp, _new_file_mode())  # mkstemp makes it private; a table is as readable as any new file
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _new_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


if __name__ == "__main__":
    tolerant_std_streams()
    sys.exit(main())
