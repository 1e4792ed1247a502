#pragma once
// The CPU loop helpers every kernel uses.
//   parallel_range(n, fn)       splits [0, n) into contiguous chunks over the OpenMP pool
//   nd_for_each<K>(shape, ...)  walks K strided operands over `shape` in row-major order,
//                               calling fn(offsets, inner_strides, run_length) for each run
// Dims that are laid out contiguously for every operand are merged first, so a contiguous or
// simply-broadcast operand costs one long run, and the run's inner loop can vectorize.
#include <omp.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "core/threads.h"

namespace liandan::cpu {

// fn(begin, end) on disjoint chunks; one thread when n is small. Chunking depends only on n and the
// thread count, and every caller writes disjoint outputs, so results never depend on threads.
template <class F>
void parallel_range(int64_t n, F&& fn, int64_t grain = kParallelGrain) {
  if (n <= grain || omp_get_max_threads() == 1 || omp_in_parallel()) {
    if (n > 0) fn(int64_t(0), n);
    return;
  }
#pragma omp parallel
  {
    int nt = omp_get_num_threads(), id = omp_get_thread_num();
    int64_t chunk = (n + nt - 1) / nt;
    int64_t b = std::min(n, id * chunk), e = std::min(n, b + chunk);
    if (b < e) fn(b, e);
  }
}

// Scratch memory from the caching allocator (a training step reuses last step's blocks; a std::vector of
// megabytes would be mapped, page-faulted and zeroed on every call). `holder` keeps it alive. Callable from
// threads.
template <class T>
T* scratch(Tensor& holder, int64_t n) {
  holder = empty({n}, dtype_of<T>::value);
  return holder.data_ptr<T>();
}

template <int K>
struct NdLayout {
  std::vector<int64_t> sizes;                  // outer dims (merged), row-major
  std::vector<std::array<int64_t, K>> strides;  // per outer dim, per operand
  int64_t inner = 1;                           // length of the innermost run
  std::array<int64_t, K> inner_strides{};
};

template <int K>
NdLayout<K> make_layout(const Shape& shape, const std::array<const int64_t*, K>& st) {
  // Drop size-1 dims, then merge a dim into the next when every operand is contiguous across them.
  std::vector<int64_t> sz;
  std::vector<std::array<int64_t, K>> sd;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    std::array<int64_t, K> s;
    for (int k = 0; k < K; ++k) s[k] = st[k][d];
    if (!sz.empty()) {
      bool mergeable = true;
      for (int k = 0; k < K; ++k) mergeable &= sd.back()[k] == s[k] * shape[d];
      if (mergeable) {
        sz.back() *= shape[d];
        sd.back() = s;
        continue;
      }
    }
    sz.push_back(shape[d]);
    sd.push_back(s);
  }
  NdLayout<K> L;
  if (sz.empty()) return L;  // a single element
  L.inner = sz.back();
  L.inner_strides = sd.back();
  sz.pop_back();
  sd.pop_back();
  L.sizes = std::move(sz);
  L.strides = std::move(sd);
  return L;
}

// fn(std::array<int64_t,K> offsets, std::array<int64_t,K> inner_strides, int64_t n)
template <int K, class F>
void nd_for_each(const Shape& shape, const std::array<const int64_t*, K>& st, F&& fn) {
  NdLayout<K> L = make_layout<K>(shape, st);
  int64_t rows = 1;
  for (int64_t s : L.sizes) rows *= s;
  int64_t total = rows * L.inner;
  if (total == 0) return;
  // Split long runs when there are too few rows to keep every thread busy.
  int64_t chunk = L.inner;
  if (total > kParallelGrain && rows < 8) chunk = std::max<int64_t>(2048, (L.inner + 7) / 8);
  int64_t nchunks = (L.inner + chunk - 1) / chunk;
  int64_t items = rows * nchunks;
  auto run_item = [&](int64_t item) {
    int64_t row = item / nchunks, c = item % nchunks;
    std::array<int64_t, K> off{};
    for (int64_t d = int64_t(L.sizes.size()) - 1, r = row; d >= 0; --d) {
      int64_t i = r % L.sizes[d];
      r /= L.sizes[d];
      for (int k = 0; k < K; ++k) off[k] += i * L.strides[d][k];
    }
    int64_t b = c * chunk, n = std::min(chunk, L.inner - b);
    for (int k = 0; k < K; ++k) off[k] += b * L.inner_strides[k];
    fn(off, L.inner_strides, n);
  };
  int64_t grain = std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, chunk));
  parallel_range(items, [&](int64_t b, int64_t e) { for (int64_t i = b; i < e; ++i) run_item(i); },
                 total > kParallelGrain ? std::min(grain, items - 1) : items);
}

}  // namespace liandan::cpu
