// conv2d_forward v2 (shared-memory tiles): a block stages a channel's input tile + halo and 8 filters' taps.
//
// Each input pixel is loaded once per block and then feeds KH*KW taps of 8 filters.
//
//   x (N, C, H, W), w (F, C, KH, KW), b (F,) -> out (N, F, OH, OW)
//   stride 1 only, KH, KW <= V2_MAXK (the harness checks); any pad
//   block (16, 16): a 16x16 tile of output pixels of image n, filters f0 .. f0+7
//   grid (tiles along OW * tiles along OH, ceil(F / 8), N)
// Napkin math (3x3): per channel a block loads 18*18 inputs + 72 weights for
// 16*16*8*9 FMAs, ~5 FMAs per load instead of v1's 0.5; still one output pixel per
// thread (8 accumulators), and 2 C barriers per block.
#define V2_TILE 16
#define V2_FB 8
#define V2_MAXK 5
#define V2_IN (V2_TILE + V2_MAXK - 1)

extern "C" __global__ void __launch_bounds__(256)
    conv2d_forward_v2_smem(float *__restrict__ out, const float *__restrict__ x, const float *__restrict__ w,
                           const float *__restrict__ b, int N, int C, int H, int W, int F, int KH, int KW, int OH,
                           int OW, int stride, int pad) {
    __shared__ float xs[V2_IN][V2_IN];
    __shared__ float ws[V2_FB][V2_MAXK * V2_MAXK];
    const int tiles_w = (OW + V2_TILE - 1) / V2_TILE;
    const int oh0 = (blockIdx.x / tiles_w) * V2_TILE, ow0 = (blockIdx.x % tiles_w) * V2_TILE;
    const int f0 = blockIdx.y * V2_FB, n = blockIdx.z;
    const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * V2_TILE + tx;
    const int in_h = V2_TILE + KH - 1, in_w = V2_TILE + KW - 1;  // stride 1
    const int khw = KH * KW;

    float acc[V2_FB];
#pragma unroll
    for (int j = 0; j < V2_FB; j++) acc[j] = 0.0f;

    for (int c = 0; c < C; c++) {
        const float *xc = x + ((long long)n * C + c) * H * W;
        for (int e = tid; e < in_h * in_w; e += V2_TILE * V2_TILE) {
            const int r = e / in_w, s = e % in_w;
            const int ih = oh0 + r - pad, iw = ow0 + s - pad;
            xs[r][s] = (ih >= 0 && ih < H && iw >= 0 && iw < W) ? xc[(long long)ih * W + iw] : 0.0f;
        }
        for (int e = tid; e < V2_FB * khw; e += V2_TILE * V2_TILE) {
            const int j = e / khw, f = f0 + j;
            ws[j][e % khw] = f < F ? w[((long long)f * C + c) * khw + e % khw] : 0.0f;
        }
        __syncthreads();
        for (int u = 0; u < KH; u++)
            for (int v = 0; v < KW; v++) {
                const float xv = xs[ty + u][tx + v];
#pragma unroll
                for (int j = 0; j < V2_FB; j++) acc[j] += ws[j][u * KW + v] * xv;
            }
        __syncthreads();
    }

    const int oh = oh0 + ty, ow = ow0 + tx;
    if (oh < OH && ow < OW) {
#pragma unroll
        for (int j = 0; j < V2_FB; j++) {
            const int f = f0 + j;
            if (f < F) out[(((long long)n * F + f) * OH + oh) * OW + ow] = acc[j] + b[f];
        }
    }
}
