"""Tier 2: the tensor-core kernels of issue 13 (kernels/gemm_tc.cu, kernels/conv2d_tc.cu)
through cuda-emu against NumPy, and their SASS.

Each kernel file is built for the emulator on its own (tinycnn.backends.cuda_emu_library.load_file)
and launched with the geometry of tinycnn/backends/geometry.py. What is checked:

- EXACT on integer operands: small integers are exact in TF32 and BF16 and their sums
  exact in FP32, so every GEMM orientation and every convolution pass (every precision
  and tile shape) must equal NumPy bit for bit. A slip in the fragment layouts, the K or
  row permutations of tc_tile.cuh, the swizzles, the gathers, the fused block's window
  columns or its first-maximum rule (integer windows tie often) shows as a wrong value.
- Within a DERIVED bound on random operands: the reference is the float64 product of the
  operands rounded as the kernel rounds them (tinycnn.precision.round_tf32 / round_bf16);
  the kernel may differ by the error of FP32 sums of exact products in any order,
  fp32_sum_error_bound(sum |terms|, n) = gamma_n sum |terms| with u = 2**-23 and n the
  number of additions (K products, + 1 for a bias, + the split-K slices): not tuned. Each
  such test also asserts that the unrounded product differs from the reference by far
  more than the bound, so the rounding itself is under test.
- Edges: M, N, K not multiples of the tiles; two row tiles with a partial second; split-K
  through a workspace added in order; all four stride patterns of the dense layer; the
  cp.async staging (K-contiguous, 16-byte-aligned rows) and the register path (odd row
  stride, misaligned base) giving the same bits; stride 2, padding and non-square filters;
  ceil-mode pooling windows hanging over the bottom and right edges.
- The fused block equals the forward kernel followed by ReLU and the 2x2 pool bit for bit
  (the emulator's summation order is fixed, so both compute the same FP32 sums).
- Both gathers of each convolution pass (conv2d_tc.cu: the fast table / ring path and
  the general one carrying digits) and their loaders with and without K tests: the
  geometries below are chosen to reach each (pad 0 or not, stride 1 or not, taps per
  window up to 32 or more, three k-tiles or more), and the BF16 forward's vector weight
  loads agree with its scalar ones.
- nvcc for sm_90 (and sm_80 for the GEMM): every kernel's main loop (the backward
  branch with the most HMMA, the shortest among equals) holds HMMA.1688.F32.TF32 or
  HMMA.16816.F32.BF16, and the GEMM's cp.async path is LDGSTS; the convolutions' main
  loops stay within instruction budgets per k-tile. (tests/test_nvcc.py and
  test_nvrtc.py compile every kernels/*.cu for warnings, spills and NVRTC.)
"""

from __future__ import annotations

import os
import re
import subprocess

import numpy as np
import pytest

from bench.hmma import HMMA_FLOPS, hmma_per_trip, k_tiles
from tinycnn.backends import BackendUnavailable, cuda_emu_library
from tinycnn.backends import geometry as tc
from tinycnn.backends.kernel_sources import KERNEL_DIR, kernel_sources
from tinycnn.precision import TENSOR_CORE_PRECISIONS
from tinycnn.precision import fp32_sum_error_bound, round_bf16, round_tf32
from tinycnn.shapes import pool_out_size

ROUND = {"tf32": round_tf32, "bf16": round_bf16}
PRECISIONS = TENSOR_CORE_PRECISIONS
TILES = [(32, 128), (64, 64), (128, 64)]
i32 = np.int32


def _load(fname):
    try:
        return cuda_emu_library.load_file(os.path.join(KERNEL_DIR, fname))
    except BackendUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def gemm_k():
    return _load("gemm_tc.cu")


@pytest.fixture(scope="module")
def conv_k():
    return _load("conv2d_tc.cu")


def cdiv(a, b):
    return -(-a // b)


def assert_within(got, ref, bound, what):
    err = np.abs(got.astype(np.float64) - ref)
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), (f"{what}: |got - ref| = {err[worst]:.3g} > bound {bound[worst]:.3g} at {worst} "
                                  f"(got {got[worst]!r}, ref {ref[worst]!r})")


def assert_rounding_visible(unrounded, ref, bound, what):
    """The operand rounding moves the result far more than the bound allows: a kernel that
    skipped it (or truncated instead) could not pass."""
    assert np.max(np.abs(unrounded - ref)) > 10 * np.max(bound), f"{what}: the operand rounding went untested"


# ----------------------------------------------------------------------- GEMM
# The four stride patterns of C (m, n) = A (m, k) B (k, n): the dense layer's forward
# (x W), dX (dY W^T: B K-contiguous) and dW (x^T dY: A row-contiguous), and both transposed.
ORIENTATIONS = {
    "forward": (False, False),  # (A stored transposed, B stored transposed)
    "backward_dx": (False, True),
    "backward_dw": (True, False),
    "both_transposed": (True, True),
}


def _gemm_operands(a, b, a_t, b_t):
    """Storage and strides (sam, sak, sbk, sbn) for A (m, k) and B (k, n), each stored
    as is or as its transpose (C-contiguous)."""
    m, k = a.shape
    n = b.shape[1]
    a_store = np.ascontiguousarray(a.T if a_t else a)
    b_store = np.ascontiguousarray(b.T if b_t else b)
    sam, sak = (1, m) if a_t else (k, 1)
    sbk, sbn = (1, k) if b_t else (n, 1)
    return a_store, b_store, (sam, sak, sbk, sbn)


def run_gemm(kern, prec, a_store, b_store, bias, m, n, k, strides, splits=1, k_chunk=None):
    """C through sgemm_<prec>_strided, with the workspace slices added in order in float32
    (as split_k_reduce does) when split."""
    if k_chunk is None:
        g = tc.gemm(prec, m, n, k)
    else:
        g = tc.Geometry(f"sgemm_{prec}_strided", (cdiv(n, 64), cdiv(m, 64), splits), (tc.TC_GEMM_THREADS, 1, 1),
                        splits, k_chunk)
        assert cdiv(k, k_chunk) == splits
    if g.splits == 1:
        c = np.full((m, n), np.nan, np.float32)
        kern[g.name](g.grid, g.block, tc.gemm_args(g, c, a_store, b_store, bias, m, n, k, *strides))
        return c
    ws = np.full((g.splits, m, n), np.nan, np.float32)
    kern[g.name](g.grid, g.block, tc.gemm_args(g, ws, a_store, b_store, bias, m, n, k, *strides))
    c = ws[0].copy()
    for z in range(1, g.splits):
        c = c + ws[z]
    return c + (bias if bias is not None else np.float32(0))


@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
@pytest.mark.parametrize("prec", PRECISIONS)
def test_gemm_is_exact_on_integers(gemm_k, prec, orientation):
    """m = 37 (a partial row tile), n = 70 (two column tiles), k = 45 (partial k-tiles)."""
    rng = np.random.default_rng(11)
    m, n, k = 37, 70, 45
    a = rng.integers(-4, 5, (m, k)).astype(np.float32)
    b = rng.integers(-4, 5, (k, n)).astype(np.float32)
    bias = rng.integers(-8, 9, n).astype(np.float32)
    a_store, b_store, strides = _gemm_operands(a, b, *ORIENTATIONS[orientation])
    c = run_gemm(gemm_k, prec, a_store, b_store, bias, m, n, k, strides)
    np.testing.assert_array_equal(c, a.astype(np.float64) @ b + bias, err_msg=f"{prec} {orientation}")


@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
@pytest.mark.parametrize("prec", PRECISIONS)
def test_gemm_against_the_rounded_reference(gemm_k, prec, orientation, splits):
    """Random operands; split 3: K chunks of 32 (the last one partial) into a workspace."""
    rng = np.random.default_rng(splits * 7 + len(orientation))
    m, n, k = 37, 70, 80
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    a_store, b_store, strides = _gemm_operands(a, b, *ORIENTATIONS[orientation])
    c = run_gemm(gemm_k, prec, a_store, b_store, bias, m, n, k, strides, splits=splits,
                 k_chunk=32 if splits > 1 else None)
    ra, rb = ROUND[prec](a).astype(np.float64), ROUND[prec](b).astype(np.float64)
    ref = ra @ rb + bias
    bound = fp32_sum_error_bound(np.abs(ra) @ np.abs(rb) + np.abs(bias), k + 1 + splits)
    assert_within(c, ref, bound, f"{prec} {orientation} splits {splits}")
    assert_rounding_visible(a.astype(np.float64) @ b + bias, ref, bound, prec)


@pytest.mark.parametrize("prec", PRECISIONS)
def test_gemm_cp_async_and_register_staging_agree(gemm_k, prec):
    """A and B K-contiguous: rows 16-byte aligned (row stride 48: cp.async), an odd row
    stride (45) and a base one float past alignment (both: the register path; a cp.async
    there would fault in the emulator) give the same bits, and the exact product."""
    rng = np.random.default_rng(5)
    m, n, k = 40, 24, 45
    a = rng.integers(-4, 5, (m, k)).astype(np.float32)
    bt = rng.integers(-4, 5, (n, k)).astype(np.float32)  # B stored as (n, k): K-contiguous
    want = a.astype(np.float64) @ bt.T.astype(np.float64)
    results = {}
    for layout, ld, offset in (("aligned rows", 48, 0), ("odd row stride", 45, 0), ("misaligned base", 48, 1)):
        a_buf = np.zeros(m * ld + 8, np.float32)
        b_buf = np.zeros(n * ld + 8, np.float32)
        a_buf[offset:offset + m * ld].reshape(m, ld)[:, :k] = a
        b_buf[offset:offset + n * ld].reshape(n, ld)[:, :k] = bt
        a_view, b_view = a_buf[offset:], b_buf[offset:]
        assert (a_view.ctypes.data % 16 == 0) == (offset == 0)
        results[layout] = run_gemm(gemm_k, prec, a_view, b_view, None, m, n, k, (ld, 1, 1, ld))
        np.testing.assert_array_equal(results[layout], want, err_msg=f"{prec}: {layout}")


def test_gemm_geometry_splits_like_the_fp32_launcher():
    for prec in PRECISIONS:
        for m, n, k in ((64, 1024, 28800), (28800, 1024, 64), (64, 28800, 1024), (3, 5, 7)):
            g = tc.gemm(prec, m, n, k)
            assert g.name == f"sgemm_{prec}_strided" and g.block == (tc.TC_GEMM_THREADS, 1, 1)
            assert g.grid[:2] == (cdiv(n, 64), cdiv(m, 64)) and g.grid[2] == g.splits
            assert g.k_chunk % tc.k_tile(prec) == 0 and g.splits * g.k_chunk >= k > (g.splits - 1) * g.k_chunk
    assert tc.gemm("tf32", 64, 1024, 28800).splits > 1  # the first dense layer is split
    with pytest.raises(ValueError):
        tc.gemm("fp16", 1, 1, 1)


# ------------------------------------------------------------------ convolutions
def im2col(x, kh, kw, s, p):
    """cols (N, C, KH, KW, OH, OW): x[n, c, oh s + u - p, ow s + v - p], 0 outside."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    oh, ow = (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1
    cols = np.empty((n, c, kh, kw, oh, ow), x.dtype)
    for u in range(kh):
        for v in range(kw):
            cols[:, :, u, v] = xp[:, :, u:u + s * (oh - 1) + 1:s, v:v + s * (ow - 1) + 1:s]
    return cols


def col2im(dcols, shape, s, p):
    """The adjoint of im2col: dx (N, C, H, W) = sum of dcols over the windows."""
    n, c, h, w = shape
    _, _, kh, kw, oh, ow = dcols.shape
    dxp = np.zeros((n, c, h + 2 * p, w + 2 * p), dcols.dtype)
    for u in range(kh):
        for v in range(kw):
            dxp[:, :, u:u + s * (oh - 1) + 1:s, v:v + s * (ow - 1) + 1:s] += dcols[:, :, u, v]
    return dxp[:, :, p:p + h, p:p + w]


def relu_pool(y):
    """maxpool2d(relu(y), 2, 2, ceil mode) with the FIRST maximum in row-major window
    order (maxpool.cu's rule); y float32. -> (pooled, arg)."""
    n, f, oh, ow = y.shape
    r = np.where(y > 0, y, np.float32(0))
    ph, pw = pool_out_size(oh, 2, 2, True), pool_out_size(ow, 2, 2, True)
    pooled = np.empty((n, f, ph, pw), np.float32)
    arg = np.empty((n, f, ph, pw), np.int32)
    for i in range(ph):
        for j in range(pw):
            best, best_k = r[:, :, 2 * i, 2 * j].copy(), np.zeros((n, f), np.int32)
            for kk, (dy, dx) in enumerate(((0, 1), (1, 0), (1, 1)), start=1):
                if 2 * i + dy < oh and 2 * j + dx < ow:
                    v = r[:, :, 2 * i + dy, 2 * j + dx]
                    best_k = np.where(v > best, kk, best_k)
                    best = np.where(v > best, v, best)
            pooled[:, :, i, j], arg[:, :, i, j] = best, best_k
    return pooled, arg


def pool_max(y):
    """Largest value over each 2x2 ceil-mode window (for bounds)."""
    n, f, oh, ow = y.shape
    ph, pw = pool_out_size(oh, 2, 2, True), pool_out_size(ow, 2, 2, True)
    out = np.full((n, f, ph, pw), -np.inf)
    for i in range(ph):
        for j in range(pw):
            out[:, :, i, j] = y[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2].max(axis=(2, 3))
    return out


# (N, C, H, W, F, KH, KW, stride, pad): 'main' has K = 72 (several k-tiles in both
# precisions); 'strided' has stride 2, padding, a 2x3 filter and OH, OW = 5: the fused
# block's last windows hang over both edges. Each pass has a fast gather and a general
# one (conv2d_tc.cu), picked per launch: the forward pass and the fused block take the
# tap table with pad 0 and at most 32 taps per window, backward-data its tap table with
# stride 1 and at most 32 taps, backward-filter the position ring with pad 0; the rest
# carry digits. The k-tiles between a pass's first and last run loaders without K tests,
# so each fast path gets three k-tiles or more in both precisions somewhere:
#   'pad0': K = 45 (three TF32 k-tiles, two BF16; backward-data K = 72: five, three),
#           every fast path;
#   'pad0_strided': stride 2, OH, OW = 5, K = 18: the fast forward and backward-filter
#           beside backward-data's strided walk;
#   'wide_taps': 6 x 6 = 36 taps, stride 1, pad 0: the forward digits and backward-data's
#           walk with stride 1 beside backward-filter's position ring;
#   'taps32': 4 x 8 = 32 taps, K = 64 (backward-data 256), OH, OW = 5: every phase of
#           the tables, the mask's bit 31, the BF16 forward's vector weight loads (weights
#           16-byte aligned; test_conv_forward_vector_and_scalar_weight_loads_agree has
#           three BF16 k-tiles).
# The rows of each pass (F, or C for backward-data) are set per tile below.
GEOMETRIES = {"main": (2, 8, 7, 6, None, 3, 3, 1, 1), "strided": (1, 3, 9, 10, None, 2, 3, 2, 1),
              "pad0": (2, 5, 7, 9, None, 3, 3, 1, 0), "pad0_strided": (1, 3, 11, 12, None, 2, 3, 2, 0),
              "wide_taps": (1, 2, 8, 9, None, 6, 6, 1, 0), "taps32": (1, 2, 8, 12, None, 4, 8, 1, 0)}
# backward-filter's chunk of positions in the rounded-reference test (None: one chunk):
# 32 = a whole number of k-tiles, 40 = a partial last k-tile in every chunk
K_CHUNKS = {"main": 32, "pad0": 40}
SMALL_K = 8  # the other side of backward-data (its K = F KH KW: 72 for 3 x 3, three BF16 k-tiles)


def rows_for(bm):
    """Rows of the product for a tile: two row tiles, the second partial (the 128-row tile,
    whose blocks are twice as costly to emulate: one partial tile)."""
    return 70 if bm == 128 else bm + bm // 2 + 1


def conv_case(bm, geometry, integers, seed):
    n, c, h, w, _, kh, kw, s, p = GEOMETRIES[geometry]
    rows = rows_for(bm)
    rng = np.random.default_rng(seed)

    def draw(*shape):
        return (rng.integers(-3, 4, shape) if integers else rng.standard_normal(shape)).astype(np.float32)

    oh, ow = (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1
    # forward / fused / backward-filter: F = rows filters over C channels;
    # backward-data: C = rows channels, F = SMALL_K filters
    fwd = dict(x=draw(n, c, h, w), w=draw(rows, c, kh, kw), b=draw(rows), dout=draw(n, rows, oh, ow))
    bwd = dict(x_shape=(n, rows, h, w), w=draw(SMALL_K, rows, kh, kw), dout=draw(n, SMALL_K, oh, ow))
    return (n, c, h, w, rows, kh, kw, oh, ow, s, p), fwd, bwd


def launch_conv(kern, kind, prec, tile, m, cols, args, z=1):
    bm, bn = tile
    kern[f"conv2d_{kind}_{prec}_{bm}x{bn}"]((cdiv(cols, bn), cdiv(m, bm), z), (tc.tc_threads(bm, bn), 1, 1), args)


def run_conv_passes(kern, prec, tile, geo, fwd, bwd, k_chunk=None):
    """All four passes of one tile shape: (out, (pooled, arg), dx, dw)."""
    n, c, h, w, f, kh, kw, oh, ow, s, p = geo
    ph, pw = pool_out_size(oh, 2, 2, True), pool_out_size(ow, 2, 2, True)
    g = tc.conv_geometry_args(n, c, h, w, f, kh, kw, oh, ow, s, p)
    out = np.full((n, f, oh, ow), np.nan, np.float32)
    launch_conv(kern, "forward", prec, tile, f, n * oh * ow, [out, fwd["x"], fwd["w"], fwd["b"]] + g)
    pooled = np.full((n, f, ph, pw), np.nan, np.float32)
    arg = np.full((n, f, ph, pw), -1, np.int32)
    launch_conv(kern, "relu_maxpool", prec, tile, f, n * ph * pw * 4,
                [pooled, arg, fwd["x"], fwd["w"], fwd["b"]] + g + [i32(ph), i32(pw)])
    p_total = n * oh * ow
    chunk = k_chunk or p_total
    splits = cdiv(p_total, chunk)
    ws = np.full((splits, f, c, kh, kw), np.nan, np.float32)
    launch_conv(kern, "backward_filter", prec, tile, f, c * kh * kw, [ws, fwd["dout"], fwd["x"]] + g + [i32(chunk)],
                z=splits)
    dw = ws[0].copy()
    for z in range(1, splits):
        dw = dw + ws[z]  # split_k_reduce's order
    # backward-data: C = f channels, F = SMALL_K filters
    gb = tc.conv_geometry_args(n, f, h, w, SMALL_K, kh, kw, oh, ow, s, p)
    dx = np.full(bwd["x_shape"], np.nan, np.float32)
    launch_conv(kern, "backward_data", prec, tile, f, n * h * w, [dx, bwd["dout"], bwd["w"]] + gb)
    return out, (pooled, arg), dx, dw


def conv_references(prec, geo, fwd, bwd, rounded=True):
    """float64 (out, dx, dw) on operands rounded like the kernel (or not), and the sums of
    |terms| that their bounds scale."""
    n, c, h, w, f, kh, kw, oh, ow, s, p = geo
    rnd = ROUND[prec] if rounded else (lambda a: a)
    x, wt, dout = (rnd(fwd[k]).astype(np.float64) for k in ("x", "w", "dout"))
    wb, doutb = rnd(bwd["w"]).astype(np.float64), rnd(bwd["dout"]).astype(np.float64)
    b = fwd["b"].astype(np.float64)
    cols = im2col(x, kh, kw, s, p)
    out = np.einsum("fcuv,ncuvhw->nfhw", wt, cols) + b[None, :, None, None]
    out_abs = np.einsum("fcuv,ncuvhw->nfhw", np.abs(wt), np.abs(cols)) + np.abs(b)[None, :, None, None]
    dx = col2im(np.einsum("fcuv,nfhw->ncuvhw", wb, doutb), bwd["x_shape"], s, p)
    dx_abs = col2im(np.einsum("fcuv,nfhw->ncuvhw", np.abs(wb), np.abs(doutb)), bwd["x_shape"], s, p)
    dw = np.einsum("nfhw,ncuvhw->fcuv", dout, cols)
    dw_abs = np.einsum("nfhw,ncuvhw->fcuv", np.abs(dout), np.abs(cols))
    return (out, dx, dw), (out_abs, dx_abs, dw_abs)


CONV_CASES = [(prec, tile, geometry) for prec in PRECISIONS for tile in TILES for geometry in GEOMETRIES]
CONV_IDS = [f"{p}-{t[0]}x{t[1]}-{g}" for p, t, g in CONV_CASES]


@pytest.mark.parametrize("prec, tile, geometry", CONV_CASES, ids=CONV_IDS)
def test_conv_passes_are_exact_on_integers(conv_k, prec, tile, geometry):
    geo, fwd, bwd = conv_case(tile[0], geometry, integers=True, seed=tile[0] + len(geometry))
    out, (pooled, arg), dx, dw = run_conv_passes(conv_k, prec, tile, geo, fwd, bwd)
    (ref_out, ref_dx, ref_dw), _ = conv_references(prec, geo, fwd, bwd)
    np.testing.assert_array_equal(out, ref_out, err_msg="forward")
    ref_pooled, ref_arg = relu_pool(ref_out.astype(np.float32))
    np.testing.assert_array_equal(pooled, ref_pooled, err_msg="fused block: pooled")
    np.testing.assert_array_equal(arg, ref_arg, err_msg="fused block: winners (first maximum)")
    assert np.any(ref_arg > 0) and np.any(ref_pooled == 0), "the case must exercise the winners and the ReLU"
    np.testing.assert_array_equal(dx, ref_dx, err_msg="backward-data")
    np.testing.assert_array_equal(dw, ref_dw, err_msg="backward-filter")


@pytest.mark.parametrize("prec, tile, geometry", CONV_CASES, ids=CONV_IDS)
def test_conv_passes_against_the_rounded_reference(conv_k, prec, tile, geometry):
    """Bounds: forward K + 1 additions (the bias), backward-data F KH KW, backward-filter
    N OH OW plus the split-K slices (backward-filter split in chunks of K_CHUNKS
    positions); the fused block within the largest bound of its window (ReLU and max are
    1-Lipschitz), and bit for bit the forward kernel's output pooled."""
    geo, fwd, bwd = conv_case(tile[0], geometry, integers=False, seed=3 * tile[0] + len(geometry))
    n, c, h, w, f, kh, kw, oh, ow, s, p = geo
    k_chunk = K_CHUNKS.get(geometry)
    splits = cdiv(n * oh * ow, k_chunk) if k_chunk else 1
    out, (pooled, arg), dx, dw = run_conv_passes(conv_k, prec, tile, geo, fwd, bwd, k_chunk=k_chunk)
    (ref_out, ref_dx, ref_dw), (out_abs, dx_abs, dw_abs) = conv_references(prec, geo, fwd, bwd)
    bound_out = fp32_sum_error_bound(out_abs, c * kh * kw + 1)
    assert_within(out, ref_out, bound_out, f"{prec} forward")
    assert_within(dx, ref_dx, fp32_sum_error_bound(dx_abs, SMALL_K * kh * kw), f"{prec} backward-data")
    bound_dw = fp32_sum_error_bound(dw_abs, n * oh * ow + splits)
    assert_within(dw, ref_dw, bound_dw, f"{prec} backward-filter")
    ref_pool = pool_max(np.maximum(ref_out, 0))
    assert_within(pooled, ref_pool, pool_max(bound_out), f"{prec} fused block")
    mine_pooled, mine_arg = relu_pool(out)  # the forward kernel's own output, pooled
    np.testing.assert_array_equal(pooled, mine_pooled, err_msg="fused block != forward kernel + relu + pool")
    np.testing.assert_array_equal(arg, mine_arg, err_msg="fused block winners")
    (un_out, _, un_dw), _ = conv_references(prec, geo, fwd, bwd, rounded=False)
    assert_rounding_visible(un_out, ref_out, bound_out, f"{prec} forward")
    assert_rounding_visible(un_dw, ref_dw, bound_dw, f"{prec} backward-filter")


@pytest.mark.parametrize("tile", TILES, ids=[f"{t[0]}x{t[1]}" for t in TILES])
def test_conv_forward_vector_and_scalar_weight_loads_agree(conv_k, tile):
    """BF16 forward, pad 0, K a multiple of 4: weights 16-byte aligned take the LDG.128
    loads, the same weights one float past alignment the scalar ones; same bits, and the
    exact product on integers (plain forward and fused block)."""
    n, c, h, w, kh, kw = 1, 8, 6, 9, 3, 3  # K = 72: three k-tiles, the last partial
    f = rows_for(tile[0])
    rng = np.random.default_rng(17)
    x = rng.integers(-3, 4, (n, c, h, w)).astype(np.float32)
    wt = rng.integers(-3, 4, (f, c, kh, kw)).astype(np.float32)
    b = rng.integers(-3, 4, f).astype(np.float32)
    oh, ow = h - kh + 1, w - kw + 1
    ph, pw = pool_out_size(oh, 2, 2, True), pool_out_size(ow, 2, 2, True)
    g = tc.conv_geometry_args(n, c, h, w, f, kh, kw, oh, ow, 1, 0)
    want = np.einsum("fcuv,ncuvhw->nfhw", wt.astype(np.float64), im2col(x.astype(np.float64), kh, kw, 1, 0))
    want += b[None, :, None, None]
    results = []
    for offset in (0, 1):
        buf = np.zeros(wt.size + 8, np.float32)
        view = buf[offset:offset + wt.size]
        view[:] = wt.ravel()
        assert (view.ctypes.data % 16 == 0) == (offset == 0)
        out = np.full((n, f, oh, ow), np.nan, np.float32)
        launch_conv(conv_k, "forward", "bf16", tile, f, n * oh * ow, [out, x, view, b] + g)
        pooled = np.full((n, f, ph, pw), np.nan, np.float32)
        arg = np.full((n, f, ph, pw), -1, np.int32)
        launch_conv(conv_k, "relu_maxpool", "bf16", tile, f, n * ph * pw * 4,
                    [pooled, arg, x, view, b] + g + [i32(ph), i32(pw)])
        np.testing.assert_array_equal(out, want, err_msg=f"offset {offset}")
        results.append((out, pooled, arg))
    for a, b_ in zip(*results):
        np.testing.assert_array_equal(a, b_)


def test_conv_geometry_picks_the_shortest_covering_tile():
    names = set(kernel_sources()["conv2d_tc.cu"][1])
    assert tc.conv_tiles("tc") == TILES
    for m, tile in ((1, (32, 128)), (16, (32, 128)), (32, (32, 128)), (33, (64, 64)), (64, (64, 64)),
                    (65, (128, 64)), (300, (128, 64))):
        assert tc.conv_tile("tf32", m) == tile, m
    for prec in PRECISIONS:
        g = tc.conv2d_forward(prec, 64, 64, 61, 61)  # conv3 at batch 64
        assert g == tc.Geometry(f"conv2d_forward_{prec}_64x64", (cdiv(64 * 61 * 61, 64), 1, 1), (128, 1, 1))
        g = tc.conv2d_relu_maxpool(prec, 64, 16, 127, 127)  # conv1: 16 filters
        assert g.name == f"conv2d_relu_maxpool_{prec}_32x128" and g.grid == (cdiv(64 * 127 * 127 * 4, 128), 1, 1)
        g = tc.conv2d_backward_data(prec, 64, 64, 31, 31)
        assert g.name == f"conv2d_backward_data_{prec}_64x64" and g.grid == (cdiv(64 * 31 * 31, 64), 1, 1)
        g = tc.conv2d_backward_filter(prec, 128, 64, 3, 3, 64 * 29 * 29)  # conv4: 128 filters
        assert g.name == f"conv2d_backward_filter_{prec}_128x64" and g.block == (256, 1, 1)
        assert g.grid == (cdiv(576, 64), 1, g.splits) and g.splits > 1 and g.k_chunk % tc.k_tile(prec) == 0
        for geom in (tc.conv2d_forward(prec, 2, 5, 7, 7), tc.conv2d_backward_data(prec, 2, 70, 9, 9)):
            assert geom.name in names


def test_launch_bounds_match_the_geometry():
    """The threads geometry.py launches are the kernels' own __launch_bounds__."""
    for fname in ("gemm_tc.cu", "conv2d_tc.cu"):
        with open(os.path.join(KERNEL_DIR, fname)) as fh:
            text = fh.read()
        defines = dict(re.findall(r"#define\s+(\w+)\s+(\d+)", text))
        found = re.findall(r"__launch_bounds__\((\w+), \d+\)\s+(\w+)\(", text)
        assert len(found) == len(kernel_sources()[fname][1])
        for threads, name in found:
            threads = int(defines.get(threads, threads))
            m = re.search(r"_(\d+)x(\d+)$", name)
            assert threads == (tc.tc_threads(int(m.group(1)), int(m.group(2))) if m else tc.TC_GEMM_THREADS), name


def test_k_tiles_for_the_model():
    g = tc.gemm("bf16", 64, 1024, 28800)
    args = tc.gemm_args(g, np.empty(0), np.empty(0), np.empty(0), None, 64, 1024, 28800, 28800, 1, 1024, 1)
    assert k_tiles(g.name, args) == cdiv(g.k_chunk, 32)
    geo = tc.conv_geometry_args(64, 32, 63, 63, 64, 3, 3, 61, 61, 1, 0)
    assert k_tiles("conv2d_forward_tf32_64x64", [None] * 4 + geo) == cdiv(288, 16)
    assert k_tiles("conv2d_backward_data_bf16_64x64", [None] * 3 + geo) == cdiv(64 * 9, 32)
    assert k_tiles("conv2d_backward_filter_tf32_64x64", [None] * 3 + geo + [i32(4096)]) == 4096 // 16
    assert k_tiles("sgemm_strided", []) == 0
    # FLOPs per trip: the block's warps' HMMA cover BM x BN x k_tile exactly
    for bm, bn in TILES:
        for prec, op in (("tf32", "HMMA.1688.F32.TF32"), ("bf16", "HMMA.16816.F32.BF16")):
            warps = tc.tc_threads(bm, bn) // 32
            assert warps * hmma_per_trip(bm, bn) * HMMA_FLOPS[op] == 2 * bm * bn * tc.k_tile(prec)


# ------------------------------------------------------------------------- SASS
def _tool(name):
    from bench.gpu_model import tool

    return tool(name)


def main_loops(sass_text: str) -> dict:
    """{kernel: (opcodes of its main loop, opcodes of the whole function)}; the main loop
    is the backward branch whose body holds the most HMMA, among equals the shortest
    (bench.gpu_model's rule: conv2d_tc.cu's kernels hold a fast gather beside a general
    one, and the model runs the fast one)."""
    from bench.gpu_model import _SASS_LINE

    loops = {}
    for block in sass_text.split("Function : ")[1:]:
        name = block.split()[0]
        ins = [(int(a, 16), op, rest) for a, op, rest in _SASS_LINE.findall(block)]
        best = []
        for i, (addr, op, rest) in enumerate(ins):
            m = re.search(r"0x([0-9a-f]+)", rest)
            if op.split(".")[0] != "BRA" or not m or int(m.group(1), 16) >= addr:
                continue
            body = [o for a, o, _ in ins[:i + 1] if a >= int(m.group(1), 16)]
            hmma, best_hmma = (sum(o.startswith("HMMA") for o in x) for x in (body, best))
            if hmma > best_hmma or (hmma == best_hmma and hmma and len(body) < len(best)):
                best = body
        loops[name] = (best, [op for _, op, _ in ins])
    return loops


@pytest.fixture(scope="module")
def sass(tmp_path_factory):
    nvcc, cuobjdump, nvdisasm = _tool("nvcc"), _tool("cuobjdump"), _tool("nvdisasm")
    if not (nvcc and cuobjdump and nvdisasm):
        pytest.skip("nvcc, cuobjdump and nvdisasm needed (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)")
    out = tmp_path_factory.mktemp("tc_cubins")
    env = dict(os.environ, PATH=os.path.dirname(nvdisasm) + os.pathsep + os.environ.get("PATH", ""))
    jobs = [("gemm_tc.cu", "sm_80"), ("gemm_tc.cu", "sm_90"), ("conv2d_tc.cu", "sm_90")]
    procs = []
    for fname, arch in jobs:  # in parallel: conv2d_tc.cu is the long one
        cubin = str(out / f"{fname}.{arch}.cubin")
        cmd = [nvcc, "-std=c++17", f"-arch={arch}", "-cubin", "-I", KERNEL_DIR, "-o", cubin,
               os.path.join(KERNEL_DIR, fname)]
        procs.append((fname, arch, cubin, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                           text=True)))
    result = {}
    for fname, arch, cubin, proc in procs:
        log, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"nvcc failed on {fname} for {arch}:\n{log}"
        res = subprocess.run([cuobjdump, "-sass", cubin], capture_output=True, text=True, env=env, timeout=300)
        assert res.returncode == 0, res.stderr
        result[(fname, arch)] = main_loops(res.stdout)
    return result


@pytest.mark.parametrize("fname, arch", [("gemm_tc.cu", "sm_80"), ("gemm_tc.cu", "sm_90"),
                                         ("conv2d_tc.cu", "sm_90")])
def test_every_main_loop_runs_on_tensor_cores(sass, fname, arch):
    """Per trip, each warp's loop body holds hmma_per_trip HMMA of its precision, fed by
    128-bit fragment reads (2 MI + 4 LDS.128 at least) and no FFMA."""
    loops = sass[(fname, arch)]
    assert set(loops) == set(kernel_sources()[fname][1])
    for name, (body, whole) in loops.items():
        op = "HMMA.1688.F32.TF32" if "_tf32_" in name else "HMMA.16816.F32.BF16"
        bm, bn = (int(v) for v in re.search(r"_(\d+)x(\d+)$", name).groups()) if "conv2d" in name else (64, 64)
        assert body.count(op) == hmma_per_trip(bm, bn), f"{name}: {body.count(op)} x {op} in its main loop"
        mi = bm // max(bm // 32, 1) // 16
        assert sum(o.startswith("LDS.128") for o in body) >= 2 * mi + 4, name
        assert not any(o.startswith("FFMA") for o in body), name
        if fname == "gemm_tc.cu":  # the K-contiguous operands go through cp.async
            assert any(o.startswith("LDGSTS") for o in whole), name


# Instructions per k-tile and warp of each convolution's fastest main loop (sm_90, nvcc
# 13.0; the paths paper_net runs): kernels/conv2d_tc.cu's header has the breakdown. The
# budgets are those counts plus about 10%: a longer loop means the staging regressed (the
# compiler recomputing the staging addresses from threadIdx inside the loop, a gather
# pointer folded into 64-bit arithmetic per element, K tests back in the full k-tiles).
# Before issue 13's staging work the same loops took 408-1332 instructions.
CONV_LOOP_BUDGET = {
    ("forward", "tf32"): {"32x128": 150, "64x64": 125, "128x64": 105},
    ("forward", "bf16"): {"32x128": 168, "64x64": 125, "128x64": 102},
    ("backward_data", "tf32"): {"32x128": 188, "64x64": 152, "128x64": 128},
    ("backward_data", "bf16"): {"32x128": 247, "64x64": 195, "128x64": 150},
    ("backward_filter", "tf32"): {"32x128": 209, "64x64": 190, "128x64": 172},
    ("backward_filter", "bf16"): {"32x128": 229, "64x64": 206, "128x64": 180},
}


def test_conv_main_loops_stay_within_their_instruction_budgets(sass):
    loops = sass[("conv2d_tc.cu", "sm_90")]
    over = {}
    for name, (body, _) in loops.items():
        m = re.match(r"conv2d_(\w+?)_(tf32|bf16)_(\d+x\d+)$", name)
        kind = "forward" if m.group(1) == "relu_maxpool" else m.group(1)
        budget = CONV_LOOP_BUDGET[(kind, m.group(2))][m.group(3)]
        if len(body) > budget:
            over[name] = (len(body), budget)
    assert not over, f"main loops over budget (instructions, budget): {over}"
