"""Tier 2: every kernel of kernels/*.cu, run on the CPU by the cuda-emu backend, against
the NumPy reference (tests/helpers.compare_with_reference).

Shapes are small (a barrier of a 256-thread block costs ~1 ms on two cores) but chosen
so that no size is a multiple of a tile (64 x 64 x 16), several tiles exist in every
direction somewhere, split-K and the chunked bias reduction are exercised, and the
pooling edges (ceil mode, overlap, ties) are covered. Forward rel. error <= 1e-5,
gradients <= 1e-4; max-pool, ReLU, dropout and the optimizer updates are bit-exact.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers import backend_or_skip, compare_with_reference
from tinycnn import backends
from tinycnn.backends import launch
from tinycnn.gradcheck import rel_error

BACKEND = "cuda-emu"


@pytest.fixture(scope="module")
def emu():
    return backend_or_skip(BACKEND)


def _normal(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


# ------------------------------------------------------------------- conv2d
CONV_CASES = [
    # (x shape, w shape, stride, pad)
    ((2, 3, 7, 6), (4, 3, 3, 3), 1, 0),
    ((2, 2, 7, 8), (3, 2, 3, 3), 2, 1),      # stride and padding
    ((1, 1, 9, 9), (2, 1, 5, 5), 1, 0),      # batch of one, 5x5
    ((2, 5, 9, 11), (7, 5, 1, 1), 1, 0),     # 1x1 kernel
    ((1, 3, 10, 9), (5, 3, 3, 2), 3, 2),     # non-square kernel, stride 3, pad 2
    ((1, 67, 6, 5), (70, 67, 3, 3), 1, 1),   # C, F > 64: two tiles in M, K = 603 over many K steps
    ((2, 1, 26, 23), (6, 1, 3, 3), 1, 0),    # P = 2*24*21 = 1008: split-K in the filter gradient
    ((2, 2, 68, 66), (3, 2, 3, 3), 1, 0),    # P = 2*66*64 > 8192: chunked bias-gradient reduction
]


@pytest.mark.parametrize("xs, ws, stride, pad", CONV_CASES, ids=[f"{c[0]}*{c[1]}/s{c[2]}p{c[3]}" for c in CONV_CASES])
def test_conv2d(emu, rng, xs, ws, stride, pad):
    arrays = {"x": _normal(rng, xs), "w": _normal(rng, ws), "b": _normal(rng, ws[0])}
    compare_with_reference(BACKEND, "conv2d", arrays, stride=stride, pad=pad)


def test_conv2d_split_k_and_chunks_are_exercised():
    """The shapes above really take the multi-pass paths (guards the test, not the code)."""
    n, oh, ow = 2, 24, 21
    bm, bn, _ = launch.conv_tile(6)
    splits, _ = launch.split_k(launch.cdiv(1 * 3 * 3, bn) * launch.cdiv(6, bm), n * oh * ow)
    assert splits > 1
    # both tile shapes of every conv kernel run: M = F (forward, filter) or C (data)
    ms = [(ws[0], ws[1]) for _, ws, _, _ in CONV_CASES]
    assert any(f <= 16 for f, _ in ms) and any(f > 16 for f, _ in ms)
    assert any(c <= 16 for _, c in ms) and any(c > 16 for _, c in ms)
    assert 2 * 66 * 64 > launch.BIAS_CHUNK


# ------------------------------------------------------------------- relu
@pytest.mark.parametrize("shape", [(3, 5, 7), (1000,), (2, 3, 17, 19)])
def test_relu(emu, rng, shape):
    x = _normal(rng, shape)
    x.flat[::7] = 0.0  # the kink: gradient 0
    compare_with_reference(BACKEND, "relu", {"x": x}, exact=True)


# ------------------------------------------------------------------- max-pool
POOL_CASES = [
    ((2, 3, 7, 9), 2, 2, True),    # ceil mode: the last row and column windows hang over
    ((1, 2, 8, 7), 3, 2, True),    # overlapping windows: a pixel can win twice
    ((2, 2, 10, 10), 3, 3, True),  # 10 -> 4 windows, the last covers one pixel
    ((1, 3, 8, 10), 2, 2, False),  # floor mode
    ((2, 1, 5, 6), 2, 1, True),    # stride 1
    ((1, 2, 125, 61), 2, 2, True),  # the paper's 125 -> 63 and 61 -> 31
]


@pytest.mark.parametrize("xs, size, stride, ceil", POOL_CASES, ids=[f"{c[0]}/{c[1]}s{c[2]}{'c' if c[3] else 'f'}"
                                                                    for c in POOL_CASES])
def test_maxpool2d(emu, rng, xs, size, stride, ceil):
    compare_with_reference(BACKEND, "maxpool2d", {"x": _normal(rng, xs)}, exact=True,
                           size=size, stride=stride, ceil_mode=ceil)


def test_maxpool2d_floor_mode_dropped_edge(emu, rng):
    """Floor mode on 7x9 drops the last row and column: their gradient is 0 and dx has
    the input's shape, as in the reference."""
    x = _normal(rng, (1, 3, 7, 9))
    compare_with_reference(BACKEND, "maxpool2d", {"x": x}, exact=True, size=2, stride=2, ceil_mode=False)
    out, cache = emu.maxpool2d_forward(x, 2, 2, ceil_mode=False)
    dx = emu.maxpool2d_backward(np.ones(out.shape, np.float32), cache)
    assert dx.shape == x.shape and (dx[:, :, -1, :] == 0).all() and (dx[:, :, :, -1] == 0).all()


@pytest.mark.parametrize("size, stride", [(2, 2), (3, 2), (3, 1)])
def test_maxpool2d_ties_first_max_gets_the_gradient(emu, rng, size, stride):
    x = rng.integers(0, 3, (2, 2, 9, 7)).astype(np.float32)  # many ties in every window
    x[0, 0] = 1.0                                            # a whole plane of ties
    compare_with_reference(BACKEND, "maxpool2d", {"x": x}, exact=True, size=size, stride=stride)


# ------------------------------------------------------------------- dense
DENSE_CASES = [
    (5, 7, 3),       # smaller than one tile
    (1, 13, 1),      # batch of one, one output
    (3, 600, 70),    # long K with one row of tiles: split-K
    (70, 130, 67),   # two tiles in every direction
    (66, 17, 65),    # dW = x^T dY with K = 66 (the batch), M = 17, N = 65
]


@pytest.mark.parametrize("n, d, m", DENSE_CASES, ids=[f"{n}x{d}x{m}" for n, d, m in DENSE_CASES])
def test_dense(emu, rng, n, d, m):
    arrays = {"x": _normal(rng, (n, d)), "w": _normal(rng, (d, m)), "b": _normal(rng, m)}
    compare_with_reference(BACKEND, "dense", arrays)


# ------------------------------------------------------------------- dropout
@pytest.mark.parametrize("shape, p, drop_seed", [
    ((4, 37), 0.5, 7),
    ((3, 5, 11), 0.3, (5 << 32) | 9),   # both key words in use
    ((1000,), 0.9, 2**64 - 1),
    ((2, 3), 0.0, 1),                   # p = 0: identity
])
def test_dropout_masks_equal_exactly(emu, rng, shape, p, drop_seed):
    compare_with_reference(BACKEND, "dropout", {"x": _normal(rng, shape)}, exact=True, p=p, seed=drop_seed)


def test_dropout_eval_is_identity(emu, rng):
    x = _normal(rng, (3, 4))
    out, cache = emu.dropout_forward(x, 0.5, 3, train=False)
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(emu.dropout_backward(x, cache), x)


# ------------------------------------------------------------------- softmax CE
@pytest.mark.parametrize("n, k, scale", [(6, 3, 3.0), (300, 2, 1.0), (4, 10, 100.0), (1, 1, 1.0)])
def test_softmax_cross_entropy(emu, rng, n, k, scale):
    """(300 rows: a thread of the one block takes several; scale 100: no overflow.)"""
    arrays = {"logits": _normal(rng, (n, k)) * np.float32(scale), "labels": rng.integers(0, k, n)}
    compare_with_reference(BACKEND, "softmax_cross_entropy", arrays)


def test_softmax_cross_entropy_loss_is_a_0d_array_and_labels_are_checked(emu, rng):
    loss, dlogits = emu.softmax_cross_entropy(_normal(rng, (3, 2)), np.array([0, 1, 1]))
    assert loss.shape == () and dlogits.shape == (3, 2)
    with pytest.raises(ValueError):
        emu.softmax_cross_entropy(_normal(rng, (3, 2)), np.array([0, 2, 1]))


def test_softmax(emu, rng):
    z = _normal(rng, (7, 5)) * 10
    ref = backends.get("numpy").softmax(z)
    assert rel_error(emu.softmax(z), ref) <= 1e-6


# ------------------------------------------------------------------- optimizers
def test_sgd_update_is_bit_exact(emu, rng):
    ref = backends.get("numpy")
    p, g, v = (_normal(rng, (37, 11)) for _ in range(3))
    p1, v1, p2, v2 = p.copy(), v.copy(), p.copy(), v.copy()
    for _ in range(3):
        ref.sgd_update(p1, g, v1, lr=0.01, momentum=0.9, weight_decay=5e-4)
        emu.sgd_update(p2, g, v2, lr=0.01, momentum=0.9, weight_decay=5e-4)
    np.testing.assert_array_equal(p2, p1)
    np.testing.assert_array_equal(v2, v1)


def test_adam_update_is_bit_exact(emu, rng):
    ref = backends.get("numpy")
    p, g = _normal(rng, (301,)), _normal(rng, (301,))
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
    names = [n for _, ns in launch.kernel_sources().values() for n in ns]
    assert len(names) == len(set(names))
    for expected in ("conv2d_forward_igemm_64x64", "conv2d_backward_data_igemm_16x256", "sgemm_strided", "dropout_forward", "softmax_xent", "adam_update"):
        assert expected in names


def test_split_k_covers_k_exactly():
    for tiles in (1, 3, 16, 300):
        for k in (1, 15, 16, 255, 600, 7688, 28800, 4_129_024):
            splits, chunk = launch.split_k(tiles, k)
            assert chunk % launch.TILE_K == 0 and splits * chunk >= k > (splits - 1) * chunk
    assert launch.split_k(16, 0) == (1, launch.TILE_K)  # an empty reduction: one split, no division by zero


def test_sizes_whose_grid_stride_loop_could_wrap_are_refused():
    launch._check_size(launch.MAX_ELEMENTS)
    with pytest.raises(ValueError, match="32-bit"):
        launch._check_size(launch.MAX_ELEMENTS + 1)
    # the last index a grid-stride loop visits, plus one full stride, still fits in an int
    assert launch.MAX_ELEMENTS - 1 + launch.MAX_BLOCKS * launch.ELEMENTWISE_THREADS <= launch.INT32_MAX


def test_conv_backward_is_deterministic(emu, rng):
    x, w, b = _normal(rng, (2, 3, 26, 23)), _normal(rng, (5, 3, 3, 3)), _normal(rng, 5)
    out, cache = emu.conv2d_forward(x, w, b)
    dout = _normal(rng, out.shape)
    first = emu.conv2d_backward(dout, cache)
    second = emu.conv2d_backward(dout, cache)
    for a, c in zip(first, second):
        np.testing.assert_array_equal(a, c)


# ------------------------------------------------------------------- a training step
def test_paper_net_training_step_matches_numpy(rng):
    """paper_net(in_size=64): forward (dropout on), loss, backward, SGD momentum step,
    on cuda-emu and NumPy from the same weights; loss, every gradient and every
    updated parameter agree."""
    from tinycnn.model import paper_net
    from tinycnn.optim import SGD

    backend_or_skip(BACKEND)
    x = _normal(rng, (2, 1, 64, 64))
    y = np.array([1, 0])
    results = {}
    for name in ("numpy", BACKEND):
        net = paper_net(hidden=16, in_size=64, seed=3, backend=name)
        be = net.backend
        opt = SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4, backend=net.backend)
        logits = net.forward(be.asarray(x), train=True)
        loss, dlogits = be.softmax_cross_entropy(logits, y)
        net.backward(dlogits)
        grads = {n: be.to_numpy(p.grad).copy() for n, p in net.named_parameters()}
        opt.step()
        params = {n: be.to_numpy(p.value) for n, p in net.named_parameters()}
        results[name] = (float(be.to_numpy(loss)), be.to_numpy(logits), grads, params)
    ref, got = results["numpy"], results[BACKEND]
    assert abs(got[0] - ref[0]) <= 1e-5 * abs(ref[0])
    assert rel_error(got[1], ref[1]) <= 1e-5
    for n in ref[2]:
        assert rel_error(got[2][n], ref[2][n]) <= 1e-4, f"gradient of {n}"
        assert rel_error(got[3][n], ref[3][n]) <= 1e-5, f"updated {n}"


# ------------------------------------------------------------------- the cuda backend's plumbing
def test_cuda_backend_plumbing_through_a_stand_in_cupy(emu, rng, monkeypatch):
    """CudaBackend itself, without a GPU: a stand-in `cupy` module whose RawModule hands
    out the emulator's kernels. Checks what CI can check of the GPU path: one module per
    .cu with headers inlined, the options, every kernel found, the (grid, block, args)
    call convention, allocation and host/device conversions."""
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

    runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, getDevice=lambda: 0,
                                    getDeviceProperties=lambda i: {"name": b"Stand-in GPU"})
    fake = types.SimpleNamespace(
        ndarray=np.ndarray, asarray=np.asarray, empty=np.empty, zeros=np.zeros,
        ascontiguousarray=np.ascontiguousarray, asnumpy=np.asarray, RawModule=RawModule, __version__="0",
        cuda=types.SimpleNamespace(runtime=runtime, compiler=types.SimpleNamespace(CompileException=RuntimeError),
                                   get_current_stream=lambda: types.SimpleNamespace(synchronize=lambda: None)))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    cuda_backend._load_kernels.cache_clear()
    try:
        be = cuda_backend.CudaBackend()
        assert len(modules) == len(launch.kernel_sources()) and "Stand-in GPU" in be.device_name()
        compare_with_reference(be, "conv2d", {"x": _normal(rng, (2, 3, 9, 8)), "w": _normal(rng, (5, 3, 3, 3)),
                                              "b": _normal(rng, 5)}, stride=2, pad=1)
        compare_with_reference(be, "dense", {"x": _normal(rng, (3, 600)), "w": _normal(rng, (600, 7)),
                                             "b": _normal(rng, 7)})
        compare_with_reference(be, "maxpool2d", {"x": _normal(rng, (1, 2, 7, 9))}, exact=True)
        compare_with_reference(be, "relu", {"x": _normal(rng, (4, 5))}, exact=True)
        compare_with_reference(be, "dropout", {"x": _normal(rng, (4, 5))}, exact=True, p=0.5, seed=3)
        compare_with_reference(be, "softmax_cross_entropy", {"logits": _normal(rng, (5, 2)),
                                                             "labels": rng.integers(0, 2, 5)})
        p, g, v = (_normal(rng, (9,)) for _ in range(3))
        p2, v2 = p.copy(), v.copy()
        be.sgd_update(p, g, v, 0.1, 0.9, 0.0)
        backends.get("numpy").sgd_update(p2, g, v2, 0.1, 0.9, 0.0)
        np.testing.assert_array_equal(p, p2)
    finally:
        cuda_backend._load_kernels.cache_clear()


def test_cuda_backend_without_cupy_says_what_to_use(monkeypatch):
    import sys

    from tinycnn.backends import cuda_backend

    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError
    with pytest.raises(backends.BackendUnavailable, match="cuda-emu"):
        cuda_backend.CudaBackend()


def test_emulator_without_a_compiler_says_what_to_use(monkeypatch):
    from tinycnn.backends import emulated

    monkeypatch.setenv("CXX", "no-such-compiler-tinycnn")
    with pytest.raises(backends.BackendUnavailable, match="numpy"):
        emulated._compiler()
