"""What a verification finds: one Check per array (its worst |error| / bound), the
fragile windows of each fused block, and the Report of an op or a training step; the
bound of an FP32 sum and the elementwise comparisons that make Checks (the package
docstring, tinycnn/verify/__init__.py, derives the bounds)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..precision import fp32_sum_error_bound

F64_UNIT = 2.0**-53  # float64's unit roundoff: the reference's own sums

#: A step with a fused block whose fragile windows exceed this fraction of its windows is
#: not verified. Each fragile window adds its whole contribution to the bounds of dw and
#: db, which sum over all N OH OW positions: a fraction f of fragile windows adds about
#: f sqrt(N OH OW) times the largest |dw| (the value is ~ sum|terms| / sqrt(n) for random
#: signs), about 0.6 at f = 1% for paper_net's fourth block at batch 4 (3364 positions);
#: beyond that those checks would pass a weight gradient wrong by its own size. Measured
#: on tests/test_gpu.py's step (seed 0), float32 NumPy and cuda-emu, every mode: at most
#: 0.5% (the fourth block), 0.16% in the third, 0.04% in the second, 1e-5 in the first.
MAX_FRAGILE_FRACTION = 1e-2

#: The loss's exp and log: at most this many units in the last place of their result.
#: CUDA's expf and logf: 2 and 1 ulp (CUDA C++ Programming Guide, "Mathematical
#: Functions", single precision); NumPy's float32 SIMD exp and log: 2.52 and 3.83 ulp
#: (NumPy 1.17 release notes); glibc's expf/logf: under 1 ulp.
ELEMENTARY_ULPS = 4


def sum_bound(abs_total, n: int) -> np.ndarray:
    """Bound on |FP32 sum - float64 reference| of n exact terms whose absolute values add
    to abs_total, in any order on both sides: gamma_n at FP32's ulp plus gamma_n at
    float64's unit roundoff."""
    n = max(int(n), 1)
    gamma = float(fp32_sum_error_bound(1.0, n) + fp32_sum_error_bound(1.0, n, unit=F64_UNIT))
    # abs_total is a float64 sum itself, short of the true one by at most its own gamma_n
    return np.multiply(abs_total, gamma * (1 + 2 * n * F64_UNIT), dtype=np.float64)


# ------------------------------------------------------------------ results
@dataclass
class Check:
    """One array of one step against its exact value."""

    step: str          # e.g. "2 ConvBlock conv 16->32"
    what: str          # "out", "dx", "dw", "db", "loss", ...
    elements: int
    violations: int    # elements farther from the exact value than their bound (NaN counts)
    worst_ratio: float  # max |got - exact| / bound (<= 1 passes; exact checks: 0 or inf)
    worst_excess: float  # max(|got - exact| - bound) (<= 0 passes)
    resolution: float  # max bound / max |exact| (0 for exact checks; >= 1: the check is blind)
    detail: str = ""   # the worst element, when it fails

    @property
    def ok(self) -> bool:
        return self.violations == 0

    def line(self) -> str:
        status = "ok" if self.ok else "FAIL"
        return (f"{self.step:<34} {self.what:<8} {status:<4} worst |err|/bound {self.worst_ratio:9.3g}  "
                f"excess {self.worst_excess:10.3g}  resolution {self.resolution:8.2g}"
                + (f"  {self.detail}" if self.detail else ""))


@dataclass
class Fragility:
    """The fragile windows of one fused block (an upper bound on its flipped decisions)."""

    step: str
    windows: int
    fragile: int

    @property
    def fraction(self) -> float:
        return self.fragile / self.windows if self.windows else 0.0


@dataclass
class Report:
    """The checks of one op or one training step (see the module docstring)."""

    backend: str
    precision: str
    checks: list[Check] = field(default_factory=list)
    fragility: list[Fragility] = field(default_factory=list)
    max_fragile_fraction: float = MAX_FRAGILE_FRACTION
    summary: dict = field(default_factory=dict)  # end to end, reported only

    @property
    def fragile(self) -> int:
        return sum(f.fragile for f in self.fragility)

    @property
    def windows(self) -> int:
        return sum(f.windows for f in self.fragility)

    @property
    def well_posed(self) -> bool:
        """Few enough fragile windows in every fused block for its gradient checks to hold
        something (MAX_FRAGILE_FRACTION)."""
        return all(f.fragile <= self.max_fragile_fraction * f.windows for f in self.fragility)

    @property
    def ok(self) -> bool:
        return self.well_posed and all(c.ok for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def worst(self) -> dict[str, float]:
        """{step: its largest |err| / bound}: under 1 everywhere when the step passes."""
        out: dict[str, float] = {}
        for c in self.checks:
            out[c.step] = max(out.get(c.step, 0.0), c.worst_ratio)
        return out

    def explain(self) -> str:
        head = (f"{self.backend} ({self.precision}): "
                + ("verified" if self.ok else f"NOT verified ({len(self.failures())} failing checks"
                   + ("" if self.well_posed else ", too many fragile windows") + ")"))
        lines = [head]
        if self.fragility:
            lines.append(f"fragile windows (decisions that rounding could flip; at most a fraction "
                         f"{self.max_fragile_fraction:g} of each block's): "
                         + ", ".join(f"{f.step}: {f.fragile}/{f.windows}" for f in self.fragility))
        lines += [c.line() for c in self.checks]
        if self.summary:
            s = self.summary
            errors = s["gradient rel. errors"]
            worst = max(errors, key=errors.get)
            lines.append(f"end to end, against the float64 reference's own chain (reported, not enforced): loss "
                         f"{s['loss']:.9g} ({s['float64 chain loss']:.9g}), logits rel. error "
                         f"{s['logits rel. error']:.2e}, worst gradient rel. error {errors[worst]:.2e} ({worst})")
        return "\n".join(lines)

    __str__ = explain


# ------------------------------------------------------------------ elementwise comparisons
def host64(a) -> np.ndarray:
    """`a` as a float64 NumPy array."""
    return np.asarray(a, dtype=np.float64)


def within(step: str, what: str, got, exact, bound) -> Check:
    """Each element of `got` within `bound` of `exact` (arrays of one shape)."""
    got, exact, bound = host64(got), host64(exact), host64(bound)
    if got.shape != exact.shape:
        return Check(step, what, int(exact.size), int(exact.size), math.inf, math.inf, 0.0,
                     f"shape {got.shape}, expected {exact.shape}")
    if not exact.size:
        return Check(step, what, 0, 0, 0.0, 0.0, 0.0)
    shape = exact.shape
    got, exact, bound = got.reshape(-1), exact.reshape(-1), np.broadcast_to(bound, shape).reshape(-1)
    diff = np.subtract(got, exact)
    np.abs(diff, out=diff)
    diff[np.isnan(diff)] = math.inf  # NaN fails
    violations = int(np.count_nonzero(diff > bound))
    scale = float(np.max(np.abs(exact)))
    top = float(np.max(bound))
    resolution = top / scale if scale > 0 else (0.0 if top == 0 else math.inf)
    excess = np.subtract(diff, bound)
    worst_excess = float(np.max(excess))
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(diff, bound, out=excess)  # the ratio, in the same memory
    excess[diff == 0] = 0.0
    worst_ratio = float(np.max(excess))
    detail = ""
    if violations:
        excess[~(diff > bound)] = -1.0
        i = int(np.argmax(excess))
        idx = np.unravel_index(i, shape)
        detail = (f"{violations} elements out; at {tuple(int(j) for j in idx)}: got {got[i]:.9g}, "
                  f"exact {exact[i]:.9g}, bound {bound[i]:.3g}")
    return Check(step, what, int(exact.size), violations, worst_ratio, worst_excess, resolution, detail)


def equal(step: str, what: str, got, want) -> Check:
    """`got` equal to `want` element for element (as values: -0 == 0)."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return Check(step, what, int(want.size), int(want.size), math.inf, math.inf, 0.0,
                     f"shape {got.shape}, expected {want.shape}")
    bad = ~(got == want)
    violations = int(np.count_nonzero(bad))
    detail = ""
    worst = 0.0
    if violations:
        i = int(np.argmax(bad))
        idx = np.unravel_index(i, want.shape) if want.ndim else ()
        worst = float(np.nanmax(np.abs(host64(got) - host64(want))[bad], initial=math.inf))
        detail = (f"{violations} elements differ; first at {tuple(int(j) for j in idx)}: got {got.flat[i]!r}, "
                  f"want {want.flat[i]!r}")
    return Check(step, what, int(want.size), violations, math.inf if violations else 0.0, worst, 0.0, detail)
