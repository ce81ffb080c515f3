"""bench/variants: every numbered kernel variant validates against NumPy through the
CUDA emulator on small shapes, and compiles with nvcc for sm_90 without warnings
(where nvcc is installed)."""

from __future__ import annotations

import os
import subprocess

import pytest

from bench.variants.run import VARIANT_DIR, VARIANTS, validate_emulated
from tinycnn import backends

from test_nvcc import NVCC


@pytest.mark.skipif(not backends.available("cuda-emu"), reason="no C++ compiler for the CUDA emulator")
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"{v.kernel}_v{v.number}")
def test_variant_matches_numpy_on_the_emulator(variant):
    assert variant.idea, f"{variant.file} must open with a one-line idea"
    results = validate_emulated(variant)
    assert results, f"{variant.label}: no small shape it supports"


def test_variants_are_numbered_from_one():
    for kernel in {v.kernel for v in VARIANTS}:
        numbers = sorted(v.number for v in VARIANTS if v.kernel == kernel)
        assert numbers == list(range(1, len(numbers) + 1)), kernel
    files = sorted(f for f in os.listdir(VARIANT_DIR) if f.endswith(".cu"))
    assert files == sorted(v.file for v in VARIANTS), "every .cu in bench/variants is a registered variant"


@pytest.mark.skipif(NVCC is None, reason="nvcc not found")
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"{v.kernel}_v{v.number}")
def test_variant_compiles_for_sm90_without_warnings(variant, tmp_path):
    src = os.path.join(VARIANT_DIR, variant.file)
    cmd = [NVCC, "-std=c++17", "-arch=sm_90", "-cubin", "-Werror", "all-warnings", "-o",
           str(tmp_path / "v.cubin"), src]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    log = res.stdout + res.stderr
    assert res.returncode == 0 and "warning" not in log.lower(), f"{' '.join(cmd)}\n{log}"
