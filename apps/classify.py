"""Malignancy probability for ROI images, with a checkpoint from apps/train.py.

    python apps/classify.py runs/synthetic/best.npz roi1.png roi2.tif folder_of_rois/
    python apps/classify.py runs/synthetic some/folder --csv predictions.csv
    python apps/classify.py runs/synthetic some/folder --explain saliency/   # what the network looks at

The checkpoint (a file, or a run folder: its best.npz, else last.npz) carries the
architecture and the preprocessing settings, so every image is read, resized and
normalised exactly as in training. Unreadable images are skipped and counted
(--strict stops at the first one).

--explain DIR writes two PNG overlays per image into DIR: NAME.gradient.png, the
gradient of the malignant logit with respect to each input pixel (the engine's
backward pass carried one layer further, to the input), and NAME.gradcam.png,
Grad-CAM at the last conv block (docs/backprop.md, "Saliency").

Refused, with one line saying why and exit code 2 (before any image is read):
  - a checkpoint that is damaged, foreign or hand-edited into something that is not a
    network (the record and field are named), that holds NaN or infinite weights, or
    whose network has other than two outputs (benign, malignant);
  - a network that would not fit in memory at --batch-size (the estimate and what the
    machine has are printed);
  - a --csv that is the checkpoint or one of the inputs, or an existing file that is
    not an earlier predictions table (remove it or choose another name);
  - an --explain folder that is a file, is or lies inside an input folder, or holds a
    file of an overlay's name that is not an earlier overlay (or is an input);
  - option values out of range, inf or nan.
Ctrl-C or SIGTERM stops with exit code 130, writing no CSV (overlays already
written stay, each whole). The CSV and every overlay are written whole or not at all; file names that are not valid UTF-8 appear with \\xNN escapes.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import numpy as np

from tinycnn.mammo import metrics, progress, saliency
from tinycnn.mammo.inference import check_checkpoint, find_checkpoint, list_images
from tinycnn.mammo.cli import (INTERRUPTED, BackendError, add_backend_arguments, error, finite_float, open_backend,
                               precision_line, printable, sigterm_as_ctrl_c, tolerant_std_streams)
from tinycnn.mammo.data.preprocess import DataError, UnreadableImage, load_preprocessed
from tinycnn.mammo.memory import NotEnoughMemory
from tinycnn.mammo.runfolder import inside, unusable_folder
from tinycnn.checkpoint import CheckpointError
from tinycnn.model import load_model
from tinycnn.paths import atomic_write

CSV_HEADER = ["file", "p_malignant", "prediction"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a .npz from train.py, or its run folder")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--csv", help="write file,p_malignant,prediction rows here ('-' for stdout); never over the "
                                 "checkpoint, an input or a file that is not an earlier predictions table")
    add_backend_arguments(p)
    p.add_argument("--threshold", type=finite_float, default=0.5,
                   help="probability at which a ROI is called malignant")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    p.add_argument("--explain", metavar="DIR",
                   help="write saliency overlays per image into DIR: the gradient of the malignant logit with "
                        "respect to the input (NAME.gradient.png) and Grad-CAM at the last conv block "
                        "(NAME.gradcam.png); never into an input folder, never over a file that is not an "
                        "earlier overlay")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it shows only on a terminal)")
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
    if args.explain is not None:
        problem = unusable_folder(Path(args.explain), "--explain")
        if problem:
            p.error(printable(problem))
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
        files = list_images(args.inputs)
        check_csv_target(args.csv, ckpt, files)
        targets = explain_targets(args.explain, args.inputs, files, ckpt) if args.explain else None
        backend = open_backend(args.backend, args.precision)
        size, prep = check_checkpoint(ckpt, min(args.batch_size, len(files)), backend,
                                      backward=args.explain is not None)
        net, _ = load_model(ckpt, backend=backend)
    except (DataError, CheckpointError, FileNotFoundError, NotEnoughMemory, BackendError) as e:
        return error(e)
    except OSError as e:  # a checkpoint that cannot be opened (permissions, ...)
        return error(f"cannot read {args.checkpoint}: {e}")

    try:
        names, probs, skipped = predict(net, files, size, args.batch_size, args.strict,
                                        targets=targets, bar=not args.no_progress and sys.stderr.isatty())
    except (UnreadableImage, DataError) as e:
        return error(f"{e} (--strict)")
    except OSError as e:  # the overlay folder filled up or vanished: what was written stays, each file whole
        return error(f"cannot write the overlays into {args.explain}: {e}")
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
                        f"{prep.get('normalisation', '?')}; {backend.name}, {precision_line(backend)})"
                        + (f"; wrote {args.csv}" if args.csv else "")
                        + (f"; saliency overlays (gradient, Grad-CAM) of each in {args.explain}"
                           if args.explain else "")))
    if skipped:
        print(printable(f"warning: {len(skipped)} unreadable image(s) skipped; first: {skipped[0]}"), file=sys.stderr)
    return 0


def predict(net, files, size: int, batch_size: int, strict: bool, targets: dict | None = None, bar: bool = False):
    """(names, P(malignant), skipped) for the files, read and classified one batch at a
    time so memory stays that of one batch however many images there are. targets
    (file -> (gradient PNG, Grad-CAM PNG)): also explain each batch and write its
    overlays."""
    names, probs, skipped = [], [], []
    be = net.backend
    b = progress.bar(len(files), "explaining" if targets else "classifying", enabled=bar, unit="img")
    try:
        for start in range(0, len(files), batch_size):
            images, read = [], []
            for f in files[start:start + batch_size]:
                try:
                    images.append(load_preprocessed(f, size))
                    names.append(str(f))
                    read.append(f)
                except (UnreadableImage, DataError) as e:
                    if strict:
                        raise
                    skipped.append(f"{f}: {e}")
            if images:
                x = np.stack(images)[:, None].astype(np.float32)
                if targets is None:
                    logits = be.to_numpy(net.forward(be.asarray(x), train=False))
                else:
                    e = saliency.explain(net, be.asarray(x))
                    logits = e["logits"]
                    write_overlays(x[:, 0], e, [targets[f] for f in read])
                probs.append(metrics.softmax_positive(logits))
            if b is not None:
                b.update(len(files[start:start + batch_size]))
    finally:
        if b is not None:
            b.close()
    return names, (np.concatenate(probs) if probs else np.zeros(0)), skipped


def write_overlays(images, e: dict, paths) -> None:
    """The gradient and Grad-CAM overlays of a batch, each PNG whole or not at all."""
    for k, (grad_png, cam_png) in enumerate(paths):
        upscale = max(1, 256 // images.shape[-1])  # a 32 px ROI is hard to see at its own size
        saliency.write_png(grad_png, saliency.overlay(images[k], saliency.gradient_heat(e["input_grad"][k])), upscale)
        saliency.write_png(cam_png, saliency.overlay(images[k], e["gradcam"][k]), upscale)


def overlay_names(inputs, files) -> list[str]:
    """A file-name stem per input, unique among them: the path below the folder it was
    found in (benign/0.png and malignant/0.png are both 0.png), with / as __."""
    stems = []
    roots = [Path(a) for a in inputs]
    for f in files:
        root = next((r for r in roots if r.is_dir() and (r == f or r in f.parents)), None)
        rel = f.relative_to(root) if root is not None else Path(f.name)
        stems.append("__".join(rel.with_suffix("").parts))
    seen: dict[str, int] = {}
    out = []
    for stem in stems:
        n = seen.get(stem, 0)
        seen[stem] = n + 1
        out.append(stem if n == 0 else f"{stem}-{n + 1}")
    return out


def explain_targets(out: str, inputs, files, ckpt: Path) -> dict:
    """file -> (gradient PNG, Grad-CAM PNG) in the --explain folder, checked before any
    work: the folder is not an input folder nor inside one (the overlays are images and
    would join the data), and no overlay would replace an input, the checkpoint or a
    file that is not an earlier overlay."""
    folder = Path(out)
    for a in inputs:
        if inside(folder, a):
            raise DataError(f"--explain {out} is inside the input folder {a}: the overlays are images and would "
                            "join the inputs; choose a folder outside it")
    targets = {}
    protected = [("the checkpoint", ckpt)] + [("an input image", f) for f in files]
    for f, stem in zip(files, overlay_names(inputs, files)):
        pair = (folder / f"{stem}.gradient.png", folder / f"{stem}.gradcam.png")
        for path in pair:
            if not path.exists():
                continue
            for what, p in protected:
                if os.path.samefile(path, p):
                    raise DataError(f"--explain: writing {path} would destroy {what}; choose another folder")
            if not saliency.is_overlay(path):
                raise DataError(f"--explain: {path} exists and is not an earlier overlay: remove it or choose "
                                "another folder")
        targets[f] = pair
    folder.mkdir(parents=True, exist_ok=True)
    return targets


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
    """file,p_malignant,prediction rows to the file `target` (whole or not at all:
    tinycnn.paths.atomic_write), or to stdout for '-'."""
    def rows(f):
        w = csv.writer(f)
        w.writerow(CSV_HEADER)
        for n, q, c in zip(names, probs, calls):
            w.writerow([printable(n), f"{q:.6f}", c])

    if target == "-":
        rows(sys.stdout)
        return
    with atomic_write(target, "w", newline="", encoding="utf-8") as f:
        rows(f)


if __name__ == "__main__":
    tolerant_std_streams()
    sys.exit(main())
