// softmax and log_softmax along one dim: fused, max-subtracted (stable for any finite input),
// one row per loop iteration. Backward passes are fused too:
//   softmax:     dx = y * (g - sum(g * y))
//   log_softmax: dx = g - exp(y) * sum(g)
#include <cmath>
#include <limits>

#include "core/cpu/loops.h"
#include "core/cpu/vecmath.h"
#include "core/device.h"
#include "core/ops.h"

namespace liandan {

namespace {

struct Rows {
  int64_t outer, n, inner;  // contiguous [outer, n, inner], reduce over n
};

Rows rows_of(const Tensor& x, int64_t d) {
  Rows r{1, x.dim() ? x.shape()[d] : 1, 1};
  for (int64_t i = 0; i < x.dim(); ++i) {
    if (i < d) r.outer *= x.shape()[i];
    if (i > d) r.inner *= x.shape()[i];
  }
  return r;
}

// Runs fn(row_index, stride) over every row (outer x inner of them) in parallel.
template <class F>
void for_rows(Rows r, F fn) {
  cpu::parallel_range(r.outer * r.inner, [&](int64_t b, int64_t e) {
    for (int64_t it = b; it < e; ++it) {
      int64_t o = it / r.inner, j = it % r.inner;
      fn(o * r.n * r.inner + j, r.inner);
    }
  }, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, r.n)));
}

// y = exp(x - m), returning sum(y): one pass, 16 lanes (vectorizes, fixed order).
template <class T>
T exp_shifted_sum(const T* __restrict x, T* __restrict y, T m, int64_t n) {
  T acc[cpu::kLanes] = {};
  int64_t i = 0;
  for (; i + cpu::kLanes <= n; i += cpu::kLanes)
    for (int j = 0; j < cpu::kLanes; ++j) {
      y[i + j] = cpu::vexp(x[i + j] - m);
      acc[j] += y[i + j];
    }
  for (; i < n; ++i) {
    y[i] = cpu::vexp(x[i] - m);
    acc[0] += y[i];
  }
  return cpu::lanes_total(acc);
}

template <class T>
void softmax_row(const T* x, T* y, int64_t n, int64_t s, bool log) {
  if (s == 1) {  // contiguous row: every pass vectorizes
    T m = cpu::row_max(x, n);
    if (!std::isfinite(m)) m = std::isnan(m) ? m : T(0);  // all -inf rows give NaN, as torch
    T sum = exp_shifted_sum(x, y, m, n);
    if (log) {
      T ls = std::log(sum);  // (x - m) - log(sum): exact where x - m is, unlike x - (m + log(sum))
      for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - m) - ls;
    } else {
      T inv = T(1) / sum;
      for (int64_t i = 0; i < n; ++i) y[i] *= inv;
    }
    return;
  }
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t i = 0; i < n; ++i) m = std::fmax(m, x[i * s]);
  if (!std::isfinite(m)) m = 0;
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    T e = cpu::vexp(x[i * s] - m);
    if (!log) y[i * s] = e;
    sum += double(e);
  }
  if (log) {
    T ls = T(std::log(sum));
    for (int64_t i = 0; i < n; ++i) y[i * s] = (x[i * s] - m) - ls;
  } else {
    T inv = T(1.0 / sum);
    for (int64_t i = 0; i < n; ++i) y[i * s] *= inv;
  }
}

template <class T>
void softmax_backward_row(const T* y, const T* g, T* dx, int64_t n, int64_t s, bool log) {
  if (s == 1) {
    T dot = log ? cpu::row_sum(g, n) : cpu::row_dot(g, y, n);
    if (log) for (int64_t i = 0; i < n; ++i) dx[i] = g[i] - cpu::vexp(y[i]) * dot;
    else for (int64_t i = 0; i < n; ++i) dx[i] = y[i] * (g[i] - dot);
    return;
  }
  T dot = 0;
  if (log) for (int64_t i = 0; i < n; ++i) dot += g[i * s];
  else for (int64_t i = 0; i < n; ++i) dot += g[i * s] * y[i * s];
  if (log) for (int64_t i = 0; i < n; ++i) dx[i * s] = g[i * s] - cpu::vexp(y[i * s]) * dot;
  else for (int64_t i = 0; i < n; ++i) dx[i * s] = y[i * s] * (g[i * s] - dot);
}

Tensor softmax_backward(const Tensor& y, const Tensor& g_in, int64_t d, bool log) {
  Tensor g = g_in.contiguous();
  Tensor dx = empty_like(y);
  Rows r = rows_of(y, d);
  if (!y.device().is_cpu()) {
    device_backend(y.device()).softmax_backward(y, g, dx, r.outer, r.n, r.inner, log);
    return dx;
  }
  LD_DISPATCH_FLOAT(y.dtype(), "softmax backward", [&] {
    const scalar_t *py = y.data_ptr<scalar_t>(), *pg = g.data_ptr<scalar_t>();
    scalar_t* pd = dx.data_ptr<scalar_t>();
    for_rows(r, [&](int64_t off, int64_t s) { softmax_backward_row(py + off, pg + off, pd + off, r.n, s, log); });
  });
  return dx;
}

Tensor softmax_impl(const char* name, const Tensor& x, int64_t dim, bool log) {
  LD_CHECK(x.defined(), name, ": undefined tensor");
  int64_t d = wrap_dim(dim, x.dim(), name);
  Tensor xc = x.contiguous();
  Tensor y = empty_like(xc);
  Rows r = rows_of(x, d);
  if (!x.device().is_cpu()) device_backend(x.device()).softmax(xc, y, r.outer, r.n, r.inner, log);
  else LD_DISPATCH_FLOAT(x.dtype(), name, [&] {
    const scalar_t* px = xc.data_ptr<scalar_t>();
    scalar_t* py = y.data_ptr<scalar_t>();
    for_rows(r, [&](int64_t off, int64_t s) { softmax_row(px + off, py + off, r.n, s, log); });
  });
  if (needs_grad({&x})) {
    SavedTensor sy(y, name);
    record(name, y, {x}, [sy, d, log](const Tensor& g) {
      return std::vector<Tensor>{softmax_backward(sy.get(), g, d, log)};
    });
  }
  return y;
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_impl("softmax", x, dim, false); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_impl("log_softmax", x, dim, true); }

}  // namespace liandan
