"""bench.gpu_model: its SASS reading on hand-made code, its launch list against the one
the kernels really run (cuda-emu), and the whole model where nvcc and cuobjdump are."""

from __future__ import annotations

import numpy as np
import pytest

from bench import gpu_model
from tinycnn.backends import launch


def sass(*lines):
    return [(addr, op, rest) for addr, op, rest in lines]


def test_main_loop_is_the_backward_branch_with_the_most_ffma():
    code = sass((0x00, "MOV", " R1, R2 "),
                (0x10, "FFMA", " R3, R4, R5, R3 "),        # loop A: 0x10-0x30, one FFMA
                (0x20, "IMAD", " R6, R6, 1, R7 "),
                (0x30, "BRA", " 0x10 "),
                (0x40, "LDS.128", " R8, [R9] "),           # loop B: 0x40-0x80, two FFMA
                (0x50, "FFMA", " R3, R8, R5, R3 "),
                (0x60, "FFMA", " R3, R9, R5, R3 "),
                (0x70, "BAR.SYNC", " 0x0 "),
                (0x80, "BRA", " 0x40 "),
                (0x90, "BRA", " 0xa0 "),                  # a forward branch is no loop
                (0xa0, "EXIT", " "))
    length, counts = gpu_model.main_loop(code)
    assert length == 5
    assert counts == {"LDS.128": 1, "FFMA": 2, "BAR": 1, "BRA": 1}


def test_code_without_a_loop_has_no_main_loop():
    assert gpu_model.main_loop(sass((0x0, "MOV", " R1, R2 "), (0x10, "EXIT", " "))) == (0, {})


def test_opcode_classes():
    assert [gpu_model.opcode_class(o) for o in ("LDS", "LDS.U.64", "STS.128", "FFMA.FTZ", "IMAD.WIDE", "HMMA.16816")] \
        == ["LDS.32", "LDS.64", "STS.128", "FFMA", "INT", "OTHER"]


def test_the_recorded_launch_list_is_the_one_the_kernels_run():
    """The recording backend and cuda-emu run the same launch code: the captured step
    that cuda-emu replays has the same kernels and grids, in the same order, for a
    small step; a replay allocates nothing and is one graph launch."""
    from helpers import backend_or_skip

    emu = backend_or_skip("cuda-emu")
    launches, allocations, graphs = gpu_model.record_step(batch=2, hidden=8, size=32)
    run, _, inputs, _ = gpu_model.training_step(emu, batch=2, hidden=8, size=32)
    for _ in range(3):
        run(*inputs)
    assert run.replays == 2 and run.fallbacks == 0  # calls 2 and 3
    assert [(name, grid) for name, grid, _, _ in run.launches] == [(lau.kernel, lau.grid) for lau in launches]
    assert (allocations, graphs) == (0, 1)
    assert {lau.layer for lau in launches} >= {"0:convblock for", "0:convblock bac", "loss", "optimizer"}


def test_a_tiled_kernel_is_issue_bound_and_an_elementwise_one_dram_bound():
    dev = gpu_model.DEVICES["H100 SXM"]
    code = gpu_model.KernelCode("sgemm_strided", registers=64, smem=8320, total=900, loop_len=600,
                                loop={"FFMA": 256, "LDS.32": 128, "INT": 200, "OTHER": 16})
    a, b, c = (np.empty((2048, 2048), np.float32) for _ in range(3))
    args = [c, a, b, c] + [np.int32(v) for v in (2048, 2048, 2048, 2048, 1, 2048, 1, 2048, 2048, 0, 0)]
    p = gpu_model.predict(gpu_model.Launch("sgemm_strided", (32, 32, 1), (launch.TILE_THREADS, 1, 1), args, "x"),
                          code, dev)
    assert p.bound == "issue" and p.flops == 2.0 * 2048 ** 3
    # 1024 blocks on 132 SMs: the busiest runs 8, 4 at a time, 8 warps each, 128 trips of 600 instructions
    per_warp = 300 + 128 * 600
    assert p.us == pytest.approx(8 * 8 * per_warp / (4 * dev.clock_ghz * 1e9) * 1e6)
    relu = gpu_model.KernelCode("relu_forward", registers=14, total=20, loop_len=8, loop={"INT": 4})
    x = np.empty(1 << 26, np.float32)
    q = gpu_model.predict(gpu_model.Launch("relu_forward", (4096, 1, 1), (256, 1, 1), [x, x, np.int32(x.size)],
                                           "y"), relu, dev)
    assert q.bound == "DRAM" and q.us == pytest.approx(2 * x.nbytes / (dev.dram_tb_s * 1e12) * 1e6)


@pytest.mark.skipif(not all(gpu_model.tool(t) for t in ("nvcc", "cuobjdump", "nvdisasm")),
                    reason="needs nvcc, cuobjdump and nvdisasm")
def test_the_model_runs_on_the_compilers_output(capsys):
    assert gpu_model.main(["--batch", "8", "--size", "64", "--hidden", "32"]) == 0
    out = capsys.readouterr().out
    last = out.strip().splitlines()[-1]
    assert last.startswith("predicted step: ") and last.endswith("(H100 SXM, batch 8, hidden 32)")
    assert float(last.split()[2]) > 0
    assert "conv2d_relu_maxpool_igemm_64x64" in out and "static model (not a measurement)" in out
