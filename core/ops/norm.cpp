// layer_norm, rms_norm and group_norm, each a fused forward (one pass for the statistics, one to
// write y) and a fused backward. All three normalize "rows" of a contiguous tensor:
//   layer/rms norm: a row is the last dims (normalized_shape), weight index = position in the row
//   group norm:     a row is one (sample, group): C/G channels x spatial size S, weight index = channel
// With xhat = (x - mean) * rstd and dxhat = g * w, the input gradient of a row is
//   dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))   (rms: without the mean(dxhat) term)
// and the affine gradients are column sums, computed per column sequentially (deterministic).
#include <cmath>

#include "core/cpu/loops.h"
#include "core/cpu/vecmath.h"
#include "core/ops.h"

namespace liandan {

namespace {

struct RowNorm {
  int64_t rows, len;  // rows of `len` contiguous elements
  int64_t group_size;  // elements sharing one weight entry within a row (1 for layer/rms norm)
  int64_t groups_per_sample;  // group norm: G (row r uses channels of group r % G); else 1
  bool center;  // subtract the mean (layer/group norm) or not (rms norm)
  bool grouped;  // group norm: weights are per channel, not per row position
};

// Weight index of element i of row r.
inline int64_t widx(const RowNorm& p, int64_t r, int64_t i) {
  return !p.grouped ? i : (r % p.groups_per_sample) * (p.len / p.group_size) + i / p.group_size;
}

template <class T>
void norm_forward(const RowNorm& p, const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, double eps) {
  cpu::parallel_range(p.rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * p.len;
      T* yr = y + r * p.len;
      // Two passes (mean, then squared deviations): exact enough in f32 lanes, and vectorized.
      T mt = p.center ? T(double(cpu::row_sum(xr, p.len)) / double(p.len)) : T(0);
      double ss = double(p.center ? cpu::row_sq_dev(xr, mt, p.len) : cpu::row_dot(xr, xr, p.len));
      T rs = T(1.0 / std::sqrt(ss / double(p.len) + eps));
      mean[r] = mt;
      rstd[r] = rs;
      if (!p.grouped && w && b) {
        for (int64_t i = 0; i < p.len; ++i) yr[i] = (xr[i] - mt) * rs * w[i] + b[i];
      } else if (!p.grouped && w) {
        for (int64_t i = 0; i < p.len; ++i) yr[i] = (xr[i] - mt) * rs * w[i];
      } else {
        for (int64_t i = 0; i < p.len; ++i) {
          int64_t c = widx(p, r, i);
          yr[i] = (xr[i] - mt) * rs * (w ? w[c] : T(1)) + (b ? b[c] : T(0));
        }
      }
    }
  }, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, p.len)));
}

template <class T>
void norm_backward_input(const RowNorm& p, const T* x, const T* w, const T* g, const T* mean, const T* rstd, T* dx) {
  cpu::parallel_range(p.rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T *xr = x + r * p.len, *gr = g + r * p.len;
      T* dr = dx + r * p.len;
      T m = mean[r], rs = rstd[r];
      if (!p.grouped) {
        // sum(dxhat) and sum(dxhat * xhat) = rs * sum(g w (x - m)), as lane reductions
        T sd = w ? cpu::row_dot(gr, w, p.len) : cpu::row_sum(gr, p.len);
        T sgx = w ? cpu::row_dot3_dev(gr, w, xr, m, p.len) : cpu::row_dot_dev(gr, xr, m, p.len);
        T a = p.center ? sd / T(p.len) : T(0), c = rs * sgx / T(p.len);
        if (w) for (int64_t i = 0; i < p.len; ++i) dr[i] = rs * (gr[i] * w[i] - a - (xr[i] - m) * rs * c);
        else for (int64_t i = 0; i < p.len; ++i) dr[i] = rs * (gr[i] - a - (xr[i] - m) * rs * c);
        continue;
      }
      double sd = 0, sdx = 0;  // sum(dxhat), sum(dxhat * xhat)
      for (int64_t i = 0; i < p.len; ++i) {
        T dxh = gr[i] * (w ? w[widx(p, r, i)] : T(1));
        sd += double(dxh);
        sdx += double(dxh) * double((xr[i] - m) * rs);
      }
      T a = p.center ? T(sd / double(p.len)) : T(0), c = T(sdx / double(p.len));
      for (int64_t i = 0; i < p.len; ++i) {
        T dxh = gr[i] * (w ? w[widx(p, r, i)] : T(1));
        dr[i] = rs * (dxh - a - (xr[i] - m) * rs * c);
      }
    }
  }, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, p.len)));
}

// dw[c] = sum g * xhat, db[c] = sum g over every element using weight c. Parallel over weight
// entries, sequential over rows: deterministic.
template <class T>
void norm_backward_affine(const RowNorm& p, int64_t nw, const T* x, const T* g, const T* mean, const T* rstd, T* dw, T* db) {
  if (!p.grouped) {
    constexpr int64_t kBlk = 256;
    int64_t nblk = (p.len + kBlk - 1) / kBlk;
    cpu::parallel_range(nblk, [&](int64_t b0, int64_t b1) {
      double aw[kBlk], ab[kBlk];
      for (int64_t blk = b0; blk < b1; ++blk) {
        int64_t j0 = blk * kBlk, n = std::min(kBlk, p.len - j0);
        std::fill(aw, aw + n, 0.0);
        std::fill(ab, ab + n, 0.0);
        for (int64_t r = 0; r < p.rows; ++r) {
          const T *xr = x + r * p.len + j0, *gr = g + r * p.len + j0;
          T m = mean[r], rs = rstd[r];
          for (int64_t j = 0; j < n; ++j) {
            aw[j] += double(gr[j] * (xr[j] - m) * rs);
            ab[j] += double(gr[j]);
          }
        }
        for (int64_t j = 0; j < n; ++j) {
          if (dw) dw[j0 + j] = T(aw[j]);
          if (db) db[j0 + j] = T(ab[j]);
        }
      }
    }, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, p.rows * kBlk)));
    return;
  }
  // Group norm: channel c lives in rows r with r % G == c / cpg, at positions [k*S, (k+1)*S).
  int64_t G = p.groups_per_sample, cpg = nw / G, S = p.group_size, N = p.rows / G;
  cpu::parallel_range(nw, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      int64_t grp = c / cpg, k = c % cpg;
      double aw = 0, ab = 0;
      for (int64_t n = 0; n < N; ++n) {
        int64_t r = n * G + grp;
        const T *xr = x + r * p.len + k * S, *gr = g + r * p.len + k * S;
        T m = mean[r], rs = rstd[r];
        for (int64_t s = 0; s < S; ++s) {
          aw += double(gr[s] * (xr[s] - m) * rs);
          ab += double(gr[s]);
        }
      }
      if (dw) dw[c] = T(aw);
      if (db) db[c] = T(ab);
    }
  }, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, N * S)));
}

void check_affine(const Tensor& t, const Shape& want, const Tensor& x, const char* op, const char* what) {
  if (!t.defined()) return;
  LD_CHECK(t.shape() == want, op, ": ", what, " has shape ", shape_str(t.shape()), ", expected ", shape_str(want));
  LD_CHECK(t.dtype() == x.dtype(), op, ": ", what, " dtype ", dtype_name(t.dtype()), " differs from input ",
           dtype_name(x.dtype()));
}

template <class T>
const T* ptr_or_null(const Tensor& t) { return t.defined() ? t.data_ptr<T>() : nullptr; }

Tensor norm_impl(const char* name, const Tensor& x, RowNorm p, const Shape& affine_shape, const Tensor& weight,
                 const Tensor& bias, double eps) {
  Tensor xc = x.contiguous(), wc = weight.defined() ? weight.contiguous() : weight,
         bc = bias.defined() ? bias.contiguous() : bias;
  Tensor y = empty(x.shape(), x.dtype()), mean = empty({p.rows}, x.dtype()), rstd = empty({p.rows}, x.dtype());
  LD_DISPATCH_FLOAT(x.dtype(), name, [&] {
    norm_forward<scalar_t>(p, xc.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(wc), ptr_or_null<scalar_t>(bc),
                           y.data_ptr<scalar_t>(), mean.data_ptr<scalar_t>(), rstd.data_ptr<scalar_t>(), eps);
  });
  if (needs_grad({&x, &weight, &bias})) {
    SavedTensor sx(xc, name), sw(wc, name);
    bool gx = x.requires_grad(), gw = weight.defined() && weight.requires_grad(),
         gb = bias.defined() && bias.requires_grad();
    record(name, y, {x, weight, bias}, [=](const Tensor& g_in) {
      Tensor g = g_in.contiguous();
      const Tensor &xv = sx.get(), &wv = sw.get();
      Tensor dx, dw, db;
      LD_DISPATCH_FLOAT(g.dtype(), name, [&] {
        const scalar_t *px = xv.data_ptr<scalar_t>(), *pg = g.data_ptr<scalar_t>(),
                       *pm = mean.data_ptr<scalar_t>(), *pr = rstd.data_ptr<scalar_t>();
        if (gx) {
          dx = empty(xv.shape(), g.dtype());
          norm_backward_input<scalar_t>(p, px, ptr_or_null<scalar_t>(wv), pg, pm, pr, dx.data_ptr<scalar_t>());
        }
        if (gw || gb) {
          if (gw) dw = empty(affine_shape, g.dtype());
          if (gb) db = empty(affine_shape, g.dtype());
          norm_backward_affine<scalar_t>(p, shape_numel(affine_shape), px, pg, pm, pr, gw ? dw.data_ptr<scalar_t>() : nullptr,
                                         gb ? db.data_ptr<scalar_t>() : nullptr);
        }
      });
      return std::vector<Tensor>{dx, dw, db};
    });
  }
  return y;
}

}  // namespace

Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight, const Tensor& bias, double eps) {
  LD_CHECK(x.defined(), "layer_norm: undefined input");
  int64_t k = int64_t(normalized_shape.size());
  LD_CHECK(k >= 1 && k <= x.dim() && Shape(x.shape().end() - k, x.shape().end()) == normalized_shape,
           "layer_norm: normalized_shape ", shape_str(normalized_shape), " does not match the trailing dims of input ",
           shape_str(x.shape()));
  check_affine(weight, normalized_shape, x, "layer_norm", "weight");
  check_affine(bias, normalized_shape, x, "layer_norm", "bias");
  int64_t len = shape_numel(normalized_shape);
  RowNorm p{len ? x.numel() / len : 0, len, 1, 1, true, false};
  return norm_impl("layer_norm", x, p, normalized_shape, weight, bias, eps);
}

Tensor rms_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight, double eps) {
  LD_CHECK(x.defined(), "rms_norm: undefined input");
  int64_t k = int64_t(normalized_shape.size());
  LD_CHECK(k >= 1 && k <= x.dim() && Shape(x.shape().end() - k, x.shape().end()) == normalized_shape,
           "rms_norm: normalized_shape ", shape_str(normalized_shape), " does not match the trailing dims of input ",
           shape_str(x.shape()));
  check_affine(weight, normalized_shape, x, "rms_norm", "weight");
  int64_t len = shape_numel(normalized_shape);
  RowNorm p{len ? x.numel() / len : 0, len, 1, 1, false, false};
  return norm_impl("rms_norm", x, p, normalized_shape, weight, Tensor(), eps);
}

Tensor group_norm(const Tensor& x, int64_t num_groups, const Tensor& weight, const Tensor& bias, double eps) {
  LD_CHECK(x.defined() && x.dim() >= 2, "group_norm: expected input [N, C, *], got ",
           x.defined() ? shape_str(x.shape()) : "undefined");
  int64_t N = x.shape()[0], C = x.shape()[1];
  LD_CHECK(num_groups > 0 && C % num_groups == 0, "group_norm: ", C, " channels are not divisible into ",
           num_groups, " groups");
  check_affine(weight, {C}, x, "group_norm", "weight");
  check_affine(bias, {C}, x, "group_norm", "bias");
  int64_t S = (N && C) ? x.numel() / (N * C) : 0;  // N = 0 (empty batch) must not divide by zero
  RowNorm p{N * num_groups, (C / num_groups) * S, S, num_groups, true, true};
  return norm_impl("group_norm", x, p, {C}, weight, bias, eps);
}

}  // namespace liandan
