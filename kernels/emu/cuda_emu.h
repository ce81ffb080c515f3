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
//
// Blocks run in sequence, so one static copy of each shared array is enough. A
// thread moves on to the next block without waiting for the others unless the
// kernel called __syncthreads() in this block: without a barrier no thread may read
// what another wrote to shared memory, so nothing can go wrong (README rule 4), and
// element-wise kernels skip a barrier per block.
//
// Each kernel gets two extern "C" entry points (EMU_KERNEL below), called through
// ctypes by tinycnn/backends/emulated.py:
//   int emu_launch_NAME(const unsigned *grid3, const unsigned *block3, void **args)
//       args[i] points at the i-th kernel argument, as in cuLaunchKernel.
//   int emu_signature_NAME(char *codes, int capacity)
//       one type code per parameter ('f' float, 'i' int, 'u' unsigned, 'q' long long,
//       'Q' unsigned long long; upper case: pointer to that type), so the launcher
//       checks every argument list it packs, for the GPU backend as well.
#pragma once

#include <omp.h>

#include <math.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

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

// expf, logf, sqrtf, fmaxf, fminf come from <math.h> as the C functions of the same names.

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

// Runs a whole grid. Returns 0, or -1 when OpenMP would not give a team of
// blockDim threads (OMP_THREAD_LIMIT too small): the kernel is then not run at all.
template <typename... A>
static int emu_launch(void (*kernel)(A...), const unsigned int *grid, const unsigned int *block, void **args) {
    const int nthreads = (int)(block[0] * block[1] * block[2]);
    if (nthreads <= 0 || nthreads > 1024) return -2;
    gridDim = dim3{grid[0], grid[1], grid[2]};
    blockDim = dim3{block[0], block[1], block[2]};
    int status = 0;
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
                        emu_call(kernel, args, std::index_sequence_for<A...>{});
                        // shared memory is reused by the next block: wait for the team
                        if (emu_block_synced) {
#pragma omp barrier
                        }
                    }
        }
    }
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
