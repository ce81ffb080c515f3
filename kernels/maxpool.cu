// maxpool.cu: 2-D max-pool (ceil or floor mode), forward and backward.
//
//   maxpool2d_forward:  x (N, C, H, W) -> out (N, C, OH, OW), arg (N, C, OH, OW) int
//   maxpool2d_backward: dout (N, C, OH, OW), arg -> dx (N, C, H, W)
//
// OH, OW come from tinycnn/shapes.py (the host); in ceil mode the last window may
// hang over the bottom/right edge and takes the max of the pixels it covers. arg
// is the winner's offset u*size + v inside its window: the FIRST maximum in
// row-major window order (only a strictly larger value replaces it), as in the
// NumPy reference.
//
// The backward pass is a gather, not a scatter: one thread per INPUT pixel visits
// the (at most ceil(size/stride)^2) windows that contain it and adds the gradient
// of those it won. No atomics, each dx written once, and the additions happen in
// the reference's order (window offset u ascending, then v), so dx is bit-identical
// to it and deterministic.
//
// Napkin math (paper_net, first pool at batch 64: 16 x 254^2 -> 127^2 per image):
// forward reads 264 MB and writes 132 MB (out + arg), 3 compares per output:
// bandwidth bound, ~0.13 ms at 3 TB/s. Backward reads dout + arg (132 MB) and
// writes dx (264 MB). Threads: one output (forward) or one input pixel (backward)
// per thread per grid-stride step; consecutive threads take consecutive ow / w.

extern "C" __global__ void __launch_bounds__(256)
    maxpool2d_forward(float *__restrict__ out, int *__restrict__ arg, const float *__restrict__ x, int NC, int H,
                      int W, int OH, int OW, int size, int stride) {
    const int total = NC * OH * OW;
    for (int o = blockIdx.x * blockDim.x + threadIdx.x; o < total; o += gridDim.x * blockDim.x) {
        const int ow = o % OW;
        const int oh = (o / OW) % OH;
        const int nc = o / (OW * OH);
        const float *plane = x + (long long)nc * H * W;
        const int h0 = oh * stride, w0 = ow * stride;
        // the window's top-left pixel always exists (shapes.py drops windows that
        // would start past the edge), so it seeds the maximum
        float best = plane[h0 * W + w0];
        int best_k = 0;
        for (int u = 0; u < size; u++) {
            const int h = h0 + u;
            if (h >= H) break;
            for (int v = 0; v < size; v++) {
                const int w = w0 + v;
                if (w >= W) break;
                const float val = plane[h * W + w];
                if (val > best) {
                    best = val;
                    best_k = u * size + v;
                }
            }
        }
        out[o] = best;
        arg[o] = best_k;
    }
}

extern "C" __global__ void __launch_bounds__(256)
    maxpool2d_backward(float *__restrict__ dx, const float *__restrict__ dout, const int *__restrict__ arg, int NC,
                       int H, int W, int OH, int OW, int size, int stride) {
    const int total = NC * H * W;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        const int w = i % W;
        const int h = (i / W) % H;
        const int nc = i / (W * H);
        // windows oh with oh*stride <= h < oh*stride + size, clipped to [0, OH)
        const int oh_lo = h < size ? 0 : (h - size) / stride + 1;
        const int oh_hi = h / stride < OH - 1 ? h / stride : OH - 1;
        const int ow_lo = w < size ? 0 : (w - size) / stride + 1;
        const int ow_hi = w / stride < OW - 1 ? w / stride : OW - 1;
        const long long base = (long long)nc * OH * OW;
        float acc = 0.0f;
        // oh descending = window offset u = h - oh*stride ascending: the reference's order
        for (int oh = oh_hi; oh >= oh_lo; oh--) {
            for (int ow = ow_hi; ow >= ow_lo; ow--) {
                const int o = oh * OW + ow;
                if (arg[base + o] == (h - oh * stride) * size + (w - ow * stride)) acc += dout[base + o];
            }
        }
        dx[i] = acc;
    }
}
