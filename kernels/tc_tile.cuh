// tc_tile.cuh: the tensor-core block tile behind gemm_tc.cu and conv2d_tc.cu: shared-
// memory operand tiles whose 128-bit reads ARE the mma fragments, without bank
// conflicts, the warp-level mma.sync of kernels/mma.cuh (TF32 m16n8k8 or BF16 m16n8k16,
// FP32 accumulation), and the double-buffered k loop.
//
// OPERAND WORDS. Both precisions are handled in 32-bit "words": a TF32 word is one
// element rounded by to_tf32, a BF16 word two K-neighbours packed by pack_bf16x2 (the
// lower k in the low half). In words the two MMA shapes have the SAME fragment layout
// (PTX ISA 9.7.14.5.7 and 9.7.14.5.8; groupID g = lane / 4, threadID_in_group t = lane % 4):
//   A (16 rows x 8 words): a0 (g, t)  a1 (g + 8, t)  a2 (g, t + 4)  a3 (g + 8, t + 4)
//   B (8 words x 8 cols):  b0 (t, g)  b1 (t + 4, g)
// so one engine serves both; only the conversion and the mma instruction differ. A
// k-tile is TC_K_WORDS = 16 words deep: 16 k (TF32) or 32 k (BF16), two mma per warp
// fragment pair.
//
// PERMUTATIONS. A product sums over k, so the 8 k slots of an mma may hold ANY 8 words
// as long as A and B agree; and the 16 row slots of A may be any 16 rows as long as the
// accumulators are written back to the same rows. Here, for k-tile half ks (0, 1):
//   k slot t <- word 4t + 2 ks,  k slot t + 4 <- word 4t + 2 ks + 1,
//   row slot g <- tile row 2g,   row slot g + 8 <- tile row 2g + 1   (of each 16 rows).
// Then one lane's A fragment (a0, a1, a2, a3) is words (4t+2ks, 4t+2ks, 4t+2ks+1,
// 4t+2ks+1) of rows (2g, 2g+1, 2g, 2g+1), and its B fragments for ks = 0 and 1 are words
// 4t .. 4t+3 of one B row: stored in that order, each is one 16-byte chunk, one LDS.128,
// already in the registers' order (no moves; the job ldmatrix does in CUTLASS, which the
// emulator does not have).
//
// LAYOUTS (32-bit words, 16-byte chunks):
//   A: [BM / 2 pair-rows][32]: pair-row i holds tile rows 2i (h = 0) and 2i + 1 (h = 1),
//      word w of row 2i + h at position 2w + h; chunk j of pair-row i at chunk position
//      j ^ (i & 7).
//   B: [BN rows][16], K-contiguous; chunk j of row r at chunk position j ^ ((r >> 1) & 3).
// The XOR swizzles (in the manner of CUTLASS) keep every 128-bit access conflict-free. A
// warp's 128-bit access is served 8 lanes at a time; it is conflict-free when those 8
// lanes cover the 32 banks once:
//   - A fragment reads: 8 lanes = pair-rows P, P + 1 (P even), chunks 2t + ks: 4 chunk
//     positions of one parity in P, of the other parity in P + 1 (the XOR with i & 7
//     flips bit 0 between them);
//   - B fragment reads: 8 lanes = rows 2j, 2j + 1, chunks 0-3: the two rows are the two
//     16-bank halves of a 32-word line;
//   - staging writes (two STS.128 per unit, see below): 8 lanes write either 4 chunks of
//     one parity in each of 2 pair-rows (A) / 2 chunks in each of 4 rows (B), or one chunk
//     in each of 8 consecutive pair-rows / rows: the swizzles spread them over all 32
//     banks (unswizzled, the last pattern would be 8-way (A) or 4-way (B)).
//
// STAGING. A thread stages UNITS of 8 words (two 16-byte chunks):
//   A unit (i, c): words 4c .. 4c+3 of tile rows 2i and 2i + 1 (two runs of 4 words);
//   B unit (r, c): words 8c .. 8c+7 of tile row r (two runs of 4 words),
// a run being 4 K_PER_WORD consecutive k of one row. Global loads (or gathers) for k-tile
// s + 1 are issued before the mma of tile s; afterwards they are converted to words once
// per block (to_tf32: 4 SASS instructions per element on sm_80/sm_90; pack_bf16x2: one
// F2FP per two) and stored: double buffering with one barrier per k-tile. Rounding here,
// not at the fragment reads, costs once per element and block instead of once per warp
// that reads it.
//
// WARPS. A BM x BN tile has BN / 32 warps along N and max(BM / 32, 1) along M; each warp
// owns a WM x 32 sub-tile (WM = 32, or 16 for BM = 16): MI = WM / 16 row fragments times
// NI = 4 column fragments, 16 MI FP32 accumulators per lane. Per k-tile a warp issues
// 2 MI + 4 LDS.128 and 8 MI mma: 8 LDS.128 for 16 mma at WM = 32 (scalar fragment loads
// would need 32 LDS.32, and register moves to pair them).
//
// Shapes instantiated: 64x64 (2x2 warps, 128 threads), 128x64 (4x2, 256), 32x128 (1x4,
// 128); BM = 16 (warps of 16 x 32) works too.
#pragma once

#include "mma.cuh"

#define TC_K_WORDS 16     // operand words per tile row and k-tile
#define TC_WARP_N 32      // columns per warp
#define TC_UNIT_WORDS 8   // words per staging unit (two 16-byte chunks)

// Precisions: elements per word, and which mma.
struct Tf32 {
    static constexpr int K_PER_WORD = 1;
    static constexpr bool IS_BF16 = false;
};
struct Bf16 {
    static constexpr int K_PER_WORD = 2;
    static constexpr bool IS_BF16 = true;
};

// The warp layout of a BM x BN tile, and its staging units (see above).
template <int BM, int BN>
struct TcShape {
    static constexpr int WN = TC_WARP_N;
    static constexpr int WARPS_N = BN / WN;
    static constexpr int WARPS_M = BM >= 32 ? BM / 32 : 1;
    static constexpr int WM = BM / WARPS_M;
    static constexpr int MI = WM / 16, NI = WN / 8;
    static constexpr int THREADS = 32 * WARPS_M * WARPS_N;
    static constexpr int A_WORDS = BM * TC_K_WORDS, B_WORDS = BN * TC_K_WORDS;  // one buffer
    static constexpr int A_UNITS = A_WORDS / TC_UNIT_WORDS, B_UNITS = B_WORDS / TC_UNIT_WORDS;
    static constexpr int A_PER_THREAD = (A_UNITS + THREADS - 1) / THREADS;
    static constexpr int B_PER_THREAD = (B_UNITS + THREADS - 1) / THREADS;
    static_assert(WM % 16 == 0 && BN % WN == 0 && BM % 16 == 0, "tile shape");
};

// Word offset of chunk j of A pair-row i / of B row r (the swizzles above).
__device__ __forceinline__ int tc_a_offset(int i, int j) { return i * 2 * TC_K_WORDS + ((j ^ (i & 7)) << 2); }
__device__ __forceinline__ int tc_b_offset(int r, int j) { return r * TC_K_WORDS + ((j ^ ((r >> 1) & 3)) << 2); }

// Four operand words from one run (4 K_PER_WORD consecutive k of one row).
template <class P>
__device__ __forceinline__ void tc_words(const float *v, unsigned (&w)[4]) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
        if constexpr (P::IS_BF16)
            w[i] = pack_bf16x2(v[2 * i], v[2 * i + 1]);
        else
            w[i] = to_tf32(v[i]);
    }
}

__device__ __forceinline__ void tc_sts128(unsigned *p, unsigned x, unsigned y, unsigned z, unsigned w) {
    uint4 q;
    q.x = x;
    q.y = y;
    q.z = z;
    q.w = w;
    *reinterpret_cast<uint4 *>(p) = q;
}

// A unit (i, c): v[0] the run of row 2i, v[1] of row 2i + 1, at words 4c .. 4c+3.
template <class P>
__device__ __forceinline__ void tc_store_a_unit(unsigned *tile, int i, int c, const float (*v)[4 * P::K_PER_WORD]) {
    unsigned lo[4], hi[4];
    tc_words<P>(v[0], lo);
    tc_words<P>(v[1], hi);
    tc_sts128(&tile[tc_a_offset(i, 2 * c)], lo[0], hi[0], lo[1], hi[1]);
    tc_sts128(&tile[tc_a_offset(i, 2 * c + 1)], lo[2], hi[2], lo[3], hi[3]);
}

// B unit (r, c): v[0], v[1] the runs of words 8c .. 8c+3 and 8c+4 .. 8c+7 of row r.
template <class P>
__device__ __forceinline__ void tc_store_b_unit(unsigned *tile, int r, int c, const float (*v)[4 * P::K_PER_WORD]) {
    unsigned w0[4], w1[4];
    tc_words<P>(v[0], w0);
    tc_words<P>(v[1], w1);
    tc_sts128(&tile[tc_b_offset(r, 2 * c)], w0[0], w0[1], w0[2], w0[3]);
    tc_sts128(&tile[tc_b_offset(r, 2 * c + 1)], w1[0], w1[1], w1[2], w1[3]);
}

template <class P>
__device__ __forceinline__ void tc_mma(float d[4], const unsigned a[4], const unsigned b[2]) {
    if constexpr (P::IS_BF16)
        mma_bf16_m16n8k16(d, a, b, d);
    else
        mma_tf32_m16n8k8(d, a, b, d);
}

// acc += the warp's sub-tile (rows wm0.., columns wn0..) of As x Bs over one k-tile.
// Every thread of the block must call it (an mma is a block barrier in the emulator).
template <class P, int MI, int NI>
__device__ __forceinline__ void tc_mma_tile(const unsigned *As, const unsigned *Bs, int wm0, int wn0, int lane,
                                            float (&acc)[MI][NI][4]) {
    const int g = lane >> 2, t = lane & 3;
    unsigned b[NI][4];  // words 4t .. 4t+3 of column wn0 + 8 ni + g: both halves' fragments
#pragma unroll
    for (int ni = 0; ni < NI; ni++) {
        const uint4 q = *reinterpret_cast<const uint4 *>(&Bs[tc_b_offset(wn0 + 8 * ni + g, t)]);
        b[ni][0] = q.x;
        b[ni][1] = q.y;
        b[ni][2] = q.z;
        b[ni][3] = q.w;
    }
#pragma unroll
    for (int mi = 0; mi < MI; mi++)
#pragma unroll
        for (int ks = 0; ks < 2; ks++) {
            const uint4 q = *reinterpret_cast<const uint4 *>(&As[tc_a_offset(wm0 / 2 + 8 * mi + g, 2 * t + ks)]);
            const unsigned a[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
            for (int ni = 0; ni < NI; ni++) {
                const unsigned bf[2] = {b[ni][2 * ks], b[ni][2 * ks + 1]};
                tc_mma<P>(acc[mi][ni], a, bf);
            }
        }
}

// Tile row and column of accumulator i of fragment (mi, ni) of this lane (the row
// permutation above: row slot g is tile row 2g, slot g + 8 is 2g + 1).
__device__ __forceinline__ int tc_acc_row(int wm0, int mi, int lane, int i) {
    return wm0 + 16 * mi + 2 * (lane >> 2) + (i >> 1);
}
__device__ __forceinline__ int tc_acc_col(int wn0, int ni, int lane, int i) {
    return wn0 + 8 * ni + 2 * (lane & 3) + (i & 1);
}

template <class S>
__device__ __forceinline__ void tc_warp_origin(int &wm0, int &wn0) {
    const int warp = (int)(threadIdx.x / 32);
    wm0 = (warp / S::WARPS_N) * S::WM;
    wn0 = (warp % S::WARPS_N) * S::WN;
}

// The k loop: `steps` k-tiles through two buffers. load() issues the next k-tile's global
// loads (in flight during the mma), store(buf) converts and stores them; one barrier
// per k-tile. acc must be zero on entry.
template <class P, class S, class Load, class Store>
__device__ __forceinline__ void tc_k_loop(unsigned (*As)[S::A_WORDS], unsigned (*Bs)[S::B_WORDS], int steps,
                                          Load &load, Store &store, float (&acc)[S::MI][S::NI][4]) {
    int wm0, wn0;
    tc_warp_origin<S>(wm0, wn0);
    const int lane = (int)(threadIdx.x % 32);
    if (steps > 0) {
        load();
        store(0);
    }
    __syncthreads();
    for (int s = 0; s < steps; s++) {
        if (s + 1 < steps) load();
        tc_mma_tile<P, S::MI, S::NI>(As[s & 1], Bs[s & 1], wm0, wn0, lane, acc);
        if (s + 1 < steps) store((s + 1) & 1);
        __syncthreads();
    }
}

template <int MI, int NI>
__device__ __forceinline__ void tc_zero(float (&acc)[MI][NI][4]) {
#pragma unroll
    for (int mi = 0; mi < MI; mi++)
#pragma unroll
        for (int ni = 0; ni < NI; ni++)
#pragma unroll
            for (int i = 0; i < 4; i++) acc[mi][ni][i] = 0.0f;
}
