"""Fixtures and parametrization of the benchmark suite (bench/test_*.py).

    pytest bench/                              # validate, then time (pytest-benchmark)
    pytest bench/ --benchmark-disable          # validate, run each body once (CI smoke test)

One entry per (op case, batch, implementation), grouped by op case and batch. The
paper's shapes (256x256 input, hidden 1024) at batch 32 for the CPU implementations
(numpy, numba, torch-cpu) and batch 32 and 64 for the GPU ones (cuda, torch-cuda,
torch-cuda-default). With --benchmark-disable the entries run at batch 2 (same layer
shapes, smaller batch) so the smoke test stays within CI's time on two cores.
Implementations this machine lacks are skipped with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from bench.ops import CASES, CPU_IMPLS, GPU_IMPLS, IMPLS, Case

PAPER_BATCHES_CPU = (32,)
PAPER_BATCHES_GPU = (32, 64)
SMOKE_BATCH = 2


@dataclass(frozen=True)
class Entry:
    case: Case
    batch: int
    impl: str

    @property
    def group(self) -> str:
        return f"{self.case.name} b{self.batch}"

    def __str__(self) -> str:
        return f"{self.case.name.replace(' ', '_')}-b{self.batch}-{self.impl}"


def benchmarks_disabled(config) -> bool:
    return bool(config.getoption("benchmark_disable", default=False))


def suite_entries(config) -> list:
    """Every entry as a pytest.param carrying its benchmark group (and, on a GPU, the
    device-event timer). Case-major order: all implementations of a case run one after
    another, so the NumPy reference of a case is computed once."""
    smoke = benchmarks_disabled(config)
    # one timer per implementation: pytest-benchmark measures each timer's precision
    # once (for a second), and an event timer's readings only ever grow
    timers = {name: IMPLS[name].timer() for name in CPU_IMPLS + GPU_IMPLS}
    params = []
    for case in CASES:
        for impl in CPU_IMPLS + GPU_IMPLS:
            batches = (SMOKE_BATCH,) if smoke else (PAPER_BATCHES_GPU if impl in GPU_IMPLS else PAPER_BATCHES_CPU)
            for batch in batches:
                entry = Entry(case, batch, impl)
                options = {"group": entry.group}
                if timers[impl] is not None:
                    options["timer"] = timers[impl]
                params.append(pytest.param(entry, marks=pytest.mark.benchmark(**options), id=str(entry)))
    # within a case: by batch, then implementation (one reference per (case, batch))
    order = {name: i for i, name in enumerate(CPU_IMPLS + GPU_IMPLS)}
    index = {c.name: i for i, c in enumerate(CASES)}
    params.sort(key=lambda p: (index[p.values[0].case.name], p.values[0].batch, order[p.values[0].impl]))
    return params


def pytest_generate_tests(metafunc):
    if "entry" in metafunc.fixturenames:
        metafunc.parametrize("entry", suite_entries(metafunc.config))


@pytest.fixture
def impl(entry):
    """The entry's implementation; skips where it cannot run here."""
    implementation = IMPLS[entry.impl]
    why = implementation.unavailable()
    if why:
        pytest.skip(why)
    return implementation
