// philox.cuh: Philox4x32-10, the counter-based generator behind dropout masks.
//
// Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3"
// (SC 2011). Written from the paper to match tinycnn/philox.py round for round:
// the NumPy reference and these kernels draw bit-identical masks for the same
// (seed, element index), which the tests check exactly.
#pragma once

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u  // golden ratio
#define PHILOX_W1 0xBB67AE85u  // sqrt(3) - 1

// Ten rounds on counter (c0, c1, c2, c3) with key (k0, k1); returns word 0 of the
// result, the only word dropout uses (its top 24 bits are a uniform integer).
__device__ __forceinline__ unsigned int philox4x32_10_word0(unsigned int c0, unsigned int c1, unsigned int c2,
                                                            unsigned int c3, unsigned int k0, unsigned int k1) {
    for (int r = 0; r < 10; r++) {
        if (r > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        const unsigned int hi0 = __umulhi(PHILOX_M0, c0), lo0 = PHILOX_M0 * c0;
        const unsigned int hi1 = __umulhi(PHILOX_M1, c2), lo1 = PHILOX_M1 * c2;
        const unsigned int n0 = hi1 ^ c1 ^ k0;
        const unsigned int n2 = hi0 ^ c3 ^ k1;
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
    }
    return c0;
}

// The keep decision of flat element i: counter (i_lo, i_hi, 0, 0), key (seed_lo,
// seed_hi); kept iff (word0 >> 8) >= threshold, threshold = round(p * 2^24).
__device__ __forceinline__ bool dropout_keep(unsigned long long i, unsigned int seed_lo, unsigned int seed_hi,
                                             unsigned int threshold) {
    const unsigned int w0 =
        philox4x32_10_word0((unsigned int)i, (unsigned int)(i >> 32), 0u, 0u, seed_lo, seed_hi);
    return (w0 >> 8) >= threshold;
}
