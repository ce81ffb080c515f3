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
//     in each of 8 consecutive pair-rows / rows, or (single chunks, conv2d_tc.cu's 32x128
//     A and 128x64 B) the 8 chunks of one pair-row / one chunk in each of 8 consecutive
//     rows: the swizzles spread them over all 32 banks (unswizzled, the one-chunk-per-row
//     patterns would be 8-way (A) or 4-way (B)).
//
// STAGING. A thread stages UNITS of 8 words (two 16-byte chunks), or single chunks:
//   A unit (i, c): words 4c .. 4c+3 of tile rows 2i and 2i + 1 (two runs of 4 words);
//   B unit (r, c): words 8c .. 8c+7 of tile row r (two runs of 4 words),
// a run being 4 K_PER_WORD consecutive k of one row. Global loads (or gathers) for k-tile
// s + 1 are issued before the mma of tile s; afterwards they are converted to words once
// per block (tc_tf32_word: 2 SASS instructions per element; pack_bf16x2: one F2FP per
// two) and stored: double buffering with one barrier per k-tile. Rounding here,
// not at the fragment reads, costs once per element and block instead of once per warp
// that reads it. Two k loops: tc_k_loop (gemm_tc.cu: buffer indices, a store(buf)
// callback) and tc_k_loop_ahead (conv2d_tc.cu: staging and fragment addresses carried
// across the loop, block-shared decoding two k-tiles ahead, the last k-tile peeled off
// so that the loop's loads need no K bounds tests; see below).
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

// One TF32 operand word: to_tf32 (cvt.rna.tf32.f32) as ptxas expands it for sm_80 and
// sm_90 (a finite x gets half an ulp, 0x1000, added to its bits; infinities and NaNs are
// kept; then the low 13 bits are cleared), less the clearing: the mma reads only the top
// 19 bits of a .tf32 operand (mma.cuh; the emulator models it: emu_tf32_operand), so the
// product sees the same rounded value, and the word costs two instructions (FSETP and a
// predicated IADD) instead of three. The emulator (and a pre-sm_80 build, which traps)
// take to_tf32 itself.
__device__ __forceinline__ unsigned tc_tf32_word(float x) {
#if defined(TINYCNN_EMU) || defined(TINYCNN_MMA_TRAP)
    return to_tf32(x);
#else
    const unsigned u = __float_as_uint(x);
    return fabsf(x) < __int_as_float(0x7f800000) ? u + 0x1000u : u;
#endif
}

// NW operand words from one run (NW K_PER_WORD consecutive k of one row).
template <class P, int NW>
__device__ __forceinline__ void tc_words(const float *v, unsigned (&w)[NW]) {
#pragma unroll
    for (int i = 0; i < NW; i++) {
        if constexpr (P::IS_BF16)
            w[i] = pack_bf16x2(v[2 * i], v[2 * i + 1]);
        else
            w[i] = tc_tf32_word(v[i]);
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

// A compile-time flag as a value, for generic lambdas: load(TcBool<true>()).
template <bool B>
struct TcBool {
    static constexpr bool value = B;
};

// ADDRESSES CARRIED ACROSS THE LOOP (tc_k_loop_ahead). The swizzled offsets of a thread's
// fragment reads and staging stores depend on threadIdx only, but NVVM recomputes them
// from threadIdx inside the k loop (about 60 instructions per k-tile in conv2d_tc.cu's
// loops) instead of keeping them in registers. Here each is a BYTE offset into the flat
// two-buffer tile (&As[0][0], &Bs[0][0]) that the loop moves to the other buffer every
// k-tile: loop-carried values, which it cannot recompute. Buffer 1 starts 4 A_WORDS
// (4 B_WORDS) bytes on, a power of two above every offset in buffer 0, so the move is an
// XOR. The other offsets follow by constants: A fragment mi, ks at (fa + 1024 mi) ^ 16 ks
// (8 pair-rows of 128 bytes; the XOR flips chunk bit 0), B fragment ni at fb + 512 ni (8
// rows of 64 bytes), the second chunk of a staging unit at sa ^ 16, chunk c of a B run
// that starts at an even chunk at sb ^ 16 c.
struct TcOffsets {
    int fa, fb;  // the lane's A chunk (mi 0, ks 0) and B chunk (ni 0) of the buffer read next
    int sa, sb;  // the thread's first A / B staging chunk in the buffer written next
};

template <class S>
__device__ __forceinline__ TcOffsets tc_offsets(int a_pair_row, int a_chunk, int b_row, int b_chunk) {
    int wm0, wn0;
    tc_warp_origin<S>(wm0, wn0);
    const int lane = (int)(threadIdx.x % 32), g = lane >> 2, t = lane & 3;
    TcOffsets o;
    o.fa = 4 * tc_a_offset(wm0 / 2 + g, 2 * t);
    o.fb = 4 * tc_b_offset(wn0 + g, t);
    o.sa = 4 * tc_a_offset(a_pair_row, a_chunk);
    o.sb = 4 * tc_b_offset(b_row, b_chunk);
    return o;
}

// The word at a byte offset of a tile.
__device__ __forceinline__ unsigned *tc_at(unsigned *tile, int off) {
    return reinterpret_cast<unsigned *>(reinterpret_cast<char *>(tile) + off);
}
__device__ __forceinline__ const unsigned *tc_at(const unsigned *tile, int off) {
    return reinterpret_cast<const unsigned *>(reinterpret_cast<const char *>(tile) + off);
}

// tc_store_a_unit at a carried offset (the unit's first chunk).
template <class P>
__device__ __forceinline__ void tc_store_a_at(unsigned *tile, int off, const float (*v)[4 * P::K_PER_WORD]) {
    unsigned lo[4], hi[4];
    tc_words<P>(v[0], lo);
    tc_words<P>(v[1], hi);
    tc_sts128(tc_at(tile, off), lo[0], hi[0], lo[1], hi[1]);
    tc_sts128(tc_at(tile, off ^ 16), lo[2], hi[2], lo[3], hi[3]);
}
// One chunk of A at a carried offset: words 2j, 2j + 1 of tile rows 2i (v[0]) and 2i + 1
// (v[1]), the half of an A unit (conv2d_tc.cu's 32x128 tile stages one per thread).
template <class P>
__device__ __forceinline__ void tc_store_a_chunk_at(unsigned *tile, int off, const float (*v)[2 * P::K_PER_WORD]) {
    unsigned lo[2], hi[2];
    tc_words<P>(v[0], lo);
    tc_words<P>(v[1], hi);
    tc_sts128(tc_at(tile, off), lo[0], hi[0], lo[1], hi[1]);
}
// One chunk of B at a carried offset: words 4j .. 4j + 3 of a tile row from v.
template <class P>
__device__ __forceinline__ void tc_store_b_chunk_at(unsigned *tile, int off, const float *v) {
    unsigned w[4];
    tc_words<P>(v, w);
    tc_sts128(tc_at(tile, off), w[0], w[1], w[2], w[3]);
}

// tc_mma_tile at carried offsets (A, B: the flat two-buffer tiles).
template <class P, int MI, int NI>
__device__ __forceinline__ void tc_mma_tile_at(const unsigned *A, const unsigned *B, int fa, int fb,
                                               float (&acc)[MI][NI][4]) {
    unsigned b[NI][4];
#pragma unroll
    for (int ni = 0; ni < NI; ni++) {
        const uint4 q = *reinterpret_cast<const uint4 *>(tc_at(B, fb + 512 * ni));
        b[ni][0] = q.x;
        b[ni][1] = q.y;
        b[ni][2] = q.z;
        b[ni][3] = q.w;
    }
#pragma unroll
    for (int mi = 0; mi < MI; mi++)
#pragma unroll
        for (int ks = 0; ks < 2; ks++) {
            const uint4 q = *reinterpret_cast<const uint4 *>(tc_at(A, (fa + 1024 * mi) ^ (16 * ks)));
            const unsigned a[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
            for (int ni = 0; ni < NI; ni++) {
                const unsigned bf[2] = {b[ni][2 * ks], b[ni][2 * ks + 1]};
                tc_mma<P>(acc[mi][ni], a, bf);
            }
        }
}

// The k loop of the table-driven conv gathers (conv2d_tc.cu): as tc_k_loop, with carried
// offsets (o from tc_offsets: read and write buffer 0 at entry), plus
//   - prep(t): block-shared decoding for k-tile t (a few threads write its entries of a
//     two-slot ring, slot t & 1), called two k-tiles ahead of the load that reads it, so
//     that one barrier separates writing from reading and reading from overwriting;
//   - load(TcBool<FULL>()): FULL says the k-tile lies wholly inside K (every tile but the
//     last), so the loader may drop its K bounds tests. The last k-tile is peeled off the
//     main loop (as is the first, whose load runs before the loop), so the main loop holds
//     only the FULL loader;
//   - store(sa, sb): the staged k-tile to the carried offsets.
// Every branch is uniform over the block (steps is), as the emulator's barriers and mma
// require. acc must be zero on entry.
template <class P, class S, class Prep, class Load, class Store>
__device__ __forceinline__ void tc_k_loop_ahead(unsigned (*As)[S::A_WORDS], unsigned (*Bs)[S::B_WORDS], int steps,
                                                TcOffsets o, Prep &prep, Load &load, Store &store,
                                                float (&acc)[S::MI][S::NI][4]) {
    const unsigned *A = &As[0][0], *B = &Bs[0][0];
    if (steps > 0) prep(0);
    if (steps > 1) prep(1);
    __syncthreads();
    if (steps > 0) {
        load(TcBool<false>());
        store(o.sa, o.sb);
    }
    constexpr int A_BUF = 4 * S::A_WORDS, B_BUF = 4 * S::B_WORDS;  // bytes
    static_assert((A_BUF & (A_BUF - 1)) == 0 && (B_BUF & (B_BUF - 1)) == 0,
                  "a buffer's offsets differ from the other's in one bit");
    o.sa ^= A_BUF;  // the loop writes buffer 1 first
    o.sb ^= B_BUF;
    __syncthreads();
    auto swap = [&]() {  // read the other buffer, write the one just read
        o.fa ^= A_BUF;
        o.fb ^= B_BUF;
        o.sa ^= A_BUF;
        o.sb ^= B_BUF;
    };
    // left: the k-tiles not yet multiplied (one counter: the loop keeps no other bound)
    int left = steps, t = 2;  // t: the k-tile the next prep decodes
    for (; left > 2; left--) {  // loads k-tile steps - left + 1 < steps - 1: not the last
        load(TcBool<true>());
        tc_mma_tile_at<P, S::MI, S::NI>(A, B, o.fa, o.fb, acc);
        store(o.sa, o.sb);
        prep(t++);
        swap();
        __syncthreads();
    }
    if (left == 2) {  // loads the last k-tile
        load(TcBool<false>());
        tc_mma_tile_at<P, S::MI, S::NI>(A, B, o.fa, o.fb, acc);
        store(o.sa, o.sb);
        swap();
        __syncthreads();
        left--;
    }
    if (left == 1) tc_mma_tile_at<P, S::MI, S::NI>(A, B, o.fa, o.fb, acc);
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
