// mma.cuh: warp-level tensor-core matrix multiply-accumulate with FP32 accumulation
// (mma.sync, TF32 and BF16 operands), the operand conversions it needs, the fragment
// layouts that say which lane holds which matrix element, and cp.async, the
// global-to-shared copy that bypasses registers and lets loads overlap the math.
//
// On the GPU (sm_80 and newer) every function is one PTX instruction in inline asm.
// Under the emulator (TINYCNN_EMU, defined by emu/cuda_emu.h) the same functions call
// its models of those instructions, so the kernels that use them run in CI:
//   - mma is warp-collective there too: lanes exchange fragments through a per-warp
//     scratch between two block-wide barriers. RULE: an mma must be reached by every
//     thread of the block or by none, like __syncthreads (kernels/README.md), and the
//     block size must be a multiple of 32.
//   - a cp.async copy lands in shared memory only when cp_async_wait retires its
//     group, so a missing wait gives stale data in the emulator as well.
// On a GPU older than sm_80 the header still compiles (a .cu file may hold FP32 kernels
// next to tensor-core ones) and the functions trap: the launcher must not pick such a
// kernel there.
//
// Fragment layouts: PTX ISA, section 9.7.14.5.7 "Matrix Fragments for mma.m16n8k8"
// (.tf32) and 9.7.14.5.8 "Matrix Fragments for mma.m16n8k16 with floating point type"
// (.bf16); in both, groupID = lane >> 2 and threadID_in_group = lane % 4.
#pragma once

#if !defined(TINYCNN_EMU) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define TINYCNN_MMA_TRAP 1
#endif

// ------------------------------------------------------------ fragment layouts
// Where element i of a lane's fragment sits in its matrix. A is row-major M x K, B is
// K x N (".col": each lane's B elements run down one column), C and D are M x N.
struct FragCoord {
    int row, col;
};

// m16n8k8 .tf32, A (16 x 8): four .b32 registers a0..a3, one element each.
__device__ __forceinline__ FragCoord frag_tf32_a(int lane, int i) {
    return FragCoord{(lane >> 2) + 8 * (i & 1), (lane & 3) + 4 * (i >> 1)};
}

// m16n8k8 .tf32, B (8 x 8): two .b32 registers b0, b1.
__device__ __forceinline__ FragCoord frag_tf32_b(int lane, int i) {
    return FragCoord{(lane & 3) + 4 * i, lane >> 2};
}

// m16n8k16 .bf16, A (16 x 16): elements a0..a7, two per register (register e / 2,
// element e in bits 16 (e % 2) .. 16 (e % 2) + 15).
__device__ __forceinline__ FragCoord frag_bf16_a(int lane, int e) {
    return FragCoord{(lane >> 2) + 8 * ((e >> 1) & 1), 2 * (lane & 3) + (e & 1) + 8 * (e >> 2)};
}

// m16n8k16 .bf16, B (16 x 8): elements b0..b3, two per register, as for A.
__device__ __forceinline__ FragCoord frag_bf16_b(int lane, int e) {
    return FragCoord{2 * (lane & 3) + (e & 1) + 8 * (e >> 1), lane >> 2};
}

// The FP32 accumulators C and D (16 x 8) of both shapes: c0..c3 / d0..d3.
__device__ __forceinline__ FragCoord frag_acc(int lane, int i) {
    return FragCoord{(lane >> 2) + 8 * (i >> 1), 2 * (lane & 3) + (i & 1)};
}

// ------------------------------------------------------------------ conversions
// x rounded to TF32 (cvt.rna.tf32.f32: 10 mantissa bits, round to nearest, ties away
// from zero), as the .b32 register an mma operand takes. The tensor core reads only
// these 19 bits; an unrounded float would be truncated. Exact model:
// tinycnn/precision.py round_tf32.
__device__ __forceinline__ unsigned to_tf32(float x) {
#if defined(TINYCNN_EMU)
    return emu_cvt_rna_tf32_f32(x);
#elif defined(TINYCNN_MMA_TRAP)
    (void)x;
    __trap();
    return 0u;
#else
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
#endif
}

// lo and hi rounded to BF16 (round to nearest even) in one register: lo in bits 0-15,
// hi in bits 16-31, the order of the elements in the fragments (a0 low, a1 high).
// Exact model: tinycnn/precision.py round_bf16.
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
#if defined(TINYCNN_EMU)
    return emu_cvt_rn_bf16x2_f32(hi, lo);
#elif defined(TINYCNN_MMA_TRAP)
    (void)lo;
    (void)hi;
    __trap();
    return 0u;
#else
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));  // first source -> upper half
    return r;
#endif
}

// The same roundings as floats, for CUDA-core kernels that must compute what a precision
// mode defines (every product of a convolution or dense layer on rounded operands, see
// tinycnn/precision.py) without a tensor core: conv2d.cu's few-taps weight gradient.
// PREC: 0 FP32 (no rounding), 1 TF32, 2 BF16. The products of two rounded operands are
// exact in FP32, as inside the tensor core.
template <int PREC>
__device__ __forceinline__ float round_operand(float x) {
    if (PREC == 1) return __uint_as_float(to_tf32(x));
    if (PREC == 2) return __uint_as_float(pack_bf16x2(0.0f, x));  // x in the upper half, zeros below
    return x;
}

// ------------------------------------------------------------------------- mma
// d = a b + c on a 16 x 8 x 8 TF32 tile (operands from to_tf32). d may be c.
__device__ __forceinline__ void mma_tf32_m16n8k8(float d[4], const unsigned a[4], const unsigned b[2],
                                                 const float c[4]) {
#if defined(TINYCNN_EMU)
    emu_mma_tf32_m16n8k8(d, a, b, c);
#elif defined(TINYCNN_MMA_TRAP)
    (void)d, (void)a, (void)b, (void)c;
    __trap();
#else
    asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
          "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#endif
}

// d = a b + c on a 16 x 8 x 16 BF16 tile (operands from pack_bf16x2). d may be c.
__device__ __forceinline__ void mma_bf16_m16n8k16(float d[4], const unsigned a[4], const unsigned b[2],
                                                  const float c[4]) {
#if defined(TINYCNN_EMU)
    emu_mma_bf16_m16n8k16(d, a, b, c);
#elif defined(TINYCNN_MMA_TRAP)
    (void)d, (void)a, (void)b, (void)c;
    __trap();
#else
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
          "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#endif
}

// -------------------------------------------------------------------- cp.async
// Copy 16 bytes from global to shared memory asynchronously (cp.async.cg: cached in L2
// only, the operand is streamed once into shared memory). Both addresses 16-byte
// aligned. The data may be read only after cp_async_wait has retired the copy's group
// in this thread, and by other threads after that and a __syncthreads().
__device__ __forceinline__ void cp_async_16(void *smem, const void *gmem) {
#if defined(TINYCNN_EMU)
    emu_cp_async_16(smem, gmem);
#elif defined(TINYCNN_MMA_TRAP)
    (void)smem, (void)gmem;
    __trap();
#else
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(gmem) : "memory");
#endif
}

// Close the group of this thread's cp.async issued since the last commit (possibly
// empty: committing every step keeps the group count, and so wait<N>, uniform).
__device__ __forceinline__ void cp_async_commit() {
#if defined(TINYCNN_EMU)
    emu_cp_async_commit();
#elif defined(TINYCNN_MMA_TRAP)
    __trap();
#else
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}

// Wait until at most N of this thread's committed groups are still in flight
// (cp.async.wait_group N): with one group per stage, wait<1> means "all but the newest
// stage have landed".
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(TINYCNN_EMU)
    emu_cp_async_wait(N);
#elif defined(TINYCNN_MMA_TRAP)
    __trap();
#else
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}
