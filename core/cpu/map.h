#pragma once
// map<K>(f, shape, inputs...) -> new contiguous tensor with out[i] = f(in_0[i], ..., in_{K-1}[i]),
// inputs broadcast to `shape`. The contiguous same-shape case is one flat, vectorizable,
// parallel loop; everything else goes through nd_for_each.
#include <array>

#include "core/cpu/loops.h"
#include "core/tensor.h"

namespace liandan::cpu {

// Strides that read `t` broadcast to `shape` (0 on broadcast dims).
inline Shape bstrides(const Tensor& t, const Shape& shape) {
  Shape st(shape.size(), 0);
  int64_t lead = int64_t(shape.size()) - t.dim();
  for (int64_t d = 0; d < t.dim(); ++d) st[lead + d] = t.shape()[d] == 1 ? 0 : t.strides()[d];
  return st;
}

// Contiguous runs. Separate functions with __restrict pointers: inside a capturing lambda GCC
// cannot prove the output does not alias the captured input pointers and refuses to vectorize.
template <class T, class O, class F>
inline void run1(O* __restrict o, const T* __restrict a, int64_t n, const F& f) {
  for (int64_t i = 0; i < n; ++i) o[i] = f(a[i]);
}
template <class T, class O, class F>
inline void run2(O* __restrict o, const T* __restrict a, const T* __restrict b, int64_t n, const F& f) {
  for (int64_t i = 0; i < n; ++i) o[i] = f(a[i], b[i]);
}
template <class T, class O, class F>
inline void run3(O* __restrict o, const T* __restrict a, const T* __restrict b, const T* __restrict c, int64_t n,
                 const F& f) {
  for (int64_t i = 0; i < n; ++i) o[i] = f(a[i], b[i], c[i]);
}
template <class T, class O, size_t K, class F>
inline void run_contig(O* o, const std::array<const T*, K>& q, int64_t n, const F& f) {
  if constexpr (K == 1) run1(o, q[0], n, f);
  if constexpr (K == 2) run2(o, q[0], q[1], n, f);
  if constexpr (K == 3) run3(o, q[0], q[1], q[2], n, f);
}

template <class T, class O, size_t K, class F>
void map_into(O* out, const Shape& shape, const std::array<const Tensor*, K>& ins, F f) {
  std::array<const T*, K> p;
  bool flat = true;
  for (size_t k = 0; k < K; ++k) {
    ins[k]->check_cpu("map");
    p[k] = static_cast<const T*>(ins[k]->impl()->storage->data) + ins[k]->offset();
    flat &= ins[k]->shape() == shape && ins[k]->is_contiguous();
  }
  int64_t n = shape_numel(shape);
  if (flat) {
    parallel_range(n, [&](int64_t b, int64_t e) {
      std::array<const T*, K> q;
      for (size_t k = 0; k < K; ++k) q[k] = p[k] + b;
      run_contig<T, O, K>(out + b, q, e - b, f);
    });
    return;
  }
  Shape ost = contiguous_strides(shape);
  std::array<Shape, K> st;
  std::array<const int64_t*, K + 1> sp;
  sp[0] = ost.data();
  for (size_t k = 0; k < K; ++k) {
    st[k] = bstrides(*ins[k], shape);
    sp[k + 1] = st[k].data();
  }
  nd_for_each<int(K + 1)>(shape, sp, [&](std::array<int64_t, K + 1> off, std::array<int64_t, K + 1> s, int64_t m) {
    O* o = out + off[0];
    std::array<const T*, K> q;
    bool unit = true;
    for (size_t k = 0; k < K; ++k) {
      q[k] = p[k] + off[k + 1];
      unit &= s[k + 1] == 1;
    }
    if (unit) {
      run_contig<T, O, K>(o, q, m, f);
    } else {
      if constexpr (K == 1) for (int64_t i = 0; i < m; ++i) o[i] = f(q[0][i * s[1]]);
      if constexpr (K == 2) for (int64_t i = 0; i < m; ++i) o[i] = f(q[0][i * s[1]], q[1][i * s[2]]);
      if constexpr (K == 3)
        for (int64_t i = 0; i < m; ++i) o[i] = f(q[0][i * s[1]], q[1][i * s[2]], q[2][i * s[3]]);
    }
  });
}

// New tensor of `shape` and the inputs' dtype T.
template <class T, size_t K, class F>
Tensor map(const Shape& shape, const std::array<const Tensor*, K>& ins, F f) {
  Tensor out = empty(shape, dtype_of<T>::value);
  map_into<T, T, K>(out.data_ptr<T>(), shape, ins, f);
  return out;
}

}  // namespace liandan::cpu
