// sgemm v1 (naive): one thread per element of C, its row of A and column of B read from global memory.
//
// No reuse between threads.
//
//   C (M, N) = A (M, K) . B (K, N), row-major
//   block (16, 16), grid (ceil(N / 16), ceil(M / 16))
// Napkin math: 2 loads per FMA; consecutive threads (x) share A[m, k] (a broadcast)
// and read consecutive B[k, n]: coalesced, but every operand comes from L1/L2/DRAM.
extern "C" __global__ void __launch_bounds__(256)
    sgemm_v1_naive(float *__restrict__ C, const float *__restrict__ A, const float *__restrict__ B, int M, int N,
                   int K) {
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    const int m = blockIdx.y * blockDim.y + threadIdx.y;
    if (m < M && n < N) {
        float acc = 0.0f;
        for (int k = 0; k < K; k++) acc += A[(long long)m * K + k] * B[(long long)k * N + n];
        C[(long long)m * N + n] = acc;
    }
}
