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
//   int emu_launch_NAME(const unsigned *grid3, const unsigned *block3, void **args, EmuChecks *checks)
//       args[i] points at the i-th kernel argument, as in cuLaunchKernel; checks is
//       NULL (the plain emulator) or the checks to run the launch under (see below).
//   int emu_signature_NAME(char *codes, int capacity)
//       one type code per parameter ('f' float, 'i' int, 'u' unsigned, 'q' long long,
//       'Q' unsigned long long; upper case: pointer to that type), so the launcher
//       checks every argument list it packs, for the GPU backend as well.
//
// The checks (TINYCNN_EMU_CHECK; tinycnn/backends/cuda_emu.py sets them up) make the
// emulator a sanitizer for bugs the plain emulator hides because it runs blocks in
// order, one at a time, on memory it never moves:
//   order   blocks run in reversed or seeded-shuffled order: a result that depends on
//           the order of blocks is a race between blocks
//   init    the kernel's shared arrays (checks->shared) are poisoned (EMU_POISON) when
//           each block starts: a read before a write shows as a NaN or a huge index
//           (device arrays are poisoned by the allocator in Python)
//   bounds  an access to a guard page (every device array ends at one, PROT_NONE)
//           is caught by a SIGSEGV handler, which records it, opens the page so that
//           the thread can go on, and the launch returns -4; an access to unmapped
//           memory gets a scratch page the same way
//   race    between two barriers the threads of a block run one at a time, in
//           reversed or seeded-shuffled order: a block whose result depends on the
//           order its threads run in between barriers (a thread reads what another
//           writes in the same interval) gives another result
// Under any check a block ends with a barrier, even without __syncthreads.
#pragma once

// Headers that have a GPU and an emulated implementation (kernels/mma.cuh) pick the
// emulated one when this is set.
#define TINYCNN_EMU 1

#include <omp.h>

#include <errno.h>
#include <math.h>
#include <semaphore.h>
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

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
// The race check (below) runs the threads of a block one at a time between barriers:
// a thread hands the turn on before it waits at a barrier and waits for its turn after.
static bool emu_serial;
static inline void emu_turn_pass();
static inline void emu_turn_wait();

static inline void emu_barrier() {
    if (emu_serial) emu_turn_pass();
#pragma omp barrier
    if (emu_serial) emu_turn_wait();
}

static inline void __syncthreads() {
    emu_block_synced = true;
    emu_barrier();
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
// The barriers are emu_barrier (an OpenMP barrier), which binds the whole block: like
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
    emu_barrier();
    const int group = (int)(lane >> 2), tig = (int)(lane & 3);  // groupID, threadID_in_group
    float out[4];
    for (int i = 0; i < 4; i++) {
        // C/D: row groupID (c0, c1) or groupID + 8 (c2, c3), col 2 threadID_in_group + (i & 1)
        const int row = group + 8 * (i >> 1), col = 2 * tig + (i & 1);
        float acc = c[i];
        for (int k = 0; k < k_dim; k++) acc += s.a[row][k] * s.b[k][col];
        out[i] = acc;
    }
    emu_barrier();
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

// ------------------------------------------------------------------- checks
// What a launch runs under (NULL: none). Mirrored by EmuCheckConfig in
// tinycnn/backends/cuda_emu_library.py: keep the two in step.
enum { EMU_CHECK_ORDER = 1, EMU_CHECK_INIT = 2, EMU_CHECK_BOUNDS = 4, EMU_CHECK_RACE = 8 };
// The poison of the init check: a float NaN, a BF16 NaN in each half (and a TF32 NaN),
// and as an int a huge positive index.
#define EMU_POISON 0x7FC17FC1u

struct EmuChecks {
    unsigned int flags;                // EMU_CHECK_*
    unsigned int order_seed;           // order: 0 reversed, else shuffled from this seed
    unsigned int race_seed;            // race: the threads' turns, likewise
    unsigned int unused;
    const unsigned long long *shared;  // init: the library's shared arrays, (address, bytes) pairs
    unsigned long long shared_count;
    const unsigned long long *guards;  // bounds: every guard page, sorted
    unsigned long long guard_count;
    unsigned long long page_size;
    // written by the launch (bounds)
    unsigned long long faults;         // accesses caught; the first one:
    unsigned long long fault_address;
    int fault_kind;                    // 1 a guard page, 2 unmapped memory
    int fault_write;                   // 1 a write, 0 a read, -1 not known on this CPU
};

static inline unsigned long long emu_splitmix64(unsigned long long &state) {
    unsigned long long z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// 0..n-1 reversed (seed 0) or shuffled (Fisher-Yates on a splitmix64 stream of the seed).
static void emu_permutation(std::vector<unsigned int> &order, unsigned long long n, unsigned int seed) {
    order.resize(n);
    for (unsigned long long i = 0; i < n; i++) order[i] = (unsigned int)(seed ? i : n - 1 - i);
    unsigned long long state = seed;
    for (unsigned long long i = n; seed && i > 1; i--) std::swap(order[i - 1], order[emu_splitmix64(state) % i]);
}

static void emu_poison(unsigned long long address, unsigned long long bytes) {
    unsigned char *p = reinterpret_cast<unsigned char *>(address);
    unsigned long long i = 0;
    for (; i < bytes && ((address + i) & 3); i++) p[i] = (unsigned char)(EMU_POISON >> (8 * ((address + i) & 3)));
    for (; i + 4 <= bytes; i += 4) *reinterpret_cast<unsigned int *>(p + i) = EMU_POISON;
    for (; i < bytes; i++) p[i] = (unsigned char)(EMU_POISON >> (8 * ((address + i) & 3)));
}

// race: in each barrier interval the threads of the block take turns in the launch's
// order, a semaphore per thread, so a thread sleeps until the one before it hands on.
// The last thread hands on to the first, whose turn then comes after the barrier.
static sem_t emu_turn_sem[1024];
static bool emu_turn_sem_ready;
static unsigned int emu_turn_next[1024];  // the thread whose turn follows thread t's
static thread_local unsigned int emu_turn_self;

static inline void emu_turn_pass() { sem_post(&emu_turn_sem[emu_turn_next[emu_turn_self]]); }

static inline void emu_turn_wait() {
    while (sem_wait(&emu_turn_sem[emu_turn_self]) != 0 && errno == EINTR) {
    }
}

// bounds: the SIGSEGV handler of a checked launch. An access to a guard page opens the
// page (the thread goes on, reading zeros or writing into it), an access to unmapped
// memory maps a scratch page there; both are recorded, and the launch puts the pages
// back and reports the first. Anything else goes to the handler that was there before
// (Python's faulthandler or the default: the process stops), after a line naming the kernel.
#define EMU_MAX_OPENED 4096
static EmuChecks *emu_guard_checks;
static const char *emu_guard_kernel;
static struct sigaction emu_saved_segv;
static unsigned long long emu_opened[EMU_MAX_OPENED];  // page address; bit 0 set: a scratch page
static unsigned int emu_opened_count;

static bool emu_is_guard(const EmuChecks *c, unsigned long long page) {
    unsigned long long lo = 0, hi = c->guard_count;
    while (lo < hi) {
        const unsigned long long mid = (lo + hi) / 2;
        if (c->guards[mid] < page)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < c->guard_count && c->guards[lo] == page;
}

static void emu_say(const char *text) {
    ssize_t ignored = write(2, text, strlen(text));
    (void)ignored;
}

static void emu_segv_handler(int sig, siginfo_t *info, void *context) {
    EmuChecks *c = emu_guard_checks;
    const unsigned long long address = (unsigned long long)(std::uintptr_t)info->si_addr;
    int kind = 0;
    if (c != nullptr) {
        const unsigned long long page = address & ~(c->page_size - 1);
        const unsigned int slot = __atomic_fetch_add(&emu_opened_count, 1u, __ATOMIC_SEQ_CST);
        if (slot < EMU_MAX_OPENED) {
            if (emu_is_guard(c, page)) {
                if (mprotect(reinterpret_cast<void *>(page), c->page_size, PROT_READ | PROT_WRITE) == 0) kind = 1;
            } else if (info->si_code == SEGV_MAPERR) {
#ifdef MAP_FIXED_NOREPLACE
                void *p = mmap(reinterpret_cast<void *>(page), c->page_size, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
                if (p == reinterpret_cast<void *>(page))
                    kind = 2;
                else if (p != MAP_FAILED)
                    munmap(p, c->page_size);  // an old kernel took the address as a hint
#endif
            }
            emu_opened[slot] = kind == 0 ? 0 : (page | (kind == 2 ? 1u : 0u));
        }
    }
    if (kind != 0) {
        int write_access = -1;
#if defined(__x86_64__)
        write_access = (static_cast<ucontext_t *>(context)->uc_mcontext.gregs[REG_ERR] & 2) ? 1 : 0;
#endif
        if (__atomic_fetch_add(&c->faults, 1ull, __ATOMIC_SEQ_CST) == 0) {
            c->fault_address = address;
            c->fault_kind = kind;
            c->fault_write = write_access;
        }
        return;  // the access runs again, now on an open page
    }
    emu_say("cuda-emu (TINYCNN_EMU_CHECK=bounds): kernel ");
    emu_say(emu_guard_kernel ? emu_guard_kernel : "?");
    emu_say(" made an access the check could not catch (a protected page that is not a guard page, or "
            "too many pages); the process stops\n");
    sigaction(SIGSEGV, &emu_saved_segv, nullptr);  // the access faults again, under the old handler
    (void)sig;
}

static void emu_bounds_begin(EmuChecks *c, const char *name) {
    emu_guard_checks = c;
    emu_guard_kernel = name;
    emu_opened_count = 0;
    struct sigaction action;
    std::memset(&action, 0, sizeof action);
    action.sa_sigaction = emu_segv_handler;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    sigaction(SIGSEGV, &action, &emu_saved_segv);
}

static void emu_bounds_end(EmuChecks *c) {
    sigaction(SIGSEGV, &emu_saved_segv, nullptr);
    const unsigned int n = emu_opened_count < EMU_MAX_OPENED ? emu_opened_count : EMU_MAX_OPENED;
    for (unsigned int i = 0; i < n; i++) {
        const unsigned long long entry = emu_opened[i];
        void *page = reinterpret_cast<void *>(entry & ~1ull);
        if (entry == 0) continue;
        if (entry & 1u)
            munmap(page, c->page_size);
        else
            mprotect(page, c->page_size, PROT_NONE);
    }
    emu_guard_checks = nullptr;
}

// A grid under checks (emu_launch with a non-null `checks`); see the top of this file.
template <typename... A>
static int emu_launch_checked(void (*kernel)(A...), const char *name, int nthreads, EmuChecks *c, void **args) {
    const unsigned long long nblocks = (unsigned long long)gridDim.x * gridDim.y * gridDim.z;
    std::vector<unsigned int> blocks;  // the block order; empty: in order
    if (c->flags & EMU_CHECK_ORDER) emu_permutation(blocks, nblocks, c->order_seed);
    const bool race = (c->flags & EMU_CHECK_RACE) != 0, init = (c->flags & EMU_CHECK_INIT) != 0;
    if (race) {
        if (!emu_turn_sem_ready) {
            for (sem_t &s : emu_turn_sem) sem_init(&s, 0, 0);
            emu_turn_sem_ready = true;
        }
        std::vector<unsigned int> turns;  // thread turns[r] runs r-th
        emu_permutation(turns, (unsigned long long)nthreads, c->race_seed);
        for (int r = 0; r < nthreads; r++) emu_turn_next[turns[r]] = turns[(r + 1) % nthreads];
        sem_post(&emu_turn_sem[turns[0]]);  // the first turn of the first block
    }
    const bool bounds = (c->flags & EMU_CHECK_BOUNDS) != 0;
    if (bounds) emu_bounds_begin(c, name);
    emu_serial = race;
    int status = 0;
#pragma omp parallel num_threads(nthreads)
    {
        if (omp_get_num_threads() != nthreads) {
#pragma omp single
            status = -1;
        } else {
            const unsigned int t = (unsigned int)omp_get_thread_num();
            threadIdx = uint3{t % blockDim.x, (t / blockDim.x) % blockDim.y, t / (blockDim.x * blockDim.y)};
            emu_turn_self = t;
            for (unsigned long long i = 0; i < nblocks; i++) {
                const unsigned long long b = blocks.empty() ? i : blocks[i];
                blockIdx = uint3{(unsigned int)(b % gridDim.x), (unsigned int)(b / gridDim.x % gridDim.y),
                                 (unsigned int)(b / ((unsigned long long)gridDim.x * gridDim.y))};
                emu_block_synced = false;
                emu_cp_async_reset();
                if (init && t == 0)
                    for (unsigned long long k = 0; k < c->shared_count; k++)
                        emu_poison(c->shared[2 * k], c->shared[2 * k + 1]);
#pragma omp barrier
                if (race) emu_turn_wait();
                emu_call(kernel, args, std::index_sequence_for<A...>{});
                if (race) emu_turn_pass();
#pragma omp barrier
            }
        }
    }
    emu_serial = false;
    if (race) {  // the last hand-on (to the first thread) is left over
        for (int r = 0; r < nthreads; r++)
            while (sem_trywait(&emu_turn_sem[r]) == 0) {
            }
    }
    if (bounds) emu_bounds_end(c);
    if (status == 0 && emu_fault) status = -3;
    if (status == 0 && c->faults) status = -4;
    return status;
}

// Runs a whole grid. Returns 0, -1 when OpenMP would not give a team of blockDim
// threads (OMP_THREAD_LIMIT too small: the kernel is then not run at all), -3 when
// an emulated instruction faulted (see emu_fault), or -4 when the bounds check caught
// an access (checks->fault_*).
template <typename... A>
static int emu_launch(void (*kernel)(A...), const char *name, const unsigned int *grid, const unsigned int *block,
                      void **args, EmuChecks *checks) {
    const int nthreads = (int)(block[0] * block[1] * block[2]);
    if (nthreads <= 0 || nthreads > 1024) return -2;
    gridDim = dim3{grid[0], grid[1], grid[2]};
    blockDim = dim3{block[0], block[1], block[2]};
    int status = 0;
    emu_fault = 0;
    omp_set_dynamic(0);
    if (checks != nullptr && checks->flags != 0) return emu_launch_checked(kernel, name, nthreads, checks, args);
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
                                     void **args, EmuChecks *checks) {                    \
        return emu_launch(name, #name, grid, block, args, checks);                        \
    }                                                                                     \
    extern "C" int emu_signature_##name(char *codes, int capacity) {                     \
        return emu_signature(name, codes, capacity);                                      \
    }
