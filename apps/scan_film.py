"""Scan whole mammograms: where a lesion detector finds lesions, or a malignancy map of an ROI classifier.

    python apps/scan_film.py runs/detect/fold-1/detector.npz mdb001.pgm --out scans/  # top regions of a film
    python apps/scan_film.py runs/detect --heldout PATH/TO/MIAS --out scans/   # the run's held-out figures
    python apps/scan_film.py runs/mias/fold-1/last.npz mdb001.pgm mdb002.pgm --out scans/
    python apps/scan_film.py runs/mias --heldout PATH/TO/MIAS --out scans/   # a --cv run, films it held out

A lesion detector (`train.py --task detect`: a fold-N/detector.npz, or its run
folder, whose fold-1 detector is taken and named) says where a lesion is: each film
is shrunk by the detector's scale, normalised over its breast, scanned film-wide with
its shifts and mirrors, and its regions picked at least the detector's NMS radius
apart. Per film the app prints the --top regions (rank, x, y: the scored window's
centre in film pixels from the top-left; p_lesion, the sigmoid of log_odds) and
writes NAME.heatmap.png (p_lesion over the breast, the first three regions numbered)
and NAME.regions.csv; DIR/scans.csv lists every film. --heldout with a detection run:
each fold's detector scans the films its record says it held out, and the pooled
top-1 / top-3 hit rates, FROC, baselines and the figures by class and radius are
printed as the run's metrics.json "detection" holds them, written to heldout.json
(and a row per film to heldout.csv), and compared with the run's own (the same
films and backend give the same numbers). --find-lesions insists on a detector: a
classifier is refused. Everything below about windows and strides is the
classifier's.

A benign/malignant ROI classifier scores windows as if each were a lesion crop: its
map is P(malignant), and it does not say where a lesion is (the app says so).

Every window (a square of --window film pixels, every --stride pixels, the last one
flush with the edge) gets the checkpoint's own preprocessing, as an ROI did in
training, and goes through the backend in batches bounded by the memory available.
Per film, DIR receives NAME.heatmap.png (the mean P(malignant) of the windows
covering each pixel, over the film) and NAME.regions.csv (the --top most malignant
windows by log-odds, overlapping little: rank, centre x, y in film pixels from the
top-left, side, p_malignant, log_odds), and DIR/scans.csv lists every film with its
outputs and hottest window, or why it was skipped. NAME is the film's path below the
folder given (a/x.png: a__x), its extension kept where two films would share a name
(x.png, x.tif: x.png.*, x.tif.*), then numbered in input order; each renamed film is
noted. Windows mostly outside the breast are skipped (--no-breast-mask scans
everything). --window defaults to the median crop side of the training ROIs where the
checkpoint records it (MIAS), else the network's input size.

--heldout MIAS_DIR, with CHECKPOINT a finished `train.py --dataset mias --cv K`
run of the patient split (--protocol patient or both; a --protocol paper run is
refused: its fold models trained on rotated copies of the films they hold out): each
fold's final model scans the films of the women its fold held out, and the app
reports how often the heat map's peak falls inside a marked abnormality circle,
against the chance that a random point of the breast does. The peak is the centre of
the most malignant window (by log-odds, which do not saturate where P rounds to 1).
The maximum of the mean map itself is reported beside it, but it is biased towards
the film's edges: a pixel there is covered by fewer windows, and a mean of fewer
values reaches further. A run a training is still writing is refused.

Refused, with one line saying why and exit code 2 (before any film is read):
option values out of range, inf or nan; a damaged, foreign or non-two-class
checkpoint; a classifier with --find-lesions; a detector whose settings are missing
or unusable; a detection run without its detection.json (unfinished); a network that does not fit in memory even one window at a time; an
--out that is not a folder, lies under a file, cannot be written or is inside an
input folder; an output that would replace an input, a file that is not an earlier
output of this app, or anything that is not a regular file (a named pipe is never
opened). Films that cannot be read, that would not fit in memory (told from the
header, before decoding), or whose windows cannot be classified to finite numbers
are skipped, each named (--strict stops). Running out of memory all the same stops
with exit code 2, saying what to lower. Ctrl-C or SIGTERM stops with exit code 130;
every file written so far is whole. File names in messages and tables are one field
on one line (control characters and non-UTF-8 bytes as backslash escapes).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from tinycnn.mammo import heldout as ho
from tinycnn.mammo import lesion_heldout as lh
from tinycnn.mammo import scan
from tinycnn.mammo.cli import (INTERRUPTED, BackendError, add_backend_arguments, error, finite_float, note,
                               open_backend, out_of_memory, precision_line, shown, sigterm_as_ctrl_c,
                               tolerant_std_streams)
from tinycnn.mammo.data import mias
from tinycnn.mammo.data.preprocess import DataError, UnreadableImage
from tinycnn.mammo.heldout import wilson_interval  # noqa: F401  (the interval's home before it moved)
from tinycnn.mammo.inference import find_checkpoint, list_images
from tinycnn.mammo.lesion_scanner import (PLAIN_WORDS, REGIONS_HEADER, LesionScanner, find_detector,
                                          is_detection_run, is_detector, region_rows)
from tinycnn.mammo.memory import NotEnoughMemory
from tinycnn.mammo.outputs import OutputError, check_file_target, plan_outputs, starts_with
from tinycnn.mammo.runfolder import inside, unusable_folder
from tinycnn.mammo.saliency import is_overlay, write_png
from tinycnn.mammo.scanner import Scanner
from tinycnn.mammo.report import write_metrics
from tinycnn.checkpoint import CheckpointError
from tinycnn.paths import atomic_write

INDEX = "scans.csv"  # every film of a scan: its outputs and hottest window, or why it was skipped
INDEX_HEADER = ["film", "status", "heatmap", "regions", "windows", "x", "y", "p_malignant"]
LESION_INDEX_HEADER = ["film", "status", "heatmap", "regions", "x", "y", "p_lesion", "log_odds"]  # a detector's


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a .npz from train.py or its run folder: a lesion detector's (--task detect) "
                                        "or an ROI classifier's (with --heldout: a --cv run)")
    p.add_argument("films", nargs="*", metavar="FILM", help="whole films (image files or folders of them)")
    p.add_argument("--out", default="scans", help="folder for the heat maps and region tables (default scans/)")
    p.add_argument("--window", type=int, help="window side in film pixels (default: the training ROIs' median "
                                              "crop side if the checkpoint records it, else its input size)")
    p.add_argument("--stride", type=int, help="pixels between windows (default: a quarter of the window)")
    p.add_argument("--top", type=int, default=10, help="regions per film in the CSV (default 10)")
    p.add_argument("--batch-size", type=int, default=64, help="windows per forward pass (lowered to fit memory)")
    add_backend_arguments(p)
    p.add_argument("--no-breast-mask", action="store_true", help="scan the background too")
    p.add_argument("--min-inside", type=finite_float, default=0.5,
                   help="fraction of a window that must lie in the breast for it to be scanned (default 0.5)")
    p.add_argument("--heldout", metavar="MIAS_DIR",
                   help="CHECKPOINT is a --cv run (a detection run or a mias classifier run): scan each fold's "
                        "held-out films and report the hit rates")
    p.add_argument("--find-lesions", action="store_true",
                   help="CHECKPOINT must be a lesion detector (train.py --task detect): a classifier is refused")
    p.add_argument("--strict", action="store_true", help="stop at the first film that cannot be scanned")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (they show only on a terminal)")
    args = p.parse_args(argv)
    for flag, value, ok, rule in (("window", args.window, args.window is None or args.window >= 2, ">= 2"),
                                  ("stride", args.stride, args.stride is None or args.stride >= 1, ">= 1"),
                                  ("top", args.top, args.top >= 1, ">= 1"),
                                  ("batch-size", args.batch_size, args.batch_size >= 1, ">= 1"),
                                  ("min-inside", args.min_inside, 0 <= args.min_inside <= 1, "between 0 and 1")):
        if not ok:
            p.error(f"--{flag} must be {rule}, got {value}")
    if args.heldout is None and not args.films:
        p.error("give at least one FILM (or --heldout MIAS_DIR with a --cv run)")
    if args.heldout is not None and args.films:
        p.error("--heldout scans the films a --cv run held out: give no FILM with it")
    problem = out_problem(Path(args.out), args.films if args.heldout is None else [args.heldout])
    if problem:
        p.error(shown(problem))
    return args


def out_problem(out: Path, inputs) -> str | None:
    """Why --out cannot receive the outputs, from the paths alone."""
    problem = unusable_folder(out)
    if problem:
        return problem
    for a in inputs:
        if inside(out, a):
            return (f"--out {out} is inside the input folder {a}: the heat maps are images and would join the "
                    "inputs; choose a folder outside it")
    return None


def is_regions_table(path: Path) -> bool:
    return starts_with(path, {",".join(h).encode() for h in (scan.REGIONS_HEADER, REGIONS_HEADER)})


FILM_OUTPUTS = {"heat map": (".heatmap.png", is_overlay), "regions": (".regions.csv", is_regions_table)}


def check_table_target(path: Path, headers) -> None:
    """A table this app writes whole at the end: absent, or an earlier one of its own."""
    if check_file_target(path, "--out:") and not starts_with(path, {",".join(h).encode() for h in headers}):
        raise OutputError(f"{path} exists and is not an earlier {path.name} of scan_film.py: remove it or choose "
                          "another --out")


def write_table(path: Path, header, rows) -> None:
    """A table of dict rows, whole or not at all (tinycnn.paths.atomic_write)."""
    with atomic_write(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, header)
        w.writeheader()
        for r in rows:
            w.writerow(r)


def check_heldout_targets(table: Path, summary_file: Path) -> None:
    """heldout.csv and heldout.json: absent, or earlier ones of this app (a classifier's or a detector's)."""
    check_table_target(table, ho.EARLIER_HEADERS + [lh.HEADER])
    if check_file_target(summary_file, "--out:") and not any(
            key in summary_file.read_bytes()[:4096] for key in (b'"hit_rate"', b'"top1_hit_rate"')):
        raise OutputError(f"{summary_file} exists and is not an earlier held-out summary: remove it or choose "
                          "another --out")


def say_notes(lines, plan, out: Path) -> None:
    for line in lines + plan.notes:
        note(line)
    if plan.replaced:
        note(f"{plan.replaced} earlier output(s) of scan_film.py in {out} are replaced")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        with sigterm_as_ctrl_c():
            if args.heldout:
                return lesion_heldout(args) if args.find_lesions or is_detection_run(Path(args.checkpoint)) \
                    else heldout(args)
            return scan_lesions(args) if args.find_lesions or is_detector(Path(args.checkpoint)) else scan_films(args)
    except KeyboardInterrupt:
        return error("interrupted; every file written so far is whole", INTERRUPTED)
    except MemoryError:  # anywhere the estimates did not foresee
        return out_of_memory("scanning", "lower --batch-size or scan smaller films")


def scanner_for(ckpt: Path, args, backend) -> Scanner:
    return Scanner(ckpt, backend, args.window, args.stride, args.batch_size, not args.no_breast_mask,
                   args.min_inside, progress=not args.no_progress and sys.stderr.isatty())


def scan_films(args) -> int:
    out = Path(args.out)
    try:
        ckpt = find_checkpoint(Path(args.checkpoint))
        films, notes = list_images(args.films)
        plan = plan_outputs(out, films, FILM_OUTPUTS, roots=args.films, ours="an earlier output of scan_film.py",
                            protected=[("the checkpoint", ckpt)] + [("an input film", f) for f in films])
        check_table_target(out / INDEX, [INDEX_HEADER, LESION_INDEX_HEADER])
        backend = open_backend(args.backend, args.precision)
        scanner = scanner_for(ckpt, args, backend)
    except (DataError, CheckpointError, FileNotFoundError, NotEnoughMemory, BackendError) as e:
        return error(e)
    except OSError as e:
        return error(f"cannot read {args.checkpoint}: {e}")
    say_notes(notes + scanner.notes, plan, out)
    print(shown(f"{ckpt}: windows of {scanner.window} film pixels ({scanner.window_why}), stride "
                f"{scanner.stride}, each resized to {scanner.size}x{scanner.size} and normalised per window; "
                f"batches of {scanner.batch}; {backend.name}, {precision_line(backend)}"), flush=True)
    print(f"what this is: {PLAIN_WORDS}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    index = []
    try:
        return scan_each(films, plan, scanner, args, index)
    finally:  # what was scanned, and what was not, even when the run stops early
        if index:
            try:
                write_table(out / INDEX, INDEX_HEADER, index)
            except OSError as e:
                error(f"cannot write {out / INDEX}: {e}")


def scan_each(films, plan, scanner: Scanner, args, index: list) -> int:
    """Scan every film into its planned outputs; a row of `index` for each."""
    skipped, done = [], 0
    for f in films:
        heat_png, regions_csv = plan.paths[f]["heat map"], plan.paths[f]["regions"]
        try:
            film = scanner.read(f)
            result, _ = scanner.run(film, f.name)
        except (UnreadableImage, NotEnoughMemory, scan.ScanError) as e:
            message = str(e) if str(e).startswith(str(f)) else f"{f}: {e}"
            index.append({"film": shown(f), "status": shown(f"skipped: {message}")})
            if args.strict:
                return error(f"{message} (--strict)")
            skipped.append(message)
            print(f"warning: skipped {shown(message)}", file=sys.stderr)
            continue
        except MemoryError:
            index.append({"film": shown(f), "status": "stopped: out of memory"})
            return out_of_memory(f"scanning {f} ({film.shape[1]}x{film.shape[0]} pixels, batches of "
                                 f"{scanner.batch}); the {done} film(s) before it are written",
                                 "lower --batch-size or scan a smaller film")
        regions = scan.top_regions(result, args.top)
        try:
            write_png(heat_png, scan.heat_overlay(film, result.heat))
            write_table(regions_csv, scan.REGIONS_HEADER, scan.region_rows(regions))
        except OSError as e:
            return error(f"cannot write into {args.out}: {e}")
        done += 1
        best = regions[0]
        index.append({"film": shown(f), "status": "scanned", "heatmap": shown(heat_png), "regions": shown(regions_csv),
                      "windows": len(result.probs), "x": best["x"], "y": best["y"],
                      "p_malignant": f"{best['p_malignant']:.6f}"})
        smaller = f"; the film is smaller than a window: windows of {result.side} px, its shorter side" \
            if result.side < scanner.window else ""
        print(shown(f"{f}: {len(result.probs)} windows ({result.skipped} outside the breast){smaller}; hottest "
                    f"region at x {best['x']}, y {best['y']}: p {best['p_malignant']:.3f} -> {heat_png}, "
                    f"{regions_csv}"))
    if skipped:
        print(f"warning: {len(skipped)} film(s) skipped; first: {shown(skipped[0])}", file=sys.stderr)
    if done == 0:
        return error(f"none of the {len(films)} film(s) could be read and scanned (first: {skipped[0]})")
    return 0


# ------------------------------------------------------------ --heldout: a --cv run on MIAS
def heldout(args) -> int:
    run, data, out = Path(args.checkpoint), Path(args.heldout), Path(args.out)
    table, summary_file = out / "heldout.csv", out / "heldout.json"
    try:
        record = ho.run_record(run)
        models = ho.fold_models(run, record)
        films = ho.heldout_films(record, run / "metrics.json")
        missing = sorted({v["fold"] for v in films.values()} - set(models))
        if missing:
            raise DataError(f"{run}: no model for fold(s) {missing}")
        info = mias.find_info(data)
        circles: dict[str, list] = {}
        for a in mias.parse_info(info):
            if a.croppable:
                circles.setdefault(a.ref, []).append((a.x, a.y, a.radius))
        refs = sorted(films)
        plan = plan_outputs(out, [Path(ref) for ref in refs], {"heat map": (".heatmap.png", is_overlay)},
                            ours="an earlier output of scan_film.py")
        check_heldout_targets(table, summary_file)
        backend = open_backend(args.backend, args.precision)  # one it cannot run: say so before scanning
    except (DataError, CheckpointError, OSError, ValueError, BackendError) as e:
        return error(e)
    say_notes([], plan, out)
    print(f"what this is: {PLAIN_WORDS}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    rows, scanner = [], None
    for fold in sorted(models):
        try:
            scanner = scanner_for(models[fold], args, backend)
        except (CheckpointError, NotEnoughMemory, OSError) as e:
            return error(e)
        mine = sorted(ref for ref, v in films.items() if v["fold"] == fold)
        print(shown(f"fold {fold}: {models[fold]} scans {len(mine)} held-out film(s); windows of "
                    f"{scanner.window} px ({scanner.window_why}), stride {scanner.stride}"), flush=True)
        for ref in mine:
            code = heldout_film(ref, films[ref], fold, scanner, data, info, circles, plan.paths[Path(ref)], rows,
                                args.strict)
            if code:
                return code
    write_table(table, ho.HEADER, rows)
    if not rows:
        return error("no held-out film could be scanned")
    summary = ho.summary(rows, scanner.window, scanner.stride)
    with atomic_write(summary_file, "w", encoding="utf-8") as f:
        f.write(json.dumps(summary, indent=2) + "\n")
    print("\n" + ho.summary_line(summary))
    print(shown(f"wrote {table}, {summary_file} and a heat map per film in {out}"))
    return 0


def heldout_film(ref: str, info: dict, fold: int, scanner: Scanner, data: Path, info_file: Path, circles: dict,
                 paths: dict, rows: list, strict: bool) -> int:
    """Scan one held-out film into its heat map and a row of `rows`; an exit code to stop
    with (0: go on)."""
    path = mias.film_path(data, info_file.parent, ref)
    if path is None or ref not in circles:
        print(f"warning: {shown(ref)}: film or its circles not found in {shown(data)}; left out", file=sys.stderr)
        return 0
    try:
        film = scanner.read(path)
        result, mask = scanner.run(film, ref)
    except (UnreadableImage, NotEnoughMemory, scan.ScanError) as e:
        if strict:
            return error(f"{ref}: {e} (--strict)")
        print(f"warning: {shown(ref)}: {shown(e)}; left out", file=sys.stderr)
        return 0
    except MemoryError:
        return out_of_memory(f"scanning {path} ({film.shape[1]}x{film.shape[0]} pixels, batches of {scanner.batch})",
                             "lower --batch-size")
    best = scan.top_regions(result, 1)[0]  # the most malignant window: its centre is the peak
    row, col = best["y"], best["x"]
    hit = scan.inside_circles(row, col, circles[ref], film.shape[0])
    map_point = scan.hottest_point(result.score)
    map_hit = scan.inside_circles(*map_point, circles[ref], film.shape[0])
    chance = scan.circle_share(mask if mask is not None else np.ones(film.shape, bool), circles[ref])
    rows.append(ho.film_row(ref, info, fold, circles[ref], hit, best, map_point, map_hit, chance, paths["heat map"]))
    scale = scan.overlay_step(*film.shape)
    rgb = ho.draw_circles(scan.heat_overlay(film, result.heat), circles[ref], film.shape[0], scale, (row, col))
    write_png(paths["heat map"], rgb)
    print(shown(f"  {ref}: peak (most malignant window's centre) at x {col}, y {row} (p {best['p_malignant']:.3f}) "
                f"{'inside' if hit else 'outside'} the marked circle; the mean map's maximum "
                f"{'inside' if map_hit else 'outside'}; a random breast point: {chance:.3f}"), flush=True)
    return 0


# ------------------------------------------------------------ a lesion detector (train.py --task detect)
def scan_lesions(args) -> int:
    """Every film through the detector: its top regions printed, NAME.heatmap.png and
    NAME.regions.csv written, scans.csv listing them all."""
    out = Path(args.out)
    try:
        ckpt, found = find_detector(Path(args.checkpoint))
        backend = open_backend(args.backend, args.precision)
        scanner = LesionScanner(ckpt, backend, args.top)  # a classifier is refused here, before any film is read
        films, notes = list_images(args.films)
        plan = plan_outputs(out, films, FILM_OUTPUTS, roots=args.films, ours="an earlier output of scan_film.py",
                            protected=[("the checkpoint", ckpt)] + [("an input film", f) for f in films])
        check_table_target(out / INDEX, [INDEX_HEADER, LESION_INDEX_HEADER])
    except (DataError, CheckpointError, FileNotFoundError, NotEnoughMemory, BackendError) as e:
        return error(e)
    except OSError as e:
        return error(f"cannot read {args.checkpoint}: {e}")
    ignored = [f"--{k} is the classifier's: a detector scores its own {scanner.config.side} px windows on its "
               "grid; ignored" for k in ("window", "stride") if getattr(args, k) is not None]
    say_notes(found + ignored + notes + scanner.notes, plan, out)
    print(shown(f"{ckpt}: {scanner.describe()}; {backend.name}, {precision_line(backend)}"), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    index, skipped, done = [], [], 0
    try:
        for f in films:
            paths = plan.paths[f]
            try:
                raw = scanner.read(f)
                result = scanner.run(raw, f.name)
            except (UnreadableImage, NotEnoughMemory, scan.ScanError) as e:
                message = str(e) if str(e).startswith(str(f)) else f"{f}: {e}"
                index.append({"film": shown(f), "status": shown(f"skipped: {message}")})
                if args.strict:
                    return error(f"{message} (--strict)")
                skipped.append(message)
                print(f"warning: skipped {shown(message)}", file=sys.stderr)
                continue
            rows = region_rows(result.candidates, args.top)
            write_png(paths["heat map"], scanner.overlay(raw, result))
            write_table(paths["regions"], REGIONS_HEADER, rows)
            done += 1
            index.append({"film": shown(f), "status": "scanned", "heatmap": shown(paths["heat map"]),
                          "regions": shown(paths["regions"]), **{k: rows[0][k] for k in LESION_INDEX_HEADER[4:]}})
            print(shown(f"{f}: {len(rows)} region(s) -> {paths['heat map']}, {paths['regions']}"))
            for r in rows:
                print(f"  {r['rank']:>3}  x {r['x']:>7}  y {r['y']:>7}  p_lesion {r['p_lesion']}  "
                      f"log_odds {r['log_odds']}")
    except MemoryError:
        index.append({"film": shown(f), "status": "stopped: out of memory"})
        return out_of_memory(f"scanning {f}; the {done} film(s) before it are written", "scan a smaller film")
    except OSError as e:
        return error(f"cannot write into {args.out}: {e}")
    finally:
        if index:
            try:
                write_table(out / INDEX, LESION_INDEX_HEADER, index)
            except OSError as e:
                error(f"cannot write {out / INDEX}: {e}")
    if skipped:
        print(f"warning: {len(skipped)} film(s) skipped; first: {shown(skipped[0])}", file=sys.stderr)
    if done == 0:
        return error(f"none of the {len(films)} film(s) could be read and scanned (first: {skipped[0]})")
    return 0


def lesion_heldout(args) -> int:
    """A detection run's folds over the films each held out: the pooled figures of the
    run's metrics.json "detection", printed and written to heldout.json."""
    from tinycnn.mammo.detection import format_summary

    run, data, out = Path(args.checkpoint), Path(args.heldout), Path(args.out)
    table, summary_file = out / "heldout.csv", out / "heldout.json"
    try:
        record = lh.run_record(run)
        folds = lh.fold_detectors(run, record)
        check_heldout_targets(table, summary_file)
        backend = open_backend(args.backend, args.precision)
    except (DataError, CheckpointError, OSError, ValueError, BackendError) as e:
        return error(e)
    read: dict = {}

    def films_at(scale: int) -> list:
        if scale not in read:
            films, skipped = lh.read_films(data, record["dataset"], scale, args.strict)
            for why in skipped:
                print(f"warning: skipped {shown(why)}", file=sys.stderr)
            read[scale] = films
        return read[scale]

    print(shown(f"{run}: {len(folds)} fold detector(s), each over the films its record says it held out; "
                f"{backend.name}, {precision_line(backend)}"), flush=True)
    try:
        metrics, rows, missing = lh.pooled_scan(folds, films_at, backend, lambda line: print(line, flush=True))
    except (DataError, CheckpointError, UnreadableImage, NotEnoughMemory, ValueError) as e:
        return error(e)
    if missing:
        print(f"warning: {len(missing)} held-out film(s) not found in {shown(data)}: left out (first: "
              f"{shown(missing[0])})", file=sys.stderr)
    summary = lh.summary(run, data, metrics, record, missing, backend.name)
    out.mkdir(parents=True, exist_ok=True)
    write_table(table, lh.HEADER, rows)
    write_metrics(summary_file, summary)
    print("\n" + format_summary(metrics))
    print(shown(summary["comparison"]) + ("" if record.get("backend") in (None, backend.name) else
                                          f" (the run scanned with {record['backend']}, this with {backend.name})"))
    print(shown(f"wrote {table} and {summary_file}"))
    return 0


if __name__ == "__main__":
    tolerant_std_streams()
    sys.exit(main())
