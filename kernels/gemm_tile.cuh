// gemm_tile.cuh: the shared-memory tile and register micro-tile behind every
// matrix product here (dense layers in gemm.cu, implicit-GEMM convolution in
// conv2d.cu).
//
// A block of 256 threads computes a TILE_M x TILE_N = 64 x 64 tile of C = A B.
// Each step of the K loop stages a TILE_K = 16 slice of A (64 x 16) and of B
// (16 x 64) in shared memory, where every element is read by 16 threads: the
// global-memory traffic per FMA drops 16-fold compared with one thread per
// output reading its own row and column. Thread (tx, ty) = (tid % 16, tid / 16)
// owns the 4 x 4 outputs at rows ty + 16 i and columns tx + 16 j (i, j < 4) and
// keeps them in registers. The strided (not blocked) micro-tile keeps the
// shared-memory reads of a warp to two broadcast rows of As and 16 consecutive
// words of Bs: no bank conflicts. Rows are padded by one word so that loaders
// writing "down a column" of a tile do not all hit the same bank.
//
// The tiling scheme is the classic one (Volkov & Demmel 2008; the CUTLASS and
// "How to optimize a CUDA matmul" write-ups describe the same steps); the code
// here is our own, kept to the kernels/README.md subset so the emulator runs it.
#pragma once

#define TILE_M 64
#define TILE_N 64
#define TILE_K 16
#define TILE_THREADS 256  // (TILE_M / 4) * (TILE_N / 4)
#define TILE_PAD 1

// The same scheme for other tile shapes BM x BN with BM * BN = 16 * TILE_THREADS
// (4 x 4 per thread): the convolutions also use 16 x 256, so that a layer with few
// channels (the paper's first conv has 1 input and 16 output channels) does not
// leave most of a 64-row tile idle. Thread (tx, ty) = (tid % (BN/4), tid / (BN/4))
// owns rows ty + (BM/4) i and columns tx + (BN/4) j.
//
// acc[i][j] += sum_kk As[kk][ty + (BM/4) i] * Bs[kk][tx + (BN/4) j]
template <int BM, int BN>
__device__ __forceinline__ void tile_multiply_accumulate(const float (*As)[BM + TILE_PAD],
                                                         const float (*Bs)[BN + TILE_PAD], int tx, int ty,
                                                         float acc[4][4]) {
#pragma unroll
    for (int kk = 0; kk < TILE_K; kk++) {
        float a[4], b[4];
#pragma unroll
        for (int i = 0; i < 4; i++) a[i] = As[kk][ty + (BM / 4) * i];
#pragma unroll
        for (int j = 0; j < 4; j++) b[j] = Bs[kk][tx + (BN / 4) * j];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];
    }
}
