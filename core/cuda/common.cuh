#pragma once
// Shared by the CUDA kernel files: error checks, the current stream, and strided indexing.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <type_traits>
#include <vector>

#include "core/device.h"
#include "core/error.h"

#define LD_CUDA_CHECK(expr)                                                                             \
  do {                                                                                                 \
    cudaError_t err_ = (expr);                                                                         \
    LD_CHECK(err_ == cudaSuccess, "CUDA error in ", #expr, ": ", cudaGetErrorString(err_));            \
  } while (0)

// After a kernel launch: a bad launch configuration shows up here, not at the next synchronize.
#define LD_CUDA_LAUNCHED(name) LD_CHECK(cudaPeekAtLastError() == cudaSuccess, "CUDA kernel ", name, ": ", \
                                        cudaGetErrorString(cudaGetLastError()))

// Element conversions (copies between dtypes; half-format operands computed in float). Half formats widen to
// float (exact) and narrow with round-to-nearest-even, from f64 directly (no double rounding), as core/half.h.
namespace liandan::cuda_impl {
template <class S> __device__ S widen(S v) { return v; }
__device__ inline float widen(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ inline float widen(__half v) { return __half2float(v); }

template <class D, class W> __device__ D narrow(W w) {
  if constexpr (std::is_same_v<D, __nv_bfloat16>) {
    if constexpr (std::is_same_v<W, float>) return __float2bfloat16_rn(w);
    else return __double2bfloat16(double(w));
  } else if constexpr (std::is_same_v<D, __half>) {
    if constexpr (std::is_same_v<W, float>) return __float2half_rn(w);
    else return __double2half(double(w));
  } else {
    return D(w);
  }
}

}  // namespace liandan::cuda_impl

namespace liandan::cuda_impl {
// Calls f(T()) with T the element type of dt: float, double, __nv_bfloat16 or __half; others are an error.
template <class F>
void with_float_type(DType dt, const char* op, F f) {
  switch (dt) {
    case DType::f32: return f(float());
    case DType::f64: return f(double());
    case DType::bf16: return f(__nv_bfloat16());
    case DType::f16: return f(__half());
    default: LD_FAIL(op, " on CUDA: expected a floating dtype, got ", dtype_name(dt));
  }
}
}  // namespace liandan::cuda_impl

// Runs BODY with scalar_t = float or double; other dtypes are an error naming the op.
#define LD_CUDA_FLOAT(DT, OPNAME, ...)                                                              \
  [&] {                                                                                             \
    switch (DT) {                                                                                   \
      case DType::f32: { using scalar_t = float; return __VA_ARGS__(); }                             \
      case DType::f64: { using scalar_t = double; return __VA_ARGS__(); }                            \
      default: LD_FAIL(OPNAME, " on CUDA: expected f32 or f64, got ", dtype_name(DT));               \
    }                                                                                               \
  }()

namespace liandan::cuda_impl {

cudaStream_t stream_of(const Tensor& t);  // the one stream of t's device (core/cuda/backend.cu)

constexpr int kMaxDims = 8;
constexpr int kThreads = 256;

inline int blocks_for(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  return int(b < 65535 * 16 ? (b > 0 ? b : 1) : 65535 * 16);  // grid-stride loops cover the rest
}

// The sum / maximum of v over the 32 lanes of a warp, returned to every lane. A butterfly: lanes i and i^o add
// the same two values (commutative), so every lane holds the same bits and the order is fixed (deterministic).
// The maximum skips NaN (NaN only when every lane holds one), the same on every lane.
template <class T>
__device__ inline T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <class T>
__device__ inline T warp_max(T v) {
  for (int o = 16; o > 0; o >>= 1) {
    T w = __shfl_xor_sync(0xffffffffu, v, o);
    v = (w > v || v != v) ? w : v;
  }
  return v;
}

// The sum of v over the block, returned to every thread; a fixed shuffle-then-shared tree (deterministic).
// blockDim.x must be a multiple of 32 (kThreads is).
__device__ inline double block_sum(double v) {
  __shared__ double warp_sums[32];
  __shared__ double total;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // an earlier call may still be reading warp_sums / total
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < int(blockDim.x >> 5) ? warp_sums[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if (lane == 0) total = v;
  }
  __syncthreads();
  return total;
}

// Multi-tensor kernels (optimizer updates, sums of squares): the tensors travel in the kernel's arguments (at most
// 4 KiB) as a TensorList, each with a run of the grid's blocks; a block finds its tensor by scanning the runs'
// starts. A model's ~150 parameters then take a handful of launches instead of ~150.
constexpr int kListMax = 32;  // tensors per launch: 32 Adam f64 entries are 3.7 KiB of the 4 KiB of arguments

template <class Item>
struct TensorList {
  int count = 0;
  int block_start[kListMax + 1];  // the blocks of entry k are [block_start[k], block_start[k + 1])
  Item item[kListMax];
};

template <class Item>
__device__ inline int list_entry(const TensorList<Item>& l, int block) {
  int k = 0;
  while (k + 1 < l.count && block >= l.block_start[k + 1]) ++k;
  return k;
}

// Fills TensorLists from `ts` and launches one kernel per full list: make(t, item) fills an entry and returns
// its block count; launch(list, blocks) runs the kernel.
template <class Item, class Src, class Make, class Launch>
void for_lists(const std::vector<Src>& ts, Make make, Launch launch) {
  TensorList<Item> l;
  l.block_start[0] = 0;
  for (const Src& t : ts) {
    int64_t blocks = make(t, l.item[l.count]);
    if (blocks == 0) continue;
    LD_CHECK(blocks < (int64_t(1) << 30), "CUDA multi-tensor kernel: a tensor of ", blocks, " blocks is too large");
    if (l.count > 0 && int64_t(l.block_start[l.count]) + blocks >= (int64_t(1) << 30)) {
      launch(l, l.block_start[l.count]);
      l.item[0] = l.item[l.count];
      l.count = 0;
    }
    l.block_start[l.count + 1] = l.block_start[l.count] + int(blocks);
    if (++l.count == kListMax) {
      launch(l, l.block_start[l.count]);
      l.count = 0;
    }
  }
  if (l.count > 0) launch(l, l.block_start[l.count]);
}

// A multi-tensor kernel's entries (one parameter each: Entry's Tensor fields `fields`) all on the first entry's
// parameter's device and in its dtype, contiguous, and that dtype f32 or f64; returns it. Undefined tensors (an
// absent optional slot) are skipped.
template <class Entry>
DType checked_list_dtype(const std::vector<Entry>& ts, const char* op, std::initializer_list<Tensor Entry::*> fields) {
  const Tensor& p0 = ts[0].p;
  for (const Entry& e : ts)
    for (Tensor Entry::*f : fields) {
      const Tensor& t = e.*f;
      if (!t.defined()) continue;
      LD_CHECK(t.device() == p0.device() && t.dtype() == p0.dtype() && t.is_contiguous(), op, " on CUDA: a tensor on ",
               t.device().str(), " / ", dtype_name(t.dtype()), " (contiguous: ", t.is_contiguous(),
               ") among parameters on ", p0.device().str(), " / ", dtype_name(p0.dtype()));
    }
  LD_CHECK(p0.dtype() == DType::f32 || p0.dtype() == DType::f64, op, " on CUDA: expected f32 or f64 parameters, got ",
           dtype_name(p0.dtype()));
  return p0.dtype();
}

// Maps a linear index over `shape` (row-major) to an element offset through `stride`. Every element of every
// copy, cast and broadcast op pays for this, so strided_index coalesces the dims first (a contiguous operand is one
// run), one dim needs no division, and indices below 2^31 divide in 32 bits (a 64-bit division is a long
// instruction sequence on a GPU, several times a 32-bit one).
struct StridedIndex {
  int nd = 0;
  bool small = true;  // every size below 2^31
  int64_t size[kMaxDims];
  int64_t stride[kMaxDims];
  __host__ __device__ int64_t offset(int64_t linear) const {
    if (nd == 1) return linear * stride[0];
    int64_t off = 0;
    if (small && linear < (int64_t(1) << 31)) {
      uint32_t l = uint32_t(linear);
      for (int d = nd - 1; d >= 0; --d) {
        uint32_t sz = uint32_t(size[d]), q = l / sz;
        off += int64_t(l - q * sz) * stride[d];
        l = q;
      }
      return off;
    }
    for (int d = nd - 1; d >= 0; --d) {
      int64_t i = linear % size[d];
      linear /= size[d];
      off += i * stride[d];
    }
    return off;
  }
};

// Drops size-1 dims and merges neighbours that are one run (stride[d] = stride[d+1]·size[d+1]): the same offset for
// every linear index (the merged dims' index is the same row-major number), with fewer divisions per element.
inline void coalesce_dims(Shape& shape, Shape& strides) {
  Shape sh, st;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    if (!sh.empty() && st.back() == strides[d] * shape[d]) {
      sh.back() *= shape[d];
      st.back() = strides[d];
    } else {
      sh.push_back(shape[d]);
      st.push_back(strides[d]);
    }
  }
  if (sh.empty()) sh = {1}, st = {0};  // a single element
  shape = sh;
  strides = st;
}

inline StridedIndex strided_index(Shape shape, Shape strides, const char* op) {
  coalesce_dims(shape, strides);
  LD_CHECK(shape.size() <= size_t(kMaxDims), op, ": CUDA kernels take at most ", kMaxDims, " dims, got shape ",
           shape_str(shape));
  StridedIndex s;
  s.nd = int(shape.size());
  for (int d = 0; d < s.nd; ++d) {
    s.size[d] = shape[d];
    s.stride[d] = strides[d];
    s.small = s.small && shape[d] < (int64_t(1) << 31);
  }
  return s;
}

// Strides reading `t` broadcast to `shape` (0 on broadcast dims).
inline Shape broadcast_strides(const Tensor& t, const Shape& shape) {
  Shape st(shape.size(), 0);
  int64_t lead = int64_t(shape.size()) - t.dim();
  for (int64_t d = 0; d < t.dim(); ++d) st[lead + d] = t.shape()[d] == 1 ? 0 : t.strides()[d];
  return st;
}

}  // namespace liandan::cuda_impl
