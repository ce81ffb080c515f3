"""Slide a trained ROI classifier over whole mammograms: a malignancy heat map per film.

    python apps/scan_film.py runs/mias/fold-1/last.npz mdb001.pgm mdb002.pgm --out scans/
    python apps/scan_film.py runs/mias --heldout PATH/TO/MIAS --out scans/   # a --cv run, films it held out

Every window (a square of --window film pixels, every --stride pixels, the last one
flush with the edge) gets the checkpoint's own preprocessing, as an ROI did in
training, and goes through the backend in batches bounded by the memory available.
Per film, DIR receives NAME.heatmap.png (the mean P(malignant) of the windows
covering each pixel, over the film) and NAME.regions.csv (the --top most malignant
windows by log-odds, overlapping little: rank, centre x, y in film pixels from the
top-left, side, p_malignant, log_odds). Windows mostly outside the breast are skipped (--no-breast-mask
scans everything). --window defaults to the median crop side of the training ROIs
where the checkpoint records it (MIAS), else the network's input size.

--heldout MIAS_DIR, with CHECKPOINT a finished `train.py --dataset mias --cv K`
run: each fold's final model (patient split) scans the films of the women its fold
held out, and the app reports how often the heat map's peak falls inside a marked
abnormality circle, against the chance that a random point of the breast does. The
peak is the centre of the most malignant window (by log-odds, which do not saturate
where P rounds to 1). The maximum of the mean map itself is reported beside it, but
it is biased towards the film's edges: a pixel there is covered by fewer windows, and
a mean of fewer values reaches further.

Refused, with one line saying why and exit code 2 (before any film is read):
option values out of range, inf or nan; a damaged, foreign or non-two-class
checkpoint; a network that does not fit in memory even one window at a time; an
--out that is a file, lies under a file, cannot be written or is inside an input
folder; an output that would replace an input, or a file that is not an earlier
output of this app. Unreadable films are skipped and counted (--strict stops).
Ctrl-C or SIGTERM stops with exit code 130; every file written so far is whole.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import numpy as np

from tinycnn.mammo import memory, scan
from tinycnn.mammo.cli import (INTERRUPTED, BackendError, add_backend_arguments, error, finite_float, open_backend,
                               precision_line, printable, sigterm_as_ctrl_c, tolerant_std_streams)
from tinycnn.mammo.data import mias
from tinycnn.mammo.data.preprocess import DataError, UnreadableImage, read_image
from tinycnn.mammo.inference import check_checkpoint, find_checkpoint, list_images
from tinycnn.mammo.memory import NotEnoughMemory
from tinycnn.mammo.runfolder import inside, unusable_folder
from tinycnn.mammo.saliency import is_overlay, write_png
from tinycnn.checkpoint import CheckpointError, architecture_shapes, read_checkpoint
from tinycnn.model import load_model
from tinycnn.paths import atomic_write

HELDOUT_HEADER = ["film", "patient", "fold", "circles", "hit", "x", "y", "p_malignant", "hit_map_max", "map_max_x",
                  "map_max_y", "random_point_hit_chance"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a .npz from train.py or its run folder (with --heldout: a --cv run)")
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
                   help="CHECKPOINT is a mias --cv run: scan each fold's held-out films and report the hit rate")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable film")
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
        p.error(printable(problem))
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
    with open(path, "rb") as f:
        first = f.readline(200)
    return first == b"" or first.rstrip(b"\r\n") == ",".join(scan.REGIONS_HEADER).encode()


def output_paths(out: Path, films, protected) -> dict:
    """film -> (heat map PNG, regions CSV), checked: never an input or the checkpoint,
    never a file that is not an earlier output of this app. Stems are made unique."""
    seen: dict[str, int] = {}
    paths = {}
    for f in films:
        n = seen.get(f.stem, 0)
        seen[f.stem] = n + 1
        stem = f.stem if n == 0 else f"{f.stem}-{n + 1}"
        pair = (out / f"{stem}.heatmap.png", out / f"{stem}.regions.csv")
        for path, ours in zip(pair, (is_overlay, is_regions_table)):
            if not path.exists():
                continue
            for what, q in protected:
                if q.exists() and os.path.samefile(path, q):
                    raise DataError(f"writing {path} would destroy {what}; choose another --out")
            if not ours(path):
                raise DataError(f"{path} exists and is not an earlier output of scan_film.py: remove it or "
                                "choose another --out")
        paths[f] = pair
    return paths


def write_table(path: Path, header, rows) -> None:
    """A table of dict rows, whole or not at all (tinycnn.paths.atomic_write)."""
    with atomic_write(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, header)
        w.writeheader()
        for r in rows:
            w.writerow(r)


def window_default(meta: dict, size: int) -> tuple[int, str]:
    pixels = meta.get("roi_pixels")
    if isinstance(pixels, dict) and isinstance(pixels.get("median"), int) and pixels["median"] >= 2:
        return pixels["median"], "the training ROIs' median crop side"
    return size, "the network's input size (the checkpoint records no ROI crop size)"


class Scanner:
    """One checkpoint, loaded and checked, ready to scan films with the options given."""

    def __init__(self, ckpt: Path, args, backend):
        self.ckpt = ckpt
        self.size, self.prep = check_checkpoint(ckpt, 1, backend, app="scan_film.py")
        records = read_checkpoint(ckpt, arrays=False)
        shapes = architecture_shapes(records["arch"], ckpt)
        self.batch = scan.batch_for(shapes, args.batch_size, memory.device_available(backend))
        self.window, self.window_why = ((args.window, "as asked") if args.window else
                                        window_default(records["meta"], self.size))
        self.stride = args.stride or max(1, self.window // 4)
        self.breast_mask, self.min_inside = not args.no_breast_mask, args.min_inside
        self.progress = not args.no_progress and sys.stderr.isatty()
        self.net, _ = load_model(ckpt, backend=backend)

    def run(self, film: np.ndarray, name: str):
        mask = scan.breast_mask(film) if self.breast_mask else None
        result = scan.scan(self.net, film, self.size, self.window, self.stride, self.batch, mask=mask,
                           min_inside=self.min_inside, progress=self.progress, desc=f"scanning {name}")
        if len(result.probs) == 0:  # nothing in the breast mask was big enough: scan it all
            result = scan.scan(self.net, film, self.size, self.window, self.stride, self.batch,
                               progress=self.progress, desc=f"scanning {name}")
            mask = None
        return result, mask


def film_memory(film_pixels: int) -> int:
    """The film (float32), the heat map's two accumulators and the map (float64)."""
    return 4 * film_pixels + 3 * 8 * film_pixels


def read_film(path: Path) -> np.ndarray:
    film = read_image(path)
    if film.ndim != 2 or min(film.shape) < 2:
        raise UnreadableImage(f"{path}: a film must be a 2-D image of at least 2x2 pixels, got {film.shape}")
    if not np.isfinite(film).all():
        raise UnreadableImage(f"{path}: non-finite pixel values (NaN or inf)")
    memory.require(film_memory(film.size), memory.host_available(), f"scanning {path} ({film.shape[1]}x"
                   f"{film.shape[0]} pixels)", "scan a smaller film")
    return film


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        with sigterm_as_ctrl_c():
            return heldout(args) if args.heldout else scan_films(args)
    except KeyboardInterrupt:
        return error("interrupted; every file written so far is whole", INTERRUPTED)


def scan_films(args) -> int:
    out = Path(args.out)
    try:
        ckpt = find_checkpoint(Path(args.checkpoint))
        films = list_images(args.films)
        paths = output_paths(out, films, [("the checkpoint", ckpt)] + [("an input film", f) for f in films])
        backend = open_backend(args.backend, args.precision)
        scanner = Scanner(ckpt, args, backend)
    except (DataError, CheckpointError, FileNotFoundError, NotEnoughMemory, BackendError) as e:
        return error(e)
    except OSError as e:
        return error(f"cannot read {args.checkpoint}: {e}")
    print(printable(f"{ckpt}: windows of {scanner.window} film pixels ({scanner.window_why}), stride "
                    f"{scanner.stride}, each resized to {scanner.size}x{scanner.size} and normalised per window; "
                    f"batches of {scanner.batch}; {backend.name}, {precision_line(backend)}"))
    out.mkdir(parents=True, exist_ok=True)
    skipped, done = [], 0
    for f in films:
        try:
            film = read_film(f)
        except (UnreadableImage, NotEnoughMemory) as e:
            if args.strict:
                return error(f"{e} (--strict)")
            skipped.append(str(e))
            continue
        result, _ = scanner.run(film, f.name)
        regions = scan.top_regions(result, args.top)
        heat_png, regions_csv = paths[f]
        try:
            write_png(heat_png, scan.heat_overlay(film, result.heat))
            write_table(regions_csv, scan.REGIONS_HEADER,
                        [{**r, "p_malignant": f"{r['p_malignant']:.6f}", "log_odds": f"{r['log_odds']:.4f}"}
                         for r in regions])
        except OSError as e:
            return error(f"cannot write into {out}: {e}")
        done += 1
        note = f"; the film is smaller than a window: windows of {result.side} px, its shorter side" \
            if result.side < scanner.window else ""
        best = regions[0]
        print(printable(f"{f}: {len(result.probs)} windows ({result.skipped} outside the breast){note}; hottest "
                        f"region at x {best['x']}, y {best['y']}: p {best['p_malignant']:.3f} -> {heat_png}, "
                        f"{regions_csv}"))
    if skipped:
        print(printable(f"warning: {len(skipped)} unreadable film(s) skipped; first: {skipped[0]}"), file=sys.stderr)
    if done == 0:
        return error(f"none of the {len(films)} film(s) could be read (first: {skipped[0]})")
    return 0


# ------------------------------------------------------------ --heldout: a --cv run on MIAS
def fold_models(run: Path) -> dict[int, Path]:
    """fold -> the patient split's final model (last.npz) of a --cv run folder."""
    base = run / "patient" if (run / "patient").is_dir() else run
    models = {}
    for d in sorted(base.glob("fold-*")):
        if d.name[5:].isdigit() and (d / "last.npz").is_file():
            models[int(d.name[5:])] = d / "last.npz"
    return models


def heldout_films(run: Path) -> dict[str, dict]:
    """film -> {"patient", "fold"} from the run's metrics.json (the patient split's
    out-of-fold predictions name each ROI's film and the fold that tested it)."""
    path = run / "metrics.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"--heldout needs the finished --cv run's {path} ({e})") from e
    if record.get("dataset", {}).get("name") != "mias" or not record.get("cv"):
        raise DataError(f"--heldout needs a `train.py --dataset mias --cv K` run; {path} is not one")
    films = {}
    for p in record.get("predictions", []):
        ref = str(p.get("roi", "")).split(":", 1)[0]
        if ref and isinstance(p.get("fold"), int):
            films.setdefault(ref, {"patient": p.get("patient"), "fold": p["fold"]})
    if not films:
        raise DataError(f"{path} lists no out-of-fold predictions")
    return films


def wilson_interval(hits: int, n: int, z: float = 1.959964) -> list[float]:
    """95% Wilson score interval of a rate hits/n (sensible at 0 or n hits too, where a
    bootstrap collapses to a point)."""
    if n == 0:
        return [float("nan"), float("nan")]
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def draw_circles(rgb: np.ndarray, circles, height: int, scale: float, point) -> np.ndarray:
    """The marked circles in cyan and the heat map's maximum as a cross, on the overlay."""
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    out = rgb.copy()
    for x, y, r in circles:
        d = np.hypot(xx - x / scale, yy - (height - y) / scale)
        out[np.abs(d - r / scale) < 1.2] = (0, 255, 255)
    row, col = int(point[0] / scale), int(point[1] / scale)
    for k in range(-6, 7):
        for rr, cc in ((row + k, col), (row, col + k)):
            if 0 <= rr < h and 0 <= cc < w:
                out[rr, cc] = (0, 255, 0)
    return out


def heldout(args) -> int:
    run, data = Path(args.checkpoint), Path(args.heldout)
    out = Path(args.out)
    try:
        if not run.is_dir():
            raise DataError(f"--heldout needs CHECKPOINT to be a --cv run folder, got {run}")
        models = fold_models(run)
        films = heldout_films(run)
        if not models:
            raise DataError(f"{run} holds no fold-N/last.npz: not a --cv run")
        missing = sorted({v["fold"] for v in films.values()} - set(models))
        if missing:
            raise DataError(f"{run}: no model for fold(s) {missing}")
        info = mias.find_info(data)
        circles: dict[str, list] = {}
        for a in mias.parse_info(info):
            if a.croppable:
                circles.setdefault(a.ref, []).append((a.x, a.y, a.radius))
        paths = output_paths(out, [Path(ref) for ref in sorted(films)], [])
        table, summary_file = out / "heldout.csv", out / "heldout.json"
        if table.exists() and not (table.read_bytes().split(b"\n", 1)[0].rstrip(b"\r")
                                   == ",".join(HELDOUT_HEADER).encode()):
            raise DataError(f"{table} exists and is not an earlier held-out table: remove it or choose another --out")
        if summary_file.exists() and b'"hit_rate"' not in summary_file.read_bytes()[:4096]:
            raise DataError(f"{summary_file} exists and is not an earlier held-out summary: remove it or choose "
                            "another --out")
        backend = open_backend(args.backend, args.precision)  # one it cannot run: say so before scanning
    except (DataError, OSError, ValueError, BackendError) as e:
        return error(e)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for fold in sorted(models):
        try:
            scanner = Scanner(models[fold], args, backend)
        except (CheckpointError, NotEnoughMemory, OSError) as e:
            return error(e)
        scanner_window, scanner_stride = scanner.window, scanner.stride
        mine = sorted(ref for ref, v in films.items() if v["fold"] == fold)
        print(printable(f"fold {fold}: {models[fold]} scans {len(mine)} held-out film(s); windows of "
                        f"{scanner.window} px ({scanner.window_why}), stride {scanner.stride}"), flush=True)
        for ref in mine:
            path = mias._film_path(data, info.parent, ref)
            if path is None or ref not in circles:
                print(printable(f"warning: {ref}: film or its circles not found in {data}; left out"),
                      file=sys.stderr)
                continue
            try:
                film = read_film(path)
            except (UnreadableImage, NotEnoughMemory) as e:
                if args.strict:
                    return error(f"{e} (--strict)")
                print(printable(f"warning: {ref}: {e}; left out"), file=sys.stderr)
                continue
            result, mask = scanner.run(film, ref)
            best = scan.top_regions(result, 1)[0]  # the most malignant window: its centre is the peak
            row, col = best["y"], best["x"]
            hit = scan.inside_circles(row, col, circles[ref], film.shape[0])
            map_row, map_col = scan.hottest_point(result.score)
            map_hit = scan.inside_circles(map_row, map_col, circles[ref], film.shape[0])
            chance = scan.circle_share(mask if mask is not None else np.ones(film.shape, bool), circles[ref])
            rows.append({"film": ref, "patient": films[ref]["patient"], "fold": fold,
                         "circles": ";".join(f"{x} {y} {r}" for x, y, r in circles[ref]), "hit": int(hit),
                         "x": col, "y": row, "p_malignant": f"{best['p_malignant']:.4f}",
                         "hit_map_max": int(map_hit), "map_max_x": map_col, "map_max_y": map_row,
                         "random_point_hit_chance": f"{chance:.4f}"})
            scale = max(1, int(np.ceil(max(film.shape) / 1024)))
            rgb = draw_circles(scan.heat_overlay(film, result.heat), circles[ref], film.shape[0], scale, (row, col))
            write_png(paths[Path(ref)][0], rgb)
            print(printable(f"  {ref}: peak (most malignant window's centre) at x {col}, y {row} (p "
                            f"{best['p_malignant']:.3f}) {'inside' if hit else 'outside'} the marked circle; the "
                            f"mean map's maximum {'inside' if map_hit else 'outside'}; a random breast point: "
                            f"{chance:.3f}"), flush=True)
        del scanner
    write_table(table, HELDOUT_HEADER, rows)
    if not rows:
        return error("no held-out film could be scanned")
    hits = np.array([r["hit"] for r in rows], float)
    map_hits = np.array([r["hit_map_max"] for r in rows], float)
    chance = np.array([float(r["random_point_hit_chance"]) for r in rows])
    patients = [r["patient"] for r in rows]
    lo, hi = wilson_interval(int(hits.sum()), len(rows))
    summary = {"films": len(rows), "patients": len(set(patients)), "hits": int(hits.sum()),
               "hit_rate": float(hits.mean()), "hit_rate_ci95": [lo, hi],
               "ci_method": "Wilson score interval over films",
               "map_max_hits": int(map_hits.sum()), "map_max_hit_rate": float(map_hits.mean()),
               "random_point_rate": float(chance.mean()),
               "peak": "centre of the window with the highest log-odds",
               "window": scanner_window, "stride": scanner_stride}
    summary_file.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"\nheld-out films: {len(rows)} films of {summary['patients']} women; the peak (the most malignant "
          f"window's centre) inside a marked circle on {int(hits.sum())} ({100 * hits.mean():.1f}%, 95% CI "
          f"{100 * lo:.1f}-{100 * hi:.1f}%, {summary['ci_method']}); a random point of the breast: "
          f"{100 * chance.mean():.1f}% expected; the mean map's maximum (biased to the edges): "
          f"{int(map_hits.sum())} ({100 * map_hits.mean():.1f}%)")
    print(printable(f"wrote {table}, {summary_file} and a heat map per film in {out}"))
    return 0


if __name__ == "__main__":
    tolerant_std_streams()
    sys.exit(main())
