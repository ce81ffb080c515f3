// softmax_ce.cu: fused softmax + mean cross-entropy (the loss and its gradient in
// one kernel), and a plain row softmax for evaluation.
//
//   softmax_xent: logits (N, K), labels (N,) int -> loss () , dlogits (N, K)
//       loss    = mean_n [ log sum_k exp(z[n,k] - max_n) - (z[n, y_n] - max_n) ]
//       dlogits = (softmax(z) - onehot(y)) / N
//   softmax_rows: logits (N, K) -> probs (N, K)
//
// The row max is subtracted first so exp never overflows. The loss is written to a
// device scalar, so a training step never waits for the host.
//
// Threads: softmax_xent runs as ONE block of 256 threads: thread t handles rows
// t, t+256, ... (three passes over its row: max, sum of exp, gradient) and keeps a
// running sum of its rows' losses; a fixed-shape tree in shared memory then adds
// the 256 partial sums. The order of every addition is fixed by (N, K) alone, so
// the loss is bitwise reproducible (no atomics). A label outside [0, K) gives a NaN
// loss (the host checks labels it holds; labels already on the device are trusted).
// Napkin math: N*K ~ 128 for paper_net (K = 2): the launch dominates; even N = 10^5
// rows is 3 reads of 0.8 MB. One block is plenty for a batch-sized problem.

#include "step_stats.cuh"

#define XENT_THREADS 256

extern "C" __global__ void __launch_bounds__(XENT_THREADS)
    softmax_xent(float *__restrict__ loss, float *__restrict__ dlogits, const float *__restrict__ logits,
                 const int *__restrict__ labels, int N, int K) {
    __shared__ float partial[XENT_THREADS];
    const int t = threadIdx.x;
    float my_loss = 0.0f;
    for (int n = t; n < N; n += XENT_THREADS) {
        const float *z = logits + (long long)n * K;
        float *dz = dlogits + (long long)n * K;
        float zmax = z[0];
        for (int k = 1; k < K; k++) zmax = fmaxf(zmax, z[k]);
        float sumexp = 0.0f;
        for (int k = 0; k < K; k++) sumexp += expf(z[k] - zmax);
        const int y = labels[n];
        for (int k = 0; k < K; k++) {
            float p = expf(z[k] - zmax) / sumexp;
            if (k == y) p -= 1.0f;
            dz[k] = p / (float)N;  // divide (not * 1/N), as the reference does
        }
        my_loss += (y >= 0 && y < K) ? logf(sumexp) - (z[y] - zmax) : __int_as_float(0x7fc00000);
    }
    partial[t] = my_loss;
    __syncthreads();
    for (int half = XENT_THREADS / 2; half > 0; half /= 2) {
        if (t < half) partial[t] += partial[t + half];
        __syncthreads();
    }
    if (t == 0) loss[0] = partial[0] / (float)N;
}

// One thread per row (K is the number of classes: small).
extern "C" __global__ void __launch_bounds__(256) softmax_rows(float *__restrict__ probs,
                                                               const float *__restrict__ logits, int N, int K) {
    for (int n = blockIdx.x * blockDim.x + threadIdx.x; n < N; n += gridDim.x * blockDim.x) {
        const float *z = logits + (long long)n * K;
        float *p = probs + (long long)n * K;
        float zmax = z[0];
        for (int k = 1; k < K; k++) zmax = fmaxf(zmax, z[k]);
        float sumexp = 0.0f;
        for (int k = 0; k < K; k++) sumexp += expf(z[k] - zmax);
        for (int k = 0; k < K; k++) p[k] = expf(z[k] - zmax) / sumexp;
    }
}

// The training loop's statistics after one step (step_stats.cuh): the loss and the
// correct predictions go to the step's ring entries, unless this step's or an earlier
// step's loss was not finite, in which case the first such step and its loss are
// recorded and nothing else changes (the optimizer kernels then skip their updates).
// One thread: N*K is a batch of logits (128 numbers for paper_net). A prediction is
// the first maximum of its row (as numpy.argmax).
extern "C" __global__ void __launch_bounds__(32)
    train_stats(float *__restrict__ stats, const float *__restrict__ loss, const float *__restrict__ logits,
                const int *__restrict__ labels, int N, int K) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    const int step = (int)stats[STAT_STEPS];
    stats[STAT_STEPS] = (float)(step + 1);
    if (stats[STAT_FIRST_BAD] >= 0.0f) return;
    const float l = loss[0];
    if (!(l - l == 0.0f)) {  // NaN or +-inf (x - x is NaN for both)
        stats[STAT_FIRST_BAD] = (float)step;
        stats[STAT_BAD_LOSS] = l;
        return;
    }
    int correct = 0;
    for (int n = 0; n < N; n++) {
        const float *z = logits + (long long)n * K;
        int best = 0;
        for (int k = 1; k < K; k++)
            if (z[k] > z[best]) best = k;
        correct += best == labels[n];
    }
    stats[STAT_LOSSES + step % STAT_RING] = l;
    stats[STAT_CORRECT + step % STAT_RING] = (float)correct;
}
