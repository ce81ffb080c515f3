"""Tier 2: the emulator as a sanitizer (tinycnn/backends/cuda_emu_checks.py,
TINYCNN_EMU_CHECK), and the device copies' refusals.

- Each check catches its planted bug (tests/kernels/planted_bugs.cu), and the plain
  emulator lets the same launch through: order a running sum across blocks, init
  shared and device memory read before it is written (and with bounds, an index
  nothing wrote), bounds reads and writes just past either end of an array (also in a
  copy of kernels/relu.cu, through the backend). race catches reads of shared memory
  with no barrier before them every time, reversed or with a seed (the plain emulator
  shows such a race only as the OS happens to schedule the team).
- A correct kernel gives the plain emulator's bits under every check (race included).
- The parity table under order,init,bounds: a subset of tests/op_cases.py's cases that
  launches every kernel in every mode the table runs it in (a recorded dry pass
  checks the claim), compared with the NumPy reference as tests/test_parity.py does;
  and training steps (captured SGD in fp32 and bf16, eager Adam) under the checks, bit
  for bit the plain emulator's.
- The device copies refuse what raw byte copies would scramble on a GPU: on cuda-emu,
  and on the cuda backend over a stand-in cupy.
"""

from __future__ import annotations

import ctypes
import os
import sys
import types

import numpy as np
import pytest

from helpers import backend_or_skip, compare_with_reference, split_name
from op_cases import CASES, case, check_case, tolerance
from tinycnn.backends import BackendUnavailable, cuda_emu_library
from tinycnn.backends.cuda_emu_checks import POISON, EmuCheckError, EmuChecks, guarded_empty
from tinycnn.op_table import run_op
HERE = os.path.dirname(os.path.abspath(__file__))
PLANTED = os.path.join(HERE, "kernels", "planted_bugs.cu")
TIER = "order,init,bounds"  # what CI runs the parity subset under
MODES = ("fp32", "tf32", "bf16")
i32, f32 = np.int32, np.float32


@pytest.fixture(scope="module")
def bugs():
    try:
        return cuda_emu_library.load_file(PLANTED)
    except BackendUnavailable as e:
        pytest.skip(str(e))


def checked_backend(mode: str, checks: str = TIER):
    """cuda-emu in `mode` under `checks` (skips, saying why, where cuda-emu cannot run)."""
    backend_or_skip(f"cuda-emu:{mode}")
    from tinycnn.backends.cuda_emu import EmulatedBackend

    return EmulatedBackend(mode, checks=checks)


@pytest.fixture(scope="module")
def tier():
    return {mode: checked_backend(mode) for mode in MODES}


def is_poison(a) -> bool:
    return bool(np.all(np.ascontiguousarray(a).reshape(-1).view(np.uint32) == POISON))


# ------------------------------------------------------------------ the switch
def test_checks_are_named_and_say_which_order_ran():
    assert str(EmuChecks("order,init,bounds")) == "order=reversed,init,bounds"
    assert str(EmuChecks(("order=7", " race=3", "init"))) == "order=shuffled(7),race=shuffled(3),init"
    assert not EmuChecks("") and not EmuChecks(None) and "init" in EmuChecks("init, bounds")
    with pytest.raises(ValueError, match="unknown check 'bound'; the checks are order, init, bounds, race"):
        EmuChecks("order,bound")
    for bad in ("init=3", "order=x", "order=0", "bounds=reversed"):
        with pytest.raises(ValueError, match="only order and race take a seed"):
            EmuChecks(bad)
    shown = EmuChecks("order=7,init,race")
    assert str(EmuChecks(str(shown))) == str(EmuChecks(shown)) == "order=shuffled(7),init,race=reversed"


def test_the_environment_switches_a_backend_on_and_an_argument_overrides_it(monkeypatch):
    from tinycnn.backends.cuda_emu import EmulatedBackend

    backend_or_skip("cuda-emu")
    monkeypatch.setenv("TINYCNN_EMU_CHECK", "order=5,bounds")
    be = EmulatedBackend()
    assert str(be.checks) == "order=shuffled(5),bounds"
    assert "checks='order=shuffled(5),bounds'" in repr(be) and "checks order=shuffled(5),bounds" in be.device_name()
    assert not EmulatedBackend(checks="").checks
    monkeypatch.setenv("TINYCNN_EMU_CHECK", "speed")
    with pytest.raises(ValueError, match="TINYCNN_EMU_CHECK: unknown check 'speed'"):
        EmulatedBackend()
    monkeypatch.delenv("TINYCNN_EMU_CHECK")
    plain = EmulatedBackend()
    assert not plain.checks and "_device_run" not in vars(plain)  # the plain path is the class's own


# ------------------------------------------------------------------ order
def test_order_catches_a_race_between_blocks(bugs):
    """bug_sum_across_blocks reads the previous block's result: right in order, wrong
    reversed or shuffled."""
    n = 64
    x = np.arange(1, n + 1, dtype=f32)  # integers: the running sum is exact
    want = np.cumsum(x)
    out = np.zeros(n, f32)
    bugs["bug_sum_across_blocks"]((n, 1, 1), (1, 1, 1), [out, x, i32(n)])
    np.testing.assert_array_equal(out, want)
    for spec in ("order", "order=7", "order=8"):
        out = np.zeros(n, f32)
        EmuChecks(spec).launch(bugs["bug_sum_across_blocks"], (n, 1, 1), (1, 1, 1), [out, x, i32(n)])
        assert not np.array_equal(out, want), spec


# ------------------------------------------------------------------ init
@pytest.mark.parametrize("name", ["bug_sum_unwritten_shared", "bug_sum_unwritten_shared_in_template"])
def test_init_catches_shared_memory_read_before_it_is_written(bugs, name):
    """Adds 64 shared slots of which it wrote 40 (in the kernel, or in a function
    template). A fresh library holds zeros there, so the plain emulator gets the right
    sum; init poisons the slots when the block starts and the sum is NaN."""
    kernel = bugs[name]
    for address, size in cuda_emu_library.shared_arrays(kernel):
        ctypes.memset(int(address), 0, int(size))  # as freshly loaded (other tests poison them)
    x = np.arange(64, dtype=f32)
    out = np.zeros(1, f32)
    kernel((1, 1, 1), (64, 1, 1), [out, x, i32(40)])
    assert out[0] == x[:40].sum()
    EmuChecks("init").launch(kernel, (1, 1, 1), (64, 1, 1), [out, x, i32(40)])
    assert np.isnan(out[0])
    EmuChecks("init").launch(kernel, (1, 1, 1), (64, 1, 1), [out, x, i32(64)])
    assert out[0] == x.sum()  # with every slot written, the poison is gone: no false alarm


def test_init_poisons_the_shared_arrays_a_kernel_can_reach_and_no_others():
    """Per kernel: the statics of its own .cu file, less those in the bodies of the
    file's other kernels (a block of relu_forward poisons nothing, one of sgemm_strided
    exactly its two tiles; the tensor-core kernels' tiles live in function templates)."""
    from tinycnn.backends.kernel_sources import defines

    kernels = backend_or_skip("cuda-emu")._kernels
    assert len(cuda_emu_library.shared_arrays(kernels["relu_forward"])) == 0
    d = defines("gemm_tile.cuh")
    tile = 2 * d["TILE_K"] * (d["TILE_M"] + d["TILE_PAD"]) * 4  # As[2][TILE_K][TILE_M + TILE_PAD] floats
    assert sorted(cuda_emu_library.shared_arrays(kernels["sgemm_strided"])[:, 1]) == [tile, tile]
    tc = cuda_emu_library.shared_arrays(kernels["conv2d_forward_tf32_64x64"])
    fp32 = cuda_emu_library.shared_arrays(kernels["conv2d_forward_igemm_64x64"])
    assert len(tc) and len(fp32) and not set(tc[:, 0]) & set(fp32[:, 0])
    other = cuda_emu_library.shared_arrays(kernels["conv2d_backward_data_igemm_64x64"])
    assert set(fp32[:, 0]) - set(other[:, 0]) and set(other[:, 0]) - set(fp32[:, 0])  # each its own tiles


WRITES_SHARED = [("fp32", "conv2d", "c24_f20"), ("fp32", "conv2d_relu_maxpool", "pad1_32x128"),
                 ("tf32", "conv2d", "1x1_40_channels"), ("bf16", "conv2d_relu_maxpool", "few_taps_2x2_floor"),
                 ("tf32", "dense", "two_tiles_each_way"), ("fp32", "softmax_cross_entropy", "6x3")]


@pytest.mark.parametrize("mode, op, name", WRITES_SHARED)
def test_every_shared_array_a_kernel_writes_is_one_init_poisons(mode, op, name):
    """Against the source of the choice above: zero every function-local static of the
    library, launch, and see which the launch wrote; they must all be in the kernel's
    set (forward and backward kernels of each op, plain emulator)."""
    be = backend_or_skip(f"cuda-emu:{mode}")
    # every static of the library: the union over its kernels
    statics = np.unique(np.concatenate([cuda_emu_library.shared_arrays(k) for k in be._kernels.values()]), axis=0)
    seen = []

    def run(kernel_name, grid, block, args):
        for address, size in statics:
            ctypes.memset(int(address), 0, int(size))
        be._kernels[kernel_name](grid, block, args)
        written = {int(a) for a, size in statics if any((ctypes.c_char * int(size)).from_address(int(a)).raw)}
        allowed = {int(a) for a in cuda_emu_library.shared_arrays(be._kernels[kernel_name])[:, 0]}
        assert written <= allowed, f"{kernel_name} wrote shared arrays init would not poison"
        seen.append((kernel_name, len(written)))

    c = case(op, name)
    arrays = c.arrays(np.random.default_rng(0))
    be._device_run = run
    try:
        out, _ = run_op(c.spec, be, arrays, **c.kw)
        run_op(c.spec, be, arrays, dout=np.ones(np.shape(out), f32), **c.kw)
    finally:
        del be._device_run  # the class's own again
    assert any(n for _, n in seen), seen  # some kernel of the op stages through shared memory


def test_init_poisons_fresh_device_arrays(bugs):
    """bug_accumulate_into_output adds into its output as if it were zeros: right on
    zeroed memory (what NumPy often hands out), NaN on what init's allocator gives, as
    the backend's own allocations are."""
    from tinycnn.backends.cuda_emu import EmulatedBackend

    n = 300
    x = np.arange(n, dtype=f32)
    out = np.zeros(n, f32)
    bugs["bug_accumulate_into_output"]((2, 1, 1), (64, 1, 1), [out, x, i32(n)])
    np.testing.assert_array_equal(out, x)
    checks = EmuChecks("init")
    out = checks.empty((n,), f32)
    assert is_poison(out) and np.isnan(out).all()
    checks.launch(bugs["bug_accumulate_into_output"], (2, 1, 1), (64, 1, 1), [out, x, i32(n)])
    assert np.isnan(out).all()
    backend_or_skip("cuda-emu")
    for dtype in (np.float32, np.int32, np.uint32):
        assert is_poison(EmulatedBackend(checks="init")._allocate((3, 5), dtype))
        assert is_poison(EmulatedBackend(checks="init,bounds")._allocate((7,), dtype))


# ------------------------------------------------------------------ bounds
def test_bounds_catches_a_read_one_past_the_end(bugs):
    """The last thread loads x[n] and drops it: the plain emulator reads NumPy's heap and
    gets the right answer; bounds stops the launch, naming kernel, argument and byte.
    x is the caller's array (copied into guarded memory for the launch)."""
    n = 64  # 256 bytes: x[n] is the guard page's first word
    x = np.arange(n, dtype=f32)
    want = x + np.append(x[1:], 0)
    out = np.zeros(n, f32)
    bugs["bug_read_one_past_the_end"]((1, 1, 1), (64, 1, 1), [out, x, i32(n)])
    np.testing.assert_array_equal(out, want)
    with pytest.raises(EmuCheckError, match=r"bug_read_one_past_the_end \(grid \(1, 1, 1\), block \(64, 1, 1\); "
                                            r"checks bounds\): read byte 256 of argument 1, a float32 array of "
                                            r"shape \(64,\) \(256 bytes\), past its end"):
        EmuChecks("bounds").launch(bugs["bug_read_one_past_the_end"], (1, 1, 1), (64, 1, 1), [out, x, i32(n)])


def test_bounds_catches_a_read_before_the_start(bugs):
    """x[-1]: caught where the array starts on a page (4096 bytes here). An array whose
    size is not a whole number of pages starts after a gap (its end is at the guard),
    and a read in that gap gets the poison instead (the module docstring's limit)."""
    n = 1024
    x = np.arange(n, dtype=f32)
    out = np.zeros(n, f32)
    bugs["bug_read_one_before_the_start"]((16, 1, 1), (64, 1, 1), [out, x, i32(n)])
    np.testing.assert_array_equal(out, x + np.append(0, x[:-1]))
    with pytest.raises(EmuCheckError, match=r"read byte -4 of argument 1, .* \(4096 bytes\), before its start"):
        EmuChecks("bounds").launch(bugs["bug_read_one_before_the_start"], (16, 1, 1), (64, 1, 1),
                                   [out, x, i32(n)])


@pytest.mark.parametrize("n, caught_by", [(64, "past its end; 1 access"), (5, "between the array and its guard")])
def test_bounds_catches_a_write_one_past_the_end(bugs, n, caught_by):
    """`i <= n`: out[n] is written. The plain emulator writes into whatever follows
    (here room of the caller's own, a view of a longer buffer) and notices nothing.
    n = 64: out[n] is on the guard page; n = 5 (20 bytes): in the 12 bytes between the
    16-byte-aligned array and its guard, which are checked after the launch. Caught the
    second time too: the guard page is closed again after a fault."""
    room = np.zeros(n + 4, f32)
    bugs["bug_write_one_past_the_end"]((1, 1, 1), (64, 1, 1), [room[:n], f32(1), i32(n)])
    assert room[n] == 1  # the plain emulator wrote past the end unseen
    checks = EmuChecks("bounds")
    out = checks.empty((n,), f32)
    for _ in range(2):
        with pytest.raises(EmuCheckError, match=rf"bug_write_one_past_the_end .*wrote byte {4 * n} of argument 0, "
                                                rf".*{caught_by}"):
            checks.launch(bugs["bug_write_one_past_the_end"], (1, 1, 1), (64, 1, 1), [out, f32(1), i32(n)])
    # the process and the array are fine: a correct launch on it runs under the check
    checks.launch(bugs["bug_write_one_past_the_end"], (1, 1, 1), (64, 1, 1), [out, f32(2), i32(n - 1)])
    assert (out[:n] == 2).all()


def test_init_and_bounds_catch_a_gather_through_an_unwritten_index(bugs):
    """idx is a fresh device array nothing wrote: init makes its entries a huge index,
    bounds catches the load that lands in unmapped memory."""
    checks = EmuChecks("init,bounds")
    x, idx, out = checks.empty((64,), f32), checks.empty((8,), np.int32), checks.empty((8,), f32)
    x[:] = 1
    if _mapped(x.ctypes.data + 4 * POISON):  # the wild load would read some other memory
        pytest.skip("the address of x[poison] is mapped in this process")
    with pytest.raises(EmuCheckError, match=r"bug_gather_unwritten_index .*read unmapped memory at 0x[0-9a-f]+, "
                                            r"beside no array \(a wild index"):
        checks.launch(bugs["bug_gather_unwritten_index"], (1, 1, 1), (32, 1, 1), [out, x, idx, i32(8)])
    idx[:] = np.arange(8)  # once written, the same launch runs
    checks.launch(bugs["bug_gather_unwritten_index"], (1, 1, 1), (32, 1, 1), [out, x, idx, i32(8)])
    np.testing.assert_array_equal(out, 1)


def test_the_backend_under_bounds_catches_a_bug_in_one_of_its_kernels(tmp_path):
    """End to end: kernels/relu.cu with the forward pass loading the element after its
    own (and dropping it), as a modified kernel folder. The parity comparison passes on
    the plain emulator and stops under bounds, at the caller's input (copied into
    guarded memory for the launch)."""
    from tinycnn.backends.cuda_emu import EmulatedBackend
    from tinycnn.backends.kernel_sources import KERNEL_DIR

    backend_or_skip("cuda-emu")
    with open(os.path.join(KERNEL_DIR, "relu.cu")) as f:
        source = f.read()
    right = "        const float v = x[i];\n"
    assert right in source
    bug = right + "        (void)((const volatile float *)x)[i + 1];\n"
    (tmp_path / "relu.cu").write_text(source.replace(right, bug))
    c = case("relu", "1000")  # 4000 bytes: x[1000] is the guard page's first word
    plain = EmulatedBackend(kernel_dir=str(tmp_path), checks="")
    compare_with_reference(plain, c.spec, c.arrays(np.random.default_rng(0)), exact=True)
    with pytest.raises(EmuCheckError, match=r"relu_forward .*read byte 4000 of argument 1, a float32 array of "
                                            r"shape \(1000,\)"):
        compare_with_reference(EmulatedBackend(kernel_dir=str(tmp_path), checks="bounds"), c.spec,
                               c.arrays(np.random.default_rng(0)), exact=True)


def _mapped(address: int) -> bool:
    with open("/proc/self/maps") as f:
        spans = [line.split()[0].split("-") for line in f]
    return any(int(a, 16) <= address < int(b, 16) for a, b in spans)


def test_guarded_arrays_end_at_a_guard_page_and_stay_16_byte_aligned():
    page = os.sysconf("SC_PAGE_SIZE")
    for n in (1, 3, 4, 5, 1000, 1024, 1025):
        a = guarded_empty((n,), np.float32)
        end = a.ctypes.data + a.nbytes
        assert a.ctypes.data % 16 == 0 and 0 <= -end % page < 16, n


# ------------------------------------------------------------------ race
@pytest.mark.parametrize("spec", ["race", "race=3", "race=7"])
def test_race_catches_shared_memory_read_without_a_barrier(bugs, spec):
    """bug_read_without_barrier: thread 0 writes, the 31 others read. With the barrier
    (sync=1) every order of threads gives thread 0's value; without it, under race the
    threads whose turn comes before thread 0's read the last launch's value, every time
    (reversed: all 31; a shuffle: all but the orders that put thread 0 first, 1 in 32).
    The plain emulator shows this one too, as the OS happens to schedule the team (the
    OpenMP master, thread 0, wakes the others before it runs its own share)."""
    kernel = bugs["bug_read_without_barrier"]
    checks = EmuChecks(spec)
    for run in range(3):
        value = f32(10 * run + 1)  # a new value per launch: a stale read shows
        for sync, right in ((1, True), (0, False)):
            out = np.zeros(32, f32)
            checks.launch(kernel, (1, 1, 1), (32, 1, 1), [out, np.full(1, value, f32), i32(2000), i32(sync)])
            assert (out == value).all() == right, (run, sync, out)
            value += 1


@pytest.mark.parametrize("spec, shows", [("race", False), ("race=3", True), ("race=7", True)])
def test_race_with_a_seed_catches_what_thread_0_reads_without_a_barrier(bugs, spec, shows):
    """bug_gather_without_barrier: the 31 others write, thread 0 adds their slots. The
    plain emulator usually runs thread 0's share last (it wakes the team first), and so
    do reversed turns: both get the right sum. A shuffled order runs thread 0 before some
    writer and gets a stale sum, every time: run the checks with a seed too."""
    kernel = bugs["bug_gather_without_barrier"]
    checks = EmuChecks(spec)
    for run in range(3):
        for sync, right in ((1, True), (0, not shows)):
            x = np.full(32, 10 * run + sync + 1, f32)  # new values per launch: a stale read shows
            out = np.zeros(1, f32)
            checks.launch(kernel, (1, 1, 1), (32, 1, 1), [out, x, i32(2000), i32(sync)])
            assert (out[0] == 31 * x[0]) == right, (run, sync, out)


# ------------------------------------------------------------------ correct kernels, every check
SAME_BITS = [("fp32", "conv2d_relu_maxpool", "pad1_32x128"), ("tf32", "dense", "two_tiles_each_way"),
             ("bf16", "conv2d", "c24_f20"), ("fp32", "softmax_cross_entropy", "300_rows"),
             ("fp32", "maxpool2d", "3s2_overlap")]


@pytest.mark.parametrize("checks", ["order=3", "init", "bounds", "race", "race=9"])
def test_correct_kernels_give_the_plain_bits_under_each_check(checks):
    """No false alarm: ops whose kernels use shared memory, barriers, mma and cp.async
    (the tensor-core GEMM), a one-block reduction and overlapping pooling windows."""
    for mode, op, name in SAME_BITS:
        c = case(op, name)
        arrays = c.arrays(np.random.default_rng(5))
        results = []
        for be in (backend_or_skip(f"cuda-emu:{mode}"), checked_backend(mode, checks)):
            out, _ = run_op(c.spec, be, arrays, **c.kw)
            dout = np.random.default_rng(6).standard_normal(np.shape(out)).astype(f32) if c.spec.inputs else None
            results.append(run_op(c.spec, be, arrays, dout=dout, **c.kw))
        (out_a, grads_a), (out_b, grads_b) = results
        np.testing.assert_array_equal(out_b, out_a, err_msg=f"{mode} {c.id} under {checks}")
        for g in grads_a:
            np.testing.assert_array_equal(grads_b[g], grads_a[g], err_msg=f"{mode} {c.id} d{g} under {checks}")


# ------------------------------------------------------------------ the parity table under the checks
# Cases of tests/op_cases.py that together launch every kernel the parity table runs on
# cuda-emu, in every mode it runs it in (test_the_subset_launches_every_kernel_of_the_table
# holds this to a dry pass), plus the multi-pass reductions where block order matters
# most (split-K, chunked bias). Cheap ones where there is a choice.
SUBSET = {
    "fp32": ["conv2d-batch1_5x5",                   # 16x256 tiles in every pass
             "conv2d-c24_f20",                      # 32x128 in every pass
             "conv2d-f40_tc_64x64",                 # 64x64 forward and filter gradient
             "conv2d-1x1_40_channels",              # 64x64 data gradient
             "conv2d-1x1",                          # few-taps filter gradient, split_k_reduce
             "conv2d-split_k",                      # the filter gradient split along K
             "conv2d-bias_chunks",                  # the chunked bias gradient
             "conv2d_relu_maxpool-few_taps_2x2_floor",  # the few-taps fused forward
             "conv2d_relu_maxpool-f12_27_taps",     # the 16x256 fused tile
             "conv2d_relu_maxpool-pad1_32x128",     # the 32x128 fused tile, bias from the fused backward
             "conv2d_relu_maxpool-f40_tc_64x64",    # the 64x64 fused tile
             "dense-under_one_tile", "dense-split_k",
             "relu-1000", "maxpool2d-2s2_ceil_7x9", "maxpool2d-3s2_overlap", "dropout-p0.5",
             "softmax_cross_entropy-300_rows", "softmax-7x5"],
    "tf32": ["conv2d-3x2_stride3_pad2",             # 32x128 in every pass, padding
             "conv2d-1x1_40_channels",              # 64x64 data gradient, pad 0
             "conv2d-f40_tc_64x64",                 # 64x64 forward and filter gradient
             "conv2d-c67_f70",                      # 128x64 in every pass
             "conv2d-1x1",                          # few-taps filter gradient, split_k_reduce
             "conv2d_relu_maxpool-few_taps_2x2_floor", "conv2d_relu_maxpool-f12_27_taps",
             "conv2d_relu_maxpool-f40_tc_64x64",
             "conv2d_relu_maxpool-stride2_floor_64x64",  # 128x64 fused tile and filter gradient
             "dense-batch1_one_output", "dense-split_k"],
}
SUBSET["bf16"] = SUBSET["tf32"]


def _subset():
    by_id = {c.id: c for c in CASES}
    for mode, ids in SUBSET.items():
        for cid in ids:
            c = by_id[cid]
            backend = "cuda-emu" if mode == "fp32" else f"cuda-emu:{mode}"
            yield pytest.param(mode, c, tolerance(backend, c), id=f"{mode}-{cid}")


@pytest.mark.parametrize("mode, c, tol", list(_subset()))
def test_parity_under_the_checks(tier, mode, c, tol):
    """As tests/test_parity.py, on cuda-emu under order,init,bounds."""
    try:
        check_case(tier[mode], c, tol, np.random.default_rng(1234))
    except AssertionError as e:
        raise AssertionError(f"under the checks {tier[mode].checks}: {e}") from e


def _launched(be, c) -> set[str]:
    """The kernels case `c` launches on `be`, forward and backward (a dry pass: recorded,
    not run)."""
    recorded = []
    with be._stepping(None, recorded):
        arrays = c.arrays(np.random.default_rng(0))
        out, _ = run_op(c.spec, be, arrays, **c.kw)
        if c.spec.inputs:
            run_op(c.spec, be, arrays, dout=np.zeros(np.shape(out), f32), **c.kw)
    return {r[0] for r in recorded}


STEP_KERNELS = {"sgd_update", "adam_update", "train_stats"}  # launched by the training steps below


def test_the_subset_launches_every_kernel_of_the_table():
    """Every (kernel, mode) that tests/test_parity.py runs on cuda-emu is launched by the
    subset in that mode, and with the training steps every kernel of kernels/*.cu runs
    under the checks."""
    from tinycnn.backends.kernel_sources import kernel_sources

    plain = {mode: backend_or_skip(f"cuda-emu:{mode}") for mode in MODES}
    table = set()
    for c in CASES:
        for name in c.backends:
            backend, mode = split_name(name)
            if backend == "cuda-emu" and tolerance(name, c) is not None:
                table |= {(k, mode) for k in _launched(plain[mode], c)}
    by_id = {c.id: c for c in CASES}
    subset = {(k, mode) for mode, ids in SUBSET.items() for cid in ids for k in _launched(plain[mode], by_id[cid])}
    assert table - subset == set(), f"(kernel, mode) the parity table runs and the subset does not: " \
                                    f"{sorted(table - subset)}"
    every = {n for _, names in kernel_sources().values() for n in names}
    assert every - {k for k, _ in subset} - STEP_KERNELS == set()


# ------------------------------------------------------------------ training steps under the checks
SIZE, BATCH = 31, 2


def _train(be, opt_name: str, steps: int, capture: bool):
    from tinycnn.backends.contract import new_step_stats
    from tinycnn.model import paper_net
    from tinycnn.optim import SGD, Adam

    net = paper_net(hidden=8, in_size=SIZE, seed=0, backend=be)
    opt = (SGD if opt_name == "sgd" else Adam)(net.parameters(), lr=0.05, backend=be)
    stats = be.asarray(new_step_stats())

    def step(x, y):
        logits = net.forward(x, train=True)
        loss, dlogits = be.softmax_cross_entropy(logits, y)
        be.step_stats_update(stats, loss, logits, y)
        net.backward(dlogits)
        opt.step(guard=stats)

    run = be.capture(step) if capture else step
    for i in range(steps):
        rng = np.random.default_rng(i)
        x = rng.random((BATCH, 1, SIZE, SIZE), dtype=f32)
        opt.lr = 0.05 / (1 + i)
        run(be.asarray(x), be.asarray((np.arange(BATCH) % 2).astype(np.int32)))
    return [be.to_numpy(p.value).copy() for p in net.parameters()] + [be.to_numpy(stats).copy()], run


@pytest.mark.parametrize("mode, opt_name, steps, capture", [("fp32", "sgd", 3, True), ("fp32", "adam", 2, False),
                                                           ("bf16", "sgd", 2, True)])
def test_training_steps_under_the_checks_give_the_plain_bits(tier, mode, opt_name, steps, capture):
    """paper_net steps (dropout, the loss, the step statistics, the optimizer's
    multi-tensor update through its pointer table) under order,init,bounds: the plain
    emulator's parameters and statistics, bit for bit; the captured SGD steps replay."""
    want, _ = _train(backend_or_skip(f"cuda-emu:{mode}"), opt_name, steps, capture)
    got, run = _train(tier[mode], opt_name, steps, capture)
    if capture:
        assert run.replays == steps - 1 and run.fallbacks == 0
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ device copies
def test_emulated_copies_refuse_what_a_gpu_would_scramble():
    """cuda-emu's copies (HostMemory) refuse a strided device array, another dtype or
    another shape, as the cuda backend's raw byte copies must; a strided host array is
    fine to upload (it is made contiguous first there)."""
    be = backend_or_skip("cuda-emu")
    dst, src = np.zeros((4, 6), f32), np.arange(48, dtype=f32).reshape(4, 12)
    with pytest.raises(ValueError, match="source: a device array of shape .4, 6. that is not C-contiguous"):
        be._copy(dst, src[:, ::2])
    with pytest.raises(ValueError, match="destination: a device array of shape .4, 6. that is not C-contiguous"):
        be._device_copy(np.zeros((4, 12), f32)[:, ::2], src[:, :6].copy())
    with pytest.raises(ValueError, match=r"upload: float64 \(4, 6\) into float32 \(4, 6\)"):
        be._device_upload(dst, np.zeros((4, 6)))
    with pytest.raises(ValueError, match=r"upload: float32 \(24,\) into float32 \(4, 6\)"):
        be._device_upload(dst, np.zeros(24, f32))
    be._device_upload(dst, src[:, ::2])
    np.testing.assert_array_equal(dst, src[:, ::2])
    be._copy(dst, src[:, 6:].copy())
    np.testing.assert_array_equal(dst, src[:, 6:])


def test_cuda_copies_refuse_host_arrays_strides_and_other_dtypes(monkeypatch):
    """The cuda backend's _device_copy / _device_upload on a stand-in cupy whose device
    arrays are host memory with an address: a host array where a device array belongs
    (and the reverse), a strided device array or another dtype is refused; what is
    accepted is copied right."""
    from tinycnn.backends import cuda_backend

    class DeviceArray(np.ndarray):
        @property
        def __cuda_array_interface__(self):
            return {"data": (self.ctypes.data, False), "shape": self.shape, "typestr": self.dtype.str, "version": 3}

    def device(a):
        return np.ascontiguousarray(a).view(DeviceArray)

    runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, getDevice=lambda: 0,
                                    getDeviceProperties=lambda i: {"name": b"Stand-in", "major": 9, "minor": 0},
                                    memcpyAsync=lambda dst, src, n, kind, stream: ctypes.memmove(dst, src, n),
                                    memcpyHostToDevice=1, memcpyDeviceToDevice=3)
    fake = types.SimpleNamespace(ndarray=DeviceArray, RawModule=lambda code, options: types.SimpleNamespace(
        get_function=lambda name: None), cuda=types.SimpleNamespace(
        runtime=runtime, compiler=types.SimpleNamespace(CompileException=RuntimeError),
        get_current_stream=lambda: types.SimpleNamespace(ptr=0)))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    cuda_backend._load_kernels.cache_clear()
    try:
        be = cuda_backend.CudaBackend(precision="fp32")
        host = np.arange(48, dtype=f32).reshape(4, 12)
        dst, src = device(np.zeros((4, 6), f32)), device(host[:, :6])
        with pytest.raises(TypeError, match="source: a numpy.ndarray where a device array"):
            be._device_copy(dst, host[:, :6].copy())
        with pytest.raises(TypeError, match="destination: a numpy.ndarray where a device array"):
            be._device_upload(np.zeros((4, 6), f32), host[:, :6])
        with pytest.raises(TypeError, match="upload: the host side is a device array"):
            be._device_upload(dst, src)
        with pytest.raises(TypeError, match="upload: the host side is a builtins.list, not a NumPy array"):
            be._device_upload(dst, [[0.0] * 6] * 4)
        with pytest.raises(ValueError, match="source: a device array .* not C-contiguous"):
            be._device_copy(dst, device(host)[:, ::2])
        with pytest.raises(ValueError, match=r"device copy: int32 \(4, 6\) into float32"):
            be._device_copy(dst, device(np.zeros((4, 6), np.int32)))
        with pytest.raises(ValueError, match=r"upload: float64 \(4, 6\) into float32 \(4, 6\)"):
            be._device_upload(dst, np.zeros((4, 6)))
        be._device_copy(dst, src)
        np.testing.assert_array_equal(dst, host[:, :6])
        be._device_upload(dst, host[:, ::2])  # a strided host array: made contiguous, then copied
        np.testing.assert_array_equal(dst, host[:, ::2])
    finally:
        cuda_backend._load_kernels.cache_clear()
