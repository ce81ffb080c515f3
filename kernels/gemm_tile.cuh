// gemm_tile.cuh: the shared-memory tile and register micro-tile behind every
// matrix product here (dense layers in gemm.cu, implicit-GEMM convolution in
// conv2d.cu), and the index counters that let the convolutions gather operands
// without a division in their main loops.
//
// A block of TILE_THREADS = 256 threads computes a BM x BN tile of C = A B with
// BM * BN = 16 * TILE_THREADS (64 x 64, or 16 x 256 for products with few rows).
// Each step of the K loop stages a TILE_K = 16 slice of A (as As[k][m]) and of B
// (as Bs[k][n]) in shared memory, where every element is read by BN/4 or BM/4
// threads: global traffic per FMA drops 16-fold against one thread per output.
//
// Thread (tx, ty) = (tid % (BN/4), tid / (BN/4)) owns the 4 x 4 BLOCK of outputs at
// rows 4 ty + i and columns 4 tx + j, so each k step reads its four A values and its
// four B values with one 128-bit shared load each (LDS.128): 2 loads per 16 FMAs.
// A warp's A load touches at most two addresses (a broadcast) and its B load 16 or
// 32 consecutive float4s: no bank conflicts. Rows are padded by TILE_PAD = 4 floats,
// which keeps them 16-byte aligned and spreads the transposing stores of the
// loaders over the banks (2-way at most, against 16-way unpadded).
//
// The K loop is double-buffered (two copies of each tile): while the block
// multiplies tile t from one buffer, every thread already holds tile t + 1's
// global loads in registers, issued before the math so their latency hides behind
// it, and stores them into the other buffer afterwards; one barrier per step.
//
// The tiling scheme is the classic one (Volkov & Demmel 2008; the CUTLASS and
// "How to optimize a CUDA matmul" write-ups describe the same steps); the code
// here is our own, kept to the kernels/README.md subset so the emulator runs it.
#pragma once

#define TILE_M 64
#define TILE_N 64
#define TILE_K 16
#define TILE_THREADS 256  // (TILE_M / 4) * (TILE_N / 4)
#define TILE_PAD 4

// acc[i][j] += sum_kk As[kk][4 ty + i] * Bs[kk][4 tx + j]
template <int BM, int BN>
__device__ __forceinline__ void tile_multiply_accumulate(const float (*As)[BM + TILE_PAD],
                                                         const float (*Bs)[BN + TILE_PAD], int tx, int ty,
                                                         float acc[4][4]) {
#pragma unroll
    for (int kk = 0; kk < TILE_K; kk++) {
        const float4 a4 = *reinterpret_cast<const float4 *>(&As[kk][4 * ty]);
        const float4 b4 = *reinterpret_cast<const float4 *>(&Bs[kk][4 * tx]);
        const float a[4] = {a4.x, a4.y, a4.z, a4.w};
        const float b[4] = {b4.x, b4.y, b4.z, b4.w};
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];
    }
}

// The double-buffered K loop over `steps` tiles, tile 0 already stored in buffer 0 and
// followed by a barrier: while the block multiplies tile s, load() brings tile s + 1
// into registers (its latency hidden behind the math) and store(b) puts it in buffer
// b afterwards; one barrier per tile. Unrolled by two, so that each half works on a
// fixed buffer (constant shared-memory offsets, no buffer arithmetic in the loop).
// Every output still adds its K terms in order: the same bits as one tile per trip.
template <int BM, int BN, typename Load, typename Store>
__device__ __forceinline__ void tile_main_loop(const float (*As)[TILE_K][BM + TILE_PAD],
                                               const float (*Bs)[TILE_K][BN + TILE_PAD], int steps, int tx,
                                               int ty, float acc[4][4], Load &load, Store &store) {
    for (int s = 0; s < steps; s += 2) {
        if (s + 1 < steps) load();  // in flight during the math below
        tile_multiply_accumulate<BM, BN>(As[0], Bs[0], tx, ty, acc);
        if (s + 1 < steps) store(1);
        __syncthreads();
        if (s + 1 < steps) {  // uniform over the block
            if (s + 2 < steps) load();
            tile_multiply_accumulate<BM, BN>(As[1], Bs[1], tx, ty, acc);
            if (s + 2 < steps) store(0);
        }
        __syncthreads();
    }
}

template <int N>
__device__ __forceinline__ void zero(float (&a)[N][N]) {
#pragma unroll
    for (int i = 0; i < N; i++)
#pragma unroll
        for (int j = 0; j < N; j++) a[i][j] = 0.0f;
}

// A flat index i = (hi * R1 + mid) * R0 + lo held as its digits, so that moving it
// forward by a fixed step costs two compares instead of two divisions: the gathers
// decode (c, u, v) taps and (n, oh, ow) positions this way inside their K loops.
struct Digits {
    int hi, mid, lo;
};

// The digits of i (divisions: call outside the main loop).
__device__ __forceinline__ Digits digits_of(int i, int r1, int r0) {
    Digits d;
    d.lo = i % r0;
    d.mid = (i / r0) % r1;
    d.hi = (i / r0) / r1;
    return d;
}

// d += step, both as digits (step = digits_of(s, r1, r0)): lo + step.lo < 2 r0 and
// mid + step.mid + 1 < 2 r1, so one carry per digit is enough.
__device__ __forceinline__ void advance(Digits &d, const Digits &step, int r1, int r0) {
    d.lo += step.lo;
    if (d.lo >= r0) {
        d.lo -= r0;
        d.mid++;
    }
    d.mid += step.mid;
    if (d.mid >= r1) {
        d.mid -= r1;
        d.hi++;
    }
    d.hi += step.hi;
}
