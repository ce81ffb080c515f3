// cuda_emu.h: the CUDA subset of kernels/README.md, mapped onto the CPU.
//
// The same kernels/*.cu that NVRTC compiles for the GPU are compiled here by a C++
// compiler with OpenMP (g++ -O2 -fopenmp -x c++), so CI without a GPU runs every
// kernel. The mapping:
//
//   CUDA                      here
//   thread of a block         one OpenMP thread of a team of blockDim.x*y*z threads
//   blocks of the grid        run one after another (x fastest, then y, then z)
//   threadIdx, blockIdx       thread_local variables set before the kernel is called
//   blockDim, gridDim         globals, set once per launch
//   __shared__ T a[..]        `static T a[..]`: one copy per kernel, shared by the team
//   __syncthreads()           #pragma omp barrier (orphaned: binds to the team)
//   atomicAdd                 #pragma omp atomic capture
//   __umulhi, __f*_rn         plain C++ with the same IEEE single-precision result
//   mma.sync (kernels/mma.cuh) lanes deposit fragments in a per-warp scratch, barrier,
//                             each lane computes its D entries, barrier
//   cp.async (kernels/mma.cuh) per-thread queue; a copy lands in shared memory only
//                             when cp_async_wait retires its group
//
// Blocks run in sequence, so one static copy of each shared array is enough. A
// thread moves on to the next block without waiting for the others unless the
// kernel called __syncthreads() in this block: without a barrier no thread may read
// what another wrote to shared memory, so nothing can go wrong (README rule 4), and
// element-wise kernels skip a barrier per block.
//
// Each kernel gets two extern "C" entry points (EMU_KERNEL below), called through
// ctypes by tinycnn/backends/cuda_emu_library.py:
//   int emu_launch_NAME(const unsigned *grid3, const unsigned *block3, void **args)
//       args[i] points at the i-th kernel argument, as in cuLaunchKernel.
//   int emu_signature_NAME(char *codes, int capacity)
//       one type code per parameter ('f' float, 'i' int, 'u' unsigned, 'q' long long,
//       'Q' unsigned long long; upper case: pointer to that type), so the launcher
//       checks every argument list it packs, for the GPU backend as well.
#pragma once

// Headers that have a GPU and an emulated implementation (kernels/mma.cuh) pick the
// emulated one when this is set.
#define TINYCNN_EMU 1

#include <omp.h>

#include <math.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

// ------------------------------------------------------------ built-in variables
struct uint3 {
    unsigned int x, y, z;
};
typedef uint3 dim3;

static thread_local uint3 threadIdx;
static thread_local uint3 blockIdx;
static dim3 blockDim;
static dim3 gridDim;
// Set by __syncthreads(); tells the block loop whether this block needs a barrier
// before the team moves on (see above). Every thread of a block sees the same value,
// because __syncthreads() must be reached by all of them or none (README rule 3).
static thread_local bool emu_block_synced;

// --------------------------------------------------------------- qualifiers
#define __global__
#define __device__ static inline
#define __host__
#define __forceinline__
#define __shared__ static
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// __restrict__ is a GCC keyword already.

// ------------------------------------------------------------- vector types
// float4 as the GPU lays it out: 16 bytes, 16-byte aligned, so a float4 load from an
// __align__(16) array is one 128-bit access there and plain struct copy here.
struct alignas(16) float4 {
    float x, y, z, w;
};
// uint4 likewise (kernels/tc_tile.cuh moves four 32-bit tensor-core operand words at once).
struct alignas(16) uint4 {
    unsigned int x, y, z, w;
};

// ---------------------------------------------------------- synchronisation
static inline void __syncthreads() {
    emu_block_synced = true;
#pragma omp barrier
}

static inline float atomicAdd(float *address, float value) {
    float old;
#pragma omp atomic capture
    {
        old = *address;
        *address += value;
    }
    return old;
}

static inline int atomicAdd(int *address, int value) {
    int old;
#pragma omp atomic capture
    {
        old = *address;
        *address += value;
    }
    return old;
}

// ---------------------------------------------------------------- intrinsics
static inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return (unsigned int)(((unsigned long long)a * b) >> 32);
}
// Round-to-nearest single-precision arithmetic. On the GPU these stop the compiler
// from fusing a*b+c into one FMA; x86-64 SSE without -mfma never fuses, so the
// plain operators give the same bits.
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fsqrt_rn(float a) { return std::sqrt(a); }
static inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, sizeof f);
    return f;
}
static inline float __uint_as_float(unsigned int u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}
static inline unsigned int __float_as_uint(float f) {
    unsigned int u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

// expf, logf, sqrtf, fmaxf, fminf come from <math.h> as the C functions of the same names.

// ------------------------------------------------------------------- faults
// Set by an emulated instruction that the GPU would fault on or leave undefined (a
// misaligned cp.async, an mma.sync in a block whose size is not a multiple of 32):
// emu_launch then returns -3 and the launcher raises.
static int emu_fault;

static inline void emu_set_fault() {
#pragma omp atomic write
    emu_fault = 1;
}

// ------------------------------------------ tensor cores: mma.sync (kernels/mma.cuh)
// The warp-collective mma.sync.aligned.m16n8k8 (.tf32) and .m16n8k16 (.bf16), FP32
// accumulation. A warp is 32 consecutive linear thread indices (lane = index % 32), as
// on the GPU. The whole warp's operands are needed to compute any lane's D, so:
//   1. each lane writes its A and B fragment elements into its warp's scratch, at the
//      (row, col) the PTX ISA gives for them ("Matrix Fragments for mma.m16n8k8",
//      9.7.14.5.7, and "... for mma.m16n8k16 with floating point type", 9.7.14.5.8;
//      kernels/mma.cuh has the same layouts for the kernels, and the tests check both
//      against the ISA's formulas);
//   2. a barrier;
//   3. each lane computes its own four D entries from the scratch and its own C (C and
//      D share one layout, so a lane's C entries are exactly the ones it produces);
//   4. a second barrier, so the next mma's deposits cannot overwrite a scratch that
//      another lane is still reading.
// The barriers are `#pragma omp barrier`, which binds the whole block: like
// __syncthreads, an mma must be reached by every thread of the block or by none
// (kernels/README.md). On the GPU only the warp has to agree.
//
// Operands as the hardware reads them: a .tf32 operand is the top 19 bits of its .b32
// register (sign, exponent, 10 mantissa bits); the low 13 bits are ignored, so a raw
// float is truncated (kernels round with to_tf32 first). A .bf16 operand is exact.
// Every product is then exact in FP32 (11 x 11 or 8 x 8 significand bits; only an
// underflow can round it).
//
// Accumulation: d = c, then d += a[row][k] * b[k][col] for k = 0, 1, ..., K-1, each
// addition in FP32 rounded to nearest even. The order and rounding inside one hardware
// MMA are not documented, so tests compare with a bound derived from K and the unit
// roundoff (tinycnn/precision.py: fp32_sum_error_bound), never bit for bit.
struct EmuMmaScratch {
    float a[16][16];  // A, 16 x K (K = 8 or 16)
    float b[16][8];   // B, K x 8
};
static EmuMmaScratch emu_mma_scratch[32];  // one per warp: 1024 threads at most

static inline unsigned int emu_linear_tid() {
    return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}

static inline EmuMmaScratch &emu_mma_warp_scratch(unsigned int &lane) {
    const unsigned int t = emu_linear_tid();
    if ((blockDim.x * blockDim.y * blockDim.z) % 32 != 0) emu_set_fault();  // a partial warp
    lane = t % 32;
    return emu_mma_scratch[t / 32];
}

static inline float emu_tf32_operand(unsigned int reg) { return __uint_as_float(reg & 0xffffe000u); }
static inline float emu_bf16_operand(unsigned int half) { return __uint_as_float((half & 0xffffu) << 16); }

// Steps 2-4 above, once the lane has deposited its A and B elements.
static inline void emu_mma_finish(float d[4], const float c[4], const EmuMmaScratch &s, int k_dim,
                                  unsigned int lane) {
    emu_block_synced = true;  // the block has barriers: the block loop waits for the team
#pragma omp barrier
    const int group = (int)(lane >> 2), tig = (int)(lane & 3);  // groupID, threadID_in_group
    float out[4];
    for (int i = 0; i < 4; i++) {
        // C/D: row groupID (c0, c1) or groupID + 8 (c2, c3), col 2 threadID_in_group + (i & 1)
        const int row = group + 8 * (i >> 1), col = 2 * tig + (i & 1);
        float acc = c[i];
        for (int k = 0; k < k_dim; k++) acc += s.a[row][k] * s.b[k][col];
        out[i] = acc;
    }
#pragma omp barrier
    for (int i = 0; i < 4; i++) d[i] = out[i];  // d may be c: written only now
}

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32
static inline void emu_mma_tf32_m16n8k8(float d[4], const unsigned int a[4], const unsigned int b[2],
                                        const float c[4]) {
    unsigned int lane;
    EmuMmaScratch &s = emu_mma_warp_scratch(lane);
    const int group = (int)(lane >> 2), tig = (int)(lane & 3);
    // A (.tf32): a_i at row groupID + 8 (i % 2), col threadID_in_group + 4 (i / 2)
    for (int i = 0; i < 4; i++) s.a[group + 8 * (i & 1)][tig + 4 * (i >> 1)] = emu_tf32_operand(a[i]);
    // B (.tf32): b_i at row threadID_in_group + 4 i, col groupID
    for (int i = 0; i < 2; i++) s.b[tig + 4 * i][group] = emu_tf32_operand(b[i]);
    emu_mma_finish(d, c, s, 8, lane);
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32. Register r holds elements 2r
// (bits 0-15) and 2r + 1 (bits 16-31).
static inline void emu_mma_bf16_m16n8k16(float d[4], const unsigned int a[4], const unsigned int b[2],
                                         const float c[4]) {
    unsigned int lane;
    EmuMmaScratch &s = emu_mma_warp_scratch(lane);
    const int group = (int)(lane >> 2), tig = (int)(lane & 3);
    // A (.bf16): a_e at row groupID (+8 for e = 2, 3, 6, 7), col 2 threadID_in_group + (e & 1) (+8 for e >= 4)
    for (int e = 0; e < 8; e++)
        s.a[group + 8 * ((e >> 1) & 1)][2 * tig + (e & 1) + 8 * (e >> 2)] =
            emu_bf16_operand(a[e >> 1] >> (16 * (e & 1)));
    // B (.bf16): b_e at row 2 threadID_in_group + (e & 1) (+8 for e >= 2), col groupID
    for (int e = 0; e < 4; e++)
        s.b[2 * tig + (e & 1) + 8 * (e >> 1)][group] = emu_bf16_operand(b[e >> 1] >> (16 * (e & 1)));
    emu_mma_finish(d, c, s, 16, lane);
}

// cvt.rna.tf32.f32, as ptxas lowers it for sm_80 and sm_90 (cuobjdump): a finite x
// gets half a TF32 ulp added to its bits (0x1000; the carry ripples into the exponent,
// which rounds ties away from zero and overflows to infinity), then the low 13 bits are
// cleared. Infinities and NaNs are only masked, so a NaN whose payload lies in the low
// 13 bits alone becomes an infinity. tinycnn/precision.py: round_tf32.
static inline unsigned int emu_cvt_rna_tf32_f32(float x) {
    unsigned int u = __float_as_uint(x);
    if ((u & 0x7fffffffu) < 0x7f800000u) u += 0x1000u;
    return u & 0xffffe000u;
}

// One half of cvt.rn.bf16x2.f32: round to nearest even on the top 16 bits, NaN to the
// canonical 0x7fff (as CUDA's own host conversion does). tinycnn/precision.py: round_bf16.
static inline unsigned int emu_cvt_rn_bf16_f32(float x) {
    const unsigned int u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

// cvt.rn.bf16x2.f32 d, hi, lo: hi in bits 16-31, lo in bits 0-15.
static inline unsigned int emu_cvt_rn_bf16x2_f32(float hi, float lo) {
    return (emu_cvt_rn_bf16_f32(hi) << 16) | emu_cvt_rn_bf16_f32(lo);
}

// --------------------------------------------- asynchronous copies: cp.async
// cp.async.cg.shared.global (16 bytes), cp.async.commit_group, cp.async.wait_group N.
// Each thread keeps its own queue: cp_async_16 reads the 16 source bytes at once but
// does NOT write shared memory; commit closes a group; wait_group N writes the copies of
// every committed group except the N most recent, in issue order. Until then the
// destination keeps its old contents, so a kernel that forgets a wait reads stale data
// here too (on the GPU it would race). wait_group does not touch copies not yet
// committed (PTX: it waits on committed groups only). Other threads see a landed copy
// after a __syncthreads, as on the GPU. What is still queued when the block ends is
// dropped.
struct EmuAsyncCopy {
    void *dst;
    unsigned char bytes[16];
    unsigned long long group;  // 0: not committed yet
};
static thread_local std::vector<EmuAsyncCopy> emu_async_copies;
static thread_local unsigned long long emu_async_groups;  // groups committed in this block

static inline void emu_cp_async_16(void *smem, const void *gmem) {
    if ((reinterpret_cast<std::uintptr_t>(smem) | reinterpret_cast<std::uintptr_t>(gmem)) & 15u) {
        emu_set_fault();  // the GPU requires 16-byte alignment of both addresses
        return;
    }
    EmuAsyncCopy copy;
    copy.dst = smem;
    std::memcpy(copy.bytes, gmem, 16);
    copy.group = 0;
    emu_async_copies.push_back(copy);
}

static inline void emu_cp_async_commit() {
    emu_async_groups++;
    for (EmuAsyncCopy &copy : emu_async_copies)
        if (copy.group == 0) copy.group = emu_async_groups;
}

static inline void emu_cp_async_wait(int pending) {
    if ((unsigned long long)pending >= emu_async_groups) return;
    const unsigned long long last = emu_async_groups - (unsigned long long)pending;  // groups 1..last land
    size_t kept = 0;
    for (size_t i = 0; i < emu_async_copies.size(); i++) {
        const EmuAsyncCopy &copy = emu_async_copies[i];
        if (copy.group != 0 && copy.group <= last)
            std::memcpy(copy.dst, copy.bytes, 16);
        else
            emu_async_copies[kept++] = copy;
    }
    emu_async_copies.resize(kept);
}

static inline void emu_cp_async_reset() {
    emu_async_copies.clear();
    emu_async_groups = 0;
}

// ----------------------------------------------------------------- launching
template <typename T>
struct emu_scalar_code {
    static constexpr char value = '?';
};
template <> struct emu_scalar_code<float> { static constexpr char value = 'f'; };
template <> struct emu_scalar_code<int> { static constexpr char value = 'i'; };
template <> struct emu_scalar_code<unsigned int> { static constexpr char value = 'u'; };
template <> struct emu_scalar_code<long long> { static constexpr char value = 'q'; };
template <> struct emu_scalar_code<unsigned long long> { static constexpr char value = 'Q'; };

template <typename T>
constexpr char emu_type_code() {
    if constexpr (std::is_pointer<T>::value) {
        using P = typename std::remove_cv<typename std::remove_pointer<T>::type>::type;
        char c = emu_scalar_code<P>::value;
        return (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
    } else {
        return emu_scalar_code<typename std::remove_cv<T>::type>::value;
    }
}

template <typename... A>
static int emu_signature(void (*)(A...), char *codes, int capacity) {
    const char all[] = {emu_type_code<A>()..., '\0'};
    int n = (int)sizeof...(A);
    if (n + 1 > capacity) return -1;
    std::memcpy(codes, all, (size_t)n + 1);
    return n;
}

template <typename... A, std::size_t... I>
static inline void emu_call(void (*kernel)(A...), void **args, std::index_sequence<I...>) {
    kernel(*static_cast<A *>(args[I])...);
}

// Runs a whole grid. Returns 0, -1 when OpenMP would not give a team of blockDim
// threads (OMP_THREAD_LIMIT too small: the kernel is then not run at all), or -3 when
// an emulated instruction faulted (see emu_fault).
template <typename... A>
static int emu_launch(void (*kernel)(A...), const unsigned int *grid, const unsigned int *block, void **args) {
    const int nthreads = (int)(block[0] * block[1] * block[2]);
    if (nthreads <= 0 || nthreads > 1024) return -2;
    gridDim = dim3{grid[0], grid[1], grid[2]};
    blockDim = dim3{block[0], block[1], block[2]};
    int status = 0;
    emu_fault = 0;
    omp_set_dynamic(0);
#pragma omp parallel num_threads(nthreads)
    {
        if (omp_get_num_threads() != nthreads) {
#pragma omp single
            status = -1;
        } else {
            const unsigned int t = (unsigned int)omp_get_thread_num();
            threadIdx = uint3{t % blockDim.x, (t / blockDim.x) % blockDim.y, t / (blockDim.x * blockDim.y)};
            for (unsigned int bz = 0; bz < gridDim.z; bz++)
                for (unsigned int by = 0; by < gridDim.y; by++)
                    for (unsigned int bx = 0; bx < gridDim.x; bx++) {
                        blockIdx = uint3{bx, by, bz};
                        emu_block_synced = false;
                        emu_cp_async_reset();
                        emu_call(kernel, args, std::index_sequence_for<A...>{});
                        // shared memory is reused by the next block: wait for the team
                        if (emu_block_synced) {
#pragma omp barrier
                        }
                    }
        }
    }
    if (status == 0 && emu_fault) status = -3;
    return status;
}

#define EMU_KERNEL(name)                                                                  \
    extern "C" int emu_launch_##name(const unsigned int *grid, const unsigned int *block, \
                                     void **args) {                                       \
        return emu_launch(name, grid, block, args);                                       \
    }                                                                                     \
    extern "C" int emu_signature_##name(char *codes, int capacity) {                     \
        return emu_signature(name, codes, capacity);                                      \
    }
