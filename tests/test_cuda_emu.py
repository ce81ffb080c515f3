"""Tier 2: the kernels of kernels/*.cu on the CPU, through the cuda-emu backend: what is
specific to the kernels and their launcher. Op parity against the NumPy reference (every
kernel, forward and backward, on the shared cases) lives in tests/test_parity.py, with
the cases and tolerances in tests/op_cases.py.

Here: the shared cases really reach split-K, the chunked bias reduction and every conv
tile shape; the loss stays a 0-d array and checks its labels; optimizer updates are bit
exact; every argument list is checked against the kernel's C signature; grid arithmetic
(split-K, 32-bit sizes); determinism; a paper_net training step; the cuda backend's
plumbing through a stand-in cupy; and the messages when cupy or a compiler is missing.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers import (backend_or_skip, compare_with_reference, compare_within_sum_bound, paper_batch,
                     paper_net_builder)
from op_cases import SUM_BOUND, case, cases, normal, tolerance
from tinycnn import backends
from tinycnn.backends import geometry as geo
from tinycnn.backends.kernel_sources import kernel_sources
from tinycnn.shapes import conv2d_out_hw
from tinycnn.verify import verify_step

BACKEND = "cuda-emu"


@pytest.fixture(scope="module")
def emu():
    return backend_or_skip(BACKEND)


# ------------------------------------------------------------------- the shared cases reach every path
def _conv_launches(c):
    """(filter-gradient splits, bias-gradient chunks, tile for M = F, tile for M = C) of a
    conv2d case, as kernel_backend.KernelBackend computes them."""
    n, ch, h, w = c.inputs["x"]
    f, _, kh, kw = c.inputs["w"]
    oh, ow = conv2d_out_hw((n, ch, h, w), (f, ch, kh, kw), c.kw["stride"], c.kw["pad"])
    bm, bn = geo.conv_tile("fp32", f)
    splits, _ = geo.split_k(geo.cdiv(ch * kh * kw, bn) * geo.cdiv(f, bm), n * oh * ow)
    chunks = geo.cdiv(n * oh * ow, geo.BIAS_CHUNK)
    return splits, chunks, (bm, bn), geo.conv_tile("fp32", ch)


def test_the_shared_cases_take_every_multi_pass_path():
    """The conv2d and dense cases of tests/op_cases.py that run on cuda-emu really take
    split-K, the chunked bias-gradient reduction, both conv tile shapes for M = F
    (forward, filter gradient) and M = C (data gradient), and several dense tiles in
    both directions (guards the table, not the code)."""
    convs = [_conv_launches(c) for c in cases("conv2d", BACKEND)]
    assert any(splits > 1 for splits, _, _, _ in convs), "no conv2d case splits K in the filter gradient"
    assert any(chunks > 1 for _, chunks, _, _ in convs), "no conv2d case chunks the bias gradient"
    tiles = set(geo.conv_tiles())
    assert {tile_f for _, _, tile_f, _ in convs} == tiles, "a conv tile shape is never used for M = F"
    assert {tile_c for _, _, _, tile_c in convs} == tiles, "a conv tile shape is never used for M = C"

    dense = [(c.inputs["x"][0], c.inputs["x"][1], c.inputs["w"][1]) for c in cases("dense", BACKEND)]
    forward_splits = [geo.split_k(geo.cdiv(m, geo.TILE_N) * geo.cdiv(n, geo.TILE_M), d)[0]
                      for n, d, m in dense]
    assert max(forward_splits) > 1, "no dense case splits K"
    assert any(n > geo.TILE_M and m > geo.TILE_N for n, _, m in dense), "no dense case has 2x2 tiles"


# ------------------------------------------------------------------- the loss
def test_softmax_cross_entropy_loss_is_a_0d_array_and_labels_are_checked(emu, rng):
    loss, dlogits = emu.softmax_cross_entropy(normal(rng, (3, 2)), np.array([0, 1, 1]))
    assert loss.shape == () and dlogits.shape == (3, 2)
    with pytest.raises(ValueError):
        emu.softmax_cross_entropy(normal(rng, (3, 2)), np.array([0, 2, 1]))


# ------------------------------------------------------------------- optimizers
def test_sgd_update_is_bit_exact(emu, rng):
    ref = backends.get("numpy")
    p, g, v = (normal(rng, (37, 11)) for _ in range(3))
    p1, v1, p2, v2 = p.copy(), v.copy(), p.copy(), v.copy()
    for _ in range(3):
        ref.sgd_update(p1, g, v1, lr=0.01, momentum=0.9, weight_decay=5e-4)
        emu.sgd_update(p2, g, v2, lr=0.01, momentum=0.9, weight_decay=5e-4)
    np.testing.assert_array_equal(p2, p1)
    np.testing.assert_array_equal(v2, v1)


def test_adam_update_is_bit_exact(emu, rng):
    ref = backends.get("numpy")
    p, g = normal(rng, (301,)), normal(rng, (301,))
    bufs = [(p.copy(), np.zeros_like(p), np.zeros_like(p)) for _ in range(2)]
    for step in (1, 2, 3):
        for be, (pp, m, v) in zip((ref, emu), bufs):
            be.adam_update(pp, g, m, v, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-4, step=step)
    for a, b in zip(bufs[1], bufs[0]):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------- the launcher
def test_argument_lists_are_checked_against_the_kernel_signature(emu):
    x = np.zeros(10, np.float32)
    with pytest.raises(TypeError, match="do not match"):
        emu._launch("relu_forward", (1, 1, 1), (32, 1, 1), [x, x, np.int64(10)])  # int64 for an int
    with pytest.raises(TypeError, match="do not match"):
        emu._launch("relu_forward", (1, 1, 1), (32, 1, 1), [x, x])


def test_every_kernel_is_reachable_and_names_are_unique():
    names = [n for _, ns in kernel_sources().values() for n in ns]
    assert len(names) == len(set(names))
    for expected in ("conv2d_forward_igemm_64x64", "conv2d_backward_data_igemm_16x256", "sgemm_strided", "dropout_forward", "softmax_xent", "adam_update"):
        assert expected in names


def test_split_k_covers_k_exactly():
    for tiles in (1, 3, 16, 300):
        for k in (1, 15, 16, 255, 600, 7688, 28800, 4_129_024):
            splits, chunk = geo.split_k(tiles, k)
            assert chunk % geo.TILE_K == 0 and splits * chunk >= k > (splits - 1) * chunk
    assert geo.split_k(16, 0) == (1, geo.TILE_K)  # an empty reduction: one split, no division by zero


def test_sizes_whose_grid_stride_loop_could_wrap_are_refused():
    geo.check_size(geo.MAX_ELEMENTS)
    with pytest.raises(ValueError, match="32-bit"):
        geo.check_size(geo.MAX_ELEMENTS + 1)
    # the last index a grid-stride loop visits, plus one full stride, still fits in an int
    assert geo.MAX_ELEMENTS - 1 + geo.MAX_BLOCKS * geo.ELEMENTWISE_THREADS <= geo.INT32_MAX


def test_conv_backward_is_deterministic(emu, rng):
    x, w, b = normal(rng, (2, 3, 26, 23)), normal(rng, (5, 3, 3, 3)), normal(rng, 5)
    out, cache = emu.conv2d_forward(x, w, b)
    dout = normal(rng, out.shape)
    first = emu.conv2d_backward(dout, cache)
    second = emu.conv2d_backward(dout, cache)
    for a, c in zip(first, second):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("name", ["first_layer_ceil", "pad1_32x128", "stride2_floor_64x64", "few_taps_f20_stride2_pad1",
                                  "few_taps_2x2_floor"])
def test_the_fused_block_is_the_three_kernels_bit_for_bit(emu, rng, name):
    """conv2d_relu_maxpool_* (one kernel, pooled output only) and its one-pass backward
    give exactly what conv2d, relu and maxpool2d give in turn on the same kernels: the
    same sums in the same order, the same first-maximum ties, the same bias chunks."""
    from tinycnn.backends.numpy_backend import ComposedBlocks

    c = case("conv2d_relu_maxpool", name)
    a, kw = c.arrays(rng), c.kw
    fused, fused_cache = emu.conv2d_relu_maxpool_forward(a["x"], a["w"], a["b"], **kw)
    three, three_cache = ComposedBlocks.conv2d_relu_maxpool_forward(emu, a["x"], a["w"], a["b"], **kw)
    np.testing.assert_array_equal(fused, three)
    dout = normal(rng, fused.shape)
    for need_dx in (True, False):
        got = emu.conv2d_relu_maxpool_backward(dout, fused_cache, need_dx)
        want = ComposedBlocks.conv2d_relu_maxpool_backward(emu, dout, three_cache, need_dx)
        assert (got[0] is None) == (not need_dx)
        for g, w in zip(got, want):
            if w is not None:
                np.testing.assert_array_equal(g, w)


def test_the_fused_block_saves_launches(emu, rng, monkeypatch):
    """One launch forward (against conv, relu, pool), and the backward pass folds the
    pool and ReLU backward passes and the bias sums into one."""
    x, w, b = normal(rng, (2, 3, 13, 12)), normal(rng, (20, 3, 3, 3)), normal(rng, 20)
    launched = []
    real = emu._launch
    monkeypatch.setattr(emu, "_launch", lambda name, *a: (launched.append(name), real(name, *a)))
    out, cache = emu.conv2d_relu_maxpool_forward(x, w, b)
    assert launched == ["conv2d_relu_maxpool_igemm_32x128"]
    launched.clear()
    emu.conv2d_relu_maxpool_backward(normal(rng, out.shape), cache)
    assert launched == ["conv2d_relu_maxpool_backward", "conv2d_backward_data_igemm_16x256",
                        "conv2d_backward_filter_igemm_32x128"]


# ------------------------------------------------------------------- a training step
# The tensor-core kernels take 4-9x the fp32 ones' time on the emulator: 40 x 40 there
# (measured on two shared cores: tf32 9 s, bf16 5 s; 30 s and 19 s at 64 x 64).
STEP_SIZE = {"fp32": 64, "tf32": 40, "bf16": 40}


@pytest.mark.parametrize("precision", sorted(STEP_SIZE))
def test_paper_net_training_step_is_verified(precision):
    """tests/test_gpu.py's training step, small (hidden 16, batch 2, STEP_SIZE): forward
    (dropout on), loss, backward and the SGD-momentum update on the kernels, each step
    against the exact result of its precision mode on the kernels' own inputs
    (tinycnn.verify: the comparison the GPU runs at 256 x 256)."""
    be = backend_or_skip(f"{BACKEND}:{precision}")
    size = STEP_SIZE[precision]
    x, y = paper_batch(batch=2, size=size)
    report = verify_step(be, paper_net_builder(hidden=16, size=size, seed=3), x, y, end_to_end=False)
    assert report.ok, report.explain()
    assert report.fragile > 0  # decisions that another sum order could flip: the case it must survive


# ------------------------------------------------------------------- the cuda backend's plumbing
# One shared case per op (tests/op_cases.py), small ones, held to what the cuda backend is held to.
PLUMBING_CASES = [("conv2d", "stride2_pad1"), ("dense", "split_k"), ("maxpool2d", "2s2_ceil_7x9"), ("relu", "3d"),
                  ("dropout", "p0.5"), ("softmax_cross_entropy", "6x3"), ("softmax", "7x5")]


def test_cuda_backend_plumbing_through_a_stand_in_cupy(emu, rng, monkeypatch):
    """CudaBackend itself, without a GPU: a stand-in `cupy` module whose RawModule hands
    out the emulator's kernels. Checks what CI can check of the GPU path: one module per
    .cu with headers inlined, the options, every kernel found, the (grid, block, args)
    call convention, allocation and host/device conversions, one case of every op."""
    import ctypes
    import sys
    import types

    from tinycnn.backends import cuda_backend

    modules = []

    class RawModule:
        def __init__(self, code, options=()):
            assert '#include "' not in code and "-std=c++17" in options
            modules.append(code)
            self.code = code

        def get_function(self, name):
            assert f" {name}(" in self.code
            kernel = emu._kernels[name]

            def launch(grid, block, args):
                assert isinstance(grid, tuple) and isinstance(block, tuple) and isinstance(args, tuple)
                assert all(isinstance(g, int) for g in grid + block)
                kernel(grid, block, list(args))

            return launch

    class DeviceArray(np.ndarray):
        """Host memory posing as device memory: it has an address like a CuPy array."""

        @property
        def __cuda_array_interface__(self):
            return {"data": (self.ctypes.data, False), "shape": self.shape, "typestr": self.dtype.str,
                    "version": 3}

    def device(make):
        return lambda *a, **kw: np.asarray(make(*a, **kw)).view(DeviceArray)

    def memcpy_async(dst, src, nbytes, kind, stream):
        ctypes.memmove(dst, src, nbytes)

    capability = {"major": 9, "minor": 0}
    runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, getDevice=lambda: 0,
                                    getDeviceProperties=lambda i: {"name": b"Stand-in GPU", **capability},
                                    memcpyAsync=memcpy_async, memcpyHostToDevice=1, memcpyDeviceToDevice=3)
    fake = types.SimpleNamespace(
        ndarray=DeviceArray, asarray=device(np.asarray), empty=device(np.empty), zeros=device(np.zeros),
        ascontiguousarray=device(np.ascontiguousarray), asnumpy=np.asarray, RawModule=RawModule, __version__="0",
        cuda=types.SimpleNamespace(runtime=runtime, compiler=types.SimpleNamespace(CompileException=RuntimeError),
                                   get_current_stream=lambda: types.SimpleNamespace(synchronize=lambda: None,
                                                                                    ptr=0)))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    cuda_backend._load_kernels.cache_clear()
    try:
        be = cuda_backend.CudaBackend(precision="fp32")
        assert len(modules) == len(kernel_sources()) and "Stand-in GPU" in be.device_name()
        for op, name in PLUMBING_CASES:
            c = case(op, name)
            tol = tolerance("cuda", c)
            if tol == SUM_BOUND:
                compare_within_sum_bound(be, c.op, c.arrays(rng), **c.kw)
            else:
                compare_with_reference(be, c.spec, c.arrays(rng), fwd_tol=tol.fwd, grad_tol=tol.grad, **c.kw)
        # compute capability 9.0: tensor cores by default, in TF32 (the products' kernels)
        default = cuda_backend.CudaBackend()
        assert default.precision == "tf32" and default.precisions == ("fp32", "tf32", "bf16")
        for op, name in [("conv2d", "stride2_pad1"), ("dense", "split_k")]:
            c = case(op, name)
            compare_within_sum_bound(default, op, c.arrays(rng), **c.kw)
        capability.update(major=7, minor=5)  # no TF32 / BF16 mma before sm_80
        assert cuda_backend.CudaBackend().precision == "fp32"
        with pytest.raises(ValueError, match="runs fp32"):
            cuda_backend.CudaBackend(precision="bf16")
        p2, g, v2 = (normal(rng, (9,)) for _ in range(3))
        p, v = be.asarray(p2), be.asarray(v2)
        be.sgd_update(p, be.asarray(g), v, 0.1, 0.9, 0.0)
        backends.get("numpy").sgd_update(p2, g, v2, 0.1, 0.9, 0.0)
        np.testing.assert_array_equal(be.to_numpy(p), p2)
    finally:
        cuda_backend._load_kernels.cache_clear()


def test_cuda_backend_without_cupy_says_what_to_use(monkeypatch):
    import sys

    from tinycnn.backends import cuda_backend

    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError
    with pytest.raises(backends.BackendUnavailable, match="cuda-emu"):
        cuda_backend.CudaBackend()


def test_emulator_without_a_compiler_says_what_to_use(monkeypatch):
    from tinycnn.backends import cuda_emu_library

    monkeypatch.setenv("CXX", "no-such-compiler-tinycnn")
    with pytest.raises(backends.BackendUnavailable, match="numpy"):
        cuda_emu_library.compiler()
