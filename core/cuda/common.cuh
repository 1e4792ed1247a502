#pragma once
// Shared by the CUDA kernel files: error checks, the current stream, and strided indexing.
#include <cuda_runtime.h>

#include <cstdint>

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

// Maps a linear index over `shape` (row-major) to an element offset through `stride`.
struct StridedIndex {
  int nd = 0;
  int64_t size[kMaxDims];
  int64_t stride[kMaxDims];
  __host__ __device__ int64_t offset(int64_t linear) const {
    int64_t off = 0;
    for (int d = nd - 1; d >= 0; --d) {
      int64_t i = linear % size[d];
      linear /= size[d];
      off += i * stride[d];
    }
    return off;
  }
};

inline StridedIndex strided_index(const Shape& shape, const Shape& strides, const char* op) {
  LD_CHECK(shape.size() <= size_t(kMaxDims), op, ": CUDA kernels take at most ", kMaxDims, " dims, got shape ",
           shape_str(shape));
  StridedIndex s;
  s.nd = int(shape.size());
  for (int d = 0; d < s.nd; ++d) {
    s.size[d] = shape[d];
    s.stride[d] = strides[d];
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
