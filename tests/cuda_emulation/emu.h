#pragma once
// A small CUDA emulator, so that the kernels of core/cuda/ run — and are tested — on machines without a GPU.
// tests/CMakeLists rules copy each kernel file, turn `k<<<grid, block, smem, stream>>>(args)` into
// `(emu::configure(grid, block, smem, stream), emu::kernel(k))(args)` and `extern __shared__ T s[];` into a
// pointer to the block's dynamic shared memory, and compile it as C++ with this header forced in. A launch runs
// the blocks one after another; the threads of a block are coroutines (ucontext) on one OS thread, so
// __syncthreads() and __shfl_down_sync() are barriers that switch between them, `__shared__` variables are
// function statics (one block runs at a time), and registers are the coroutines' stacks.
//
// What this checks: a kernel's indexing, bounds, masking, barriers and arithmetic (in the same order as on a
// GPU, for this schedule). What it cannot: races (threads interleave only at barriers), the compiler's and
// the hardware's behaviour (FMA contraction, fast math), performance. Kernels without a barrier run their
// threads as plain calls after the first thread of the launch finished without one; a barrier reached in
// that mode is an error, never a silent wrong result.
#include <math.h>
#include <ucontext.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <unordered_map>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/cpu/blas.h"
#include "core/half.h"

// Kernel files take the emulator's stand-ins for inline PTX (core/cuda/mma.cuh) where this is defined.
#define LIANDAN_CUDA_EMULATOR 1

// ---------------------------------------------------------------- CUDA C++ keywords
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))

// CUDA's 16-byte vector types (vectorized loads and stores)
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(16) float4 { float x, y, z, w; };

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}  // NOLINT: as CUDA's
};

// ---------------------------------------------------------------- runtime API (what core/cuda/*.cu call)
// One emulated GPU whose memory is host memory, with a capacity (so out-of-memory is testable).
using cudaError_t = int;
constexpr cudaError_t cudaSuccess = 0, cudaErrorMemoryAllocation = 2;
using cudaStream_t = void*;
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };
enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost };
constexpr unsigned cudaStreamNonBlocking = 1;
struct cudaDeviceProp {
  char name[256];
  int major, minor;
  size_t totalGlobalMem;
};
namespace emu {
constexpr size_t kMemoryBytes = size_t(64) << 30;  // the emulated GPU's "memory": 64 GiB of host allocations
inline size_t& used_bytes() {
  static size_t used = 0;
  return used;
}
inline std::unordered_map<void*, size_t>& allocations() {
  static std::unordered_map<void*, size_t> a;
  return a;
}
}  // namespace emu
inline const char* cudaGetErrorString(cudaError_t e) { return e ? "out of memory (emulated)" : "no error (emulated)"; }
inline cudaError_t cudaPeekAtLastError() { return cudaSuccess; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
namespace emu {
// The dynamic shared memory each kernel was allowed beyond the default 48 KB (cudaFuncSetAttribute), by address.
inline std::unordered_map<const void*, int>& shared_opt_in() {
  static std::unordered_map<const void*, int> m;
  return m;
}
}  // namespace emu
template <class F> cudaError_t cudaFuncSetAttribute(F f, cudaFuncAttribute, int bytes) {
  ::emu::shared_opt_in()[reinterpret_cast<const void*>(f)] = bytes;
  return cudaSuccess;
}
inline cudaError_t cudaGetDeviceCount(int* n) { *n = 1; return cudaSuccess; }
inline cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  std::strcpy(p->name, "emulated GPU (tests/cuda_emulation)");
  p->major = 9;
  p->minor = 0;
  p->totalGlobalMem = emu::kMemoryBytes;
  return cudaSuccess;
}
inline cudaError_t cudaMalloc(void** p, size_t bytes) {
  if (bytes > emu::kMemoryBytes - emu::used_bytes()) return cudaErrorMemoryAllocation;
  *p = std::malloc(std::max<size_t>(bytes, 1));
  if (!*p) return cudaErrorMemoryAllocation;
  emu::used_bytes() += bytes;
  emu::allocations()[*p] = bytes;
  return cudaSuccess;
}
inline cudaError_t cudaFree(void* p) {
  auto it = emu::allocations().find(p);
  if (it != emu::allocations().end()) {
    emu::used_bytes() -= it->second;
    emu::allocations().erase(it);
  }
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total_b) {
  *total_b = emu::kMemoryBytes;
  *free_b = emu::kMemoryBytes - emu::used_bytes();
  return cudaSuccess;
}
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) { *s = nullptr; return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind, cudaStream_t) {
  std::memcpy(d, s, n);
  return cudaSuccess;
}
// Pinned host memory is host memory; events complete at once (the emulated stream runs synchronously) and time
// on the host clock.
constexpr unsigned cudaHostAllocDefault = 0;
inline cudaError_t cudaHostAlloc(void** p, size_t bytes, unsigned) {
  *p = std::malloc(std::max<size_t>(bytes, 1));
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
inline cudaError_t cudaFreeHost(void* p) {
  std::free(p);
  return cudaSuccess;
}
struct EmuEvent {
  std::chrono::steady_clock::time_point at;
};
using cudaEvent_t = EmuEvent*;
constexpr unsigned cudaEventDefault = 0, cudaEventDisableTiming = 2;
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) {
  *e = new EmuEvent{std::chrono::steady_clock::now()};
  return cudaSuccess;
}
inline cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  e->at = std::chrono::steady_clock::now();
  return cudaSuccess;
}
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  *ms = std::chrono::duration<float, std::milli>(b->at - a->at).count();
  return cudaSuccess;
}

// ---------------------------------------------------------------- cuBLAS (one GEMM entry point, column-major)
using cublasHandle_t = void*;
enum cublasStatus_t {
  CUBLAS_STATUS_SUCCESS, CUBLAS_STATUS_NOT_INITIALIZED, CUBLAS_STATUS_ALLOC_FAILED, CUBLAS_STATUS_INVALID_VALUE,
  CUBLAS_STATUS_ARCH_MISMATCH, CUBLAS_STATUS_EXECUTION_FAILED, CUBLAS_STATUS_INTERNAL_ERROR, CUBLAS_STATUS_NOT_SUPPORTED
};
enum cublasOperation_t { CUBLAS_OP_N, CUBLAS_OP_T };
enum cudaDataType_t { CUDA_R_32F, CUDA_R_64F, CUDA_R_16BF, CUDA_R_16F };
enum cublasComputeType_t { CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_COMPUTE_64F };
enum cublasGemmAlgo_t { CUBLAS_GEMM_DEFAULT };
inline cublasStatus_t cublasCreate(cublasHandle_t* h) { *h = nullptr; return CUBLAS_STATUS_SUCCESS; }
inline cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
namespace emu {
// A column-major operand of type t as f32 or f64 (the GEMM's working type W): half formats widen exactly.
template <class W>
const W* widened(const void* p, cudaDataType_t t, int64_t n, std::vector<W>& buf) {
  if ((t == CUDA_R_32F && std::is_same_v<W, float>) || (t == CUDA_R_64F && std::is_same_v<W, double>))
    return static_cast<const W*>(p);
  buf.resize(size_t(n));
  for (int64_t e = 0; e < n; ++e) {
    switch (t) {
      case CUDA_R_32F: buf[size_t(e)] = W(static_cast<const float*>(p)[e]); break;
      case CUDA_R_64F: buf[size_t(e)] = W(static_cast<const double*>(p)[e]); break;
      case CUDA_R_16BF: buf[size_t(e)] = W(liandan::bf16_to_float(static_cast<const uint16_t*>(p)[e])); break;
      case CUDA_R_16F: buf[size_t(e)] = W(liandan::f16_to_float(static_cast<const uint16_t*>(p)[e])); break;
    }
  }
  return buf.data();
}

// One column-major GEMM per batch through OpenBLAS: column-major C = op(A)·op(B) is row-major
// Cᵀ = op(B)ᵀ·op(A)ᵀ, where a column-major operand read row-major is its transpose.
template <class W>
void gemm_batched(cublasOperation_t opa, cublasOperation_t opb, int m, int n, int k, double alpha, const void* A,
                  cudaDataType_t ta, int lda, long long sa, const void* B, cudaDataType_t tb, int ldb, long long sb,
                  double beta, void* C, int ldc, long long sc, int batch) {
  // Operand extents in elements: enough to cover every batch (strides may be 0: a broadcast operand).
  int64_t na = (batch - 1) * sa + int64_t(lda) * (opa == CUBLAS_OP_N ? k : m);
  int64_t nb = (batch - 1) * sb + int64_t(ldb) * (opb == CUBLAS_OP_N ? n : k);
  std::vector<W> abuf, bbuf;
  const W* a = widened<W>(A, ta, na, abuf);
  const W* b = widened<W>(B, tb, nb, bbuf);
  for (int64_t q = 0; q < batch; ++q)
    liandan::cpu::gemm<W>(opb == CUBLAS_OP_T, opa == CUBLAS_OP_T, n, m, k, W(alpha), b + q * sb, ldb, a + q * sa, lda,
                          W(beta), static_cast<W*>(C) + q * sc, ldc);
}
}  // namespace emu

// C = α·op(A)·op(B) + β·C per batch, column-major, as cuBLAS; f32 through sgemm (half operands widened exactly),
// f64 through dgemm. TF32 is not emulated: it computes in f32 here.
inline cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t, cublasOperation_t opa, cublasOperation_t opb, int m,
                                                 int n, int k, const void* alpha, const void* A, cudaDataType_t ta,
                                                 int lda, long long sa, const void* B, cudaDataType_t tb, int ldb,
                                                 long long sb, const void* beta, void* C, cudaDataType_t tc, int ldc,
                                                 long long sc, int batch, cublasComputeType_t ct, cublasGemmAlgo_t) {
  if (tc == CUDA_R_64F) {
    emu::gemm_batched<double>(opa, opb, m, n, k, *static_cast<const double*>(alpha), A, ta, lda, sa, B, tb, ldb, sb,
                              *static_cast<const double*>(beta), C, ldc, sc, batch);
  } else if (tc == CUDA_R_16BF || tc == CUDA_R_16F) {  // an f32 result rounded to nearest even (beta = 0 only)
    std::vector<float> f32(size_t((batch - 1) * sc + int64_t(ldc) * n));
    emu::gemm_batched<float>(opa, opb, m, n, k, *static_cast<const float*>(alpha), A, ta, lda, sa, B, tb, ldb, sb, 0.0,
                             f32.data(), ldc, sc, batch);
    uint16_t* out = static_cast<uint16_t*>(C);
    for (int64_t q = 0; q < batch; ++q)
      for (int64_t col = 0; col < n; ++col)
        for (int64_t row = 0; row < m; ++row) {
          int64_t e = q * sc + col * ldc + row;
          out[e] = tc == CUDA_R_16BF ? liandan::float_to_bf16(f32[size_t(e)]) : liandan::float_to_f16(f32[size_t(e)]);
        }
  } else
    emu::gemm_batched<float>(opa, opb, m, n, k, *static_cast<const float*>(alpha), A, ta, lda, sa, B, tb, ldb, sb,
                             *static_cast<const float*>(beta), C, ldc, sc, batch);
  return CUBLAS_STATUS_SUCCESS;
}

// ---------------------------------------------------------------- half types (cuda_bf16.h, cuda_fp16.h)
struct __nv_bfloat16_raw { uint16_t x; };
struct __half_raw { uint16_t x; };
struct __nv_bfloat16 {
  uint16_t x = 0;
  __nv_bfloat16() = default;
  __nv_bfloat16(__nv_bfloat16_raw r) : x(r.x) {}  // NOLINT
};
struct __half {
  uint16_t x = 0;
  __half() = default;
  __half(__half_raw r) : x(r.x) {}  // NOLINT
};
inline float __bfloat162float(__nv_bfloat16 h) { return liandan::bf16_to_float(h.x); }
inline float __half2float(__half h) { return liandan::f16_to_float(h.x); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16_raw{liandan::float_to_bf16(f)}; }
inline __nv_bfloat16 __double2bfloat16(double d) { return __nv_bfloat16_raw{liandan::bfloat16(d).bits}; }
inline __half __float2half_rn(float f) { return __half_raw{liandan::float_to_f16(f)}; }
inline __half __double2half(double d) { return __half_raw{liandan::float16(d).bits}; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.x; }
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline unsigned short __half_as_ushort(__half h) { return h.x; }

// ---------------------------------------------------------------- device math CUDA has and C++ lacks
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
template <class A, class B> auto min(A a, B b) -> std::common_type_t<A, B> { return b < a ? b : a; }
template <class A, class B> auto max(A a, B b) -> std::common_type_t<A, B> { return a < b ? b : a; }

namespace emu {

// The running thread's coordinates and the block's scheduler state.
// Coroutine contexts. On x86-64 a switch is six pushes, a stack swap and six pops (emu_switch below): glibc's
// swapcontext also saves the signal mask with a system call per switch, a hundred times slower, which the
// emulated kernels (millions of switches per test) cannot afford. Elsewhere: ucontext.
#if defined(__x86_64__)
extern "C" void emu_switch(void** save_sp, void* load_sp);
struct Context {
  void* sp = nullptr;
};
inline void switch_to(Context& from, Context& to) { emu_switch(&from.sp, to.sp); }
inline void make_context(Context& c, std::vector<char>& stack, void (*entry)()) {
  auto top = (reinterpret_cast<uintptr_t>(stack.data() + stack.size())) & ~uintptr_t(15);
  void** sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;                               // the entry function's return address: it never returns
  *--sp = reinterpret_cast<void*>(entry);        // where emu_switch's `ret` lands
  for (int i = 0; i < 6; ++i) *--sp = nullptr;   // rbp, rbx, r12–r15 popped by emu_switch
  c.sp = sp;
}
#else
struct Context {
  ucontext_t uc;
};
inline void switch_to(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
inline void make_context(Context& c, std::vector<char>& stack, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack.data();
  c.uc.uc_stack.ss_size = stack.size();
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
}
#endif

struct Thread {
  dim3 thread_idx, block_idx;
  Context ctx;
  std::vector<char> stack;
  enum class State { runnable, at_block_barrier, at_warp_barrier, done } state = State::runnable;
};

struct Grid {
  dim3 grid, block;
  size_t shared_bytes = 0;
};

struct Runtime {
  Grid pending, current;
  std::vector<Thread> threads;
  std::vector<unsigned char> dynamic_shared;
  std::vector<double> shfl_slots;  // one per thread of the block (the lane's value, for __shfl_down_sync)
  std::vector<unsigned char> gather_slots;  // 64 bytes per thread of the block (warp_gather)
  Context scheduler;
  Thread* running = nullptr;
  bool direct = false;        // threads run as plain calls (no barrier seen in the first thread)
  dim3 direct_thread, direct_block;
  std::function<void()> body;
  std::exception_ptr error;
  size_t barriers = 0;  // barriers passed since the launch began
  size_t launches = 0;  // kernels launched since the process began
};

inline Runtime& rt() {
  static Runtime r;
  return r;
}

inline const dim3& thread_idx() { return rt().direct ? rt().direct_thread : rt().running->thread_idx; }
inline const dim3& block_idx() { return rt().direct ? rt().direct_block : rt().running->block_idx; }

// Marks the running thread as waiting at a barrier and switches to the scheduler.
inline void wait_at(Thread::State s) {
  Runtime& r = rt();
  if (r.direct)
    throw std::logic_error("emulated CUDA: a barrier in a kernel whose first thread ran without one (divergent barrier)");
  r.running->state = s;
  ++r.barriers;
  switch_to(r.running->ctx, r.scheduler);
}

inline void syncthreads() { wait_at(Thread::State::at_block_barrier); }
// The lanes of the running warp meet (__syncwarp).
inline void warp_sync() { wait_at(Thread::State::at_warp_barrier); }

// A warp shuffle: every lane publishes its value, the warp meets, each lane reads the value of lane src(lane) of
// its warp (its own where that lane is past the warp's or block's end), and the warp meets again before the slots
// are reused.
template <class T, class Src>
T shfl(T v, Src src) {
  Runtime& r = rt();
  if (r.direct) throw std::logic_error("emulated CUDA: a warp shuffle outside a coroutine block");
  size_t tid = size_t(r.running - r.threads.data());
  r.shfl_slots[tid] = double(v);
  wait_at(Thread::State::at_warp_barrier);
  size_t lane = src(tid % 32), from = (tid & ~size_t(31)) + lane;
  T out = T(r.shfl_slots[lane < 32 && from < r.threads.size() ? from : tid]);
  wait_at(Thread::State::at_warp_barrier);
  return out;
}
template <class T> T shfl_down(T v, unsigned o) { return shfl(v, [o](size_t lane) { return lane + o; }); }

// Every lane of the running warp publishes `mine` and receives all 32 lanes' values (the warp-collective PTX
// instructions below exchange operands this way). Whole warps only.
template <class T>
std::array<T, 32> warp_gather(const T& mine) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 64, "warp_gather: up to 64 bytes a lane");
  Runtime& r = rt();
  if (r.direct) throw std::logic_error("emulated CUDA: a warp-collective instruction outside a coroutine block");
  size_t tid = size_t(r.running - r.threads.data()), first = tid & ~size_t(31);
  if (first + 32 > r.threads.size()) throw std::logic_error("emulated CUDA: a warp-collective instruction in a partial warp");
  if (r.gather_slots.size() < r.threads.size() * 64) r.gather_slots.resize(r.threads.size() * 64);
  std::memcpy(&r.gather_slots[tid * 64], &mine, sizeof(T));
  wait_at(Thread::State::at_warp_barrier);
  std::array<T, 32> all;
  for (size_t l = 0; l < 32; ++l) std::memcpy(&all[l], &r.gather_slots[(first + l) * 64], sizeof(T));
  wait_at(Thread::State::at_warp_barrier);
  return all;
}

// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}: d += A·B for a warp's 16 × 16 A and 16 × 8 B, in the PTX ISA's
// fragment layouts (lane = 4·group + t): A's registers hold (row g, cols 2t, 2t+1), (row g+8, same), (row g,
// cols 2t+8, 2t+9), (row g+8, same), the lower column in the low 16 bits; B's two hold (rows 2t, 2t+1; col g) and
// (rows 2t+8, 2t+9; col g); d holds (row g; cols 2t, 2t+1) and (row g+8; same). Sums in f32, k in order.
inline float half_bits_to_float(uint16_t b, bool bf16) { return bf16 ? liandan::bf16_to_float(b) : liandan::f16_to_float(b); }
// Every lane's A and B registers of an mma.sync (the warp meets).
struct MmaOperands {
  uint32_t a[4], b[2];
};
inline std::array<MmaOperands, 32> gather_mma_operands(const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  return warp_gather(MmaOperands{{a[0], a[1], a[2], a[3]}, {b0, b1}});
}
// The running lane's part of d += A·B (rows g, g+8; columns 2t, 2t+1), k in order.
template <int K>
void mma_lane_result(float (&d)[4], const float (&A)[16][K], const float (&B)[K][8]) {
  int lane = int(thread_idx().x & 31), g = lane >> 2, t = lane & 3;
  for (int e = 0; e < 4; ++e) {
    int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
    float acc = d[e];
    for (int k = 0; k < K; ++k) acc += A[row][k] * B[k][col];
    d[e] = acc;
  }
}
inline void mma_m16n8k16(bool bf16, float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  auto all = gather_mma_operands(a, b0, b1);
  float A[16][16], B[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    int g = lane >> 2, t = lane & 3;
    const MmaOperands& o = all[size_t(lane)];
    for (int h = 0; h < 2; ++h) {  // h: the low (0) or high (1) element of a register
      auto el = [&](uint32_t reg) { return half_bits_to_float(uint16_t(reg >> (16 * h)), bf16); };
      A[g][2 * t + h] = el(o.a[0]);
      A[g + 8][2 * t + h] = el(o.a[1]);
      A[g][2 * t + 8 + h] = el(o.a[2]);
      A[g + 8][2 * t + 8 + h] = el(o.a[3]);
      B[2 * t + h][g] = el(o.b[0]);
      B[2 * t + 8 + h][g] = el(o.b[1]);
    }
  }
  mma_lane_result<16>(d, A, B);
}

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32: d += A·B for a 16 × 8 A and 8 × 8 B of tf32 (f32 bits whose
// low 13 mantissa bits the tensor cores ignore: cleared here). A's registers hold (row g, col t), (row g+8, col t),
// (row g, col t+4), (row g+8, col t+4); B's (row t, col g), (row t+4, col g); d as for m16n8k16. The products of two
// tf32 values are exact in f32; sums in f32, k in order.
inline float tf32_operand(uint32_t bits) {
  bits &= 0xFFFFE000u;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  auto all = gather_mma_operands(a, b0, b1);
  float A[16][8], B[8][8];
  for (int lane = 0; lane < 32; ++lane) {
    int g = lane >> 2, t = lane & 3;
    const MmaOperands& o = all[size_t(lane)];
    A[g][t] = tf32_operand(o.a[0]);
    A[g + 8][t] = tf32_operand(o.a[1]);
    A[g][t + 4] = tf32_operand(o.a[2]);
    A[g + 8][t + 4] = tf32_operand(o.a[3]);
    B[t][g] = tf32_operand(o.b[0]);
    B[t + 4][g] = tf32_operand(o.b[1]);
  }
  mma_lane_result<8>(d, A, B);
}

// cvt.rna.tf32.f32: x rounded to tf32 (10 mantissa bits; to nearest, ties away from zero), as f32 bits.
inline uint32_t cvt_rna_tf32(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  if ((bits & 0x7F800000u) == 0x7F800000u) return bits;  // inf, NaN
  return (bits + 0x1000u) & 0xFFFFE000u;  // sign-magnitude: adding half an ulp of tf32 rounds the magnitude up at ties
}

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8i..8i+7 give the row addresses (8 16-bit elements each)
// of matrix i; register i of lane (4·g + t) receives matrix i's (row g; cols 2t, 2t+1), or with .trans its
// (rows 2t, 2t+1; col g) — the low 16 bits the first.
inline void ldmatrix_x4(uint32_t (&r)[4], const void* row, bool trans) {
  auto rows = warp_gather(static_cast<const uint16_t*>(row));
  int lane = int(thread_idx().x & 31), g = lane >> 2, t = lane & 3;
  for (int i = 0; i < 4; ++i) {
    uint16_t lo, hi;
    if (trans) {
      lo = rows[size_t(8 * i + 2 * t)][g];
      hi = rows[size_t(8 * i + 2 * t + 1)][g];
    } else {
      lo = rows[size_t(8 * i + g)][2 * t];
      hi = rows[size_t(8 * i + g)][2 * t + 1];
    }
    r[i] = uint32_t(lo) | uint32_t(hi) << 16;
  }
}
template <class T> T shfl_xor(T v, unsigned o) { return shfl(v, [o](size_t lane) { return lane ^ o; }); }

inline void trampoline() {
  Runtime& r = rt();
  try {
    r.body();
  } catch (...) {
    if (!r.error) r.error = std::current_exception();
  }
  r.running->state = Thread::State::done;
  switch_to(r.running->ctx, r.scheduler);  // never resumed
}

// LIANDAN_EMULATED_ORDER=reverse runs a grid's blocks, and a block's threads between barriers, last to first. A
// kernel whose result depends on that order has a race (two threads of one barrier interval, or two blocks of one
// launch, touching the same memory with a write), which the forward order alone would hide.
inline bool reversed() {
  static const bool rev = [] {
    const char* e = std::getenv("LIANDAN_EMULATED_ORDER");
    return e && std::string(e) == "reverse";
  }();
  return rev;
}

// Runs one block's threads as coroutines until all are done, releasing barriers when every live thread of the
// block (or of a warp) waits at one.
// A block's dynamic shared memory starts as garbage on a GPU: here every byte is 0xFF (a NaN in f32, f64, bf16 and f16),
// refilled for each block, so a kernel that reads shared memory it did not write computes NaNs the tests see.
inline void poison_shared() { std::fill(rt().dynamic_shared.begin(), rt().dynamic_shared.end(), (unsigned char)0xFF); }

inline void run_block(const dim3& b) {
  Runtime& r = rt();
  poison_shared();
  size_t n = size_t(r.current.block.x) * r.current.block.y * r.current.block.z;
  r.threads.resize(n);
  r.shfl_slots.assign(n, 0.0);
  for (size_t t = 0; t < n; ++t) {
    Thread& th = r.threads[t];
    th.thread_idx = dim3(unsigned(t % r.current.block.x), unsigned(t / r.current.block.x % r.current.block.y),
                         unsigned(t / (size_t(r.current.block.x) * r.current.block.y)));
    th.block_idx = b;
    th.state = Thread::State::runnable;
    th.stack.resize(256 * 1024);
    make_context(th.ctx, th.stack, trampoline);
  }
  for (;;) {
    bool progressed = false;
    for (size_t k = 0; k < n; ++k) {
      Thread& th = r.threads[reversed() ? n - 1 - k : k];
      if (th.state == Thread::State::runnable) {
        r.running = &th;
        switch_to(r.scheduler, th.ctx);
        progressed = true;
      }
    }
    if (progressed) continue;
    size_t live = 0, at_block = 0;
    for (auto& th : r.threads) {
      live += th.state != Thread::State::done;
      at_block += th.state == Thread::State::at_block_barrier;
    }
    if (live == 0) break;
    if (at_block == live) {
      for (auto& th : r.threads) if (th.state == Thread::State::at_block_barrier) th.state = Thread::State::runnable;
      continue;
    }
    bool released = false;
    for (size_t w = 0; w < n; w += 32) {
      size_t end = std::min(n, w + 32), wl = 0, ww = 0;
      for (size_t t = w; t < end; ++t) {
        wl += r.threads[t].state != Thread::State::done;
        ww += r.threads[t].state == Thread::State::at_warp_barrier;
      }
      if (wl > 0 && ww == wl) {
        for (size_t t = w; t < end; ++t) r.threads[t].state = Thread::State::runnable;
        released = true;
      }
    }
    if (!released) throw std::logic_error("emulated CUDA: the block deadlocked at a barrier");
  }
  r.running = nullptr;
}

inline int configure(dim3 grid, dim3 block, size_t shared = 0, cudaStream_t = nullptr) {
  rt().pending = Grid{grid, block, shared};
  return 0;
}

// A launch the GPU would refuse is an error here too: at most 1024 threads per block (x, y <= 1024, z <= 64), a grid
// of at most 2^31 - 1 x 65535 x 65535 blocks, and dynamic shared memory above 48 KB only after
// cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) with bytes >= the launch's, and
// never above the H100's 227 KB per block.
inline void check_launch(const void* fn, const Grid& g) {
  auto fail = [](const std::string& why) { throw std::logic_error("emulated CUDA: invalid launch: " + why); };
  const size_t threads = size_t(g.block.x) * g.block.y * g.block.z;
  if (threads == 0 || threads > 1024 || g.block.x > 1024 || g.block.y > 1024 || g.block.z > 64)
    fail("block " + std::to_string(g.block.x) + "x" + std::to_string(g.block.y) + "x" + std::to_string(g.block.z) +
         " (at most 1024 threads, z <= 64)");
  if (g.grid.x == 0 || g.grid.y == 0 || g.grid.z == 0 || g.grid.x > 2147483647u || g.grid.y > 65535 || g.grid.z > 65535)
    fail("grid " + std::to_string(g.grid.x) + "x" + std::to_string(g.grid.y) + "x" + std::to_string(g.grid.z));
  constexpr size_t kDefault = 48 * 1024, kMax = 227 * 1024;
  if (g.shared_bytes > kMax) fail(std::to_string(g.shared_bytes) + " bytes of dynamic shared memory (at most 227 KB)");
  if (g.shared_bytes > kDefault) {
    auto it = shared_opt_in().find(fn);
    if (it == shared_opt_in().end() || size_t(it->second) < g.shared_bytes)
      fail(std::to_string(g.shared_bytes) + " bytes of dynamic shared memory without cudaFuncSetAttribute(" +
           "MaxDynamicSharedMemorySize) allowing them (above 48 KB)");
  }
}

// emu::kernel(k)(args...) runs the configured grid of k.
template <class... P>
struct Launch {
  void (*fn)(P...);
  template <class... A>
  void operator()(A&&... args) const {
    Runtime& r = rt();
    ++r.launches;
    r.current = r.pending;
    check_launch(reinterpret_cast<const void*>(fn), r.current);
    r.dynamic_shared.assign(r.current.shared_bytes + 16, (unsigned char)0xFF);
    std::tuple<std::decay_t<P>...> a(std::forward<A>(args)...);
    auto f = fn;
    r.body = [f, &a] { std::apply(f, a); };
    r.error = nullptr;
    r.barriers = 0;
    const dim3 g = r.current.grid, bl = r.current.block;
    size_t nthreads = size_t(bl.x) * bl.y * bl.z;
    bool first = true, barrier_free = false;
    const size_t nblocks = size_t(g.x) * g.y * g.z;
    for (size_t k = 0; k < nblocks; ++k) {
      size_t lin = reversed() ? nblocks - 1 - k : k;
      dim3 b(unsigned(lin % g.x), unsigned(lin / g.x % g.y), unsigned(lin / (size_t(g.x) * g.y)));
      if (first) {  // the first block as coroutines; barrier-free kernels then run as plain calls
        run_block(b);
        first = false;
        if (r.error) std::rethrow_exception(r.error);
        barrier_free = r.barriers == 0;
        continue;
      }
      if (!barrier_free) {
        run_block(b);
        if (r.error) std::rethrow_exception(r.error);
        continue;
      }
      r.direct = true;
      r.direct_block = b;
      poison_shared();
      for (size_t k2 = 0; k2 < nthreads; ++k2) {
        size_t t = reversed() ? nthreads - 1 - k2 : k2;
        r.direct_thread = dim3(unsigned(t % bl.x), unsigned(t / bl.x % bl.y), unsigned(t / (size_t(bl.x) * bl.y)));
        try {
          r.body();
        } catch (...) {
          r.direct = false;
          throw;
        }
      }
      r.direct = false;
    }
    r.body = nullptr;
  }
};

template <class... P>
Launch<P...> kernel(void (*fn)(P...)) {
  return Launch<P...>{fn};
}

template <class T>
T* dynamic_shared() {
  return reinterpret_cast<T*>(rt().dynamic_shared.data());
}

}  // namespace emu

#if defined(__x86_64__)
// Defined in every translation unit that includes this header, as a weak symbol (the linker keeps one).
asm(R"(
  .text
  .weak emu_switch
  .type emu_switch, @function
emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_switch, .-emu_switch
)");
#endif

#define threadIdx (::emu::thread_idx())
#define blockIdx (::emu::block_idx())
#define blockDim (::emu::rt().current.block)
#define gridDim (::emu::rt().current.grid)
#define __syncthreads() ::emu::syncthreads()
#define __shfl_down_sync(mask, v, o) ::emu::shfl_down((v), (o))
#define __shfl_xor_sync(mask, v, o) ::emu::shfl_xor((v), (o))
#define __syncwarp(...) ::emu::warp_sync()
// Threads interleave only at barriers, so a read-modify-write is atomic as written.
template <class T>
T atomicOr(T* p, T v) {
  T old = *p;
  *p |= v;
  return old;
}

// The number of kernels launched so far, for tests that count launches (a weak symbol: tests/test_cuda.cpp
// declares it weak too, and finds it null in a binary without the emulator).
extern "C" __attribute__((weak)) size_t liandan_emulated_launches() { return ::emu::rt().launches; }
