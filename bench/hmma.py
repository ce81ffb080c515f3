"""What bench.gpu_model knows of the tensor-core instructions and of the main loops that
issue them: the FLOPs of one HMMA, the devices' dense tensor peaks, and how many trips
of its k loop a tensor-core kernel makes for one block.

These are facts for the model, not for launching: the backend's geometry
(tinycnn.backends.geometry) decides what runs, and this module only counts it.
"""

from __future__ import annotations

import re

import numpy as np

from tinycnn.backends.geometry import TC_WARP_N, cdiv, k_tile

#: FLOPs of one warp-level tensor-core instruction (2 M N K of its shape), by the SASS
#: opcode cuobjdump prints for mma.sync on sm_80 / sm_90: m16n8k8 TF32 and m16n8k16 BF16.
HMMA_FLOPS = {"HMMA.1688.F32.TF32": 2 * 16 * 8 * 8, "HMMA.16816.F32.BF16": 2 * 16 * 8 * 16}
#: Dense tensor-core peaks (TFLOP/s, NVIDIA's H100 SXM / H200 data sheets, without
#: sparsity); warp-level mma.sync reaches a part of it on Hopper (wgmma the rest).
PEAK_TFLOPS = {"tf32": 494.7, "bf16": 989.4}


def hmma_per_trip(bm: int, bn: int) -> int:
    """HMMA instructions per warp and k-tile of a BM x BN tensor-core tile: 2 k halves x
    (WM / 16) x (32 / 8), WM = the rows of one warp (kernels/tc_tile.cuh)."""
    wm = bm // max(bm // 32, 1)
    return 2 * (wm // 16) * (TC_WARP_N // 8)


def k_tiles(kernel: str, args: list) -> int:
    """Trips of a tensor-core kernel's main loop for one block (0: not one of them), from
    its argument list: ceil(K of this block / k_tile). The loop body holds
    hmma_per_trip(BM, BN) HMMA per warp (the backward branch with the most HMMA in the
    SASS), each of HMMA_FLOPS[opcode] FLOPs."""
    m = re.fullmatch(r"(sgemm|conv2d_\w+?)_(tf32|bf16)_(strided|\d+x\d+)", kernel)
    if not m:
        return 0
    kind, kt = m.group(1), k_tile(m.group(2))
    if kind == "sgemm":
        k, k_chunk = int(args[6]), int(args[12])
        return cdiv(min(k, k_chunk), kt)
    scalars = [int(v) for v in args if isinstance(v, np.generic)]  # N, C, H, W, F, KH, KW, OH, OW, ...
    n, c, _, _, f, kh, kw, oh, ow = scalars[:9]
    if kind in ("conv2d_forward", "conv2d_relu_maxpool"):
        return cdiv(c * kh * kw, kt)
    if kind == "conv2d_backward_data":
        return cdiv(f * kh * kw, kt)
    if kind == "conv2d_backward_filter":
        return cdiv(min(scalars[11], n * oh * ow), kt)  # k_chunk
    return 0
