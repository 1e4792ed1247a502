// Reductions on CUDA, deterministic. Sums: every output element is summed by a fixed set of threads in a
// fixed order (per-thread partial sums over a fixed stride, then a fixed shared-memory tree), with no atomics,
// so a result never depends on scheduling; f32 accumulates in double, as the CPU kernel does. max/min with
// their indices and cumsum: one thread per output column, in the CPU kernel's order (so bit-identical).
#include "core/cuda/common.cuh"
#include "core/cuda/kernels.h"

#include <type_traits>

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

// Σx² of many tensors (multi-tensor; core/cuda/common.cuh): stage 1 gives each block a fixed chunk of one tensor
// and writes the chunk's sum (a fixed block tree, in double) to its slot of `partials`; stage 2 has one thread per
// tensor add its chunks' sums in order. Deterministic, no atomics; NaN and Inf propagate.
constexpr int64_t kSumsqChunk = int64_t(kThreads) * 16;

template <class T>
struct SumsqItem {
  const T* x;
  int64_t n, first_partial, out_index;
};

template <class T>
__global__ void sumsq_chunks_kernel(TensorList<SumsqItem<T>> l, double* partials) {
  int k = list_entry(l, blockIdx.x);
  const SumsqItem<T>& a = l.item[k];
  int64_t chunk = blockIdx.x - l.block_start[k], begin = chunk * kSumsqChunk;
  int64_t end = begin + kSumsqChunk < a.n ? begin + kSumsqChunk : a.n;
  double acc = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) acc += double(a.x[i]) * double(a.x[i]);
  acc = block_sum(acc);
  if (threadIdx.x == 0) partials[a.first_partial + chunk] = acc;
}

template <class T>
__global__ void sumsq_total_kernel(TensorList<SumsqItem<T>> l, const double* partials, double* out) {
  int k = threadIdx.x;
  if (k >= l.count) return;
  const SumsqItem<T>& a = l.item[k];
  double acc = 0;
  for (int64_t c = 0; c < l.block_start[k + 1] - l.block_start[k]; ++c) acc += partials[a.first_partial + c];
  out[a.out_index] = acc;
}

template <class T>
void launch_sum_squares(const std::vector<Tensor>& xs, const Tensor& partials, const Tensor& out, int64_t& next_partial) {
  struct Src {  // one of this dtype's tensors and its output slot
    const Tensor* t;
    int64_t index;
  };
  std::vector<Src> srcs;
  for (size_t i = 0; i < xs.size(); ++i)
    if (xs[i].dtype() == (std::is_same_v<T, float> ? DType::f32 : DType::f64)) srcs.push_back({&xs[i], int64_t(i)});
  cudaStream_t stream = stream_of(out);
  double* pp = static_cast<double*>(partials.device_data());
  double* po = static_cast<double*>(out.device_data());
  auto make = [&](const Src& s, SumsqItem<T>& it) -> int64_t {
    int64_t blocks = (s.t->numel() + kSumsqChunk - 1) / kSumsqChunk;
    it = {static_cast<const T*>(s.t->device_data()), s.t->numel(), next_partial, s.index};
    next_partial += blocks;
    return blocks;
  };
  auto launch = [&](const TensorList<SumsqItem<T>>& l, int blocks) {
    sumsq_chunks_kernel<T><<<blocks, kThreads, 0, stream>>>(l, pp);
    sumsq_total_kernel<T><<<1, kListMax, 0, stream>>>(l, pp, po);
    LD_CUDA_LAUNCHED("sum of squares");
  };
  for_lists<SumsqItem<T>>(srcs, make, launch);
}

}  // namespace

void sum_squares(const std::vector<Tensor>& xs, const Tensor& out) {
  int64_t chunks = 0;
  for (const Tensor& x : xs) {
    LD_CHECK(x.device() == out.device() && x.is_contiguous() && (x.dtype() == DType::f32 || x.dtype() == DType::f64),
             "sum of squares on CUDA: expected contiguous f32/f64 tensors on ", out.device().str(), ", got ",
             dtype_name(x.dtype()), " on ", x.device().str());
    chunks += (x.numel() + kSumsqChunk - 1) / kSumsqChunk;
  }
  fill(out, 0.0);  // empty tensors keep 0
  if (chunks == 0) return;
  Tensor partials = empty({chunks}, {DType::f64, out.device()});
  int64_t next = 0;
  launch_sum_squares<float>(xs, partials, out, next);
  launch_sum_squares<double>(xs, partials, out, next);
}

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
