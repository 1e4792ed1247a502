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

template <class T, class O, size_t K, class F>
void map_into(O* out, const Shape& shape, const std::array<const Tensor*, K>& ins, F f) {
  std::array<const T*, K> p;
  bool flat = true;
  for (size_t k = 0; k < K; ++k) {
    p[k] = static_cast<const T*>(ins[k]->impl()->storage->data) + ins[k]->offset();
    flat &= ins[k]->shape() == shape && ins[k]->is_contiguous();
  }
  int64_t n = shape_numel(shape);
  if (flat) {
    parallel_range(n, [&](int64_t b, int64_t e) {
      if constexpr (K == 1) for (int64_t i = b; i < e; ++i) out[i] = f(p[0][i]);
      if constexpr (K == 2) for (int64_t i = b; i < e; ++i) out[i] = f(p[0][i], p[1][i]);
      if constexpr (K == 3) for (int64_t i = b; i < e; ++i) out[i] = f(p[0][i], p[1][i], p[2][i]);
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
      if constexpr (K == 1) for (int64_t i = 0; i < m; ++i) o[i] = f(q[0][i]);
      if constexpr (K == 2) for (int64_t i = 0; i < m; ++i) o[i] = f(q[0][i], q[1][i]);
      if constexpr (K == 3) for (int64_t i = 0; i < m; ++i) o[i] = f(q[0][i], q[1][i], q[2][i]);
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
