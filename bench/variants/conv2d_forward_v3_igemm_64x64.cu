// conv2d_forward v3 (implicit GEMM, 64x64 tile, 4x4 per thread in registers), im2col gathered on the fly.
//
// The convolution as the product w (F, C*KH*KW) . cols (C*KH*KW, N*OH*OW), the im2col operand gathered
// from NCHW straight into shared-memory tiles; no im2col buffer. A thread owns the 4x4 outputs at rows
// ty + 16 i and columns tx + 16 j (a strided micro-tile: scalar shared loads), one shared buffer and two
// barriers per K step, and the gather decodes k -> (c, u, v) with a division per element and step.
//
// Self-contained: kernels/conv2d.cu's forward pass as it was before v5 (with its gemm_tile.cuh).
// Napkin math: each staged element feeds 64 FMAs of its block (16 per thread); a
// thread does 16 FMAs per 8 shared loads.

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

template <int BM, int BN>
__device__ __forceinline__ void conv2d_forward_tile(float *__restrict__ out, const float *__restrict__ x,
                                                    const float *__restrict__ w, const float *__restrict__ b, int N,
                                                    int C, int H, int W, int F, int KH, int KW, int OH, int OW,
                                                    int stride, int pad) {
    __shared__ float As[TILE_K][BM + TILE_PAD];  // weights  [k][f]
    __shared__ float Bs[TILE_K][BN + TILE_PAD];  // im2col   [k][p]
    const int KHW = KH * KW, KK = C * KHW, OHW = OH * OW, P = N * OHW;
    const int tid = threadIdx.x, tx = tid % (BN / 4), ty = tid / (BN / 4);
    const int f0 = blockIdx.y * BM, p0 = blockIdx.x * BN;

    // This thread gathers column p of every B tile; decode it once.
    const int b_col = tid % BN, b_row = tid / BN;
    const int p = p0 + b_col;
    const bool p_ok = p < P;
    const int pn = p_ok ? p / OHW : 0, pohw = p_ok ? p % OHW : 0;
    const int ih0 = (pohw / OW) * stride - pad, iw0 = (pohw % OW) * stride - pad;
    const float *xn = x + (long long)pn * C * H * W;

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < KK; k0 += TILE_K) {
        // weights: row-major (F, KK), consecutive threads along k
#pragma unroll
        for (int r = 0; r < (BM * TILE_K) / TILE_THREADS; r++) {
            const int e = tid + r * TILE_THREADS;
            const int mm = e / TILE_K, kk = e % TILE_K;
            const int f = f0 + mm, k = k0 + kk;
            As[kk][mm] = (f < F && k < KK) ? w[(long long)f * KK + k] : 0.0f;
        }
        // im2col gather: rows b_row, b_row + TILE_THREADS / BN, ... of the tile
#pragma unroll
        for (int r = 0; r < (TILE_K * BN) / TILE_THREADS; r++) {
            const int kk = b_row + r * (TILE_THREADS / BN);
            const int k = k0 + kk;
            float val = 0.0f;
            if (p_ok && k < KK) {
                const int c = k / KHW, uv = k % KHW;
                const int ih = ih0 + uv / KW, iw = iw0 + uv % KW;
                if (ih >= 0 && ih < H && iw >= 0 && iw < W) val = xn[((long long)c * H + ih) * W + iw];
            }
            Bs[kk][b_col] = val;
        }
        __syncthreads();
        tile_multiply_accumulate<BM, BN>(As, Bs, tx, ty, acc);
        __syncthreads();
    }

#pragma unroll
    for (int j = 0; j < 4; j++) {
        const int pj = p0 + tx + (BN / 4) * j;
        if (pj >= P) continue;
        const int n = pj / OHW, ohw = pj % OHW;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int f = f0 + ty + (BM / 4) * i;
            if (f < F) out[((long long)n * F + f) * OHW + ohw] = acc[i][j] + b[f];
        }
    }
}

extern "C" __global__ void __launch_bounds__(TILE_THREADS)
    conv2d_forward_igemm_64x64(float *__restrict__ out, const float *__restrict__ x, const float *__restrict__ w,
                              const float *__restrict__ b, int N, int C, int H, int W, int F, int KH, int KW, int OH,
                              int OW, int stride, int pad) {
    conv2d_forward_tile<64, 64>(out, x, w, b, N, C, H, W, F, KH, KW, OH, OW, stride, pad);
}
