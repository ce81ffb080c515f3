"""Numbered kernel variants, from naive to the one in kernels/ (in the manner of
llm.c's dev/cuda): compile each, validate it against NumPy, time it. The SGEMM steps go
on from the FP32 tile (v4) to the tensor cores: v5 a minimal mma.sync TF32 tile, v6 the
backend's TF32 tile (kernels/gemm_tc.cu).

    python -m bench.variants.run [--kernel conv2d_forward|sgemm|all] [--batch 64] [--repeats 20]

On a GPU each variant is compiled by NVRTC (cupy.RawModule, local includes
inlined), validated on the benchmark shapes, then timed with CUDA events after
warm-up (inputs rotated among copies larger than twice the L2 together), and its
GFLOP/s and % of the peak of its precision are printed (the device's FP32 peak; for
the TF32 variants the dense TF32 tensor-core peak of an H100 SXM / H200,
tinycnn.backends.PEAK_TFLOPS). A variant in a tensor-core precision is
validated against NumPy on operands rounded as the tensor core rounds them
(tinycnn.precision.round_tf32), with the FP32-sum tolerance of its kind. Without a GPU each variant is
compiled for the CPU by the cuda-emu path (g++ -fopenmp against
kernels/emu/cuda_emu.h) and only validated, on small shapes (the emulator is not a
performance model). tests/test_variants.py runs the same validation in CI.

Each variant's idea is the first line of its .cu file; kernels/conv2d.cu and
kernels/gemm.cu name the variant number they are.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from bench.hmma import PEAK_TFLOPS
from tinycnn.backends import geometry as geo
from tinycnn.backends.kernel_sources import defines, inline_includes
from tinycnn.backends.kernel_sources import kernel_names as source_kernel_names
from tinycnn.gradcheck import rel_error
from tinycnn.precision import round_operands
from tinycnn.shapes import conv_out_size

VARIANT_DIR = os.path.dirname(os.path.abspath(__file__))
CONV_TOL = 1e-5   # K = C*KH*KW <= 1152: the forward tolerance of the suite
GEMM_TOL = 1e-4   # K up to 28800: float32 sums that long drift past 1e-5


@dataclass(frozen=True)
class Variant:
    kernel: str          # "conv2d_forward" or "sgemm"
    number: int
    file: str            # in bench/variants/
    entry: str           # the kernel the harness launches
    launch: Callable     # (variant, run, arrays, shape, empty) -> output array; run(name, grid, block, args)
    supports: Callable = lambda shape: True
    precision: str = "fp32"  # what its products compute (tinycnn/precision.py): fp32, or tf32 on tensor cores

    @property
    def idea(self) -> str:
        with open(os.path.join(VARIANT_DIR, self.file)) as f:
            return f.readline().lstrip("/ ").strip()

    @property
    def label(self) -> str:
        return f"{self.kernel} v{self.number} ({self.file})"


i32 = np.int32


# ------------------------------------------------------------------ launches
class ConvGeometry(NamedTuple):
    """The scalar arguments every conv2d forward variant takes, in this order."""
    n: int
    c: int
    h: int
    w: int
    f: int
    kh: int
    kw: int
    oh: int
    ow: int
    stride: int
    pad: int


def _conv_geometry(shape) -> ConvGeometry:
    (n, c, h, w), (f, _, kh, kw), stride, pad = shape
    return ConvGeometry(n, c, h, w, f, kh, kw, conv_out_size(h, kh, stride, pad), conv_out_size(w, kw, stride, pad),
                        stride, pad)


def _conv_args(out, a, geometry: ConvGeometry):
    return [out, a["x"], a["w"], a["b"]] + [i32(v) for v in geometry]


def conv_v1(variant, run, a, shape, empty):
    g = _conv_geometry(shape)
    out = empty((g.n, g.f, g.oh, g.ow))
    run(variant.entry, (min(geo.cdiv(out.size, 256), 65535), 1, 1), (256, 1, 1), _conv_args(out, a, g))
    return out


def conv_v2(variant, run, a, shape, empty):
    g = _conv_geometry(shape)
    n, f, oh, ow = g.n, g.f, g.oh, g.ow
    out = empty((n, f, oh, ow))
    grid = (geo.cdiv(oh, 16) * geo.cdiv(ow, 16), geo.cdiv(f, 8), n)
    run(variant.entry, grid, (16, 16, 1), _conv_args(out, a, g))
    return out


def conv_igemm(variant, run, a, shape, empty):
    """As tinycnn/backends/geometry.py launches the forward pass: the shortest of the
    variant's own tile shapes (its conv2d_forward_igemm_BMxBN kernels) that covers F."""
    g = _conv_geometry(shape)
    n, f, oh, ow = g.n, g.f, g.oh, g.ow
    out = empty((n, f, oh, ow))
    tiles = sorted({(int(m.group(1)), int(m.group(2))) for name in kernel_names(variant)
                    if (m := re.fullmatch(r"conv2d_forward_igemm_(\d+)x(\d+)", name))})
    bm, bn = geo.pick_tile(tiles, f)
    run(f"conv2d_forward_igemm_{bm}x{bn}", (geo.cdiv(n * oh * ow, bn), geo.cdiv(f, bm), 1), (256, 1, 1),
        _conv_args(out, a, g))
    return out


def gemm_simple(variant, run, a, shape, empty):
    m, n, k = shape
    c = empty((m, n))
    run(variant.entry, (geo.cdiv(n, 16), geo.cdiv(m, 16), 1), (16, 16, 1),
        [c, a["A"], a["B"], i32(m), i32(n), i32(k)])
    return c


def gemm_v3(variant, run, a, shape, empty):
    """sgemm_strided with the split-K of tinycnn/backends/geometry.py, as the dense layer runs it."""
    m, n, k = shape
    c = empty((m, n))
    grid_xy = (geo.cdiv(n, geo.TILE_N), geo.cdiv(m, geo.TILE_M))
    splits, k_chunk = geo.split_k(grid_xy[0] * grid_xy[1], k)
    target = c if splits == 1 else empty((splits, m, n))
    run("sgemm_strided", grid_xy + (splits,), (256, 1, 1),
        [target, a["A"], a["B"], target, i32(m), i32(n), i32(k), i32(k), i32(1), i32(n), i32(1), i32(n),
         i32(k_chunk), i32(m * n), i32(0)])
    if splits > 1:
        run("split_k_reduce", geo.grid_1d(m * n), (256, 1, 1),
            [c, target, target, i32(splits), i32(m * n), i32(n), i32(0)])
    return c


def variant_defines(variant: Variant) -> dict:
    """{NAME: value} of the integer #defines of the variant's own file (its tile, its
    threads): the launch reads them there, their one home."""
    return defines(variant.file, folder=VARIANT_DIR)


def gemm_v5(variant, run, a, shape, empty):
    """The minimal tensor-core tile: one V5_TILE square of C per block, no split-K."""
    m, n, k = shape
    d = variant_defines(variant)
    c = empty((m, n))
    run(variant.entry, (geo.cdiv(n, d["V5_TILE"]), geo.cdiv(m, d["V5_TILE"]), 1), (d["V5_THREADS"], 1, 1),
        [c, a["A"], a["B"], i32(m), i32(n), i32(k)])
    return c


def gemm_tc(variant, run, a, shape, empty):
    """kernels/gemm_tc.cu's sgemm_<precision>_strided with the geometry and split-K of
    tinycnn/backends/geometry.py, as the dense layer runs it in that precision."""
    m, n, k = shape
    c = empty((m, n))
    g = geo.gemm(variant.precision, m, n, k)
    target = c if g.splits == 1 else empty((g.splits, m, n))
    run(g.name, g.grid, g.block, geo.gemm_args(g, target, a["A"], a["B"], None, m, n, k, k, 1, n, 1))
    if g.splits > 1:
        run("split_k_reduce", geo.grid_1d(m * n), (256, 1, 1),
            [c, target, target, i32(g.splits), i32(m * n), i32(n), i32(0)])
    return c


def _stride1_small(shape):
    (_, _, _, _), (_, _, kh, kw), stride, _ = shape
    return stride == 1 and kh <= 5 and kw <= 5


VARIANTS = [
    Variant("conv2d_forward", 1, "conv2d_forward_v1_naive.cu", "conv2d_forward_v1_naive", conv_v1),
    Variant("conv2d_forward", 2, "conv2d_forward_v2_smem.cu", "conv2d_forward_v2_smem", conv_v2, _stride1_small),
    Variant("conv2d_forward", 3, "conv2d_forward_v3_igemm_64x64.cu", "conv2d_forward_igemm_64x64", conv_igemm),
    Variant("conv2d_forward", 4, "conv2d_forward_v4_igemm_16x256.cu", "conv2d_forward_igemm_16x256", conv_igemm),
    Variant("conv2d_forward", 5, "conv2d_forward_v5_igemm_blocked.cu", "conv2d_forward_igemm_32x128", conv_igemm),
    Variant("sgemm", 1, "sgemm_v1_naive.cu", "sgemm_v1_naive", gemm_simple),
    Variant("sgemm", 2, "sgemm_v2_smem.cu", "sgemm_v2_smem", gemm_simple),
    Variant("sgemm", 3, "sgemm_v3_regblock.cu", "sgemm_strided", gemm_v3),
    Variant("sgemm", 4, "sgemm_v4_double_buffer.cu", "sgemm_strided", gemm_v3),
    Variant("sgemm", 5, "sgemm_v5_tf32_mma.cu", "sgemm_v5_tf32_mma", gemm_v5, precision="tf32"),
    Variant("sgemm", 6, "sgemm_v6_tf32_tile.cu", "sgemm_tf32_strided", gemm_tc, precision="tf32"),
]


# ------------------------------------------------------------ shapes and data
def conv_inputs(shape, rng) -> dict:
    x_shape, w_shape, _, _ = shape
    return {"x": rng.standard_normal(x_shape, dtype=np.float32), "w": rng.standard_normal(w_shape, dtype=np.float32),
            "b": rng.standard_normal(w_shape[0], dtype=np.float32)}


def conv_reference(a, shape) -> np.ndarray:
    """float64 direct convolution (the NumPy reference's semantics, more digits)."""
    _, _, stride, pad = shape
    x, w = a["x"].astype(np.float64), a["w"].astype(np.float64)
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    oh, ow = conv_out_size(h, kh, stride, pad), conv_out_size(wd, kw, stride, pad)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((n, f, oh, ow))
    for u in range(kh):
        for v in range(kw):
            patch = xp[:, :, u:u + stride * oh:stride, v:v + stride * ow:stride]
            out += np.einsum("nchw,fc->nfhw", patch, w[:, :, u, v], optimize=True)  # BLAS, not loops
    return out + a["b"].astype(np.float64)[None, :, None, None]


def gemm_inputs(shape, rng) -> dict:
    m, n, k = shape
    return {"A": rng.standard_normal((m, k), dtype=np.float32), "B": rng.standard_normal((k, n), dtype=np.float32)}


def gemm_reference(a, shape) -> np.ndarray:
    return a["A"].astype(np.float64) @ a["B"].astype(np.float64)


def conv_flops(shape) -> float:
    n, c, h, w, f, kh, kw, oh, ow, *_ = _conv_geometry(shape)
    return 2.0 * n * f * oh * ow * c * kh * kw


def gemm_flops(shape) -> float:
    m, n, k = shape
    return 2.0 * m * n * k


KINDS = {
    "conv2d_forward": (conv_inputs, conv_reference, conv_flops, CONV_TOL),
    "sgemm": (gemm_inputs, gemm_reference, gemm_flops, GEMM_TOL),
}
# The inputs that are operands of the product: rounded in a tensor-core precision (a bias is not).
OPERANDS = {"conv2d_forward": ("x", "w"), "sgemm": ("A", "B")}


def expected(variant: Variant, a: dict, shape) -> np.ndarray:
    """The float64 reference of the variant's kind on its precision's operands: the
    inputs themselves in fp32, round_tf32 of A and B (x and w) in tf32. The products
    of rounded operands are exact, so the kind's FP32-sum tolerance still applies."""
    _, ref, _, _ = KINDS[variant.kernel]
    rounded = {k: round_operands(v, variant.precision) if k in OPERANDS[variant.kernel] else v for k, v in a.items()}
    return ref(rounded, shape)


def peak_flops(variant: Variant, props: dict) -> float:
    """The peak a variant's GFLOP/s are a share of: the device's FP32 peak, or for a
    tensor-core precision the dense data-sheet peak of an H100 SXM / H200."""
    if variant.precision == "fp32":
        return props["fp32_peak_flops"]
    return PEAK_TFLOPS[variant.precision] * 1e12


def paper_conv_shapes(batch: int) -> list[tuple[str, tuple]]:
    from bench.ops import paper_geometry

    blocks, _ = paper_geometry()
    return [(f"conv{i}", ((batch, c, h, h), (f, c, 3, 3), 1, 0)) for i, (c, f, h, *_r) in enumerate(blocks, 1)]


def paper_gemm_shapes(batch: int) -> list[tuple[str, tuple]]:
    from bench.ops import HIDDEN, paper_geometry

    _, flat = paper_geometry()
    return [(f"dense1 {batch}x{flat}.{flat}x{HIDDEN}", (batch, HIDDEN, flat)), ("square 2048^3", (2048, 2048, 2048))]


# Small shapes for the emulator (tests/test_variants.py): edges that are not tile
# multiples, padding, a 1-channel layer (v4's narrow tile), split-K in v3.
SMALL_SHAPES = {
    "conv2d_forward": [("3->5 12x11", ((2, 3, 12, 11), (5, 3, 3, 3), 1, 0)),
                       ("4->20 9x9 pad 1", ((1, 4, 9, 9), (20, 4, 3, 3), 1, 1)),
                       ("1->16 18x18", ((2, 1, 18, 18), (16, 1, 3, 3), 1, 0))],
    "sgemm": [("37x45.45x70", (37, 45, 70)), ("5x600.600x33 (split-K)", (5, 33, 600))],
}


# ---------------------------------------------------------------- compiling
def gpu_module(variant: Variant):
    """The variant compiled by NVRTC (local includes inlined, as the cuda backend does)."""
    import cupy

    from tinycnn.backends.cuda_backend import NVRTC_OPTIONS

    source = inline_includes(os.path.join(VARIANT_DIR, variant.file))
    return cupy.RawModule(code=f"// tinycnn bench/variants/{variant.file}\n{source}", options=NVRTC_OPTIONS)


def emu_runner(variant: Variant, names: list[str]):
    """run(name, grid, block, args) for the variant compiled for the CPU against the
    emulator header, as the cuda-emu backend compiles its own files (cached on disk)."""
    from tinycnn.backends.cuda_emu_library import load_file

    kernels = load_file(os.path.join(VARIANT_DIR, variant.file))
    missing = [n for n in names if n not in kernels]
    if missing:
        raise RuntimeError(f"{variant.file} does not define {', '.join(missing)}")

    def run(name, grid, block, args):
        kernels[name](grid, block, args)

    return run


def kernel_names(variant: Variant) -> list[str]:
    """Every kernel the variant's file defines, its local #includes followed."""
    return source_kernel_names(inline_includes(os.path.join(VARIANT_DIR, variant.file)))


# --------------------------------------------------------------- validation
def validate_emulated(variant: Variant, shapes=None) -> list[tuple[str, float]]:
    """Relative error of the variant (run by the emulator) against NumPy on each
    small shape; raises AssertionError beyond the kind's tolerance."""
    make, _, _, tol = KINDS[variant.kernel]
    run = emu_runner(variant, kernel_names(variant))
    rng = np.random.default_rng(0)
    results = []
    for label, shape in shapes or SMALL_SHAPES[variant.kernel]:
        if not variant.supports(shape):
            continue
        a = make(shape, rng)
        out = variant.launch(variant, run, a, shape, lambda s: np.empty(s, np.float32))
        err = rel_error(out, expected(variant, a, shape))
        if not err <= tol:
            raise AssertionError(f"{variant.label} on {label}: rel. error {err:.2e} > {tol:g}")
        results.append((label, err))
    return results


# ------------------------------------------------------------------- the GPU
def run_gpu(variants: list[Variant], batch: int, repeats: int) -> None:
    import cupy

    from bench.ops import gpu_properties, rotation_copies, time_with_events

    props = gpu_properties()
    print(f"GPU: {props['name']} ({props['sm']}), FP32 peak {props['fp32_peak_flops'] / 1e12:.1f} TFLOP/s "
          f"({props['sms']} SMs x {props['fp32_lanes_per_sm']} lanes x 2 x {props['clock_ghz']:.3f} GHz); "
          f"CUDA events, median of {repeats} after warm-up\n")
    shapes = {"conv2d_forward": paper_conv_shapes(batch), "sgemm": paper_gemm_shapes(batch)}
    rng = np.random.default_rng(0)
    print("% peak: of the FP32 peak above; for tf32 variants of the dense TF32 tensor-core peak of an "
          f"H100 SXM / H200 ({PEAK_TFLOPS['tf32']} TFLOP/s)\n")
    print(f"{'variant':<44} {'shape':<28} {'rel.err':>8} {'time':>10} {'GFLOP/s':>9} {'% peak':>7}")
    for kernel in dict.fromkeys(v.kernel for v in variants):
        make, _, flops, tol = KINDS[kernel]
        for label, shape in shapes[kernel]:
            host = make(shape, rng)
            references = {}  # by precision: one reference per rounding of the operands
            nbytes = sum(a.nbytes for a in host.values())
            sets = [{k: cupy.asarray(v) for k, v in host.items()} for _ in range(rotation_copies(nbytes))]
            for v in (v for v in variants if v.kernel == kernel):
                if not v.supports(shape):
                    print(f"{v.label:<44} {label:<28} {'(shape not supported)':>38}")
                    continue
                module = gpu_module(v)
                fns = {n: module.get_function(n) for n in kernel_names(v)}

                def run(name, grid, block, args):
                    fns[name](tuple(int(g) for g in grid), tuple(int(b) for b in block), tuple(args))

                out = v.launch(v, run, sets[0], shape, lambda s: cupy.empty(s, np.float32))
                if v.precision not in references:
                    references[v.precision] = expected(v, host, shape)
                err = rel_error(cupy.asnumpy(out), references[v.precision])
                if not err <= tol:
                    raise SystemExit(f"{v.label} on {label}: rel. error {err:.2e} > {tol:g} (validation FAILED)")
                state = {"i": 0}

                def call():
                    state["i"] = (state["i"] + 1) % len(sets)
                    v.launch(v, run, sets[state["i"]], shape, lambda s: cupy.empty(s, np.float32))

                times = time_with_events(call, repeats, 3, cupy.cuda.Event, cupy.cuda.get_elapsed_time,
                                          cupy.cuda.get_current_stream().synchronize)
                t = statistics.median(times)
                rate = flops(shape) / t
                print(f"{v.label:<44} {label:<28} {err:8.1e} {t * 1e3:8.3f} ms {rate / 1e9:9.0f} "
                      f"{100 * rate / peak_flops(v, props):6.1f}%", flush=True)
        print()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.variants.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernel", default="all", choices=["all", "conv2d_forward", "sgemm"])
    ap.add_argument("--batch", type=int, default=64, help="batch of the paper shapes on the GPU (default 64)")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)
    variants = [v for v in VARIANTS if args.kernel in ("all", v.kernel)]
    for v in variants:
        print(f"{v.file:<36} {v.idea}")
    print()
    try:
        import cupy

        has_gpu = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        has_gpu = False
    if has_gpu:
        run_gpu(variants, args.batch, args.repeats)
        return 0
    print("no GPU: validating each variant through the CUDA emulator on small shapes (no timing)\n")
    for v in variants:
        for label, err in validate_emulated(v):
            print(f"{v.label:<44} {label:<28} rel. error {err:.1e}  ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
