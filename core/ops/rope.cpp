// RoPE forward and backward: one fused pass over x per direction (see rope.h for the math).
#include "core/ops/rope.h"

#include <cmath>
#include <tuple>

#include "core/cpu/loops.h"
#include "core/cpu/map.h"
#include "core/device.h"
#include "core/ops.h"
#include "core/ops/composite.h"

namespace liandan {

namespace {

// Rotates every row of x (row r at x + x_row[r], its D elements contiguous) into y ([R, D] contiguous) by
// the table row that row r broadcasts to. sign = -1 applies the inverse rotation (the backward pass).
// T: x's and y's element type, C: the tables' (T, or float for bf16/f16 x: computed in float).
template <class T, class C>
void rope_kernel(const T* x, const std::vector<int64_t>& x_row, T* y, const C* c, const C* s,
                 const std::vector<int64_t>& table_row, int64_t R, int64_t D, int64_t P, bool half, C sign) {
  cpu::parallel_range(R, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + x_row[size_t(r)];
      const C *cr = c + table_row[size_t(r)] * P, *sr = s + table_row[size_t(r)] * P;
      T* yr = y + r * D;
      if (half) {
        for (int64_t i = 0; i < P; ++i) {
          C a = C(xr[i]), b = C(xr[i + P]), si = sign * sr[i];
          yr[i] = T(a * cr[i] - b * si);
          yr[i + P] = T(a * si + b * cr[i]);
        }
      } else {
        for (int64_t i = 0; i < P; ++i) {
          C a = C(xr[2 * i]), b = C(xr[2 * i + 1]), si = sign * sr[i];
          yr[2 * i] = T(a * cr[i] - b * si);
          yr[2 * i + 1] = T(a * si + b * cr[i]);
        }
      }
      for (int64_t i = 2 * P; i < D; ++i) yr[i] = xr[i];
    }
  }, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, D)));
}

// The stride (in table rows) of each of x's leading dims when x's leading dims broadcast against the
// table's: 0 where the table has size 1 or no dim.
Shape table_row_strides(const Shape& xlead, const Tensor& table) {
  Shape tlead(table.shape().begin(), table.shape().end() - 1);
  Shape tc = contiguous_strides(tlead);  // in table rows (the table is contiguous, rows of P)
  for (size_t d = 0; d < tlead.size(); ++d) tc[d] = tlead[d] == 1 ? 0 : tc[d];
  Shape st(xlead.size(), 0);
  int64_t lead = int64_t(xlead.size()) - int64_t(tlead.size());
  for (size_t d = 0; d < tlead.size(); ++d) st[size_t(lead) + d] = tc[d];
  return st;
}

// The table row each x row uses (host list, for the CPU kernel); with x's own strides, where each x row starts.
std::vector<int64_t> table_rows(const Shape& xlead, const Shape& st) {
  int64_t R = shape_numel(xlead);
  std::vector<int64_t> rows(static_cast<size_t>(R));
  Shape idx(xlead.size(), 0);
  for (int64_t r = 0; r < R; ++r) {
    int64_t off = 0;
    for (size_t d = 0; d < idx.size(); ++d) off += idx[d] * st[d];
    rows[size_t(r)] = off;
    for (int64_t d = int64_t(idx.size()) - 1; d >= 0; --d) {
      if (++idx[size_t(d)] < xlead[size_t(d)]) break;
      idx[size_t(d)] = 0;
    }
  }
  return rows;
}

Tensor rope_apply(const Tensor& x, const Tensor& c, const Tensor& s, bool half, double sign) {
  Tensor cc = c.contiguous(), sc = s.contiguous();
  int64_t D = x.shape().back(), P = c.shape().back(), R = D ? x.numel() / D : 0;
  Shape xlead(x.shape().begin(), x.shape().end() - 1);
  Shape st = table_row_strides(xlead, c);
  Tensor y = empty(x.shape(), {x.dtype(), x.device()});
  if (!x.device().is_cpu()) {  // the device kernel reads strided rows (q and k split out of a fused QKV: no copy)
    bool rows_ok = x.dim() <= 9 && (x.dim() == 0 || x.strides().back() == 1);
    device_backend(x.device()).rope(rows_ok ? x : x.contiguous(), cc, sc, y, xlead, st, half, sign);
    return y;
  }
  // Strided rows are read in place (q and k heads of a fused QKV, attention's [B, T, H, D] gradients).
  Tensor xc = x.dim() == 0 || x.strides().back() == 1 ? x : x.contiguous();
  std::vector<int64_t> rows = table_rows(xlead, st);
  std::vector<int64_t> x_rows = table_rows(xlead, Shape(xc.strides().begin(), xc.strides().end() - (xc.dim() ? 1 : 0)));
  auto run = [&](auto t, auto c) {
    using T = decltype(t);
    using C = decltype(c);
    rope_kernel<T, C>(static_cast<const T*>(xc.device_data()), x_rows, static_cast<T*>(y.device_data()),
                      static_cast<const C*>(cc.device_data()), static_cast<const C*>(sc.device_data()), rows, R, D, P,
                      half, C(sign));
  };
  if (x.dtype() == DType::bf16) run(bfloat16(), float());
  else if (x.dtype() == DType::f16) run(float16(), float());
  else LD_DISPATCH_FLOAT(x.dtype(), "rope", [&] { run(scalar_t(), scalar_t()); });
  return y;
}

// Gradients of the tables: dcos_i = g_a x_a + g_b x_b, dsin_i = g_b x_a - g_a x_b per pair,
// summed over the dims the table was broadcast along.
std::pair<Tensor, Tensor> rope_table_grads(const Tensor& x, const Tensor& g, const Shape& tshape, int64_t P, bool half) {
  Tensor xa, xb, ga, gb;
  if (half) {
    xa = x.narrow(-1, 0, P); xb = x.narrow(-1, P, P);
    ga = g.narrow(-1, 0, P); gb = g.narrow(-1, P, P);
  } else {
    Tensor xp = x.narrow(-1, 0, 2 * P), gp = g.narrow(-1, 0, 2 * P);
    xa = xp.slice(-1, 0, 2 * P, 2); xb = xp.slice(-1, 1, 2 * P, 2);
    ga = gp.slice(-1, 0, 2 * P, 2); gb = gp.slice(-1, 1, 2 * P, 2);
  }
  Tensor dc = add(mul(ga, xa), mul(gb, xb));
  Tensor ds = sub(mul(gb, xa), mul(ga, xb));
  return {sum_to(dc, tshape), sum_to(ds, tshape)};
}

}  // namespace

Tensor rope(const Tensor& x, const Tensor& cos, const Tensor& sin, RopePairing pairing) {
  LD_CHECK(x.defined() && cos.defined() && sin.defined(), "rope: undefined argument");
  LD_CHECK(x.dim() >= 1 && cos.dim() >= 1, "rope: x and the tables need at least 1 dim, got x ", shape_str(x.shape()),
           " and cos ", shape_str(cos.shape()));
  LD_CHECK(cos.shape() == sin.shape(), "rope: cos ", shape_str(cos.shape()), " and sin ", shape_str(sin.shape()),
           " differ");
  // bf16/f16 x (a half-format activation under autocast) takes f32 tables and is rotated in f32.
  DType table_dt = is_half(x.dtype()) ? DType::f32 : x.dtype();
  LD_CHECK(cos.dtype() == table_dt && sin.dtype() == table_dt, "rope: dtype mismatch: x ", dtype_name(x.dtype()),
           ", cos ", dtype_name(cos.dtype()), ", sin ", dtype_name(sin.dtype()), " (tables in ", dtype_name(table_dt),
           " expected)");
  int64_t D = x.shape().back(), P = cos.shape().back();
  LD_CHECK(2 * P <= D, "rope: tables of shape ", shape_str(cos.shape()), " rotate ", 2 * P, " dims, but x ",
           shape_str(x.shape()), " has only ", D);
  Shape xlead(x.shape().begin(), x.shape().end() - 1), tlead(cos.shape().begin(), cos.shape().end() - 1);
  LD_CHECK(broadcast_shapes(xlead, tlead, "rope") == xlead, "rope: tables ", shape_str(cos.shape()),
           " do not broadcast to x ", shape_str(x.shape()), " (leading dims)");
  LD_CHECK(x.device() == cos.device() && x.device() == sin.device(), "rope: x is on ", x.device().str(),
           ", the tables on ", cos.device().str(), " and ", sin.device().str());
  bool half = pairing == RopePairing::half;
  Tensor y = rope_apply(x, cos, sin, half, 1.0);
  if (needs_grad({&x, &cos, &sin})) {
    SavedTensor sx(x, "rope"), sc(cos, "rope"), ss(sin, "rope");
    bool gx = x.requires_grad(), gt = cos.requires_grad() || sin.requires_grad();
    Shape tshape = cos.shape();
    record("rope", y, {x, cos, sin}, [=](const Tensor& g) {
      Tensor dx = gx ? rope_apply(g, sc.get(), ss.get(), half, -1.0) : Tensor();
      Tensor dc, ds;
      if (gt) std::tie(dc, ds) = rope_table_grads(sx.get().to(table_dt), g.to(table_dt), tshape, P, half);
      return std::vector<Tensor>{dx, dc, ds};
    });
  }
  return y;
}

Tensor rope_frequencies(int64_t d, double base) {
  LD_CHECK(d > 0 && d % 2 == 0, "rope_frequencies: head dim must be even and positive, got ", d);
  LD_CHECK(base > 0, "rope_frequencies: base must be positive, got ", base);
  Tensor f = empty({d / 2}, DType::f64);
  double* p = f.data_ptr<double>();
  for (int64_t i = 0; i < d / 2; ++i) p[i] = std::pow(base, -2.0 * double(i) / double(d));
  return f;
}

Tensor rope_angles_1d(const Tensor& positions, int64_t d, double base) {
  LD_CHECK(positions.dim() == 1, "rope_angles_1d: positions must be 1-D, got ", shape_str(positions.shape()));
  Tensor pos = positions.to(DType::f64).reshape({-1, 1});
  return mul(pos, rope_frequencies(d, base).reshape({1, -1}));
}

Tensor rope_angles_2d(const Tensor& px, const Tensor& py, int64_t d, double base) {
  LD_CHECK(d > 0 && d % 4 == 0, "rope_angles_2d: head dim must be a positive multiple of 4, got ", d);
  LD_CHECK(px.dim() == 1 && px.shape() == py.shape(), "rope_angles_2d: px ", shape_str(px.shape()), " and py ",
           shape_str(py.shape()), " must be 1-D of the same length");
  // Each half of the head is a (d/2)-dim RoPE: f_j = base^(-2j/(d/2)) = base^(-4j/d), j < d/4.
  return cat({rope_angles_1d(px, d / 2, base), rope_angles_1d(py, d / 2, base)}, 1);
}

std::pair<Tensor, Tensor> rope_cos_sin(const Tensor& angles, TensorOptions opt) {
  return {cos(angles).to(opt.dtype).to(opt.device), sin(angles).to(opt.dtype).to(opt.device)};
}

}  // namespace liandan
