// Reductions on CUDA, deterministic. Sums: every output element is summed by a fixed set of threads in a
// fixed order (per-thread partial sums over a fixed stride, then a fixed shared-memory tree), with no atomics,
// so a result never depends on scheduling; f32 accumulates in double, as the CPU kernel does. max/min with
// their indices and cumsum: one thread per output column, in the CPU kernel's order (so bit-identical).
#include "core/cuda/common.cuh"
#include "core/cuda/kernels.h"

namespace liandan::cuda_impl {
namespace {

template <class T> struct Acc { using type = double; };  // f32 and f64 both accumulate in double

// Row sums (inner == 1): one block per row.
template <class T>
__global__ void sum_rows_kernel(const T* x, T* out, int64_t outer, int64_t R) {
  __shared__ double part[kThreads];
  for (int64_t o = blockIdx.x; o < outer; o += gridDim.x) {
    const T* row = x + o * R;
    double acc = 0;
    for (int64_t r = threadIdx.x; r < R; r += blockDim.x) acc += double(row[r]);
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
      if (int(threadIdx.x) < s) part[threadIdx.x] += part[threadIdx.x + s];
      __syncthreads();
    }
    if (threadIdx.x == 0) out[o] = T(part[0]);
    __syncthreads();
  }
}

// Column sums (inner > 1): one thread per output element, sequential over R (reads are coalesced
// across neighbouring j).
template <class T>
__global__ void sum_cols_kernel(const T* x, T* out, int64_t outer, int64_t R, int64_t inner) {
  int64_t n = outer * inner;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t o = i / inner, j = i % inner;
    const T* p = x + o * R * inner + j;
    double acc = 0;
    for (int64_t r = 0; r < R; ++r) acc += double(p[r * inner]);
    out[i] = T(acc);
  }
}

// max/min along R with the index of the first extreme element; NaN wins (the CPU kernel's rule).
template <class T, bool IsMax>
__global__ void extreme_kernel(const T* x, T* out, int64_t* idx, int64_t outer, int64_t R, int64_t inner) {
  int64_t n = outer * inner;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const T* p = x + (i / inner) * R * inner + i % inner;
    T best = p[0];
    int64_t bi = 0;
    for (int64_t k = 1; k < R; ++k) {
      T v = p[k * inner];
      bool better = v != v ? (best == best) : (IsMax ? v > best : v < best);
      if (better) { best = v; bi = k; }
    }
    out[i] = best;
    if (idx) idx[i] = bi;
  }
}

// Running sums along R (reverse: from the end), accumulated in T as on the CPU.
template <class T>
__global__ void cumsum_kernel(const T* x, T* y, int64_t outer, int64_t R, int64_t inner, bool reverse) {
  int64_t n = outer * inner;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t base = (i / inner) * R * inner + i % inner;
    T acc = 0;
    for (int64_t k = 0; k < R; ++k) {
      int64_t at = base + (reverse ? R - 1 - k : k) * inner;
      acc += x[at];
      y[at] = acc;
    }
  }
}

}  // namespace

void sum_run(const Tensor& x, int64_t outer, int64_t R, int64_t inner, const Tensor& out) {
  if (out.numel() == 0) return;
  auto launch = [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* px = static_cast<const T*>(x.device_data());
    T* po = static_cast<T*>(out.device_data());
    if (inner == 1) {
      int blocks = int(outer < 65535 * 16 ? outer : 65535 * 16);
      sum_rows_kernel<T><<<blocks, kThreads, 0, stream_of(out)>>>(px, po, outer, R);
    } else {
      sum_cols_kernel<T><<<blocks_for(outer * inner), kThreads, 0, stream_of(out)>>>(px, po, outer, R, inner);
    }
  };
  if (x.dtype() == DType::f32) launch(static_cast<float*>(nullptr));
  else if (x.dtype() == DType::f64) launch(static_cast<double*>(nullptr));
  else LD_FAIL("sum on CUDA: expected f32 or f64, got ", dtype_name(x.dtype()));
  LD_CUDA_LAUNCHED("sum");
}

void extreme_run(const Tensor& x, int64_t outer, int64_t R, int64_t inner, const Tensor& vals, const Tensor& idx,
                 bool is_max) {
  int64_t n = outer * inner;
  if (n == 0) return;
  int64_t* pi = idx.defined() ? static_cast<int64_t*>(idx.device_data()) : nullptr;
  LD_CUDA_FLOAT(x.dtype(), is_max ? "max" : "min", [&] {
    auto* px = static_cast<const scalar_t*>(x.device_data());
    auto* pv = static_cast<scalar_t*>(vals.device_data());
    if (is_max) extreme_kernel<scalar_t, true><<<blocks_for(n), kThreads, 0, stream_of(vals)>>>(px, pv, pi, outer, R, inner);
    else extreme_kernel<scalar_t, false><<<blocks_for(n), kThreads, 0, stream_of(vals)>>>(px, pv, pi, outer, R, inner);
  });
  LD_CUDA_LAUNCHED(is_max ? "max" : "min");
}

void cumsum_run(const Tensor& x, int64_t outer, int64_t R, int64_t inner, const Tensor& y, bool reverse) {
  int64_t n = outer * inner;
  if (n == 0) return;
  LD_CUDA_FLOAT(x.dtype(), "cumsum", [&] {
    cumsum_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream_of(y)>>>(
        static_cast<const scalar_t*>(x.device_data()), static_cast<scalar_t*>(y.device_data()), outer, R, inner, reverse);
  });
  LD_CUDA_LAUNCHED("cumsum");
}

}  // namespace liandan::cuda_impl
