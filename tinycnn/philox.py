"""Philox4x32-10, the counter-based generator behind dropout masks.

Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3" (SC 2011).
A counter-based generator turns (key, counter) into random bits with no state, so
element i of a tensor gets the same bits on every backend: the NumPy backend
evaluates it here, vectorised over the counters; the CUDA kernels evaluate the same
rounds in ``kernels/philox.cuh``. Tests compare dropout masks exactly.
"""

from __future__ import annotations

import numpy as np

PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9  # golden ratio
PHILOX_W1 = 0xBB67AE85  # sqrt(3) - 1
MASK32 = 0xFFFFFFFF


def _mulhilo(a: int, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """32x32 -> 64-bit product of a constant and a uint64 array holding 32-bit values."""
    prod = np.uint64(a) * b
    return prod >> np.uint64(32), prod & np.uint64(MASK32)


def philox4x32_10(counter, key) -> np.ndarray:
    """Ten Philox rounds.

    counter: four arrays (or ints) of 32-bit words, broadcastable to one shape
    key:     two 32-bit ints
    returns: uint32 array of shape (4, *shape)
    """
    c = [np.asarray(w, dtype=np.uint64) & np.uint64(MASK32) for w in counter]
    c = np.broadcast_arrays(*c)
    c = [w.copy() for w in c]
    k0, k1 = int(key[0]) & MASK32, int(key[1]) & MASK32
    for r in range(10):
        if r > 0:
            k0 = (k0 + PHILOX_W0) & MASK32
            k1 = (k1 + PHILOX_W1) & MASK32
        hi0, lo0 = _mulhilo(PHILOX_M0, c[0])
        hi1, lo1 = _mulhilo(PHILOX_M1, c[2])
        c = [hi1 ^ c[1] ^ np.uint64(k0), lo1, hi0 ^ c[3] ^ np.uint64(k1), lo0]
    return np.stack(c).astype(np.uint32)


def seed_to_key(seed: int) -> tuple[int, int]:
    """A 64-bit seed as the two 32-bit key words (low, high)."""
    seed = int(seed)
    if seed < 0 or seed >= 1 << 64:
        raise ValueError(f"dropout seed must be in [0, 2**64), got {seed}")
    return seed & MASK32, (seed >> 32) & MASK32


def keep_threshold(p: float) -> int:
    """Integer threshold t so that an element is kept iff (bits >> 8) >= t.

    The top 24 bits of the first Philox word are a uniform integer u in [0, 2**24);
    P(u >= t) = 1 - t / 2**24 ~= 1 - p. Comparing integers (not floats) keeps the
    mask bit-identical across backends.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    return int(round(p * (1 << 24)))


def dropout_keep_mask(n: int, seed: int, p: float) -> np.ndarray:
    """Boolean keep-mask for the flat element indices 0..n-1 (row-major order)."""
    idx = np.arange(n, dtype=np.uint64)
    bits = philox4x32_10((idx & np.uint64(MASK32), idx >> np.uint64(32), 0, 0), seed_to_key(seed))[0]
    return (bits >> np.uint32(8)) >= np.uint32(keep_threshold(p))
