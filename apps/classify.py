"""Malignancy probability for ROI images, with a checkpoint from apps/train.py.

    python apps/classify.py runs/synthetic/best.npz roi1.png roi2.tif folder_of_rois/
    python apps/classify.py runs/synthetic some/folder --csv predictions.csv
    python apps/classify.py runs/synthetic some/folder --explain saliency/   # what the network looks at

The checkpoint (a file, or a run folder: its best.npz, else last.npz) carries the
architecture and the preprocessing settings, so every image is read, resized and
normalised exactly as in training. Unreadable images, and images whose output is not
finite, are skipped, each named (--strict stops at the first one); an image reached
twice is classified once. Parameters stored as float16 or float64 are converted to
float32, with a note.

--explain DIR writes two PNG overlays per image into DIR: NAME.gradient.png, the
gradient of the malignant logit with respect to each input pixel (the engine's
backward pass carried one layer further, to the input), and NAME.gradcam.png,
Grad-CAM at the last conv block (docs/backprop.md, "Saliency"). NAME is the image's
path below the folder given (benign/0.png: benign__0), its extension kept where two
inputs would share a name (x.png, x.tif: x.png.*, x.tif.*), then numbered in input
order; each renamed input is noted, and with --csv the overlays are columns of the
table.

Refused, with one line saying why and exit code 2 (before any image is read):
  - a checkpoint that is damaged, foreign or hand-edited into something that is not a
    network (the record and field are named), that holds NaN or infinite weights, or
    whose network has other than two outputs (benign, malignant);
  - a network that would not fit in memory at --batch-size (the estimate and what the
    machine has are printed);
  - a --csv that is the checkpoint or one of the inputs, an existing file that is not
    an earlier predictions table (remove it or choose another name), or a folder, a
    named pipe, a device or a socket (never opened: '-' is stdout);
  - an --explain folder that is a file, is or lies inside an input folder, or holds a
    file of an overlay's name that is not an earlier overlay (or is an input);
  - option values out of range, inf or nan.
Running out of memory stops with exit code 2 and says what to lower. Ctrl-C or
SIGTERM stops with exit code 130, writing no CSV (overlays already written stay, each
whole). The CSV and every overlay are written whole or not at all; in the table, the
CSV and every message a file name is one field on one line (newlines, tabs, control
characters and bytes that are not UTF-8 as backslash escapes: \\n, \\t, \\xff).
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
from tinycnn.mammo.cli import (INTERRUPTED, BackendError, add_backend_arguments, error, finite_float, note,
                               open_backend, out_of_memory, precision_line, printable, shown, sigterm_as_ctrl_c,
                               tolerant_std_streams)
from tinycnn.mammo.data.preprocess import DataError, UnreadableImage, load_preprocessed
from tinycnn.mammo.memory import NotEnoughMemory
from tinycnn.mammo.outputs import OutputError, check_file_target, plan_outputs, starts_with
from tinycnn.mammo.runfolder import inside, unusable_folder
from tinycnn.checkpoint import CheckpointError
from tinycnn.model import load_model
from tinycnn.paths import atomic_write

CSV_HEADER = ["file", "p_malignant", "prediction"]
OVERLAY_COLUMNS = ["gradient_overlay", "gradcam_overlay"]  # with --explain: where each image's overlays went
OVERLAYS = {"gradient": (".gradient.png", saliency.is_overlay), "gradcam": (".gradcam.png", saliency.is_overlay)}


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
        try:
            check_file_target(args.csv, "--csv")
        except OutputError as e:
            p.error(shown(e))
        if not folder.is_dir():
            p.error(shown(f"--csv {args.csv}: no folder {folder}"))
    if args.explain is not None:
        problem = unusable_folder(Path(args.explain), "--explain")
        if problem:
            p.error(shown(problem))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        with sigterm_as_ctrl_c():
            return classify(args)
    except KeyboardInterrupt:
        return error("interrupted; nothing was written", INTERRUPTED)
    except MemoryError:  # anywhere the estimate did not foresee
        return out_of_memory(f"classifying at --batch-size {args.batch_size}", "lower --batch-size")


def classify(args) -> int:
    try:
        ckpt = find_checkpoint(Path(args.checkpoint))
        files, notes = list_images(args.inputs)
        check_csv_target(args.csv, ckpt, files)
        plan = explain_plan(args.explain, args.inputs, files, ckpt) if args.explain else None
        backend = open_backend(args.backend, args.precision)
        size, prep, ckpt_notes = check_checkpoint(ckpt, min(args.batch_size, len(files)), backend,
                                                  backward=args.explain is not None)
        net, _ = load_model(ckpt, backend=backend)
    except (DataError, CheckpointError, FileNotFoundError, NotEnoughMemory, BackendError) as e:
        return error(e)
    except OSError as e:  # a checkpoint that cannot be opened (permissions, ...)
        return error(f"cannot read {args.checkpoint}: {e}")
    for line in notes + ckpt_notes + (plan.notes if plan else []):
        note(line)
    if plan and plan.replaced:
        note(f"--explain: {plan.replaced} earlier overlay(s) in {args.explain} are replaced")

    targets = {f: (paths["gradient"], paths["gradcam"]) for f, paths in plan.paths.items()} if plan else None
    try:
        names, probs, skipped, unusable = predict(net, files, size, args.batch_size, args.strict, targets=targets,
                                                  bar=not args.no_progress and sys.stderr.isatty(), ckpt=ckpt)
    except (UnreadableImage, DataError) as e:
        return error(f"{e} (--strict)")
    except MemoryError:
        return out_of_memory(f"{'explaining' if targets else 'classifying'} at --batch-size {args.batch_size}"
                             + ("; the overlays written so far are whole" if targets else ""), "lower --batch-size")
    except OSError as e:  # the overlay folder filled up or vanished: what was written stays, each file whole
        return error(f"cannot write the overlays into {args.explain}: {e}")
    for line in skipped + unusable:
        print(f"warning: skipped {shown(line)}", file=sys.stderr)
    if not names:
        return error(f"none of the {len(files)} input(s) could be read or classified (first: "
                     f"{(skipped + unusable)[0]})")
    calls = ["malignant" if q >= args.threshold else "benign" for q in probs]
    overlays = [targets[n] for n in names] if targets else None

    if args.csv:
        try:
            write_csv(args.csv, names, probs, calls, overlays)
        except OSError as e:
            return error(f"cannot write {args.csv}: {e}")
    if args.csv != "-":
        rows = [shown(n) for n in names]
        width = max(len(n) for n in rows)
        print(f"{'file':<{width}}  p(malignant)  call")
        for n, q, c in zip(rows, probs, calls):
            print(f"{n:<{width}}  {q:12.4f}  {c}")
        print(printable(f"{len(names)} image(s) classified with {shown(ckpt)} ({size}x{size}, "
                        f"{prep.get('normalisation', '?')}; {backend.name}, {precision_line(backend)})"
                        + (f"; wrote {shown(args.csv)}" if args.csv else "")
                        + (f"; saliency overlays (gradient, Grad-CAM) of each in {shown(args.explain)}"
                           if args.explain else "")))
    for lines, what in ((skipped, "unreadable image(s)"), (unusable, "image(s) without a finite output")):
        if lines:
            print(f"warning: {len(lines)} {what} skipped; first: {shown(lines[0])}", file=sys.stderr)
    return 0


def predict(net, files, size: int, batch_size: int, strict: bool, targets: dict | None = None, bar: bool = False,
            ckpt=None):
    """(files classified, P(malignant), unreadable, unusable) for the files, read and
    classified one batch at a time so memory stays that of one batch however many
    images there are. unreadable, unusable: a line per image skipped, naming it; an
    image whose output (or, explained, whose saliency) is not finite is unusable,
    never given a NaN. targets (file -> (gradient PNG, Grad-CAM PNG)): also
    explain each batch and write its overlays."""
    names, probs, skipped, unusable = [], [], [], []
    be = net.backend
    b = progress.bar(len(files), "explaining" if targets else "classifying", enabled=bar, unit="img")
    try:
        for start in range(0, len(files), batch_size):
            images, read = [], []
            for f in files[start:start + batch_size]:
                try:
                    images.append(load_preprocessed(f, size))
                    read.append(f)
                except (UnreadableImage, DataError) as e:
                    if strict:
                        raise
                    skipped.append(f"{f}: {e}")
            if images:
                x = np.stack(images)[:, None].astype(np.float32)
                e = None
                if targets is None:
                    logits = be.to_numpy(net.forward(be.asarray(x), train=False))
                else:
                    e = saliency.explain(net, be.asarray(x))
                    logits = e["logits"]
                for k, f in enumerate(read):
                    problem = not_finite(logits[k], e, k)
                    if problem:
                        message = (f"{f}: the network's {problem} for this image is not finite (its pixels "
                                   f"normalise to finite values: the weights of {ckpt} overflow on it)")
                        if strict:
                            raise DataError(message)
                        unusable.append(message)
                        continue
                    if targets is not None:
                        write_overlays(x[k, 0], e, k, targets[f])
                    names.append(f)
                    probs.append(float(metrics.softmax_positive(logits[k:k + 1])[0]))
            if b is not None:
                b.update(len(files[start:start + batch_size]))
    finally:
        if b is not None:
            b.close()
    return names, np.array(probs), skipped, unusable


def not_finite(logits, e: dict | None, k: int) -> str | None:
    """What of image k's results is not finite (its output, its saliency), or None."""
    if not np.isfinite(logits).all():
        return "output"
    if e is not None and not (np.isfinite(e["input_grad"][k]).all() and np.isfinite(e["gradcam"][k]).all()):
        return "input gradient or Grad-CAM map"
    return None


def write_overlays(image, e: dict, k: int, paths) -> None:
    """Image k's gradient and Grad-CAM overlays, each PNG whole or not at all."""
    grad_png, cam_png = paths
    upscale = max(1, 256 // image.shape[-1])  # a 32 px ROI is hard to see at its own size
    saliency.write_png(grad_png, saliency.overlay(image, saliency.gradient_heat(e["input_grad"][k])), upscale)
    saliency.write_png(cam_png, saliency.overlay(image, e["gradcam"][k]), upscale)


def explain_plan(out: str, inputs, files, ckpt: Path):
    """The --explain folder's two overlays per input (tinycnn.mammo.outputs), checked
    before any work: the folder is not an input folder nor inside one (the overlays are
    images and would join the data), and no overlay would replace an input, the
    checkpoint or a file that is not an earlier overlay."""
    folder = Path(out)
    for a in inputs:
        if inside(folder, a):
            raise DataError(f"--explain {out} is inside the input folder {a}: the overlays are images and would "
                            "join the inputs; choose a folder outside it")
    plan = plan_outputs(folder, files, OVERLAYS, roots=inputs,
                        protected=[("the checkpoint", ckpt)] + [("an input image", f) for f in files],
                        flag="--explain", ours="an earlier overlay")
    folder.mkdir(parents=True, exist_ok=True)
    return plan


def check_csv_target(target, ckpt: Path, inputs: list[Path]) -> None:
    """--csv may create a file or replace an earlier predictions table; never the
    checkpoint, an input, anything that is not a regular file, or any other file the
    user did not ask to replace."""
    if target in (None, "-"):
        return
    path = Path(target)
    if not check_file_target(path, "--csv"):
        return
    for what, protected in [("the checkpoint", ckpt)] + [("an input image", f) for f in inputs]:
        if os.path.samefile(path, protected):
            raise DataError(f"--csv {target} is {what}: writing there would destroy it; choose another file")
    if not is_predictions_table(path):
        raise DataError(f"--csv {target} exists and is not an earlier predictions table "
                        f"({','.join(CSV_HEADER)}): remove it or choose another file")


def is_predictions_table(path: Path) -> bool:
    """An empty file, or one whose first line is our header (with or without the
    overlay columns)."""
    return starts_with(path, {",".join(CSV_HEADER).encode(), ",".join(CSV_HEADER + OVERLAY_COLUMNS).encode()})


def write_csv(target: str, names, probs, calls, overlays=None) -> None:
    """file,p_malignant,prediction rows (and each image's overlays) to the file
    `target` (whole or not at all: tinycnn.paths.atomic_write), or to stdout for '-'.
    Every name is one field on one line (shown)."""
    def rows(f):
        w = csv.writer(f)
        w.writerow(CSV_HEADER + (OVERLAY_COLUMNS if overlays else []))
        for i, (n, q, c) in enumerate(zip(names, probs, calls)):
            w.writerow([shown(n), f"{q:.6f}", c] + ([shown(p) for p in overlays[i]] if overlays else []))

    if target == "-":
        rows(sys.stdout)
        return
    with atomic_write(target, "w", newline="", encoding="utf-8") as f:
        rows(f)


if __name__ == "__main__":
    tolerant_std_streams()
    sys.exit(main())
