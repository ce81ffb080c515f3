// conv2d_forward v1 (naive): one thread per output element, operands read from global memory, no reuse.
//
// Every input and weight is loaded straight from global memory; nothing is shared between threads.
//
//   x (N, C, H, W), w (F, C, KH, KW), b (F,) -> out (N, F, OH, OW), any stride and pad
//   grid-stride loop over the N*F*OH*OW outputs, 256 threads per block
// Napkin math: 2 C KH KW FLOPs per output for 2 C KH KW loads (one load per FMA
// operand): bound by the load path, whatever the caches catch. The baseline the
// tiled versions are measured against (bench/variants/run.py).
extern "C" __global__ void __launch_bounds__(256)
    conv2d_forward_v1_naive(float *__restrict__ out, const float *__restrict__ x, const float *__restrict__ w,
                            const float *__restrict__ b, int N, int C, int H, int W, int F, int KH, int KW, int OH,
                            int OW, int stride, int pad) {
    const int total = N * F * OH * OW;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        const int ow = i % OW, oh = (i / OW) % OH, f = (i / (OW * OH)) % F, n = i / (OW * OH * F);
        float acc = b[f];
        for (int c = 0; c < C; c++) {
            const float *xc = x + ((long long)n * C + c) * H * W;
            const float *wc = w + ((long long)f * C + c) * KH * KW;
            for (int u = 0; u < KH; u++) {
                const int ih = oh * stride + u - pad;
                if (ih < 0 || ih >= H) continue;
                for (int v = 0; v < KW; v++) {
                    const int iw = ow * stride + v - pad;
                    if (iw >= 0 && iw < W) acc += xc[(long long)ih * W + iw] * wc[u * KW + v];
                }
            }
        }
        out[i] = acc;
    }
}
