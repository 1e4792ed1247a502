// softmax / log_softmax on CUDA, forward and backward fused, as core/ops/softmax.cpp. Rows along the last
// dim (inner == 1) get one block each: a max pass, an exp-sum pass and a write pass, each reduced by a
// fixed shared-memory tree (deterministic). Rows along another dim get one thread each (their neighbours
// read neighbouring addresses, so the loads coalesce).
#include <cfloat>

#include "core/cuda/common.cuh"
#include "core/cuda/kernels.h"

namespace liandan::cuda_impl {
namespace {

// Tree reduction of `v` over the block (blockDim.x a power of two); every thread gets the result.
template <bool kMax>
__device__ double block_reduce(double v, double* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (int(threadIdx.x) < s) {
      double o = shared[threadIdx.x + s];
      shared[threadIdx.x] = kMax ? (o > shared[threadIdx.x] || o != o ? o : shared[threadIdx.x]) : shared[threadIdx.x] + o;
    }
    __syncthreads();
  }
  double r = shared[0];
  __syncthreads();
  return r;
}

template <class T>
__global__ void softmax_lastdim_kernel(const T* x, T* y, int64_t rows, int64_t n, bool log) {
  __shared__ double shared[kThreads];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * n;
    T* yr = y + row * n;
    double m = -INFINITY;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) m = (double(xr[i]) > m || xr[i] != xr[i]) ? double(xr[i]) : m;
    m = block_reduce<true>(m, shared);
    if (!isfinite(m)) m = isnan(m) ? m : 0.0;  // all -inf rows give NaN, as torch
    T mt = T(m);
    double sum = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) sum += double(::exp(xr[i] - mt));
    sum = block_reduce<false>(sum, shared);
    if (log) {
      T ls = T(::log(sum));
      for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] = (xr[i] - mt) - ls;
    } else {
      T inv = T(1.0 / sum);
      for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] = ::exp(xr[i] - mt) * inv;
    }
  }
}

template <class T>
__global__ void softmax_strided_kernel(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, bool log) {
  int64_t rows = outer * inner;
  for (int64_t it = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; it < rows; it += int64_t(gridDim.x) * blockDim.x) {
    int64_t o = it / inner, j = it % inner;
    const T* xr = x + o * n * inner + j;
    T* yr = y + o * n * inner + j;
    T m = -INFINITY;
    for (int64_t i = 0; i < n; ++i) m = (xr[i * inner] > m || xr[i * inner] != xr[i * inner]) ? xr[i * inner] : m;
    if (!isfinite(m)) m = isnan(m) ? m : T(0);
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += double(::exp(xr[i * inner] - m));
    if (log) {
      T ls = T(::log(sum));
      for (int64_t i = 0; i < n; ++i) yr[i * inner] = (xr[i * inner] - m) - ls;
    } else {
      T inv = T(1.0 / sum);
      for (int64_t i = 0; i < n; ++i) yr[i * inner] = ::exp(xr[i * inner] - m) * inv;
    }
  }
}

template <class T>
__global__ void softmax_backward_lastdim_kernel(const T* y, const T* g, T* dx, int64_t rows, int64_t n, bool log) {
  __shared__ double shared[kThreads];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T *yr = y + row * n, *gr = g + row * n;
    T* dr = dx + row * n;
    double dot = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) dot += log ? double(gr[i]) : double(gr[i]) * double(yr[i]);
    T d = T(block_reduce<false>(dot, shared));
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) dr[i] = log ? gr[i] - ::exp(yr[i]) * d : yr[i] * (gr[i] - d);
  }
}

template <class T>
__global__ void softmax_backward_strided_kernel(const T* y, const T* g, T* dx, int64_t outer, int64_t n,
                                                int64_t inner, bool log) {
  int64_t rows = outer * inner;
  for (int64_t it = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; it < rows; it += int64_t(gridDim.x) * blockDim.x) {
    int64_t o = it / inner, j = it % inner, base = o * n * inner + j;
    double dot = 0;
    for (int64_t i = 0; i < n; ++i) {
      int64_t k = base + i * inner;
      dot += log ? double(g[k]) : double(g[k]) * double(y[k]);
    }
    T d = T(dot);
    for (int64_t i = 0; i < n; ++i) {
      int64_t k = base + i * inner;
      dx[k] = log ? g[k] - ::exp(y[k]) * d : y[k] * (g[k] - d);
    }
  }
}

int row_blocks(int64_t rows) { return int(rows < 65535 * 16 ? (rows > 0 ? rows : 1) : 65535 * 16); }

template <class F>
void on_float(DType dt, const char* op, F f) {
  if (dt == DType::f32) f(static_cast<float*>(nullptr));
  else if (dt == DType::f64) f(static_cast<double*>(nullptr));
  else LD_FAIL(op, " on CUDA: expected f32 or f64, got ", dtype_name(dt));
}

}  // namespace

void softmax(const Tensor& x, const Tensor& y, int64_t outer, int64_t n, int64_t inner, bool log) {
  if (y.numel() == 0) return;
  on_float(x.dtype(), "softmax", [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* px = static_cast<const T*>(x.device_data());
    T* py = static_cast<T*>(y.device_data());
    if (inner == 1) softmax_lastdim_kernel<T><<<row_blocks(outer), kThreads, 0, stream_of(y)>>>(px, py, outer, n, log);
    else softmax_strided_kernel<T><<<blocks_for(outer * inner), kThreads, 0, stream_of(y)>>>(px, py, outer, n, inner, log);
  });
  LD_CUDA_LAUNCHED("softmax");
}

void softmax_backward(const Tensor& y, const Tensor& g, const Tensor& dx, int64_t outer, int64_t n, int64_t inner,
                      bool log) {
  if (dx.numel() == 0) return;
  on_float(y.dtype(), "softmax backward", [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T *py = static_cast<const T*>(y.device_data()), *pg = static_cast<const T*>(g.device_data());
    T* pd = static_cast<T*>(dx.device_data());
    if (inner == 1)
      softmax_backward_lastdim_kernel<T><<<row_blocks(outer), kThreads, 0, stream_of(dx)>>>(py, pg, pd, outer, n, log);
    else
      softmax_backward_strided_kernel<T><<<blocks_for(outer * inner), kThreads, 0, stream_of(dx)>>>(py, pg, pd, outer, n,
                                                                                                 inner, log);
  });
  LD_CUDA_LAUNCHED("softmax backward");
}

}  // namespace liandan::cuda_impl
