"""A lesion detector checkpoint ready to scan whole films (apps/scan_film.py with a
detector): found (a fold-N/detector.npz, or a detection run folder, whose first fold's
detector is taken and said), its settings checked before any weight is read, then
each film read with the classifier scan's checks (scanner.read_film: memory told from
the header before decoding, 2-D, finite), made a Film at the detector's scale (marks
unknown: none), heat-mapped with the detector's shifts and mirrors, and its
candidates picked by non-maximum suppression (tinycnn.mammo.detection).

Coordinates: a region is a heat-map cell, the centre of the window the detector
scored, in full-resolution film pixels from the top-left corner (x the column, y the
row), the point the held-out evaluation tests against a lesion's circle. p_lesion is
the sigmoid of the lesion log-odds (lesion logit minus normal logit): the log-odds
are given beside it because an over-confident network rounds many windows to p = 1.

Shapes: raw film (H, W) -> Film.image (H // scale, W // scale) -> heat (R, C) log-odds
on a grid of `step` working pixels -> candidates (K, 3) (row, col, log-odds), best first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import memory, scan
from .detection.checkpoints import MODEL_FILE, TASK, NotADetector, detector_config, fold_checkpoints, load_detector
from .detection.evaluate import film_candidates
from .detection.films import Film, make_film
from .detection.heatmap import heat_map
from .outputs import target_kind
from .scanner import read_film
from tinycnn.checkpoint import CheckpointError, architecture_shapes, read_checkpoint

REGIONS_HEADER = ["rank", "x", "y", "p_lesion", "log_odds"]
PLAIN_WORDS = ("the map is P(malignant) of windows scored as if each were a lesion crop (a benign/malignant ROI "
               "classifier): it does not say where a lesion is; for that, train a detector with "
               "`python apps/train.py --task detect ...` and scan with its fold-N/detector.npz")
SAFE_MAX = 2.0 ** 64  # pixels above this are scaled by a power of two first (normalisation does not see it)


def is_detection_run(path: Path) -> bool:
    """A folder that holds a detector (detector.npz, or fold-N/detector.npz)."""
    return path.is_dir() and (target_kind(path / MODEL_FILE) == "file" or any(path.glob(f"fold-*/{MODEL_FILE}")))


def is_detector(path: Path) -> bool:
    """Whether the checkpoint (or run folder) is a lesion detector, from its records
    alone. False for anything else, a damaged file included: the classifier's path then
    says what is wrong with it."""
    if path.is_dir():
        return is_detection_run(path)
    try:
        meta = read_checkpoint(path, arrays=False)["meta"]
    except (CheckpointError, OSError):
        return False
    return isinstance(meta, dict) and meta.get("task") == TASK


def find_detector(path: Path) -> tuple[Path, list[str]]:
    """(a detector file, notes): the file given, or the detector a folder holds: its
    own detector.npz, else its first fold's (a cross-validation run holds one per fold,
    each trained without its fold's women: the note says which was taken).
    CheckpointError for a folder without one, or a path that is not a file."""
    if path.is_dir():
        if target_kind(path / MODEL_FILE) == "file":
            return path / MODEL_FILE, []
        folds = fold_checkpoints(path)
        return folds[0], [f"{path} is a detection run of {len(folds)} fold(s), one detector each (trained without "
                          f"its fold's women): scanning with {folds[0]}; give another fold's {MODEL_FILE} to "
                          "choose"]
    kind = target_kind(path)
    if kind is None:
        raise CheckpointError(f"checkpoint not found: {path}")
    if kind != "file":
        raise CheckpointError(f"checkpoint {path} is {kind}, not a file")
    return path, []


@dataclass
class LesionScan:
    film: Film  # the film at working resolution (no marks)
    heat: np.ndarray  # (R, C) lesion log-odds on the grid
    candidates: np.ndarray  # (K, 3) full-resolution (row, col, log-odds), best first


def sigmoid(x) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, dtype=np.float64), -500, 500)))


class LesionScanner:
    """One detector, checked and loaded, ready to scan films. NotADetector for another
    kind of checkpoint; CheckpointError, NotEnoughMemory or OSError when it cannot be."""

    def __init__(self, ckpt: Path, backend, top: int = 10):
        self.ckpt = ckpt
        records = read_checkpoint(ckpt, arrays=False)
        detector_config(records["meta"], ckpt)  # NotADetector or the damaged setting named
        shapes = architecture_shapes(records["arch"], ckpt)
        memory.require(memory.inference_bytes(shapes, 1), memory.device_available(backend),
                       f"running the detector of {ckpt} ({shapes.num_parameters():,} parameters)",
                       "use another backend", backend.memory_where)
        self.notes = records["notes"]
        self.net, self.config, self.meta = load_detector(ckpt, backend)
        self.pools = sum(1 for layer in self.net.layers if type(layer).__name__ == "MaxPool2D")
        if self.pools != len(self.config.widths):
            raise CheckpointError(f"{ckpt}: the network has {self.pools} pools, its settings {len(self.config.widths)} "
                                  "widths: a damaged or foreign detector checkpoint")
        self.step = 2 ** self.pools // self.config.shifts
        self.top = top
        self.backend = backend

    def describe(self) -> str:
        c = self.config
        return (f"a lesion detector: films shrunk {c.scale}x, windows of {c.side} px there ({c.side * c.scale} film "
                f"pixels), a heat-map cell every {self.step * c.scale} film pixels, mirrors {c.mirrors}, regions at "
                f"least {c.nms_radius:g} film pixels apart")

    def film_bytes(self, height: int, width: int) -> int:
        """Host bytes one film of height x width takes while it is read and scanned (an
        estimate from arithmetic): the read and its float32 copies, about 28 per film
        pixel; the working film, mask and maps, about 40 per working pixel; and the
        widest layer of one film-wide pass over the padded working film (its input
        windows unfolded, 9 x channels in, and its output before and after the pool)."""
        c = self.config
        h, w = height // c.scale, width // c.scale
        padded = (h + c.side + self.step) * (w + c.side + self.step)
        widths = (1,) + tuple(c.widths)
        layer = max(4 * padded // 4 ** i * (9 * widths[i] + 2 * widths[i + 1]) for i in range(len(c.widths)))
        f = scan.overlay_step(height, width)
        return 28 * height * width + 40 * h * w + layer + 64 * math.ceil(height / f) * math.ceil(width / f)

    def _require(self, path: Path, height: int, width: int) -> None:
        memory.require(self.film_bytes(height, width), memory.host_available(),
                       f"scanning {path} ({width}x{height} pixels) with the detector", "scan a smaller film")

    def read(self, path: Path) -> np.ndarray:
        """A film as a 2-D float32 array (scanner.read_film with this detector's needs)."""
        return read_film(path, self._require)

    def run(self, raw: np.ndarray, name: str) -> LesionScan:
        """The film's heat map and its top candidates (self.top of them at least the
        config's count). scan.ScanError, naming what, when the film cannot be scanned:
        smaller than one block of the detector's scale, or no finite score on the breast."""
        peak = float(np.abs(raw).max())
        if peak > SAFE_MAX:  # finite, but their squares overflow: the normalisation is scale-free
            raw = np.ldexp(raw, -math.frexp(peak)[1]).astype(np.float32)
        try:
            with np.errstate(all="ignore"):
                film = make_film(name, "", raw, [], self.config.scale)
        except ValueError as e:
            raise scan.ScanError(f"cannot be scanned at the detector's scale 1/{self.config.scale}: {e}") from e
        heat = heat_map(self.net, film.image, self.config.shifts, self.config.mirrors)
        cands = film_candidates(film, heat, self.step, self.config.nms_radius, max(self.top, self.config.candidates))
        if not len(cands):
            raise scan.ScanError("the detector gave no finite lesion score on the breast (its output overflowed "
                                 "on this film)")
        return LesionScan(film, heat, cands)

    def overlay(self, raw: np.ndarray, result: LesionScan, marks: int = 3) -> np.ndarray:
        """(h, w, 3) uint8: the film in grey (shrunk so its longer side is at most
        scan.OVERLAY_SIDE) with p_lesion of the cell nearest each pixel over the breast,
        and the first `marks` regions as numbered crosses."""
        film, heat = result.film, result.heat
        f = scan.overlay_step(*raw.shape)
        small = raw[::f, ::f]
        wr, wc = film.to_work(np.arange(small.shape[0]) * f, np.arange(small.shape[1]) * f)
        wr = np.clip(np.rint(wr).astype(np.int64), 0, film.mask.shape[0] - 1)
        wc = np.clip(np.rint(wc).astype(np.int64), 0, film.mask.shape[1] - 1)
        cr = np.clip(np.rint(wr / self.step).astype(np.int64), 0, heat.shape[0] - 1)
        cc = np.clip(np.rint(wc / self.step).astype(np.int64), 0, heat.shape[1] - 1)
        prob = np.where(film.mask[wr[:, None], wc[None, :]], sigmoid(heat)[cr[:, None], cc[None, :]], np.nan)
        rgb = scan.heat_overlay(small, prob)
        return draw_regions(rgb, result.candidates[:marks], f)


def draw_regions(rgb: np.ndarray, candidates: np.ndarray, f: int) -> np.ndarray:
    """Numbered green crosses at candidates (K, 3) full-resolution points, on an overlay
    that keeps one film pixel in f."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(rgb)
    draw = ImageDraw.Draw(img)
    arm = max(4, min(img.size) // 60)
    for k, (row, col, _) in enumerate(candidates):
        y, x = row / f, col / f
        draw.line([(x - arm, y), (x + arm, y)], fill=(0, 255, 0), width=2)
        draw.line([(x, y - arm), (x, y + arm)], fill=(0, 255, 0), width=2)
        draw.text((x + arm + 1, y - 2 * arm), str(k + 1), fill=(0, 255, 0))
    return np.asarray(img)


def region_rows(candidates: np.ndarray, k: int) -> list[dict]:
    """The first k candidates as rows of NAME.regions.csv (REGIONS_HEADER): x the
    column, y the row, full-resolution film pixels from the top-left."""
    return [{"rank": i + 1, "x": f"{col:.1f}", "y": f"{row:.1f}", "p_lesion": f"{float(sigmoid(s)):.6f}",
             "log_odds": f"{s:.4f}"} for i, (row, col, s) in enumerate(np.asarray(candidates)[:k])]


__all__ = ["LesionScan", "LesionScanner", "NotADetector", "PLAIN_WORDS", "REGIONS_HEADER",
           "find_detector", "is_detection_run", "is_detector", "region_rows"]
