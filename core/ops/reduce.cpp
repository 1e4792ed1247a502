// Reductions. The kernel reduces one run of adjacent dims of a contiguous tensor viewed as
// [outer, R, inner]; several runs are reduced one after another. Each output element is summed
// sequentially in double (f32) or in blocks of a fixed size (long rows), so results never depend
// on the thread count.
#include <algorithm>
#include <cmath>
#include <limits>

#include "core/cpu/loops.h"
#include "core/cpu/map.h"
#include "core/device.h"
#include "core/ops.h"

namespace liandan {

namespace {

struct Run {
  int64_t outer, R, inner;
};

Run run_of(const Shape& s, int64_t d0, int64_t d1) {  // dims [d0, d1]
  Run r{1, 1, 1};
  for (int64_t d = 0; d < int64_t(s.size()); ++d) (d < d0 ? r.outer : d <= d1 ? r.R : r.inner) *= s[d];
  return r;
}

// Fixed block length for splitting one long row among threads (independent of thread count).
constexpr int64_t kSumBlock = 1 << 14;

template <class T>
double sum_contig(const T* x, int64_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += double(x[i + j]);
  for (; i < n; ++i) acc[0] += double(x[i]);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

template <class T>
void sum_run_kernel(const T* x, T* out, Run r) {
  if (r.inner == 1) {
    if (r.outer >= 4 || r.R <= kSumBlock) {
      cpu::parallel_range(r.outer, [&](int64_t b, int64_t e) {
        for (int64_t o = b; o < e; ++o) out[o] = T(sum_contig(x + o * r.R, r.R));
      }, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(r.R, 1)));
      return;
    }
    // Few long rows: fixed-size blocks in parallel, then blocks combined in order.
    int64_t nb = (r.R + kSumBlock - 1) / kSumBlock;
    std::vector<double> part(size_t(r.outer * nb));
    cpu::parallel_range(r.outer * nb, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        int64_t o = i / nb, k = i % nb, s = k * kSumBlock;
        part[i] = sum_contig(x + o * r.R + s, std::min(kSumBlock, r.R - s));
      }
    }, 1);
    for (int64_t o = 0; o < r.outer; ++o) {
      double acc = 0;
      for (int64_t k = 0; k < nb; ++k) acc += part[o * nb + k];
      out[o] = T(acc);
    }
    return;
  }
  // Column sums: out[o, j] = sum_r x[o, r, j], vectorized along j, sequential along r.
  constexpr int64_t kCol = 512;
  int64_t ncol = (r.inner + kCol - 1) / kCol;
  cpu::parallel_range(r.outer * ncol, [&](int64_t b, int64_t e) {
    double acc[kCol];
    for (int64_t it = b; it < e; ++it) {
      int64_t o = it / ncol, j0 = (it % ncol) * kCol, w = std::min(kCol, r.inner - j0);
      std::fill(acc, acc + w, 0.0);
      const T* base = x + o * r.R * r.inner + j0;
      for (int64_t k = 0; k < r.R; ++k) {
        const T* row = base + k * r.inner;
        for (int64_t j = 0; j < w; ++j) acc[j] += double(row[j]);
      }
      T* dst = out + o * r.inner + j0;
      for (int64_t j = 0; j < w; ++j) dst[j] = T(acc[j]);
    }
  }, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, r.R * kCol)));
}

// Max (Less = std::greater for min) with the index of the first extreme element; NaN wins.
template <class T, bool IsMax>
void extreme_run_kernel(const T* x, T* out, int64_t* idx, Run r) {
  auto better = [](T a, T b) { return a != a ? (b == b) : (IsMax ? a > b : a < b); };
  cpu::parallel_range(r.outer * r.inner, [&](int64_t b, int64_t e) {
    for (int64_t it = b; it < e; ++it) {
      int64_t o = it / r.inner, j = it % r.inner;
      const T* p = x + o * r.R * r.inner + j;
      T best = p[0];
      int64_t bi = 0;
      for (int64_t k = 1; k < r.R; ++k) {
        T v = p[k * r.inner];
        if (better(v, best)) { best = v; bi = k; }
      }
      out[it] = best;
      if (idx) idx[it] = bi;
    }
  }, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, r.R)));
}

// Sorted, unique, wrapped dims; empty = all.
Shape norm_dims(const Shape& dims, int64_t ndim, const char* op) {
  Shape d;
  if (dims.empty()) for (int64_t i = 0; i < ndim; ++i) d.push_back(i);
  for (int64_t v : dims) d.push_back(wrap_dim(v, ndim, op));
  std::sort(d.begin(), d.end());
  LD_CHECK(std::adjacent_find(d.begin(), d.end()) == d.end(), op, ": repeated dim in ", shape_str(dims));
  if (ndim == 0) d.clear();  // a 0-d tensor accepts dim 0 / -1 (as torch) but has no dim to reduce
  return d;
}

Shape keepdim_shape(const Shape& s, const Shape& dims) {
  Shape k = s;
  for (int64_t d : dims) k[d] = 1;
  return k;
}

Shape dropped_shape(const Shape& s, const Shape& dims) {
  Shape k;
  for (int64_t d = 0; d < int64_t(s.size()); ++d)
    if (!std::binary_search(dims.begin(), dims.end(), d)) k.push_back(s[d]);
  return k;
}

// Sum over `dims` (normalized), result with keepdim shape. No autograd.
Tensor sum_kernel(const Tensor& x, const Shape& dims) {
  NoGradGuard ng;
  if (dims.empty()) return x.clone();  // 0-d input: a copy, never an alias
  Tensor cur = x.contiguous();
  // Reduce runs of adjacent dims from the last to the first.
  for (int64_t i = int64_t(dims.size()) - 1; i >= 0;) {
    int64_t hi = dims[i], lo = hi;
    while (i > 0 && dims[i - 1] == lo - 1) lo = dims[--i];
    --i;
    Shape os = cur.shape();
    for (int64_t d = lo; d <= hi; ++d) os[d] = 1;
    Tensor out = empty(os, {x.dtype(), x.device()});
    Run r = run_of(cur.shape(), lo, hi);
    if (!x.device().is_cpu()) {
      device_backend(x.device()).sum_run(cur, r.outer, r.R, r.inner, out);
    } else {
      LD_DISPATCH_FLOAT(x.dtype(), "sum", [&] {
        sum_run_kernel(cur.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), r);
      });
    }
    cur = out;
  }
  return cur;
}

template <bool IsMax>
std::pair<Tensor, Tensor> extreme_dim(const char* name, const Tensor& x, int64_t dim, bool keepdim) {
  LD_CHECK(x.numel() > 0, name, ": cannot reduce an empty tensor of shape ", shape_str(x.shape()));
  int64_t d = wrap_dim(dim, x.dim(), name);
  Tensor xc = x.contiguous();
  Shape ks = x.dim() == 0 ? Shape{} : keepdim_shape(x.shape(), {d});
  Tensor vals = empty(ks, {x.dtype(), x.device()}), idx = empty(ks, {DType::i64, x.device()});
  Run r = x.dim() == 0 ? Run{1, 1, 1} : run_of(x.shape(), d, d);
  if (!x.device().is_cpu()) {
    device_backend(x.device()).extreme_run(xc, r.outer, r.R, r.inner, vals, idx, IsMax);
  } else {
    LD_DISPATCH_FLOAT(x.dtype(), name, [&] {
      extreme_run_kernel<scalar_t, IsMax>(xc.data_ptr<scalar_t>(), vals.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), r);
    });
  }
  Shape in_shape = x.shape();
  if (needs_grad({&x})) {
    Tensor ik = idx;
    record(name, vals, {x}, [ik, d, in_shape](const Tensor& g) {
      if (in_shape.empty()) return std::vector<Tensor>{g};
      return std::vector<Tensor>{scatter_add(zeros(in_shape, {g.dtype(), g.device()}), d, ik, g)};
    });
  }
  if (!keepdim && x.dim() > 0) {
    vals = vals.squeeze(d);
    idx = idx.squeeze(d);
  }
  return {vals, idx};
}

template <bool IsMax>
Tensor extreme_all(const char* name, const Tensor& x) {
  LD_CHECK(x.numel() > 0, name, ": cannot reduce an empty tensor of shape ", shape_str(x.shape()));
  Tensor flat = x.reshape({-1});
  Tensor v = extreme_dim<IsMax>(name, flat.detach(), 0, false).first;
  if (needs_grad({&x})) {
    // The gradient is shared evenly among all elements equal to the extreme (torch's rule).
    SavedTensor sx(x, name), sv(v, name);
    record(name, v, {x}, [sx, sv](const Tensor& g) {
      Tensor mask = eq(sx.get(), sv.get());
      return std::vector<Tensor>{mul(mask, div(g, sum(mask)))};
    });
  }
  return v;
}

template <class T>
void cumsum_kernel(const T* x, T* y, Run r, bool reverse) {
  cpu::parallel_range(r.outer * r.inner, [&](int64_t b, int64_t e) {
    for (int64_t it = b; it < e; ++it) {
      int64_t o = it / r.inner, j = it % r.inner;
      const T* p = x + o * r.R * r.inner + j;
      T* q = y + o * r.R * r.inner + j;
      T acc = 0;
      for (int64_t k = 0; k < r.R; ++k) {
        int64_t kk = reverse ? r.R - 1 - k : k;
        acc += p[kk * r.inner];
        q[kk * r.inner] = acc;
      }
    }
  }, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, r.R)));
}

Tensor cumsum_impl(const Tensor& x, int64_t d, bool reverse) {
  Tensor xc = x.contiguous();
  Tensor y = empty(x.shape(), {x.dtype(), x.device()});
  Run r = x.dim() == 0 ? Run{1, 1, 1} : run_of(x.shape(), d, d);
  if (!x.device().is_cpu()) {
    device_backend(x.device()).cumsum_run(xc, r.outer, r.R, r.inner, y, reverse);
  } else {
    LD_DISPATCH_FLOAT(x.dtype(), "cumsum", [&] { cumsum_kernel(xc.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), r, reverse); });
  }
  record("cumsum", y, {x}, [d, reverse](const Tensor& g) {
    return std::vector<Tensor>{cumsum_impl(g, d, !reverse)};
  });
  return y;
}

}  // namespace

Tensor sum(const Tensor& x, const Shape& dims, bool keepdim) {
  LD_CHECK(x.defined(), "sum: undefined tensor");
  Shape d = norm_dims(dims, x.dim(), "sum");
  Tensor y = sum_kernel(x, d);
  Shape in_shape = x.shape();
  record("sum", y, {x}, [in_shape](const Tensor& g) { return std::vector<Tensor>{g.expand(in_shape)}; });
  return keepdim ? y : y.reshape(dropped_shape(x.shape(), d));
}

Tensor mean(const Tensor& x, const Shape& dims, bool keepdim) {
  Shape d = norm_dims(dims, x.dim(), "mean");
  int64_t n = 1;
  for (int64_t v : d) n *= x.shape()[v];
  LD_CHECK(n > 0, "mean: reducing over zero elements (shape ", shape_str(x.shape()), ", dims ", shape_str(dims), ")");
  return mul(sum(x, dims, keepdim), 1.0 / double(n));
}

Tensor var(const Tensor& x, const Shape& dims, int64_t correction, bool keepdim) {
  Shape d = norm_dims(dims, x.dim(), "var");
  int64_t n = 1;
  for (int64_t v : d) n *= x.shape()[v];
  LD_CHECK(n - correction > 0, "var: ", n, " elements with correction ", correction, " (shape ",
           shape_str(x.shape()), ")");
  Tensor diff = sub(x, mean(x, dims, true));
  return mul(sum(square(diff), dims, keepdim), 1.0 / double(n - correction));
}

Tensor logsumexp(const Tensor& x, const Shape& dims, bool keepdim) {
  Shape d = norm_dims(dims, x.dim(), "logsumexp");
  // m = max over dims (a constant for autograd); infinite maxima replaced by 0 so x - m stays finite.
  Tensor m;
  {
    NoGradGuard ng;
    Tensor cur = x.detach();
    for (int64_t v : d) cur = extreme_dim<true>("logsumexp", cur, v, true).first;
    if (!x.device().is_cpu()) {  // |m| < inf is false for ±inf and NaN
      TensorOptions o{x.dtype(), x.device()};
      m = where(lt(abs(cur), full({}, INFINITY, o)), cur, zeros({}, o));
    } else {
      m = LD_DISPATCH_FLOAT(x.dtype(), "logsumexp", [&] {
        return cpu::map<scalar_t, 1>(cur.shape(), {&cur}, [](scalar_t v) { return std::isfinite(v) ? v : scalar_t(0); });
      });
    }
  }
  Tensor y = add(log(sum(exp(sub(x, m)), dims, true)), m);
  return keepdim ? y : y.reshape(dropped_shape(x.shape(), d));
}

std::pair<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim) { return extreme_dim<true>("max", x, dim, keepdim); }
std::pair<Tensor, Tensor> min(const Tensor& x, int64_t dim, bool keepdim) { return extreme_dim<false>("min", x, dim, keepdim); }
Tensor max(const Tensor& x) { return extreme_all<true>("max", x); }
Tensor min(const Tensor& x) { return extreme_all<false>("min", x); }
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) {
  NoGradGuard ng;
  return extreme_dim<true>("argmax", x, dim, keepdim).second;
}

Tensor cumsum(const Tensor& x, int64_t dim) {
  LD_CHECK(x.defined(), "cumsum: undefined tensor");
  return cumsum_impl(x, wrap_dim(dim, x.dim(), "cumsum"), false);
}

Tensor sum_to(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  int64_t lead = x.dim() - int64_t(shape.size());
  LD_CHECK(lead >= 0, "sum_to: cannot sum shape ", shape_str(x.shape()), " to ", shape_str(shape));
  Shape dims;
  for (int64_t d = 0; d < x.dim(); ++d) {
    if (d < lead) { dims.push_back(d); continue; }
    int64_t want = shape[d - lead];
    LD_CHECK(want == x.shape()[d] || want == 1, "sum_to: cannot sum shape ", shape_str(x.shape()), " to ",
             shape_str(shape));
    if (want == 1 && x.shape()[d] != 1) dims.push_back(d);
  }
  if (dims.empty()) return x.reshape(shape);
  return sum(x, dims, true).reshape(shape);
}

}  // namespace liandan
