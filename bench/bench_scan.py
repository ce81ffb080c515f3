"""The detector's whole-film scan: one 1024 x 1024 mammogram, read at a quarter
resolution, normalised once, run fully convolutionally (tinycnn.mammo.detection.fcn)
with the detector's default grid and mirrors, down to its ranked candidates.

    python -m bench.bench_scan [--film mdb001.pgm] [--checkpoint RUN/fold-1/detector.npz]
                               [--backend numba] [--repeats 7] [--shifts 2] [--mirrors 2]

Validate, then time: first the film-wide heat map against the window-by-window one
(every grid cell's window cut out and classified on its own, the same weights and the
same per-film normalisation), both on the backend, and a sample of cells against the
NumPy reference; then the scan of the whole film (shrink, breast mask, normalisation,
heat map, non-maximum suppression), timed with the host clock after a warm-up, median
of `repeats`; and once, for scale, the window-by-window scan of the same grid.

Without --film a synthetic 1024 x 1024 film is drawn (a breast-shaped ellipse of
textured tissue on black): the time does not depend on what the film shows. Without
--checkpoint the detector has its seeded initial weights (the same for timing).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time

import numpy as np

from bench.steps import cpu_description, git_commit
from tinycnn import backends
from tinycnn.mammo.detection.evaluate import film_candidates
from tinycnn.mammo.detection.fcn import grid_centres, window_logits
from tinycnn.mammo.detection.films import make_film
from tinycnn.mammo.detection.heatmap import grid_step, heat_map, padded_to_step
from tinycnn.mammo.detection.network import detector_net
from tinycnn.mammo.detection.training import DetectorConfig


def synthetic_film(size: int = 1024, seed: int = 0) -> np.ndarray:
    """(size, size) float32 grey levels 0..255: a half-ellipse of textured tissue at the left edge."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    breast = ((yy - size / 2) / (0.45 * size)) ** 2 + (xx / (0.6 * size)) ** 2 <= 1
    from scipy import ndimage

    texture = ndimage.gaussian_filter(rng.standard_normal((size, size)), 6) * 400
    return np.clip(np.where(breast, 150 + texture, 4), 0, 255).astype(np.float32)


def load_net(checkpoint, backend):
    if checkpoint:
        from tinycnn.model import load_model

        net, info = load_model(checkpoint, backend=backend)
        return net, info["meta"].get("detector") or {}
    c = DetectorConfig()
    return detector_net(c.side, c.widths, c.hidden, seed=0, backend=backend), {}


def scan_once(net, raw: np.ndarray, config: DetectorConfig):
    """Everything a scan of one film does after reading it: (film, heat map, candidates)."""
    film = make_film("bench", "bench", raw, [], scale=config.scale)
    heat = heat_map(net, film.image, config.shifts, config.mirrors)
    cands = film_candidates(film, heat, grid_step(net, config.shifts), config.nms_radius, config.candidates)
    return film, heat, cands


def reference_copy(net):
    """The same network with the same weights on the NumPy reference backend."""
    from tinycnn.model import Sequential

    ref = Sequential.from_architecture(net.architecture(), backend="numpy")
    for mine, theirs in zip(ref.parameters(), net.parameters()):
        mine.value = np.array(net.backend.to_numpy(theirs.value), dtype=np.float32)
    return ref


def validate(net, film, shifts: int) -> dict:
    """Largest differences of the film-wide log-odds from the windowed ones (all cells,
    same backend) and from the NumPy reference's windows (a sample of cells)."""
    step = grid_step(net, shifts)
    image = padded_to_step(film.image, step)
    heat = heat_map(net, film.image, shifts, mirrors=0)
    rows, cols = grid_centres(image.shape, step)
    rr, cc = (a.ravel() for a in np.meshgrid(rows, cols, indexing="ij"))
    win = window_logits(net, image, rr, cc)
    odds = win[:, 1] - win[:, 0]
    out = {"cells": len(rr), "same_backend": float(np.max(np.abs(heat.ravel() - odds))),
           "scale": float(np.max(np.abs(odds)))}
    pick = np.random.default_rng(0).choice(len(rr), size=min(64, len(rr)), replace=False)
    rwin = window_logits(reference_copy(net), image, rr[pick], cc[pick])
    out["reference"] = float(np.max(np.abs(heat.ravel()[pick] - (rwin[:, 1] - rwin[:, 0]))))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--film", help="a film (PGM, PNG, DICOM, ...); default: a synthetic 1024 x 1024 film")
    p.add_argument("--checkpoint", help="a detector checkpoint (a detection run's fold-N/detector.npz)")
    p.add_argument("--backend", default="numba")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--shifts", type=int, default=None, help="grid: 16 / shifts working pixels (default: the detector's)")
    p.add_argument("--mirrors", type=int, default=None, help="0/1, 2 or 4 mirror images (default: the detector's)")
    p.add_argument("--no-windowed", action="store_true", help="skip timing the window-by-window scan")
    args = p.parse_args(argv)

    be = backends.get(args.backend)
    net, stored = load_net(args.checkpoint, be)
    defaults = DetectorConfig()
    config = DetectorConfig(**{**defaults.__dict__, **{k: v for k, v in stored.items() if k in defaults.__dict__
                                                       and k not in ("widths", "hard_at")}})
    if args.shifts is not None:
        config.shifts = args.shifts
    if args.mirrors is not None:
        config.mirrors = args.mirrors
    if args.film:
        from tinycnn.mammo.data.preprocess import read_image

        raw, what = read_image(args.film), args.film
    else:
        raw, what = synthetic_film(), "synthetic 1024 x 1024 film"
    print(f"bench_scan: {what} ({raw.shape[0]} x {raw.shape[1]}), scale 1/{config.scale}, window {net.input_shape[1]}"
          f" px, grid step {grid_step(net, config.shifts)} px, mirrors {config.mirrors}, backend {be.name}")

    film, _, _ = scan_once(net, raw, config)  # warm-up: JIT compilation, first-touch pages
    v = validate(net, film, config.shifts)
    tol = 1e-3 * max(1.0, v["scale"])
    ok = v["same_backend"] <= tol and v["reference"] <= tol
    print(f"validate: film-wide vs window-by-window log-odds, {v['cells']} cells: max |diff| "
          f"{v['same_backend']:.2e} ({be.name}), {v['reference']:.2e} against numpy windows "
          f"(64 cells; largest |log-odds| {v['scale']:.2f}): {'ok' if ok else 'FAILED'}")
    if not ok:
        return 1

    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        scan_once(net, raw, config)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    print(f"fully convolutional scan, per film: median {median:.3f} s (min {min(times):.3f}, max {max(times):.3f}; "
          f"{args.repeats} repeats){'  (target under 1 s: met)' if median < 1 else '  (target under 1 s: NOT met)'}")
    if not args.no_windowed:
        step = grid_step(net, config.shifts)
        image = padded_to_step(film.image, step)
        rows, cols = grid_centres(image.shape, step)
        rr, cc = (a.ravel() for a in np.meshgrid(rows, cols, indexing="ij"))
        on = (rr < film.image.shape[0]) & (cc < film.image.shape[1])
        on[on] = film.mask[rr[on], cc[on]]
        t0 = time.perf_counter()
        for _ in range(max(1, config.mirrors)):  # the same number of passes as the scan
            window_logits(net, image, rr[on], cc[on])
        windowed = time.perf_counter() - t0
        print(f"window by window, the same grid and passes ({int(on.sum())} breast cells x {max(1, config.mirrors)}):"
              f" {windowed:.3f} s, {windowed / median:.1f}x the fully convolutional scan")
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    threads = os.environ.get("NUMBA_NUM_THREADS", "default")
    print(f"machine: {cpu_description()}; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at the end; "
          f"NUMBA_NUM_THREADS={threads}; {datetime.datetime.now().isoformat(timespec='seconds')}; "
          f"commit {git_commit()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
