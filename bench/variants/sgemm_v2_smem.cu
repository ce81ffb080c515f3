// sgemm v2 (shared-memory tiles): 16x16 tiles of A and B staged per K step, one output per thread.
//
// Each staged element is read by 16 threads.
//
//   C (M, N) = A (M, K) . B (K, N), row-major
//   block (16, 16): one element of C per thread; grid (ceil(N / 16), ceil(M / 16))
// Napkin math: global traffic per FMA drops 16-fold from v1, but each FMA still
// needs two shared-memory loads: bound by shared-memory bandwidth, not the FMA units.
#define V2_T 16

extern "C" __global__ void __launch_bounds__(256)
    sgemm_v2_smem(float *__restrict__ C, const float *__restrict__ A, const float *__restrict__ B, int M, int N,
                  int K) {
    __shared__ float As[V2_T][V2_T + 1];
    __shared__ float Bs[V2_T][V2_T + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int n = blockIdx.x * V2_T + tx, m = blockIdx.y * V2_T + ty;
    float acc = 0.0f;
    for (int k0 = 0; k0 < K; k0 += V2_T) {
        As[ty][tx] = (m < M && k0 + tx < K) ? A[(long long)m * K + k0 + tx] : 0.0f;
        Bs[ty][tx] = (k0 + ty < K && n < N) ? B[(long long)(k0 + ty) * N + n] : 0.0f;
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < V2_T; kk++) acc += As[ty][kk] * Bs[kk][tx];
        __syncthreads();
    }
    if (m < M && n < N) C[(long long)m * N + n] = acc;
}
