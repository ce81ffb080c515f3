"""What the tensor-core precision modes compute, in NumPy: the operand roundings and the
error bound of an FP32 accumulation.

A tensor-core product D = A B + C (kernels/mma.cuh) first rounds its operands, then
multiplies them exactly and adds in FP32:

    tf32   every operand of A and B goes through ``round_tf32`` (cvt.rna.tf32.f32)
    bf16   every operand of A and B goes through ``round_bf16`` (cvt.rn.bf16x2.f32)

Both roundings keep float32's 8-bit exponent, so the products of rounded operands are
exact in float32 (11 x 11 or 8 x 8 significand bits; only underflow can round them). The
NumPy reference of a mode is therefore ``round_X(A) @ round_X(B) + C`` computed in float64,
and what a kernel may differ from it by is the error of its FP32 sums, bounded by
``fp32_sum_error_bound`` (the order of additions inside one hardware MMA is not
documented, so no test can ask for bits).

The roundings are bit manipulations on the uint32 view of float32 and reproduce the GPU
bit for bit on finite numbers and infinities (subnormals included: the bit arithmetic
rounds them like any other number). NaNs stay NaNs except where stated.
"""

from __future__ import annotations

import numpy as np

#: The precision modes of the backends. 'fp32': every product on FP32 operands (CUDA
#: cores on a GPU). 'tf32' / 'bf16': every product of a convolution or dense layer on
#: operands rounded by round_tf32 / round_bf16 (tensor cores on a GPU), summed in FP32;
#: the rest of a step (bias, ReLU, pooling, dropout, the loss, the optimizer's update of
#: the FP32 master weights) is FP32 in every mode.
PRECISIONS = ("fp32", "tf32", "bf16")
TENSOR_CORE_PRECISIONS = ("tf32", "bf16")


def check_precision(precision: str) -> None:
    """A ValueError unless `precision` is one of PRECISIONS."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")


def choose(precision: str | None, supported: tuple, default: str, who: str) -> str:
    """A backend's precision: `default` for None, else `precision` if `who` runs it, else
    a ValueError that says what it runs."""
    precision = default if precision is None else precision
    if precision not in supported:
        known = (f" (the modes are {', '.join(PRECISIONS)})" if precision not in PRECISIONS else
                 "; the tensor-core modes run on the cuda backend (cuda-emu and numpy compute them on the CPU)"
                 if precision in TENSOR_CORE_PRECISIONS else "")
        raise ValueError(f"precision {precision!r}: the {who} backend runs {', '.join(supported)}{known}")
    return precision


_ABS = np.uint32(0x7FFFFFFF)
_INF = np.uint32(0x7F800000)

#: float32's unit roundoff is 2**-24 (round to nearest); 2**-23 bounds an addition that
#: truncates instead, which the hardware's undocumented adders may do.
FP32_ULP = 2.0**-23


def _bits(a) -> tuple[np.ndarray, tuple]:
    """(flat uint32 view of a as float32, a's shape): 1-d, so no 0-d scalar arithmetic."""
    x = np.asarray(a, dtype=np.float32)
    return np.ascontiguousarray(x).reshape(-1).view(np.uint32), x.shape


def round_tf32(a) -> np.ndarray:
    """``a`` (converted to float32) rounded to TF32 as ``cvt.rna.tf32.f32`` does: 10 mantissa
    bits, round to nearest with ties AWAY from zero; returned as float32 whose low 13 bits
    are zero.

    This is the instruction as ptxas lowers it for sm_80 and sm_90 (read in cuobjdump's
    SASS): for a finite x, add 0x1000 (half a TF32 ulp) to its bits, then clear the low 13
    bits. The carry ripples into the exponent, so 1.99999988 rounds to 2.0 and anything at
    or above the largest TF32 value plus half an ulp (0x7F7FF000) becomes infinity;
    subnormals round on the same grid and may become the smallest normal. Infinities and
    NaNs are only masked: a NaN keeps its sign and the top 10 bits of its payload, and a
    NaN whose payload lies in the low 13 bits alone becomes an infinity of its sign (as on
    the GPU).
    """
    u, shape = _bits(a)
    finite = (u & _ABS) < _INF
    # added to finite numbers only, so the uint32 sum never wraps
    out = (u + np.where(finite, np.uint32(0x1000), np.uint32(0))) & np.uint32(0xFFFFE000)
    return out.astype(np.uint32).view(np.float32).reshape(shape)


def round_bf16(a) -> np.ndarray:
    """``a`` (converted to float32) rounded to BF16 as ``cvt.rn.bf16x2.f32`` does: 7 mantissa
    bits, round to nearest with ties to EVEN; returned as float32 whose low 16 bits are zero.

    For a finite x: add 0x7FFF plus the lowest kept bit, then clear the low 16 bits (values
    from the largest BF16 plus half an ulp, 0x7F7F8000, up become infinity; subnormals round
    on the same grid). Infinities stay. Every NaN becomes the canonical BF16 NaN 0x7FFF
    (0x7FFF0000 as float32), as CUDA's host conversion __float2bfloat16 does; the GPU's
    F2FP instruction is expected to agree (a GPU test can confirm the payload).
    """
    u, shape = _bits(a)
    nan = (u & _ABS) > _INF
    num = np.where(nan, np.uint32(0), u)  # (infinities gain less than a carry: they stay)
    rounded = (num + np.uint32(0x7FFF) + ((num >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    out = np.where(nan, np.uint32(0x7FFF0000), rounded)
    return out.astype(np.uint32).view(np.float32).reshape(shape)


def fp32_sum_error_bound(abs_sum, n_additions: int, unit: float = FP32_ULP) -> np.ndarray:
    """Bound on |computed - exact| of a sum of exact terms added in FP32 in ANY order:
    gamma_n * sum|terms| with gamma_n = n u / (1 - n u) (Higham, "Accuracy and Stability of
    Numerical Algorithms", 2nd ed., sec. 4.2), where n is the number of additions (a
    product of inner dimension K plus C: n = K) and ``abs_sum`` = |C| + |A| @ |B| of the
    rounded operands. u defaults to 2**-23, one FP32 ulp, which also covers adders that
    truncate rather than round.
    """
    nu = n_additions * unit
    if nu >= 1:
        raise ValueError(f"{n_additions} additions: the bound needs n u < 1")
    return np.asarray(abs_sum, dtype=np.float64) * (nu / (1 - nu))


def round_operands(a, precision: str):
    """``a`` as a product of that precision mode reads it: itself in 'fp32', else rounded
    by round_tf32 / round_bf16, returned in a's dtype (float64 holds the rounded values
    exactly)."""
    if precision == "fp32":
        return a
    if precision not in TENSOR_CORE_PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {PRECISIONS}")
    a = np.asarray(a)
    rounded = round_tf32(a) if precision == "tf32" else round_bf16(a)
    return rounded.astype(a.dtype, copy=False)
