"""The op benchmarks: every case of bench/ops.py on every implementation.

Validate, then time: each entry first checks its op against the NumPy reference on
the same inputs (bench.ops.prepare raises ValidationError otherwise), then hands the
op to pytest-benchmark. CPU entries use the host clock (CPU work is synchronous);
GPU entries a timer that reads CUDA events (bench.ops.CupyEventTimer /
TorchEventTimer), after warm-up calls, with inputs rotated among copies larger than
L2 together.
"""

from __future__ import annotations

import pytest

pytest.importorskip("pytest_benchmark")

from bench.ops import prepare, rotation_copies  # noqa: E402

GPU_WARMUP = 3


def test_op(entry, impl, benchmark):
    case = entry.case
    fn, worst = prepare(case, entry.batch, impl, rotate=benchmark.enabled)
    benchmark.extra_info.update({
        "op": case.name, "shape": case.label(entry.batch), "batch": entry.batch, "impl": impl.name,
        "flops": case.flops(entry.batch), "bytes": case.bytes(entry.batch), "validation_rel_error": worst})
    if benchmark.enabled and impl.gpu:
        for _ in range(GPU_WARMUP):  # compilation, cuDNN autotuning, allocator growth
            fn()
        impl.synchronize()
    benchmark(fn)
    impl.synchronize()


def test_rotation_copies_exceed_l2():
    """Rotated GPU inputs together exceed twice the L2 (up to the copy cap)."""
    from bench.ops import DEFAULT_L2_BYTES, MAX_COPIES, l2_bytes

    l2 = l2_bytes() or DEFAULT_L2_BYTES
    for nbytes in (1e3, 1e6, 3e7, 2e8):
        copies = rotation_copies(nbytes)
        assert 2 <= copies <= MAX_COPIES
        assert copies == MAX_COPIES or copies * nbytes > 2 * l2
