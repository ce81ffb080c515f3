"""Tier 2: the tensor-core foundation (issue 13) on the CPU: kernels/mma.cuh's warp-level
mma.sync (TF32 m16n8k8, BF16 m16n8k16, FP32 accumulation) and cp.async as cuda-emu runs
them, tinycnn/precision.py's roundings, and the header on nvcc/NVRTC for sm_80 and sm_90.

The kernels are tests/kernels/mma_test.cu, built for the emulator by
tinycnn.backends.cuda_emu_library.load_file. What is checked:

- round_tf32 / round_bf16 on hand-worked bit patterns (ties, carries into the exponent,
  overflow, subnormals, infinities, NaNs), and the emulator's to_tf32 / pack_bf16x2 bit
  for bit against them on every class of float;
- mma.cuh's fragment coordinates against the PTX ISA's formulas (transcribed here
  independently) and the emulated mma against exactly representable matrices
  (A[r][c] = r*100 + c, ...), where any layout slip shows as a wrong value;
- one and several warps (and idle warps past the last tile) computing 16 x 8 tiles
  against NumPy on operands rounded by tinycnn/precision.py, within the bound
  fp32_sum_error_bound derives from K and the unit roundoff (not tuned: the order of the
  additions inside a hardware MMA is undocumented), and bit for bit against the
  emulator's documented order;
- cp.async: a double-buffered kernel right with its wait and stale without it, the
  commit/wait group rules, and faults (misaligned copy, partial warp);
- nvcc (sm_80, sm_90, -Werror all-warnings, no spills) gives HMMA / LDGSTS in the SASS,
  and NVRTC compiles the self-contained source with an empty log.
"""

from __future__ import annotations

import os
import re
import subprocess

import numpy as np
import pytest

from tinycnn.backends import BackendUnavailable, cuda_emu_library
from tinycnn.backends.kernel_sources import inline_includes, kernel_names
from tinycnn.precision import fp32_sum_error_bound, round_bf16, round_tf32

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "kernels", "mma_test.cu")
i32 = np.int32


@pytest.fixture(scope="module")
def k():
    try:
        return cuda_emu_library.load_file(SOURCE)
    except BackendUnavailable as e:
        pytest.skip(str(e))


def f32(bits) -> np.ndarray:
    return np.asarray(bits, dtype=np.uint32).view(np.float32)


def bits(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)


# ------------------------------------------------------------------ roundings
TF32_CASES = [  # (input bits, result bits, why); TF32 keeps the top 19 bits, half an ulp is 0x1000
    (0x3F800000, 0x3F800000, "1.0 is exact"),
    (0x3F800FFF, 0x3F800000, "just under half an ulp: down"),
    (0x3F801000, 0x3F802000, "tie on an even mantissa: AWAY from zero (round-to-even would stay)"),
    (0x3F803000, 0x3F804000, "tie on an odd mantissa: away"),
    (0x3F801001, 0x3F802000, "just over half: up"),
    (0xBF801000, 0xBF802000, "negative tie: away from zero, the magnitude grows"),
    (0x3FFFF000, 0x40000000, "tie at the top mantissa: carries into the exponent, 2.0"),
    (0x3FFFFFFF, 0x40000000, "1.99999988: 2.0"),
    (0x7F7FEFFF, 0x7F7FE000, "under the largest TF32 plus half an ulp: the largest TF32"),
    (0x7F7FF000, 0x7F800000, "the largest TF32 plus half an ulp: overflows to +inf"),
    (0xFF7FF000, 0xFF800000, "and to -inf"),
    (0x7F800000, 0x7F800000, "+inf stays"),
    (0xFF800000, 0xFF800000, "-inf stays"),
    (0x00000000, 0x00000000, "+0"),
    (0x80000000, 0x80000000, "-0"),
    (0x00000FFF, 0x00000000, "a subnormal under half an ulp: +0"),
    (0x00001000, 0x00002000, "a subnormal tie: away"),
    (0x007FF000, 0x00800000, "the largest subnormals carry into the smallest normal"),
    (0x7FC00000, 0x7FC00000, "the quiet NaN stays"),
    (0xFFC01234, 0xFFC00000, "a NaN keeps its sign and its top payload bits"),
    (0x7F800001, 0x7F800000, "a NaN with only low payload bits is masked to +inf, as ptxas' lowering does"),
]

BF16_CASES = [  # BF16 keeps the top 16 bits, half an ulp is 0x8000, ties to even
    (0x3F800000, 0x3F800000, "1.0 is exact"),
    (0x3F807FFF, 0x3F800000, "just under half: down"),
    (0x3F808000, 0x3F800000, "tie on an even mantissa: stays (even)"),
    (0x3F818000, 0x3F820000, "tie on an odd mantissa: up to even"),
    (0x3F808001, 0x3F810000, "just over half: up"),
    (0xBF818000, 0xBF820000, "negative tie to even"),
    (0x3FFF8000, 0x40000000, "tie at the top mantissa: carries into the exponent, 2.0"),
    (0x7F7F7FFF, 0x7F7F0000, "under the largest BF16 plus half an ulp: the largest BF16"),
    (0x7F7F8000, 0x7F800000, "the largest BF16 plus half an ulp: +inf"),
    (0xFF7F8000, 0xFF800000, "and -inf"),
    (0x7F800000, 0x7F800000, "+inf stays"),
    (0xFF800000, 0xFF800000, "-inf stays"),
    (0x80000000, 0x80000000, "-0"),
    (0x00008000, 0x00000000, "a subnormal tie on even: +0"),
    (0x00018000, 0x00020000, "a subnormal tie on odd: up"),
    (0x007F8000, 0x00800000, "the largest subnormals carry into the smallest normal"),
    (0x7FC00000, 0x7FFF0000, "NaN: the canonical BF16 NaN 0x7FFF"),
    (0xFFC01234, 0x7FFF0000, "any NaN, sign and payload dropped"),
    (0x7F800001, 0x7FFF0000, "a NaN with only low payload bits stays a NaN"),
]


@pytest.mark.parametrize("fn, cases", [(round_tf32, TF32_CASES), (round_bf16, BF16_CASES)],
                         ids=["tf32", "bf16"])
def test_rounding_on_hand_worked_bit_patterns(fn, cases):
    got = bits(fn(f32([c[0] for c in cases])))
    for (x, want, why), g in zip(cases, got):
        assert g == want, f"{fn.__name__}(0x{x:08X}) = 0x{int(g):08X}, expected 0x{want:08X}: {why}"


def _every_class_of_float(n: int, seed: int = 0) -> np.ndarray:
    """Random bit patterns (normals, subnormals, NaNs, infinities), the hand-worked cases,
    and values just around ties of both roundings."""
    rng = np.random.default_rng(seed)
    u = rng.integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32)
    u[: n // 8] &= np.uint32(0x807FFFFF)  # subnormals and zeros
    u[n // 8: n // 4] |= np.uint32(0x7F800000)  # NaNs and infinities
    ties = (u[n // 4: n // 2] & np.uint32(0xFFFF0000)) | np.uint32(0x8000)
    ties[::2] = (u[n // 4: n // 2][::2] & np.uint32(0xFFFFE000)) | np.uint32(0x1000)
    u[n // 4: n // 2] = ties
    hand = np.array([c[0] for c in TF32_CASES + BF16_CASES], np.uint32)
    return np.concatenate([hand, u]).view(np.float32)


def test_roundings_are_idempotent_and_within_half_an_ulp():
    x = _every_class_of_float(1 << 16)
    finite = np.isfinite(x)
    for fn, mantissa in ((round_tf32, 10), (round_bf16, 7)):
        r = fn(x)
        assert np.array_equal(bits(fn(r)), bits(r)), f"{fn.__name__} is not idempotent"
        ok = finite & np.isfinite(r)
        err = np.abs(r[ok].astype(np.float64) - x[ok])
        # half an ulp of the kept mantissa, relative to the exponent of x (subnormals: absolute)
        half_ulp = np.ldexp(1.0, np.maximum(np.frexp(x[ok].astype(np.float64))[1], -125) - 1 - mantissa - 1)
        assert np.all(err <= half_ulp), fn.__name__


def test_emulator_conversions_match_precision_bit_for_bit(k):
    x = _every_class_of_float(1 << 14, seed=1)
    n = x.size
    tf32 = np.empty(n, np.uint32)
    bf16x2 = np.empty(n, np.uint32)
    k["mma_conversions"]((8, 1, 1), (256, 1, 1), [x, tf32, bf16x2, i32(n)])
    np.testing.assert_array_equal(tf32, bits(round_tf32(x)), "to_tf32 against round_tf32")
    # pack_bf16x2(lo = x, hi = -x): the low half holds x
    np.testing.assert_array_equal(bf16x2 & 0xFFFF, bits(round_bf16(x)) >> 16, "pack_bf16x2 low half")
    np.testing.assert_array_equal(bf16x2 >> 16, bits(round_bf16(-x)) >> 16, "pack_bf16x2 high half")


# ------------------------------------------------------------------ layouts
def ptx_isa_coordinates(lane: int) -> list[tuple[int, int]]:
    """(row, col) of every fragment element of one lane, transcribed from the PTX ISA,
    9.7.14.5.7 "Matrix Fragments for mma.m16n8k8" (.tf32) and 9.7.14.5.8 "Matrix
    Fragments for mma.m16n8k16 with floating point type" (.bf16), in the order of the
    kernel's slots: tf32 A a0..a3, tf32 B b0..b1, bf16 A a0..a7, bf16 B b0..b3, C/D c0..c3."""
    group, tig = lane >> 2, lane % 4  # groupID, threadID_in_group
    out = []
    for i in range(4):  # tf32 A: row groupID for a0, a2 and + 8 for a1, a3; col tig for a0, a1, + 4 for a2, a3
        out.append((group if i in (0, 2) else group + 8, tig if i in (0, 1) else tig + 4))
    for i in range(2):  # tf32 B: row tig for b0, tig + 4 for b1; col groupID
        out.append((tig if i == 0 else tig + 4, group))
    for i in range(8):  # bf16 A: row groupID for 0 <= i < 2 or 4 <= i < 6, else + 8; col 2 tig + (i & 1), +8 if i >= 4
        row = group if (0 <= i < 2 or 4 <= i < 6) else group + 8
        out.append((row, tig * 2 + (i & 1) + (8 if i >= 4 else 0)))
    for i in range(4):  # bf16 B: row 2 tig + (i & 1), + 8 for i >= 2; col groupID
        out.append((tig * 2 + (i & 1) + (8 if i >= 2 else 0), group))
    for i in range(4):  # C/D: row groupID for c0, c1, + 8 for c2, c3; col 2 tig + (i & 1)
        out.append((group if i < 2 else group + 8, tig * 2 + (i & 1)))
    return out


SLOTS = {"tf32 A": (0, 4, (16, 8)), "tf32 B": (4, 2, (8, 8)), "bf16 A": (6, 8, (16, 16)),
         "bf16 B": (14, 4, (16, 8)), "C/D": (18, 4, (16, 8))}


def test_fragment_coordinates_follow_the_ptx_isa(k):
    out = np.full((32, 22, 2), -1, np.int32)
    k["mma_fragment_coords"]((1, 1, 1), (32, 1, 1), [out])
    for lane in range(32):
        assert [tuple(p) for p in out[lane]] == ptx_isa_coordinates(lane), f"lane {lane}"
    for name, (first, count, shape) in SLOTS.items():  # the warp covers each matrix exactly once
        cover = np.zeros(shape, int)
        for lane in range(32):
            for row, col in out[lane, first:first + count]:
                cover[row, col] += 1
        assert np.all(cover == 1), f"{name}: elements held by no lane or by several"


def _run_tiles(k, kind, A, B, C, block=32, blocks=None, round_operands=1):
    tiles, _, kk = A.shape
    warps = block // 32
    blocks = blocks or -(-tiles // warps)
    D = np.full((tiles, 16, 8), np.nan, np.float32)
    args = [np.ascontiguousarray(A, np.float32), np.ascontiguousarray(B, np.float32),
            np.ascontiguousarray(C, np.float32), D, i32(kk), i32(tiles)]
    if kind == "tf32":
        k["mma_tf32_tiles"]((blocks, 1, 1), (block, 1, 1), args + [i32(round_operands)])
    else:
        k["mma_bf16_tiles"]((blocks, 1, 1), (block, 1, 1), args)
    return D


ROUND = {"tf32": round_tf32, "bf16": round_bf16}
KSTEP = {"tf32": 8, "bf16": 16}


@pytest.mark.parametrize("kind", ["tf32", "bf16"])
def test_mma_on_exactly_representable_matrices(k, kind):
    """D = A P picks columns of A (P a permutation), D = Q B picks rows of B: every D entry
    is one named element, exactly, so a layout slip shows as a wrong value, not a rounding."""
    kk = KSTEP[kind]
    # tf32 holds integers < 2**11 exactly, bf16 < 2**8
    scale_a, scale_b = (100, 100) if kind == "tf32" else (16, 8)
    r, c = np.meshgrid(np.arange(16), np.arange(kk), indexing="ij")
    A = (r * scale_a + c).astype(np.float32)  # A[r][c] = r*100 + c
    kb, n = np.meshgrid(np.arange(kk), np.arange(8), indexing="ij")
    B = (kb * scale_b + n).astype(np.float32)  # B[k][n] = k*100 + n
    assert np.array_equal(ROUND[kind](A), A) and np.array_equal(ROUND[kind](B), B)
    perm = np.random.default_rng(2).permutation(kk)
    P = np.zeros((kk, 8), np.float32)
    P[perm[:8], np.arange(8)] = 1  # column n of D = column perm[n] of A
    Q = np.zeros((16, kk), np.float32)
    sel = np.arange(16) * 5 % kk
    Q[np.arange(16), sel] = 1  # row r of D = row sel[r] of B
    zero = np.zeros((1, 16, 8), np.float32)
    D = _run_tiles(k, kind, A[None], P[None], zero)[0]
    np.testing.assert_array_equal(D, A[:, perm[:8]], err_msg="A's layout: D[r][n] must be A[r][perm[n]]")
    D = _run_tiles(k, kind, Q[None], B[None], zero)[0]
    np.testing.assert_array_equal(D, B[sel, :], err_msg="B's layout: D[r][n] must be B[sel[r]][n]")
    C = (np.arange(128).reshape(1, 16, 8) * 3).astype(np.float32)  # C/D's layout: D = C when A = 0
    D = _run_tiles(k, kind, np.zeros((1, 16, kk), np.float32), P[None], C)
    np.testing.assert_array_equal(D, C, err_msg="C/D's layout")


def _operands(kind, tiles, kk, seed):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((tiles, 16, kk)).astype(np.float32)
    B = rng.standard_normal((tiles, kk, 8)).astype(np.float32)
    C = rng.standard_normal((tiles, 16, 8)).astype(np.float32)
    return A, B, C


def reference(kind, A, B, C):
    """(float64 reference on rounded operands, the derived error bound)."""
    ar, br = ROUND[kind](A).astype(np.float64), ROUND[kind](B).astype(np.float64)
    ref = ar @ br + C
    bound = fp32_sum_error_bound(np.abs(ar) @ np.abs(br) + np.abs(C), A.shape[2])
    return ref, bound


# (block threads, blocks, tiles, K steps): one warp; one warp chaining mma over K; four
# warps in each of two blocks with the last warp idle (7 tiles on 8 warps).
CONFIGS = [(32, 1, 1, 1), (32, 1, 1, 5), (128, 2, 7, 3)]


@pytest.mark.parametrize("kind", ["tf32", "bf16"])
@pytest.mark.parametrize("block, blocks, tiles, ksteps", CONFIGS)
def test_mma_tiles_against_numpy(k, kind, block, blocks, tiles, ksteps):
    """Each D within gamma_K * (|C| + |A||B|) (u = 2**-23) of the exact product of the
    rounded operands; the error must also be a rounding error, not zero by accident of
    an unrounded reference (the rounded and unrounded references differ far more)."""
    kk = KSTEP[kind] * ksteps
    A, B, C = _operands(kind, tiles, kk, seed=block + ksteps)
    D = _run_tiles(k, kind, A, B, C, block=block, blocks=blocks)
    ref, bound = reference(kind, A, B, C)
    err = np.abs(D - ref)
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), f"{kind}: |D - ref| = {err[worst]:.3g} > bound {bound[worst]:.3g} at {worst}"
    unrounded = A.astype(np.float64) @ B + C
    assert np.max(np.abs(unrounded - ref)) > 10 * np.max(bound), "the operand rounding went untested"


@pytest.mark.parametrize("kind", ["tf32", "bf16"])
def test_emulator_accumulates_in_the_documented_order(k, kind):
    """cuda_emu.h's order, bit for bit: d = c, then d += a[k] b[k] for k ascending in FP32
    (the products of rounded operands are exact in FP32)."""
    A, B, C = _operands(kind, 3, KSTEP[kind] * 4, seed=7)
    D = _run_tiles(k, kind, A, B, C, block=96)
    ar, br = ROUND[kind](A), ROUND[kind](B)
    acc = C.copy()
    for kk in range(A.shape[2]):
        acc = acc + ar[:, :, kk:kk + 1] * br[:, kk:kk + 1, :]
    np.testing.assert_array_equal(D, acc)


def test_unrounded_tf32_operands_are_truncated(k):
    """Raw float bits as .tf32 operands: the emulator reads the top 19 bits (truncation),
    the model of a tensor core that ignores the low 13 bits (a GPU test can confirm)."""
    A, B, C = _operands("tf32", 2, 16, seed=3)
    D = _run_tiles(k, "tf32", A, B, C, block=64, round_operands=0)
    trunc = lambda x: f32(bits(x) & np.uint32(0xFFFFE000))  # noqa: E731
    acc = C.copy()
    at, bt = trunc(A), trunc(B)
    for kk in range(16):
        acc = acc + at[:, :, kk:kk + 1] * bt[:, kk:kk + 1, :]
    np.testing.assert_array_equal(D, acc)
    assert not np.array_equal(D, _run_tiles(k, "tf32", A, B, C, block=64)), "rounding made no difference"


# ------------------------------------------------------------------- cp.async
CP_STAGE = 256


def test_cp_async_double_buffer_needs_its_wait(k):
    stages = 5
    data = np.random.default_rng(4).standard_normal((stages, CP_STAGE)).astype(np.float32)
    assert data.ctypes.data % 16 == 0
    want = data[:, ::-1]
    out = np.full_like(data, np.nan)
    k["cp_async_reverse"]((1, 1, 1), (64, 1, 1), [data, out, i32(stages)])
    np.testing.assert_array_equal(out, want, err_msg="with its waits")
    # twice, on new data: the second launch finds the first one's last stages in shared memory
    for attempt in range(2):
        data = data + 1
        want = data[:, ::-1]
        out = np.full_like(data, np.nan)
        k["cp_async_reverse_nowait"]((1, 1, 1), (64, 1, 1), [data, out, i32(stages)])
        stale = [s for s in range(stages) if not np.array_equal(out[s], want[s])]
        assert stale == list(range(stages)), f"launch {attempt}: without the wait only stages {stale} were stale"


def test_cp_async_commit_and_wait_groups(k):
    """wait<N> lands every committed group but the N newest, in this thread; a copy not
    committed is never waited for; until it lands, shared memory keeps its old value."""
    src = np.arange(3 * 128, dtype=np.float32).reshape(3, 128) + 1
    snap = np.full((4, 3, 128), np.nan, np.float32)
    k["cp_async_groups"]((1, 1, 1), (32, 1, 1), [src, snap])
    old = np.full(128, -1, np.float32)
    expect = {0: (old, old, old),  # nothing lands before a wait
              1: (src[0], old, old),  # wait<1>: g0 lands, g1 (the newest) may still fly
              2: (src[0], src[1], old),  # wait<0>: all committed groups; the third copy is uncommitted
              3: (src[0], src[1], src[2])}  # committed, then wait<0>
    for point, bufs in expect.items():
        for b, want in enumerate(bufs):
            np.testing.assert_array_equal(snap[point, b], want, err_msg=f"point {point}, buffer {b}")


def test_emulated_faults_raise(k):
    src = np.zeros(64, np.float32)
    with pytest.raises(RuntimeError, match="faulted"):
        k["cp_async_misaligned"]((1, 1, 1), (32, 1, 1), [src])
    A, B, C = _operands("tf32", 1, 8, seed=5)
    with pytest.raises(RuntimeError, match="faulted"):  # 48 threads: a partial warp
        _run_tiles(k, "tf32", A, B, C, block=48, blocks=1)
    # and the emulator recovers: the next launch is clean
    np.testing.assert_array_equal(_run_tiles(k, "tf32", A, B, C), _run_tiles(k, "tf32", A, B, C))


# --------------------------------------------------------- nvcc, SASS, NVRTC
def _tool(name):
    from bench.gpu_model import tool

    return tool(name)


def _sass_by_function(text: str) -> dict[str, str]:
    parts = re.split(r"^\s*Function\s*:\s*(\w+)\s*$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


@pytest.fixture(scope="module")
def sass(tmp_path_factory):
    nvcc, cuobjdump, nvdisasm = _tool("nvcc"), _tool("cuobjdump"), _tool("nvdisasm")
    if nvcc is None:
        pytest.skip("nvcc not found")
    out_dir = tmp_path_factory.mktemp("mma_cubins")
    result = {}
    for arch in ("sm_80", "sm_90"):
        cubin = str(out_dir / f"mma_test.{arch}.cubin")
        cmd = [nvcc, "-std=c++17", f"-arch={arch}", "-cubin", "-Xptxas", "-v", "-Werror", "all-warnings",
               "-o", cubin, SOURCE]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        log = res.stdout + res.stderr
        assert res.returncode == 0, f"nvcc failed for {arch}:\n{log}"
        assert "warning" not in log.lower(), f"nvcc warned for {arch}:\n{log}"
        spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
        assert spills and all(s == ("0", "0") for s in spills), f"register spills for {arch}:\n{log}"
        if cuobjdump and nvdisasm:  # cuobjdump -sass runs nvdisasm from PATH
            env = dict(os.environ, PATH=os.path.dirname(nvdisasm) + os.pathsep + os.environ.get("PATH", ""))
            res = subprocess.run([cuobjdump, "-sass", cubin], capture_output=True, text=True, env=env, timeout=120)
            assert res.returncode == 0, res.stderr
            result[arch] = _sass_by_function(res.stdout)
    return result


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_header_compiles_to_tensor_core_instructions(sass, arch):
    if arch not in sass:
        pytest.skip("cuobjdump/nvdisasm not found (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)")
    fn = sass[arch]
    assert "HMMA.1688.F32.TF32" in fn["mma_tf32_tiles"], "no TF32 HMMA in mma_tf32_tiles"
    assert "HMMA.16816.F32.BF16" in fn["mma_bf16_tiles"], "no BF16 HMMA in mma_bf16_tiles"
    assert "HMMA" not in fn["cp_async_reverse"]
    for name in ("cp_async_reverse", "cp_async_reverse_nowait", "cp_async_groups"):
        assert "LDGSTS" in fn[name], f"no cp.async (LDGSTS) in {name}"
    # the two double-buffer versions differ by the wait_group 1 (DEPBAR ... 0x1) alone
    assert re.search(r"DEPBAR\.LE SB0, 0x1", fn["cp_async_reverse"])
    assert not re.search(r"DEPBAR\.LE SB0, 0x1", fn["cp_async_reverse_nowait"])
    # to_tf32 is lowered to the bit arithmetic round_tf32 models; pack_bf16x2 is one F2FP
    conv = fn["mma_conversions"]
    assert "0xffffe000" in conv and "+INF" in conv, "cvt.rna.tf32.f32 is no longer the modelled bit arithmetic"
    assert re.search(r"F2FP\.BF16(\.F32)?\.PACK_AB", conv)


@pytest.mark.parametrize("arch", ["sm_75", "sm_80", "sm_90"])
def test_self_contained_source_compiles_with_nvrtc(arch):
    """What the cuda backend would hand NVRTC (local headers inlined, no include path, no
    system headers); sm_75 takes the trapping fallback, so a .cu that mixes FP32 and
    tensor-core kernels still loads on an older GPU."""
    test_nvrtc = pytest.importorskip("test_nvrtc")
    if test_nvrtc.NVRTC is None:
        pytest.skip("libnvrtc not found (pip install nvidia-cuda-nvrtc)")
    source = inline_includes(SOURCE)
    names = kernel_names(source)
    status, log, lowered = test_nvrtc.nvrtc_compile(source, "mma_test.cu", names, arch)
    assert status == 0, f"NVRTC rejected mma_test.cu for {arch}:\n{log}"
    assert log == "", f"NVRTC warned for {arch}:\n{log}"
    assert lowered == {n: n for n in names}
