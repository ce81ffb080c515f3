"""What the tensor-core kernels assume of the GPU, checked on the GPU first (tier 3: the
`cuda` cases are marked gpu, and bench.gpu_checks runs this file before the parity
table), and through cuda-emu everywhere else, where the emulator's models make every
case pass: that run checks the test, not the hardware.

- mma.sync .tf32 reads only the top 19 bits of an operand word. kernels/tc_tile.cuh's
  tc_tf32_word adds half an ulp and leaves the low 13 bits set (one instruction fewer
  per word); cuda-emu clears them itself (emu_tf32_operand), so no CPU test can tell.
- cvt.rna.tf32.f32 and cvt.rn.bf16x2.f32 round as tinycnn/precision.py says, NaNs
  included (round_bf16: every NaN becomes 0x7FFF; round_tf32: NaNs are only masked).

The kernels are tests/kernels/hardware_facts.cu. Products are compared bit for bit
with the same instruction on other words (the hardware's summation order is the same in
both runs), and on integer operands, whose products and sums are exact in any order,
with NumPy."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from tinycnn.precision import round_bf16, round_tf32

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "kernels", "hardware_facts.cu")
MASK = np.uint32(0xFFFFE000)  # the 19 bits a .tf32 operand keeps
WARPS = 4
i32 = np.int32

BACKENDS = ["cuda-emu", pytest.param("cuda", marks=pytest.mark.gpu)]


class FactKernels:
    """The kernels of hardware_facts.cu on one backend, called with host arrays: every
    array argument is copied to the device and back."""

    def __init__(self, backend: str):
        self.backend = backend
        if backend == "cuda":
            try:
                import cupy

                if cupy.cuda.runtime.getDeviceCount() < 1:
                    raise RuntimeError("no device")
            except Exception as e:  # no CuPy, no driver, no device
                pytest.skip(f"cuda: no GPU ({e})")
            from tinycnn.backends.cuda_backend import NVRTC_OPTIONS
            from tinycnn.backends.kernel_sources import inline_includes

            self._cupy = cupy
            self._module = cupy.RawModule(code=inline_includes(SOURCE), options=NVRTC_OPTIONS)
        else:
            from tinycnn.backends import BackendUnavailable, cuda_emu_library

            try:
                self._emu = cuda_emu_library.load_file(SOURCE)
            except BackendUnavailable as e:
                pytest.skip(f"cuda-emu: {e}")

    def __call__(self, name, grid, block, args):
        if self.backend != "cuda":
            return self._emu[name](grid, block, args)
        cp = self._cupy
        dev = [cp.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
        self._module.get_function(name)(grid, block, tuple(dev))
        cp.cuda.runtime.deviceSynchronize()
        for a, d in zip(args, dev):
            if isinstance(a, np.ndarray):
                a[...] = cp.asnumpy(d)


@pytest.fixture(scope="module", params=BACKENDS)
def k(request):
    return FactKernels(request.param)


def f32(u) -> np.ndarray:
    return np.asarray(u, dtype=np.uint32).view(np.float32)


def u32(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)


def mma(k, a_words, b_words, c) -> np.ndarray:
    """D = A B + C of every 16 x 8 x 8 tile, from the operand words as given."""
    tiles = a_words.shape[0]
    d = np.full((tiles, 16, 8), np.nan, np.float32)
    k("fact_tf32_mma", (-(-tiles // WARPS), 1, 1), (32 * WARPS, 1, 1),
      [np.ascontiguousarray(a_words, np.uint32), np.ascontiguousarray(b_words, np.uint32),
       np.ascontiguousarray(c, np.float32), d, i32(tiles)])
    return d


def operand_words(k, x) -> dict:
    """{'rna', 'word', 'bf16x2'}: to_tf32, tc_tf32_word and pack_bf16x2(x, -x) of x."""
    x = np.ascontiguousarray(x, np.float32).ravel()
    out = {name: np.zeros(x.size, np.uint32) for name in ("rna", "word", "bf16x2")}
    k("fact_operand_words", (8, 1, 1), (256, 1, 1), [x, out["rna"], out["word"], out["bf16x2"], i32(x.size)])
    return out


def _differ(got, want) -> str:
    g, w = u32(got).ravel(), u32(want).ravel()
    bad = np.flatnonzero(g != w)
    i = bad[0] if bad.size else 0
    return f"{bad.size} of {g.size} outputs differ, e.g. 0x{int(g[i]):08X} against 0x{int(w[i]):08X}"


TF32_LOW_BITS = (
    "mma.sync .tf32 on this GPU reads more than the top 19 bits of its operand words ({what}). "
    "kernels/tc_tile.cuh's tc_tf32_word relies on it: it adds half an ulp (0x1000) and leaves the "
    "low 13 bits set, so here the tf32 tensor-core kernels (gemm_tc.cu, conv2d_tc.cu) compute with "
    "unrounded operands and disagree with cuda-emu and the NumPy reference of the mode; make "
    "tc_tf32_word return to_tf32(x) (cvt.rna, one instruction more per word).")


# ------------------------------------------------------------ TF32: the low 13 bits
def test_tf32_mma_ignores_the_low_13_bits_of_its_operands(k):
    """Unrounded floats as operand words (their low 13 bits random) and the same words
    with those bits cleared: the same products, bit for bit."""
    rng = np.random.default_rng(0)
    a = u32(rng.standard_normal((64, 16, 8)))
    b = u32(rng.standard_normal((64, 8, 8)))
    c = rng.standard_normal((64, 16, 8)).astype(np.float32)
    assert np.mean((a & ~MASK) != 0) > 0.99  # the low bits are set: the case under test
    raw, masked = mma(k, a, b, c), mma(k, a & MASK, b & MASK, c)
    assert np.array_equal(u32(raw), u32(masked)), TF32_LOW_BITS.format(what=_differ(raw, masked))
    rounded = mma(k, u32(round_tf32(f32(a))), u32(round_tf32(f32(b))), c)
    assert not np.array_equal(raw, rounded), "truncated and rounded operands gave the same products: no test"


def test_tf32_mma_of_unrounded_integers_is_the_exact_product_of_the_truncated_ones(k):
    """Integers |v| <= 12 (exact in TF32) with low bits 0x1000-0x1FFF added: truncated,
    they are the integers again, rounded one TF32 ulp more, unrounded a little more; the
    integer products and sums are exact in FP32 in any order, so D must equal NumPy's
    product of the integers exactly."""
    rng = np.random.default_rng(1)
    ai = rng.integers(-12, 13, (16, 16, 8)).astype(np.float32)
    bi = rng.integers(-12, 13, (16, 8, 8)).astype(np.float32)
    c = rng.integers(-100, 101, (16, 16, 8)).astype(np.float32)
    low = lambda shape: rng.integers(0x1000, 0x2000, shape, dtype=np.uint32)  # noqa: E731
    a = np.where(ai != 0, u32(ai) | low(ai.shape), u32(ai))  # zeros stay zeros (no subnormals)
    b = np.where(bi != 0, u32(bi) | low(bi.shape), u32(bi))
    exact = (ai.astype(np.float64) @ bi + c).astype(np.float32)
    unrounded = f32(a).astype(np.float64) @ f32(b) + c
    assert np.max(np.abs(unrounded - exact)) > 1e-2  # full-width operands would show
    d = mma(k, a, b, c)
    np.testing.assert_array_equal(d, exact, err_msg=TF32_LOW_BITS.format(
        what="integer operands with low bits set: " + _differ(d, exact)))


def test_the_kernels_tf32_words_give_the_products_of_rounded_operands(k):
    """The words tc_tf32_word makes (on a GPU: x + half an ulp, low bits kept) against
    cvt.rna's: the same products, so the tiles compute what the mode defines."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal(64 * 16 * 8 + 64 * 8 * 8).astype(np.float32) * 3
    w = operand_words(k, x)
    split = 64 * 16 * 8
    c = rng.standard_normal((64, 16, 8)).astype(np.float32)
    ours = mma(k, w["word"][:split].reshape(64, 16, 8), w["word"][split:].reshape(64, 8, 8), c)
    rna = mma(k, w["rna"][:split].reshape(64, 16, 8), w["rna"][split:].reshape(64, 8, 8), c)
    assert np.array_equal(u32(ours), u32(rna)), TF32_LOW_BITS.format(what="tc_tf32_word against cvt.rna: "
                                                                     + _differ(ours, rna))


def test_tf32_mma_reads_a_nan_with_only_low_payload_bits_as_an_infinity(k):
    """tc_tf32_word passes NaNs and infinities through unchanged, so a NaN input whose
    payload lies in the low 13 bits alone reaches the mma as such; cvt.rna (cuda-emu,
    round_tf32) masks it to an infinity. With the top 19 bits only, both are infinities."""
    a = np.zeros((4, 16, 8), np.uint32)
    a[:, :, 0] = np.array([0x7F800001, 0xFF800001, 0x7F801FFF, 0x7F800000], np.uint32)[:, None]
    b = np.full((4, 8, 8), u32(np.float32(1.0))[()], np.uint32)
    c = np.zeros((4, 16, 8), np.float32)
    raw, masked = mma(k, a, b, c), mma(k, a & MASK, b, c)
    assert np.all(np.isinf(masked)), "masked words: expected infinities"
    assert np.array_equal(u32(raw), u32(masked)), (
        "mma.sync .tf32 on this GPU reads a word with an all-ones exponent and payload bits only below "
        f"the top 19 as a NaN ({_differ(raw, masked)}): a NaN input of such a payload gives NaN in the tf32 "
        "tensor-core kernels here and an infinity in cuda-emu and round_tf32. Both are non-finite (the "
        "step statistics and the optimizer's guard treat them alike); only a test comparing the bits of "
        "non-finite results would differ.")


# ------------------------------------------------------------ conversions
def _every_class_of_float(n: int, seed: int) -> np.ndarray:
    """Random bit patterns over normals, subnormals, zeros and infinities (no NaNs),
    half of them on or next to a rounding tie of TF32 or BF16."""
    rng = np.random.default_rng(seed)
    u = rng.integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32)
    u[: n // 8] &= np.uint32(0x807FFFFF)  # subnormals and zeros
    q = n // 4
    near = np.arange(q) % 3  # a tie, one below it, one above
    u[q: 2 * q] = (u[q: 2 * q] & np.uint32(0xFFFFE000)) | np.array([0x1000, 0x0FFF, 0x1001], np.uint32)[near]
    u[2 * q: 3 * q] = (u[2 * q: 3 * q] & np.uint32(0xFFFF0000)) | np.array([0x8000, 0x7FFF, 0x8001], np.uint32)[near]
    special = np.array([0x7F7FEFFF, 0x7F7FF000, 0x7F7F7FFF, 0x7F7F8000, 0x7F800000, 0xFF800000, 0x0, 0x80000000,
                        0x007FF000, 0x007F8000, 0x3FFFF000, 0x3FFF8000], np.uint32)
    u = np.concatenate([special, u])
    u[(u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)] &= np.uint32(0xFF800000)  # NaN -> infinity
    return f32(u)


def test_tf32_and_bf16_rounding_of_finite_values_and_infinities(k):
    x = _every_class_of_float(1 << 14, seed=3)
    w = operand_words(k, x)
    for got, want, what in ((w["rna"], u32(round_tf32(x)), "cvt.rna.tf32.f32 against round_tf32"),
                            (w["word"] & MASK, u32(round_tf32(x)), "tc_tf32_word's top 19 bits against round_tf32"),
                            (w["bf16x2"] & 0xFFFF, u32(round_bf16(x)) >> 16, "cvt.rn.bf16x2.f32 against round_bf16"),
                            (w["bf16x2"] >> 16, u32(round_bf16(-x)) >> 16, "the high half of cvt.rn.bf16x2.f32")):
        bad = np.flatnonzero(got != want)
        assert bad.size == 0, (
            f"{what}: {bad.size} of {x.size} values differ, e.g. 0x{int(u32(x)[bad[0]]):08X} -> "
            f"0x{int(got[bad[0]]):X} on this GPU, 0x{int(want[bad[0]]):X} in tinycnn/precision.py. The NumPy "
            "reference of the mode and cuda-emu (kernels/emu/cuda_emu.h) round otherwise than the GPU's "
            "kernels: fix the models (round_tf32 / round_bf16 and emu_cvt_*) to what the GPU does.")


NANS = np.array([0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FBFFFFF, 0x7F801000, 0xFFC01234, 0x7FFFFFFF],
                np.uint32)


def test_nan_rounding(k):
    """round_bf16: every NaN is the canonical 0x7FFF; round_tf32: a NaN keeps its sign and
    top payload bits, and one with payload only in the low 13 bits becomes an infinity."""
    x = f32(NANS)
    w = operand_words(k, x)
    bf16 = w["bf16x2"] & 0xFFFF
    want = u32(round_bf16(x)) >> 16
    assert np.array_equal(bf16, want), (
        "cvt.rn.bf16x2.f32 on this GPU turns NaNs into " + ", ".join(f"0x{int(v):04X}" for v in bf16)
        + " (from " + ", ".join(f"0x{int(v):08X}" for v in NANS) + "), not the canonical 0x7FFF that round_bf16 "
        "and cuda-emu assume: only the bits of NaN results differ between the bf16 kernels and the reference "
        "of the mode (non-finite either way); change round_bf16 and emu_cvt_rn_bf16_f32 to what the GPU does.")
    tf32 = w["rna"]
    assert np.array_equal(tf32, u32(round_tf32(x))), (
        "cvt.rna.tf32.f32 on this GPU turns NaNs into " + ", ".join(f"0x{int(v):08X}" for v in tf32)
        + ", not what round_tf32 and cuda-emu assume (masked: sign and top payload bits kept): only the bits "
        "of NaN results differ (non-finite either way); change round_tf32 and emu_cvt_rna_tf32_f32.")


# ------------------------------------------------------------ the source itself
def test_the_fact_kernels_compile_to_tf32_hmma(tmp_path):
    """nvcc for sm_90 without warnings, HMMA.1688.F32.TF32 in the SASS: the GPU run finds
    a kernel that tests the tensor core (and NVRTC there compiles the same source)."""
    from bench.gpu_model import tool

    nvcc, cuobjdump, nvdisasm = tool("nvcc"), tool("cuobjdump"), tool("nvdisasm")
    if nvcc is None:
        pytest.skip("nvcc not found")
    cubin = str(tmp_path / "facts.cubin")
    res = subprocess.run([nvcc, "-std=c++17", "-arch=sm_90", "-cubin", "-Werror", "all-warnings", "-o", cubin,
                          SOURCE], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "warning" not in (res.stdout + res.stderr).lower(), res.stdout + res.stderr
    if not (cuobjdump and nvdisasm):
        pytest.skip("cuobjdump/nvdisasm not found (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)")
    env = dict(os.environ, PATH=os.path.dirname(nvdisasm) + os.pathsep + os.environ.get("PATH", ""))
    sass = subprocess.run([cuobjdump, "-sass", cubin], capture_output=True, text=True, env=env, timeout=120).stdout
    assert "HMMA.1688.F32.TF32" in sass
