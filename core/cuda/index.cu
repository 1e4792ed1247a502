// Indexing on CUDA: index_select (embedding rows), gather and scatter_add along a dim, all deterministic.
// gather/scatter_add: one thread per fiber (every coordinate but `dim`) walks the fiber's K indices in order,
// the CPU kernel's loop, so colliding scatters add in a fixed order. index_select's backward (an embedding's
// weight gradient) adds the output-gradient rows of each selected row in index order: the host sorts the indices
// (a stable counting sort, cheap next to the GEMMs: the indices of a batch) into segments, and a block per
// selected row sums its segment — no atomics, and no [K, n] one-hot matrix.
#include "core/cuda/common.cuh"
#include "core/cuda/kernels.h"

namespace liandan::cuda_impl {
namespace {

template <class T, bool Gather>
__global__ void gather_scatter_kernel(const int64_t* idx, StridedIndex fi, int64_t ik, const T* src, StridedIndex fs,
                                      int64_t sd, T* dst, StridedIndex fd, int64_t dd, int64_t fibers, int64_t K) {
  for (int64_t f = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; f < fibers; f += int64_t(gridDim.x) * blockDim.x) {
    int64_t io = fi.offset(f), so = fs.offset(f), dof = fd.offset(f);
    for (int64_t k = 0; k < K; ++k) {
      int64_t at = idx[io + k * ik];
      if constexpr (Gather) dst[dof + k * dd] = src[so + at * sd];
      else dst[dof + at * dd] += src[so + k * sd];
    }
  }
}

// out[o, k, j] = x[o, idx[k], j]  (x [outer, n, inner], out [outer, K, inner], contiguous)
template <class T>
__global__ void index_select_kernel(const T* x, const int64_t* idx, T* out, int64_t K, int64_t n, int64_t inner,
                                    int64_t total) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    int64_t j = t % inner, k = (t / inner) % K, o = t / (inner * K);
    out[t] = x[(o * n + idx[k]) * inner + j];
  }
}

// dx[o, rows[u], j] = Σ_{p in [starts[u], starts[u+1])} g[o, order[p], j]: block (u, o), threads over j.
template <class T>
__global__ void index_add_rows_kernel(const T* g, const int64_t* order, const int64_t* starts, const int64_t* rows,
                                      T* dx, int64_t K, int64_t n, int64_t inner) {
  int64_t u = blockIdx.x, o = blockIdx.y;
  int64_t p0 = starts[u], p1 = starts[u + 1];
  T* d = dx + (o * n + rows[u]) * inner;
  for (int64_t j = threadIdx.x; j < inner; j += blockDim.x) {
    T s = 0;
    for (int64_t p = p0; p < p1; ++p) s += g[(o * K + order[p]) * inner + j];
    d[j] = s;
  }
}

// The fiber index of t (shape s, strides st) around dim: every dim but `dim`.
StridedIndex fibers_of(const Shape& s, const Shape& st, int64_t dim, const char* op) {
  Shape fs, fst;
  for (int64_t d = 0; d < int64_t(s.size()); ++d)
    if (d != dim) {
      fs.push_back(s[d]);
      fst.push_back(st[d]);
    }
  if (fs.empty()) return strided_index({1}, {0}, op);
  return strided_index(fs, fst, op);
}

}  // namespace

void gather_scatter(bool gather, const Tensor& idx, const Tensor& src, const Tensor& dst, int64_t dim) {
  const char* op = gather ? "gather" : "scatter_add";
  const Shape& s = idx.shape();
  int64_t K = s.empty() ? 1 : s[dim], fibers = K ? idx.numel() / K : 0;
  if (fibers == 0 || K == 0) return;
  StridedIndex fi = fibers_of(s, idx.strides(), dim, op), fs = fibers_of(s, src.strides(), dim, op),
               fd = fibers_of(s, dst.strides(), dim, op);
  int64_t ik = s.empty() ? 0 : idx.strides()[dim], sd = src.dim() ? src.strides()[dim] : 0,
          dd = dst.dim() ? dst.strides()[dim] : 0;
  LD_CUDA_FLOAT(dst.dtype(), op, [&] {
    using T = scalar_t;
    const int64_t* pi = static_cast<const int64_t*>(idx.device_data());
    const T* ps = static_cast<const T*>(src.device_data());
    T* pd = static_cast<T*>(dst.device_data());
    if (gather)
      gather_scatter_kernel<T, true><<<blocks_for(fibers), kThreads, 0, stream_of(dst)>>>(pi, fi, ik, ps, fs, sd, pd, fd,
                                                                                         dd, fibers, K);
    else
      gather_scatter_kernel<T, false><<<blocks_for(fibers), kThreads, 0, stream_of(dst)>>>(pi, fi, ik, ps, fs, sd, pd,
                                                                                          fd, dd, fibers, K);
  });
  LD_CUDA_LAUNCHED(op);
}

void index_select(const Tensor& x, const Tensor& idx, int64_t outer, int64_t n, int64_t inner, const Tensor& out) {
  int64_t K = idx.numel(), total = outer * K * inner;
  if (total == 0) return;
  LD_CUDA_FLOAT(x.dtype(), "index_select", [&] {
    using T = scalar_t;
    index_select_kernel<T><<<blocks_for(total), kThreads, 0, stream_of(out)>>>(
        static_cast<const T*>(x.device_data()), static_cast<const int64_t*>(idx.device_data()),
        static_cast<T*>(out.device_data()), K, n, inner, total);
  });
  LD_CUDA_LAUNCHED("index_select");
}

void index_add_rows(const Tensor& g, const Tensor& order, const Tensor& starts, const Tensor& rows, int64_t outer,
                    int64_t n, int64_t inner, const Tensor& dx) {
  int64_t U = rows.numel(), K = order.numel();
  if (U == 0 || outer == 0 || inner == 0) return;
  LD_CHECK(outer <= 65535, "index_select backward on CUDA: ", outer, " outer rows exceed the grid's 65535");
  LD_CUDA_FLOAT(g.dtype(), "index_select backward", [&] {
    using T = scalar_t;
    index_add_rows_kernel<T><<<dim3(unsigned(U), unsigned(outer)), kThreads, 0, stream_of(dx)>>>(
        static_cast<const T*>(g.device_data()), static_cast<const int64_t*>(order.device_data()),
        static_cast<const int64_t*>(starts.device_data()), static_cast<const int64_t*>(rows.device_data()),
        static_cast<T*>(dx.device_data()), K, n, inner);
  });
  LD_CUDA_LAUNCHED("index_select backward");
}

}  // namespace liandan::cuda_impl
