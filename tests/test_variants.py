"""bench/variants: every numbered kernel variant validates against NumPy (on operands
rounded as its precision rounds them) through the CUDA emulator on small shapes, and
compiles with nvcc for sm_90 without warnings (where nvcc is installed); the
tensor-core steps issue HMMA."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from bench import gpu_model
from bench.variants.run import (GEMM_TOL, SMALL_SHAPES, VARIANT_DIR, VARIANTS, emu_runner, expected, gemm_inputs,
                                gemm_reference, kernel_names, validate_emulated)
from tinycnn import backends
from tinycnn.backends import geometry
from tinycnn.gradcheck import rel_error

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


TC_VARIANTS = [v for v in VARIANTS if v.precision != "fp32"]


def test_the_sgemm_steps_reach_the_backends_tensor_core_tile():
    """v5 and v6 are TF32 steps after the FP32 tile, and the last one is what the
    backend launches in tf32."""
    assert [(v.number, v.precision) for v in TC_VARIANTS] == [(5, "tf32"), (6, "tf32")]
    assert TC_VARIANTS[-1].entry == geometry.gemm("tf32", 64, 64, 64).name


@pytest.mark.skipif(not backends.available("cuda-emu"), reason="no C++ compiler for the CUDA emulator")
def test_a_tensor_core_variant_is_held_to_its_rounding():
    """The minimal mma tile against NumPy: within the FP32-sum tolerance of the product
    of TF32-rounded operands, and farther than that from the unrounded product (so the
    validation could not pass without the rounding)."""
    v = TC_VARIANTS[0]
    (label, shape), = [s for s in SMALL_SHAPES["sgemm"] if s[1] == (37, 45, 70)]
    a = gemm_inputs(shape, np.random.default_rng(1))
    out = v.launch(v, emu_runner(v, kernel_names(v)), a, shape, lambda s: np.empty(s, np.float32))
    assert rel_error(out, expected(v, a, shape)) <= GEMM_TOL < rel_error(out, gemm_reference(a, shape))


@pytest.mark.skipif(NVCC is None or not all(gpu_model.tool(t) for t in ("cuobjdump", "nvdisasm")),
                    reason="needs nvcc, cuobjdump and nvdisasm")
@pytest.mark.parametrize("variant", TC_VARIANTS, ids=lambda v: f"{v.kernel}_v{v.number}")
def test_tensor_core_variants_issue_hmma_on_sm90(variant, tmp_path):
    cubin = str(tmp_path / "v.cubin")
    subprocess.run([NVCC, "-std=c++17", "-arch=sm_90", "-cubin", "-o", cubin, os.path.join(VARIANT_DIR, variant.file)],
                   check=True, capture_output=True, timeout=300)
    env = dict(os.environ, PATH=os.path.dirname(gpu_model.tool("nvdisasm")) + os.pathsep + os.environ["PATH"])
    sass = subprocess.run([gpu_model.tool("cuobjdump"), "-sass", cubin], capture_output=True, text=True, check=True,
                          env=env).stdout
    entry = sass.split(f"Function : {variant.entry}")[1].split("Function : ")[0]
    assert "HMMA.1688.F32.TF32" in entry
