"""A deterministic generator of mammography-like regions of interest.

Each ROI is a patch of parenchymal background with one mass somewhere in it:

- background: 1/f-type texture (the power spectrum of breast parenchyma falls off
  roughly as a power law) at a random density, plus a few long curvilinear
  structures (ducts, Cooper's ligaments) in BOTH classes, so "there is a line"
  does not tell the classes apart;
- benign: a circumscribed round or oval mass, sometimes gently lobulated, with a
  sharp margin; now and then one or two coarse calcifications;
- malignant: an irregular mass with an ill-defined margin and thin spicules
  radiating from it; some carry a cluster of fine microcalcifications.

Mass size, contrast and position are drawn from the same ranges for both classes,
and every ROI is later scaled to zero mean and unit variance, so neither overall
brightness nor where the mass sits gives the class away: margin, spicules and
calcifications (shape and texture) decide. A logistic regression on pixels has
little to hold on to; a CNN does well. Every ROI is drawn from its own generator
keyed by (seed, index), so ROI i is the same picture in a set of any size, drawn in
any order.

Pseudo patients: two ROIs per patient (as two views of one lesion would be), with
the same label, so that the patient split has something to respect.
"""

from __future__ import annotations

import numpy as np

from ..progress import tracked

VERSION = 4  # bump when the pictures change: it is part of the cache key
DEFAULT_SIZE = 64  # the synthetic default renders small so the default run fits a 2-core CPU
ROIS_PER_PATIENT = 2


def _power_law_noise(rng: np.random.Generator, size: int, beta: float) -> np.ndarray:
    """Gaussian noise with amplitude spectrum 1/f**beta, scaled to unit variance."""
    white = rng.standard_normal((size, size))
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij"))
    f[0, 0] = 1.0
    spectrum = np.fft.fft2(white) / f**beta
    spectrum[0, 0] = 0.0
    out = np.real(np.fft.ifft2(spectrum))
    return out / (out.std() + 1e-12)


def _segment_distance(yy, xx, y0, x0, y1, x1):
    """Distance of every pixel centre to the segment (y0, x0)-(y1, x1), and the
    position t in [0, 1] of the nearest point along it."""
    dy, dx = y1 - y0, x1 - x0
    length2 = dy * dy + dx * dx + 1e-12
    t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / length2, 0.0, 1.0)
    return np.hypot(yy - (y0 + t * dy), xx - (x0 + t * dx)), t


def _curvilinear(rng, yy, xx, size, count):
    """Faint long lines crossing the patch (both classes)."""
    out = np.zeros_like(yy)
    for _ in range(count):
        angle = rng.uniform(0, np.pi)
        cy, cx = rng.uniform(0, size, 2)
        half = size * 0.8
        y0, x0 = cy - half * np.sin(angle), cx - half * np.cos(angle)
        y1, x1 = cy + half * np.sin(angle), cx + half * np.cos(angle)
        d, _ = _segment_distance(yy, xx, y0, x0, y1, x1)
        width = rng.uniform(0.5, 1.0) * size / 64
        out += rng.uniform(0.08, 0.22) * np.exp(-0.5 * (d / width) ** 2)
    return out


def _mass(rng, yy, xx, cy, cx, radius, malignant):
    """The mass body: a star-shaped region whose boundary radius R(theta) is smooth for
    benign masses and ragged for malignant ones, with a sharp or blurred margin."""
    theta = np.arctan2(yy - cy, xx - cx)
    rho = np.hypot(yy - cy, xx - cx)
    aspect = rng.uniform(0.65, 1.0)
    tilt = rng.uniform(0, np.pi)
    # ellipse radius along theta
    r_theta = radius * aspect / np.sqrt((aspect * np.cos(theta - tilt)) ** 2 + np.sin(theta - tilt) ** 2)
    if malignant:
        for k in rng.integers(4, 13, size=4):
            r_theta = r_theta * (1 + rng.uniform(0.06, 0.14) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)))
        edge = rng.uniform(1.2, 2.2) * radius / 8
    else:
        if rng.random() < 0.4:  # gently lobulated, still circumscribed
            k = rng.integers(2, 4)
            r_theta = r_theta * (1 + rng.uniform(0.04, 0.10) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)))
        # mostly sharp margins; some partly obscured by overlying tissue
        edge = (rng.uniform(0.25, 0.5) if rng.random() < 0.85 else rng.uniform(0.6, 1.2)) * radius / 8
    return 1.0 / (1.0 + np.exp(-(r_theta - rho) / edge))


def _spicules(rng, yy, xx, cy, cx, radius, size):
    out = np.zeros_like(yy)
    n = rng.integers(4, 12)
    angles = rng.uniform(0, 2 * np.pi) + np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.normal(0, 0.25, n)
    for a in angles:
        start = radius * 0.7
        length = radius * rng.uniform(0.7, 1.6)
        y0, x0 = cy + start * np.sin(a), cx + start * np.cos(a)
        y1, x1 = cy + (start + length) * np.sin(a), cx + (start + length) * np.cos(a)
        d, t = _segment_distance(yy, xx, y0, x0, y1, x1)
        width = rng.uniform(0.45, 0.8) * size / 64
        out += rng.uniform(0.2, 0.5) * (1 - 0.7 * t) * np.exp(-0.5 * (d / width) ** 2)
    return out


def _calcifications(rng, yy, xx, cy, cx, spread, count, dot, brightness):
    out = np.zeros_like(yy)
    for _ in range(count):
        py, px = cy + rng.normal(0, spread), cx + rng.normal(0, spread)
        out += brightness * rng.uniform(0.7, 1.0) * np.exp(-0.5 * (np.hypot(yy - py, xx - px) / dot) ** 2)
    return out


def render_roi(seed: int, index: int, malignant: bool, size: int = DEFAULT_SIZE) -> np.ndarray:
    """One ROI (size x size, float64, arbitrary scale) from generator (seed, index)."""
    return render_with_lesion(seed, index, malignant, size)[0]


def render_with_lesion(seed: int, index: int, malignant: bool, size: int = DEFAULT_SIZE):
    """(ROI, lesion, contrast): the ROI as render_roi draws it, the part of it the lesion
    added (mass body, spicules, calcifications; background, lines and noise left out)
    and the mass contrast. The generator knows where it drew the lesion: saliency maps
    are measured against this."""
    rng = np.random.default_rng([seed, index, int(malignant)])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    density = rng.uniform(0.2, 0.8)
    img = density + rng.uniform(0.08, 0.18) * (0.5 + density) * _power_law_noise(rng, size, rng.uniform(1.2, 1.7))
    img += _curvilinear(rng, yy, xx, size, rng.integers(0, 4))

    radius = rng.uniform(0.08, 0.17) * size
    cy, cx = rng.uniform(0.28, 0.72, 2) * size
    contrast = rng.uniform(0.25, 0.6)
    body = _mass(rng, yy, xx, cy, cx, radius, malignant)
    lesion = contrast * body * (1 + 0.1 * _power_law_noise(rng, size, 1.0))
    img += lesion
    if malignant:
        if rng.random() < 0.8:  # the rest are ill-defined masses without spicules
            extra = contrast * _spicules(rng, yy, xx, cy, cx, radius, size)
            img += extra
            lesion = lesion + extra
        if rng.random() < 0.4:
            extra = _calcifications(rng, yy, xx, cy, cx, radius * 0.6, rng.integers(5, 14),
                                    0.45 * size / 64, rng.uniform(0.5, 1.0))
            img += extra
            lesion = lesion + extra
    elif rng.random() < 0.2:  # coarse benign calcification: big, round, few
        extra = _calcifications(rng, yy, xx, cy, cx, radius * 0.8, rng.integers(1, 3),
                                1.3 * size / 64, rng.uniform(0.4, 0.8))
        img += extra
        lesion = lesion + extra
    img += rng.normal(0, 0.02, img.shape)  # acquisition noise
    return img, lesion, contrast


LESION_LEVEL = 0.2  # a pixel is lesion where the lesion adds at least this fraction of the mass contrast


def lesion_mask(seed: int, index: int, malignant: bool, size: int = DEFAULT_SIZE,
                level: float = LESION_LEVEL) -> np.ndarray:
    """(size, size) bool: where the generator drew the lesion of ROI (seed, index): the
    lesion adds at least `level` x the mass contrast there (the mass to a little past
    its half-intensity margin, the cores of the spicules, the calcifications)."""
    _, lesion, contrast = render_with_lesion(seed, index, malignant, size)
    return lesion >= level * contrast


def generate(benign: int = 600, malignant: int = 600, size: int = DEFAULT_SIZE, seed: int = 0,
             progress: bool = False):
    """The synthetic set: (images (N, size, size) float32 raw, labels (N,), patients (N,),
    ids (N,)). Benign ROIs first, then malignant; patients hold ROIS_PER_PATIENT ROIs
    of one class."""
    images, labels, patients, ids = [], [], [], []
    todo = [(label, i) for label, count in ((0, benign), (1, malignant)) for i in range(count)]
    for label, i in tracked(todo, "rendering synthetic ROIs", progress):
        images.append(render_roi(seed, i, bool(label), size).astype(np.float32))
        labels.append(label)
        patients.append(f"synth-{'BM'[label]}{i // ROIS_PER_PATIENT:04d}")
        ids.append(f"synthetic/{'benign' if label == 0 else 'malignant'}/{i:04d}")
    return np.stack(images), np.array(labels, dtype=np.int64), np.array(patients), np.array(ids)


# ----------------------------------------------------------------- the registry's reader
def count(data_dir=None, benign: int = 600, malignant: int = 600, seed: int = 0) -> int:
    """How many ROIs a read gives (for the memory estimate made before it)."""
    return benign + malignant


def fingerprint(data_dir=None, benign: int = 600, malignant: int = 600, seed: int = 0) -> dict:
    return {"generator": VERSION}


def read(data_dir=None, image_size: int = DEFAULT_SIZE, strict: bool = False,
         benign: int = 600, malignant: int = 600, seed: int = 0, progress: bool = False):
    """The synthetic RoiSet: rendered directly at image_size (no resize), then
    normalised like every ROI."""
    from .roiset import RoiSet
    from .preprocess import normalise

    images, labels, patients, ids = generate(benign, malignant, image_size, seed, progress)
    images = np.stack([normalise(im) for im in images])
    return RoiSet("synthetic", images, labels, patients, ids,
                  notes=[f"synthetic ROIs rendered at {image_size}x{image_size} (generator v{VERSION}, seed {seed})"])
