// hardware_facts.cu: the facts about the GPU that the tensor-core kernels rely on and
// cuda-emu models but cannot check, each as a tiny kernel, for tests/test_gpu_hardware.py
// (run on a GPU through CuPy, and through the emulator as a check of the test itself):
//   - mma.sync with .tf32 operands reads the top 19 bits of each 32-bit word and ignores
//     the low 13, so kernels/tc_tile.cuh's tc_tf32_word may leave them set after adding
//     half an ulp (the emulator clears them itself: emu_tf32_operand);
//   - cvt.rna.tf32.f32 and cvt.rn.bf16x2.f32 round as tinycnn/precision.py's
//     round_tf32 / round_bf16 say, NaNs included (the BF16 NaN is 0x7FFF).
// Not part of the backend. Same CUDA subset as kernels/ (kernels/README.md).
#include "../../kernels/tc_tile.cuh"

// D[t] (16 x 8) = A[t] (16 x 8) B[t] (8 x 8) + C[t] for tile t = the block's warp, one
// m16n8k8 mma, with the operand WORDS as given (no conversion): A and B hold the 32-bit
// registers the tensor core receives, row-major. Warps past the last tile run the mma on
// zeros (it is warp-collective, and block-wide in the emulator).
extern "C" __global__ void fact_tf32_mma(const unsigned *A, const unsigned *B, const float *C, float *D,
                                         int tiles) {
    const int lane = threadIdx.x % 32;
    const int t = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const bool live = t < tiles;
    const long long a0 = (long long)t * 16 * 8, b0 = (long long)t * 8 * 8, c0 = (long long)t * 16 * 8;
    unsigned a[4], b[2];
    float acc[4];
    for (int i = 0; i < 4; i++) {
        const FragCoord p = frag_tf32_a(lane, i);
        a[i] = live ? A[a0 + p.row * 8 + p.col] : 0u;
    }
    for (int i = 0; i < 2; i++) {
        const FragCoord p = frag_tf32_b(lane, i);
        b[i] = live ? B[b0 + p.row * 8 + p.col] : 0u;
    }
    for (int i = 0; i < 4; i++) {
        const FragCoord p = frag_acc(lane, i);
        acc[i] = live ? C[c0 + p.row * 8 + p.col] : 0.0f;
    }
    mma_tf32_m16n8k8(acc, a, b, acc);
    if (live)
        for (int i = 0; i < 4; i++) {
            const FragCoord p = frag_acc(lane, i);
            D[c0 + p.row * 8 + p.col] = acc[i];
        }
}

// The operand words of x[i] as the kernels make them: rna[i] = to_tf32 (cvt.rna.tf32.f32),
// word[i] = tc_tf32_word (the tensor-core tiles' TF32 word: on a GPU the low 13 bits
// left as they are), bf16x2[i] = pack_bf16x2(x[i], -x[i]) (x[i] in the low half).
extern "C" __global__ void fact_operand_words(const float *x, unsigned *rna, unsigned *word, unsigned *bf16x2,
                                              int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        rna[i] = to_tf32(x[i]);
        word[i] = tc_tf32_word(x[i]);
        bf16x2[i] = pack_bf16x2(x[i], -x[i]);
    }
}
