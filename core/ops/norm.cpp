// layer_norm, rms_norm, group_norm and group_norm_silu, each a fused forward (one pass for the
// statistics, one to write y) and a fused backward. All normalize "rows" of a contiguous tensor:
//   layer/rms norm: a row is the last dims (normalized_shape), weight index = position in the row
//   group norm:     a row is one (sample, group): C/G channels x spatial size S, weight index = channel
// With xhat = (x - mean) * rstd and dxhat = g * w, the input gradient of a row is
//   dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))   (rms: without the mean(dxhat) term)
// and the affine gradients are column sums, computed per column sequentially (deterministic).
#include <cmath>
#include <vector>

#include "core/cpu/loops.h"
#include "core/cpu/vecmath.h"
#include "core/device.h"
#include "core/ops.h"
#include "core/ops/composite.h"

namespace liandan {

namespace {

struct RowNorm {
  int64_t rows, len;  // rows of `len` contiguous elements; weight index = position in the row
  bool center;        // subtract the mean (layer norm) or not (rms norm)
};

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
      if (w && b) {
        for (int64_t i = 0; i < p.len; ++i) yr[i] = (xr[i] - mt) * rs * w[i] + b[i];
      } else if (w) {
        for (int64_t i = 0; i < p.len; ++i) yr[i] = (xr[i] - mt) * rs * w[i];
      } else {
        for (int64_t i = 0; i < p.len; ++i) yr[i] = (xr[i] - mt) * rs + (b ? b[i] : T(0));
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
      // sum(dxhat) and sum(dxhat * xhat) = rs * sum(g w (x - m)), as lane reductions
      T sd = w ? cpu::row_dot(gr, w, p.len) : cpu::row_sum(gr, p.len);
      T sgx = w ? cpu::row_dot3_dev(gr, w, xr, m, p.len) : cpu::row_dot_dev(gr, xr, m, p.len);
      T a = p.center ? sd / T(p.len) : T(0), c = rs * sgx / T(p.len);
      if (w) for (int64_t i = 0; i < p.len; ++i) dr[i] = rs * (gr[i] * w[i] - a - (xr[i] - m) * rs * c);
      else for (int64_t i = 0; i < p.len; ++i) dr[i] = rs * (gr[i] - a - (xr[i] - m) * rs * c);
    }
  }, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, p.len)));
}

// dw[i] = sum g * xhat, db[i] = sum g over the rows. Parallel over blocks of columns, sequential over
// rows: deterministic.
template <class T>
void norm_backward_affine(const RowNorm& p, const T* x, const T* g, const T* mean, const T* rstd, T* dw, T* db) {
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
}

void check_affine(const Tensor& t, const Shape& want, const Tensor& x, const char* op, const char* what) {
  if (!t.defined()) return;
  LD_CHECK(t.shape() == want, op, ": ", what, " has shape ", shape_str(t.shape()), ", expected ", shape_str(want));
  LD_CHECK(t.dtype() == x.dtype(), op, ": ", what, " dtype ", dtype_name(t.dtype()), " differs from input ",
           dtype_name(x.dtype()));
}

template <class T>
const T* ptr_or_null(const Tensor& t) { return t.defined() ? t.data_ptr<T>() : nullptr; }

// A norm's y in `out`: x's dtype, or from f32 a half format (the GEMM operand that follows, rounded once: on a
// device by the kernel, on the CPU by a cast after it — the same numbers); then its gradient arrives in that format.
void check_out_dtype(const char* name, const Tensor& x, DType out) {
  LD_CHECK(out == x.dtype() || (x.dtype() == DType::f32 && is_half(out)), name, ": output dtype ", dtype_name(out),
           " for a ", dtype_name(x.dtype()), " input (expected the input's, or bf16/f16 from f32)");
}
// The output gradient as the backward kernels take it: a device kernel reads a half g as it is, the CPU's in x's
// dtype (widened: exact).
Tensor output_grad(const Tensor& g, const Tensor& x, bool on_device) {
  return on_device ? g.contiguous() : g.to(x.dtype()).contiguous();
}

Tensor norm_impl(const char* name, const Tensor& x, RowNorm p, const Shape& affine_shape, const Tensor& weight,
                 const Tensor& bias, double eps, DType out) {
  check_out_dtype(name, x, out);
  Tensor xc = x.contiguous(), wc = weight.defined() ? weight.contiguous() : weight,
         bc = bias.defined() ? bias.contiguous() : bias;
  TensorOptions o{x.dtype(), x.device()};
  bool on_device = !x.device().is_cpu();
  Tensor y = empty(x.shape(), {on_device ? out : x.dtype(), x.device()}), mean = empty({p.rows}, o),
         rstd = empty({p.rows}, o);
  if (on_device) {
    device_backend(x.device()).norm_forward(xc, wc, bc, y, mean, rstd, p.rows, p.len, p.center, eps);
  } else {
    LD_DISPATCH_FLOAT(x.dtype(), name, [&] {
      norm_forward<scalar_t>(p, xc.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(wc), ptr_or_null<scalar_t>(bc),
                             y.data_ptr<scalar_t>(), mean.data_ptr<scalar_t>(), rstd.data_ptr<scalar_t>(), eps);
    });
    if (out != x.dtype()) y = y.to(out);
  }
  if (needs_grad({&x, &weight, &bias})) {
    SavedTensor sx(xc, name), sw(wc, name);
    bool gx = x.requires_grad(), gw = weight.defined() && weight.requires_grad(),
         gb = bias.defined() && bias.requires_grad();
    record(name, y, {x, weight, bias}, [=](const Tensor& g_in) {
      const Tensor &xv = sx.get(), &wv = sw.get();
      Tensor g = output_grad(g_in, xv, on_device);
      Tensor dx, dw, db;
      if (on_device) {
        TensorOptions og{xv.dtype(), g.device()};
        if (gx) dx = empty(xv.shape(), og);
        if (gw) dw = empty(affine_shape, og);
        if (gb) db = empty(affine_shape, og);
        device_backend(g.device()).norm_backward(xv, wv, g, mean, rstd, dx, dw, db, p.rows, p.len, p.center);
        return std::vector<Tensor>{dx, dw, db};
      }
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
          norm_backward_affine<scalar_t>(p, px, pg, pm, pr, gw ? dw.data_ptr<scalar_t>() : nullptr,
                                         gb ? db.data_ptr<scalar_t>() : nullptr);
        }
      });
      return std::vector<Tensor>{dx, dw, db};
    });
  }
  return y;
}

// ---------------------------------------------------------------- group norm (+ SiLU)
// A row is one (sample n, group g): cpg = C/G channels of S positions, contiguous. Within a row every
// channel is a contiguous run of S with its own scale rs * w[c] and shift b[c], so all inner loops are
// plain vectorizable runs. group_norm_silu applies silu(z) = z sigmoid(z) to z = group_norm(x) in the
// same pass, and its backward recomputes z from x (mean, rstd saved) instead of storing it.
struct GroupGeom {
  int64_t N, C, G, S;
  int64_t cpg() const { return C / G; }
  int64_t len() const { return cpg() * S; }
};

// y[s] = (x[s] - m) * sc + sh, or its SiLU. Separate functions with __restrict so GCC vectorizes the
// polynomial sigmoid.
template <class T>
void gn_run(T* __restrict y, const T* __restrict x, T m, T sc, T sh, int64_t n, bool silu) {
  if (silu) {
    for (int64_t i = 0; i < n; ++i) {
      T z = (x[i] - m) * sc + sh;
      y[i] = z * cpu::vsigmoid(z);
    }
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - m) * sc + sh;
  }
}

// dz = gy * silu'(z) with z recomputed: silu'(z) = s (1 + z (1 - s)), s = sigmoid(z).
template <class T>
void gn_silu_grad(T* __restrict dz, const T* __restrict gy, const T* __restrict x, T m, T sc, T sh, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    T z = (x[i] - m) * sc + sh, s = cpu::vsigmoid(z);
    dz[i] = gy[i] * s * (1 + z * (1 - s));
  }
}

// dx[s] = a * g[s] + b * (x[s] - m) + c
template <class T>
void gn_dx_run(T* __restrict dx, const T* __restrict g, const T* __restrict x, T m, T a, T b, T c, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dx[i] = a * g[i] + b * (x[i] - m) + c;
}

template <class T>
void gn_forward(const GroupGeom& q, const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, double eps,
                bool silu) {
  const int64_t len = q.len(), cpg = q.cpg();
  cpu::parallel_range(q.N * q.G, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * len;
      // Two passes (mean, then squared deviations): exact enough in f32 lanes, and vectorized.
      T m = T(double(cpu::row_sum(xr, len)) / double(len));
      T rs = T(1.0 / std::sqrt(double(cpu::row_sq_dev(xr, m, len)) / double(len) + eps));
      mean[r] = m;
      rstd[r] = rs;
      for (int64_t k = 0; k < cpg; ++k) {
        int64_t c = (r % q.G) * cpg + k;
        gn_run(y + r * len + k * q.S, xr + k * q.S, m, rs * (w ? w[c] : T(1)), b ? b[c] : T(0), q.S, silu);
      }
    }
  }, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, len)));
}

// Backward of y = group_norm(x) (or its SiLU) given gy. Per row, the per-channel sums
//   sg[n, c] = sum_s dz,   sgx[n, c] = sum_s dz (x - m)      (dz = gy, or gy silu'(z))
// give both dx (through sum(dxhat) = sum_c w sg and sum(dxhat xhat) = rs sum_c w sgx) and the affine
// gradients dw[c] = sum_n rs sgx, db[c] = sum_n sg, summed over n in order (deterministic).
template <class T>
void gn_backward(const GroupGeom& q, const T* x, const T* w, const T* b, const T* gy, const T* mean, const T* rstd,
                 T* dx, T* dw, T* db, bool silu) {
  const int64_t len = q.len(), cpg = q.cpg();
  std::vector<double> sg(size_t(q.N * q.C)), sgx(size_t(q.N * q.C));
  cpu::parallel_range(q.N * q.G, [&](int64_t r0, int64_t r1) {
    std::vector<T> dz(silu ? size_t(len) : 0);  // one row of dz, in L1/L2
    for (int64_t r = r0; r < r1; ++r) {
      const T *xr = x + r * len, *g = gy + r * len;
      const T m = mean[r], rs = rstd[r];
      const int64_t c0 = (r % q.G) * cpg, n = r / q.G;
      if (silu) {
        for (int64_t k = 0; k < cpg; ++k)
          gn_silu_grad(dz.data() + k * q.S, g + k * q.S, xr + k * q.S, m, rs * (w ? w[c0 + k] : T(1)),
                       b ? b[c0 + k] : T(0), q.S);
        g = dz.data();
      }
      double sd = 0, sdx = 0;  // sum(dxhat), sum(dxhat * xhat) / rs
      for (int64_t k = 0; k < cpg; ++k) {
        const T* gk = g + k * q.S;
        double a = double(cpu::row_sum(gk, q.S)), bb = double(cpu::row_dot_dev(gk, xr + k * q.S, m, q.S));
        sg[size_t(n * q.C + c0 + k)] = a;
        sgx[size_t(n * q.C + c0 + k)] = bb;
        T wc = w ? w[c0 + k] : T(1);
        sd += double(wc) * a;
        sdx += double(wc) * bb;
      }
      if (!dx) continue;
      // dx = rs (g w - sd/len - (x - m) rs * rs sdx/len)
      T a = T(sd / double(len)), cc = T(sdx / double(len)) * rs;
      for (int64_t k = 0; k < cpg; ++k) {
        T wc = w ? w[c0 + k] : T(1);
        gn_dx_run(dx + r * len + k * q.S, g + k * q.S, xr + k * q.S, m, rs * wc, -rs * rs * cc, -rs * a, q.S);
      }
    }
  }, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, len)));
  if (dw || db)
    for (int64_t c = 0; c < q.C; ++c) {
      double aw = 0, ab = 0;
      for (int64_t n = 0; n < q.N; ++n) {
        aw += double(rstd[n * q.G + c / cpg]) * sgx[size_t(n * q.C + c)];
        ab += sg[size_t(n * q.C + c)];
      }
      if (dw) dw[c] = T(aw);
      if (db) db[c] = T(ab);
    }
}

// y in `out` as norm_impl's (check_out_dtype).
Tensor group_norm_impl(const char* name, const Tensor& x, int64_t G, const Tensor& weight, const Tensor& bias,
                       double eps, bool silu, DType out) {
  LD_CHECK(x.defined() && x.dim() >= 2, name, ": expected input [N, C, *], got ",
           x.defined() ? shape_str(x.shape()) : "undefined");
  check_out_dtype(name, x, out);
  int64_t N = x.shape()[0], C = x.shape()[1];
  LD_CHECK(G > 0 && C % G == 0, name, ": ", C, " channels are not divisible into ", G, " groups");
  check_affine(weight, {C}, x, name, "weight");
  check_affine(bias, {C}, x, name, "bias");
  GroupGeom q{N, C, G, (N && C) ? x.numel() / (N * C) : 0};  // N = 0 (empty batch) must not divide by zero
  Tensor xc = x.contiguous(), wc = weight.defined() ? weight.contiguous() : weight,
         bc = bias.defined() ? bias.contiguous() : bias;
  TensorOptions o{x.dtype(), x.device()};
  bool on_device = !x.device().is_cpu();
  Tensor y = empty(x.shape(), {on_device ? out : x.dtype(), x.device()}), mean = empty({N * G}, o),
         rstd = empty({N * G}, o);
  if (on_device) {
    device_backend(x.device()).group_norm_forward(xc, wc, bc, y, mean, rstd, N, C, G, q.S, eps, silu);
  } else {
    LD_DISPATCH_FLOAT(x.dtype(), name, [&] {
      gn_forward<scalar_t>(q, xc.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(wc), ptr_or_null<scalar_t>(bc),
                           y.data_ptr<scalar_t>(), mean.data_ptr<scalar_t>(), rstd.data_ptr<scalar_t>(), eps, silu);
    });
    if (out != x.dtype()) y = y.to(out);
  }
  if (needs_grad({&x, &weight, &bias})) {
    SavedTensor sx(xc, name), sw(wc, name), sb(silu ? bc : Tensor(), name);
    bool gx = x.requires_grad(), gw = weight.defined() && weight.requires_grad(),
         gb = bias.defined() && bias.requires_grad();
    record(name, y, {x, weight, bias}, [=](const Tensor& g_in) {
      const Tensor &xv = sx.get(), &wv = sw.get();
      Tensor g = output_grad(g_in, xv, on_device);
      Tensor bv = sb.defined() ? sb.get() : Tensor();
      TensorOptions og{xv.dtype(), g.device()};
      Tensor dx = gx ? empty(xv.shape(), og) : Tensor(), dw = gw ? empty({q.C}, og) : Tensor(),
             db = gb ? empty({q.C}, og) : Tensor();
      if (on_device) {
        device_backend(g.device()).group_norm_backward(xv, wv, bv, g, mean, rstd, dx, dw, db, q.N, q.C, q.G, q.S, silu);
        return std::vector<Tensor>{dx, dw, db};
      }
      LD_DISPATCH_FLOAT(g.dtype(), name, [&] {
        gn_backward<scalar_t>(q, xv.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(wv), ptr_or_null<scalar_t>(bv),
                              g.data_ptr<scalar_t>(), mean.data_ptr<scalar_t>(), rstd.data_ptr<scalar_t>(),
                              gx ? dx.data_ptr<scalar_t>() : nullptr, gw ? dw.data_ptr<scalar_t>() : nullptr,
                              gb ? db.data_ptr<scalar_t>() : nullptr, silu);
      });
      return std::vector<Tensor>{dx, dw, db};
    });
  }
  return y;
}

}  // namespace

Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight, const Tensor& bias, double eps,
                  DType out) {
  LD_CHECK(x.defined(), "layer_norm: undefined input");
  int64_t k = int64_t(normalized_shape.size());
  LD_CHECK(k >= 1 && k <= x.dim() && Shape(x.shape().end() - k, x.shape().end()) == normalized_shape,
           "layer_norm: normalized_shape ", shape_str(normalized_shape), " does not match the trailing dims of input ",
           shape_str(x.shape()));
  check_affine(weight, normalized_shape, x, "layer_norm", "weight");
  check_affine(bias, normalized_shape, x, "layer_norm", "bias");
  int64_t len = shape_numel(normalized_shape);
  RowNorm p{len ? x.numel() / len : 0, len, true};
  return norm_impl("layer_norm", x, p, normalized_shape, weight, bias, eps, out);
}

Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight, const Tensor& bias, double eps) {
  LD_CHECK(x.defined(), "layer_norm: undefined input");
  return layer_norm(x, normalized_shape, weight, bias, eps, x.dtype());
}

Tensor rms_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight, double eps) {
  LD_CHECK(x.defined(), "rms_norm: undefined input");
  return rms_norm(x, normalized_shape, weight, eps, x.dtype());
}

Tensor rms_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight, double eps, DType out) {
  LD_CHECK(x.defined(), "rms_norm: undefined input");
  int64_t k = int64_t(normalized_shape.size());
  LD_CHECK(k >= 1 && k <= x.dim() && Shape(x.shape().end() - k, x.shape().end()) == normalized_shape,
           "rms_norm: normalized_shape ", shape_str(normalized_shape), " does not match the trailing dims of input ",
           shape_str(x.shape()));
  check_affine(weight, normalized_shape, x, "rms_norm", "weight");
  int64_t len = shape_numel(normalized_shape);
  RowNorm p{len ? x.numel() / len : 0, len, false};
  return norm_impl("rms_norm", x, p, normalized_shape, weight, Tensor(), eps, out);
}

Tensor group_norm(const Tensor& x, int64_t num_groups, const Tensor& weight, const Tensor& bias, double eps) {
  LD_CHECK(x.defined(), "group_norm: undefined input");
  return group_norm_impl("group_norm", x, num_groups, weight, bias, eps, false, x.dtype());
}

Tensor group_norm_silu(const Tensor& x, int64_t num_groups, const Tensor& weight, const Tensor& bias, double eps) {
  LD_CHECK(x.defined(), "group_norm_silu: undefined input");
  return group_norm_impl("group_norm_silu", x, num_groups, weight, bias, eps, true, x.dtype());
}

Tensor group_norm_silu(const Tensor& x, int64_t num_groups, const Tensor& weight, const Tensor& bias, double eps,
                       DType out) {
  return group_norm_impl("group_norm_silu", x, num_groups, weight, bias, eps, true, out);
}

}  // namespace liandan
