// Elementwise ops. Each op is a forward formula and its derivative, side by side (a unary op's pair is a functor
// in core/ops/unary_ops.h, shared with the CUDA kernel); the derivative runs as one fused pass over (x, y, grad)
// instead of a chain of tensor ops.
#include <cmath>
#include <type_traits>

#include "core/cpu/map.h"
#include "core/cpu/vecmath.h"
#include "core/device.h"
#include "core/ops.h"
#include "core/ops/elementwise_kernels.h"
#include "core/ops/unary_ops.h"

namespace liandan {

namespace kernels {  // core/ops/elementwise_kernels.h; CUDA's in core/cuda/elementwise.cu
LD_DEFINE_KERNEL(unary);
LD_DEFINE_KERNEL(unary_backward);
LD_DEFINE_KERNEL(binary);
LD_DEFINE_KERNEL(binary_backward);
LD_DEFINE_KERNEL(where);
LD_DEFINE_KERNEL(foreach_axpby);
LD_DEFINE_KERNEL(bias_act);
LD_DEFINE_KERNEL(bias_act_backward);
}  // namespace kernels

using cpu::map;

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    LD_CHECK(da == db || da == 1 || db == 1, op, ": cannot broadcast shapes ", shape_str(a), " and ",
             shape_str(b), " (dim ", int64_t(i) - int64_t(n), ": ", da, " vs ", db, ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

namespace {

void check_same_dtype(const Tensor& a, const Tensor& b, const char* op) {
  LD_CHECK(a.defined() && b.defined(), op, ": undefined tensor argument");
  LD_CHECK(a.dtype() == b.dtype(), op, ": dtype mismatch: ", dtype_name(a.dtype()), " ",
           shape_str(a.shape()), " vs ", dtype_name(b.dtype()), " ", shape_str(b.shape()));
  LD_CHECK(a.device() == b.device(), op, ": device mismatch: ", a.device().str(), " vs ", b.device().str());
}

// ---- unary ops: y = F::f(x), dx = F::d(x, y, g) (core/ops/unary_ops.h). On a device the kernel is found by the
// op's name from that list, with the scalar parameters p0, p1 (core/ops/elementwise_kernels.h's Elementwise).

// The math the formulas call on the CPU: the f32 polynomials of core/cpu/vecmath.h (they vectorize; glibc's
// calls do not), libm for f64 and for the functions without a polynomial.
struct CpuMath {
  template <class T> static LD_VINLINE T exp(T x) { return cpu::vexp(x); }
  template <class T> static LD_VINLINE T tanh(T x) { return cpu::vtanh(x); }
  template <class T> static LD_VINLINE T sigmoid(T x) { return cpu::vsigmoid(x); }
  template <class T> static LD_VINLINE T erf(T x) { return cpu::verf(x); }
  template <class T> static LD_VINLINE T log(T x) { return std::log(x); }
  template <class T> static LD_VINLINE T log1p(T x) { return std::log1p(x); }
  template <class T> static LD_VINLINE T sqrt(T x) { return std::sqrt(x); }
  template <class T> static LD_VINLINE T abs(T x) { return std::abs(x); }
  template <class T> static LD_VINLINE T sin(T x) { return std::sin(x); }
  template <class T> static LD_VINLINE T cos(T x) { return std::cos(x); }
  template <class T> static LD_VINLINE T pow(T x, T e) { return std::pow(x, e); }
};

template <class F>
Tensor unary(const Tensor& x, double p0 = 0, double p1 = 0) {
  const char* name = unary_ops::name<F>;
  LD_CHECK(x.defined(), name, ": undefined tensor argument");
  Elementwise op{name, p0, p1};
  Tensor y;
  if (x.device().is_cpu()) {
    y = LD_DISPATCH_FLOAT(x.dtype(), name, [&] {
      return map<scalar_t, 1>(x.shape(), {&x}, [p0, p1](scalar_t v) { return F::template f<CpuMath>(v, p0, p1); });
    });
  } else {
    y = empty_like(x);
    kernels::unary.labelled(name, "", x.device(), op, x.contiguous(), y);
  }
  if (needs_grad({&x})) {
    SavedTensor sx(x, name), sy(y, name);
    record(name, y, {x}, [sx, sy, name, op](const Tensor& g) {
      const Tensor &xv = sx.get(), &yv = sy.get();
      if (!g.device().is_cpu()) {
        Tensor dx = empty_like(g);
        kernels::unary_backward.labelled(name, " backward", g.device(), op, xv.contiguous(), yv, g.contiguous(), dx);
        return std::vector<Tensor>{dx};
      }
      const double p0 = op.p0, p1 = op.p1;
      return std::vector<Tensor>{LD_DISPATCH_FLOAT(g.dtype(), name, [&] {
        return map<scalar_t, 3>(xv.shape(), {&xv, &yv, &g}, [p0, p1](scalar_t a, scalar_t b, scalar_t c) {
          return F::template d<CpuMath>(a, b, c, p0, p1);
        });
      })};
    });
  }
  return y;
}

// ---- binary ops with broadcasting

template <class Fwd>
Tensor binary_forward(const char* name, const Tensor& a, const Tensor& b, Fwd fwd) {
  check_same_dtype(a, b, name);
  Shape s = broadcast_shapes(a.shape(), b.shape(), name);
  if (!a.device().is_cpu()) {
    Tensor out = empty(s, {a.dtype(), a.device()});
    kernels::binary.labelled(name, "", a.device(), name, a, b, out);
    return out;
  }
  return LD_DISPATCH_FLOAT(a.dtype(), name, [&] {
    return map<scalar_t, 2>(s, {&a, &b}, [fwd](scalar_t u, scalar_t v) { return scalar_t(fwd(u, v)); });
  });
}

// Gradient of a binary op w.r.t. input `which` (0: a, 1: b): map(D(a, b, g)) reduced to that input's shape.
template <class D>
Tensor binary_grad(const char* name, int which, const Tensor& a, const Tensor& b, const Tensor& g, const Shape& to,
                   D d) {
  if (!g.device().is_cpu()) {
    Tensor full = empty_like(g);
    kernels::binary_backward.labelled(name, " backward", g.device(), name, which, a, b, g, full);
    return sum_to(full, to);
  }
  Tensor full = LD_DISPATCH_FLOAT(g.dtype(), name, [&] {
    return map<scalar_t, 3>(g.shape(), {&a, &b, &g},
                            [d](scalar_t u, scalar_t v, scalar_t w) { return scalar_t(d(u, v, w)); });
  });
  return sum_to(full, to);
}

template <class Fwd, class Da, class Db>
Tensor binary(const char* name, const Tensor& a, const Tensor& b, Fwd fwd, Da da, Db db) {
  Tensor y = binary_forward(name, a, b, fwd);
  if (needs_grad({&a, &b})) {
    bool ga = a.requires_grad(), gb = b.requires_grad();
    SavedTensor sa(a, name), sb(b, name);
    Shape as = a.shape(), bs = b.shape();
    record(name, y, {a, b}, [=](const Tensor& g) {
      const Tensor &av = sa.get(), &bv = sb.get();
      return std::vector<Tensor>{ga ? binary_grad(name, 0, av, bv, g, as, da) : Tensor(),
                                 gb ? binary_grad(name, 1, av, bv, g, bs, db) : Tensor()};
    });
  }
  return y;
}

template <class Fwd>
Tensor compare(const char* name, const Tensor& a, const Tensor& b, Fwd fwd) {
  return binary_forward(name, a, b, [fwd](auto u, auto v) { return fwd(u, v) ? 1 : 0; });
}

}  // namespace

// add/sub only pass the gradient through (reduced over broadcast dims), so they need no saved inputs.
Tensor add(const Tensor& a, const Tensor& b) {
  Tensor y = binary_forward("add", a, b, [](auto u, auto v) { return u + v; });
  Shape as = a.shape(), bs = b.shape();
  bool ga = a.requires_grad(), gb = b.requires_grad();
  record("add", y, {a, b}, [=](const Tensor& g) {
    return std::vector<Tensor>{ga ? sum_to(g, as) : Tensor(), gb ? sum_to(g, bs) : Tensor()};
  });
  return y;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor y = binary_forward("sub", a, b, [](auto u, auto v) { return u - v; });
  Shape as = a.shape(), bs = b.shape();
  bool ga = a.requires_grad(), gb = b.requires_grad();
  record("sub", y, {a, b}, [=](const Tensor& g) {
    return std::vector<Tensor>{ga ? sum_to(g, as) : Tensor(), gb ? sum_to(neg(g), bs) : Tensor()};
  });
  return y;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  return binary("mul", a, b, [](auto u, auto v) { return u * v; },
                [](auto, auto v, auto g) { return g * v; }, [](auto u, auto, auto g) { return g * u; });
}

Tensor div(const Tensor& a, const Tensor& b) {
  return binary("div", a, b, [](auto u, auto v) { return u / v; },
                [](auto, auto v, auto g) { return g / v; },
                [](auto u, auto v, auto g) { return -g * u / (v * v); });
}

Tensor pow(const Tensor& a, const Tensor& b) {
  return binary("pow", a, b, [](auto u, auto v) { return std::pow(u, v); },
                [](auto u, auto v, auto g) { return v == 0 ? decltype(g)(0) : g * v * std::pow(u, v - 1); },
                // d/db a^b = a^b log a; taken as 0 where a == 0 (as torch does)
                [](auto u, auto v, auto g) { return u == 0 ? decltype(g)(0) : g * std::pow(u, v) * std::log(u); });
}

// Ties send the gradient half to each side, as torch does.
Tensor maximum(const Tensor& a, const Tensor& b) {
  return binary("maximum", a, b, [](auto u, auto v) { return (u != u || u > v) ? u : v; },
                [](auto u, auto v, auto g) { return u > v ? g : u == v ? g / 2 : decltype(g)(0); },
                [](auto u, auto v, auto g) { return v > u ? g : u == v ? g / 2 : decltype(g)(0); });
}

Tensor minimum(const Tensor& a, const Tensor& b) {
  return binary("minimum", a, b, [](auto u, auto v) { return (u != u || u < v) ? u : v; },
                [](auto u, auto v, auto g) { return u < v ? g : u == v ? g / 2 : decltype(g)(0); },
                [](auto u, auto v, auto g) { return v < u ? g : u == v ? g / 2 : decltype(g)(0); });
}

// ---- scalar forms

using namespace unary_ops;

Tensor add(const Tensor& a, double s) { return unary<AddScalar>(a, s); }
Tensor mul(const Tensor& a, double s) { return unary<MulScalar>(a, s); }
Tensor rsub(const Tensor& a, double s) { return unary<Rsub>(a, s); }
Tensor rdiv(const Tensor& a, double s) { return unary<Rdiv>(a, s); }
Tensor pow(const Tensor& a, double e) {
  if (e == 2.0) return square(a);
  return unary<PowScalar>(a, e);
}

// ---- unary math

Tensor neg(const Tensor& x) { return unary<Neg>(x); }
Tensor exp(const Tensor& x) { return unary<Exp>(x); }
Tensor log(const Tensor& x) { return unary<Log>(x); }
Tensor log1p(const Tensor& x) { return unary<Log1p>(x); }
Tensor sqrt(const Tensor& x) { return unary<Sqrt>(x); }
Tensor rsqrt(const Tensor& x) { return unary<Rsqrt>(x); }
Tensor abs(const Tensor& x) { return unary<Abs>(x); }
Tensor sin(const Tensor& x) { return unary<Sin>(x); }
Tensor cos(const Tensor& x) { return unary<Cos>(x); }
Tensor square(const Tensor& x) { return unary<Square>(x); }
Tensor clamp(const Tensor& x, std::optional<double> lo, std::optional<double> hi) {
  double l = lo.value_or(-INFINITY), h = hi.value_or(INFINITY);
  LD_CHECK(l <= h, "clamp: min ", l, " > max ", h);
  return unary<Clamp>(x, l, h);
}
Tensor tanh(const Tensor& x) { return unary<Tanh>(x); }
Tensor sigmoid(const Tensor& x) { return unary<Sigmoid>(x); }
Tensor relu(const Tensor& x) { return unary<Relu>(x); }
Tensor gelu(const Tensor& x, GeluApprox approx) {
  return approx == GeluApprox::tanh ? unary<GeluTanh>(x) : unary<Gelu>(x);
}
Tensor silu(const Tensor& x) { return unary<Silu>(x); }
Tensor elu(const Tensor& x, double alpha) { return unary<Elu>(x, alpha); }
Tensor softplus(const Tensor& x, double beta, double threshold) {
  LD_CHECK(beta > 0, "softplus: beta must be positive, got ", beta);
  return unary<Softplus>(x, beta, threshold);
}
Tensor softsign(const Tensor& x) { return unary<Softsign>(x); }

// ---- comparisons (no gradient)
Tensor eq(const Tensor& a, const Tensor& b) { return compare("eq", a, b, [](auto u, auto v) { return u == v; }); }
Tensor ne(const Tensor& a, const Tensor& b) { return compare("ne", a, b, [](auto u, auto v) { return u != v; }); }
Tensor lt(const Tensor& a, const Tensor& b) { return compare("lt", a, b, [](auto u, auto v) { return u < v; }); }
Tensor le(const Tensor& a, const Tensor& b) { return compare("le", a, b, [](auto u, auto v) { return u <= v; }); }
Tensor gt(const Tensor& a, const Tensor& b) { return compare("gt", a, b, [](auto u, auto v) { return u > v; }); }
Tensor ge(const Tensor& a, const Tensor& b) { return compare("ge", a, b, [](auto u, auto v) { return u >= v; }); }
Tensor gt(const Tensor& a, double s) { return gt(a, full({}, s, {a.dtype(), a.device()})); }
Tensor lt(const Tensor& a, double s) { return lt(a, full({}, s, {a.dtype(), a.device()})); }

// ---- selection

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_same_dtype(a, b, "where");
  check_same_dtype(cond, a, "where (condition)");
  Shape s = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  Tensor y;
  if (!a.device().is_cpu()) {
    y = empty(s, {a.dtype(), a.device()});
    kernels::where(a.device(), cond, a, b, y);
  } else {
    y = LD_DISPATCH_FLOAT(a.dtype(), "where", [&] {
      return map<scalar_t, 3>(s, {&cond, &a, &b}, [](scalar_t c, scalar_t u, scalar_t v) { return c != 0 ? u : v; });
    });
  }
  if (needs_grad({&a, &b})) {
    SavedTensor sc(cond, "where");
    Shape as = a.shape(), bs = b.shape();
    bool ga = a.requires_grad(), gb = b.requires_grad();
    record("where", y, {a, b}, [=](const Tensor& g) {
      const Tensor& c = sc.get();
      Tensor zero = zeros({}, {g.dtype(), g.device()});
      return std::vector<Tensor>{ga ? sum_to(where(c, g, zero), as) : Tensor(),
                                 gb ? sum_to(where(c, zero, g), bs) : Tensor()};
    });
  }
  return y;
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  return where(mask, full({}, value, {x.dtype(), x.device()}), x);
}

// ---- bias + activation, fused

namespace {
const char* bias_act_name(BiasActivation a) {
  return a == BiasActivation::gelu ? "gelu" : a == BiasActivation::gelu_tanh ? "gelu_tanh" : "none";
}

// act(z) and act'(z): gelu()'s formulas (core/ops/unary_ops.h). The activation is a template parameter (with_act picks it once per call),
// so that the element loops inline it and vectorize (a per-element branch on it kept them scalar: 27% of a bf16 LM
// step in act_value/act_slope calls).
template <BiasActivation A, class W>
LD_VINLINE W act_value(W z) {
  if constexpr (A == BiasActivation::gelu) return Gelu::f<CpuMath>(z, 0, 0);
  else if constexpr (A == BiasActivation::gelu_tanh) return GeluTanh::f<CpuMath>(z, 0, 0);
  else return z;
}
template <BiasActivation A, class W>
LD_VINLINE W act_slope(W z) {  // the derivative at z, as d(z, ·, g = 1)
  if constexpr (A == BiasActivation::gelu) return Gelu::d<CpuMath>(z, z, W(1), 0, 0);
  else if constexpr (A == BiasActivation::gelu_tanh) return GeluTanh::d<CpuMath>(z, z, W(1), 0, 0);
  else return W(1);
}
template <class F>
void with_act(BiasActivation a, F&& f) {
  if (a == BiasActivation::gelu) f(std::integral_constant<BiasActivation, BiasActivation::gelu>());
  else if (a == BiasActivation::gelu_tanh) f(std::integral_constant<BiasActivation, BiasActivation::gelu_tanh>());
  else f(std::integral_constant<BiasActivation, BiasActivation::none>());
}

constexpr int64_t kBiasChunk = 64;  // rows per partial bias-gradient sum (fixed: results independent of threads)

// T: h's element type, B: the bias's (and a residual's), W: the arithmetic's (float, or double for f64), Y: the
// output's (and its gradient's): T, or B with a residual (the residual stream's format).
template <BiasActivation A, class T, class B, class W, class Y>
void bias_act_cpu(const T* h, const B* bias, const B* res, Y* y, int64_t rows, int64_t N) {
  cpu::parallel_range(rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = 0; c < N; ++c) {
        int64_t i = r * N + c;
        W v = act_value<A, W>(W(h[i]) + W(bias[c]));
        y[i] = Y(res ? W(res[i]) + v : v);
      }
  }, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, N)));
}

template <BiasActivation A, class T, class B, class W, class Y>
void bias_act_backward_cpu(const T* h, const B* bias, const Y* g, T* dh, B* dbias, int64_t rows,
                           int64_t N) {
  int64_t chunks = (rows + kBiasChunk - 1) / kBiasChunk;
  std::vector<W> partial(size_t(chunks * N), W(0));
  cpu::parallel_range(chunks, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      W* part = partial.data() + k * N;
      for (int64_t r = k * kBiasChunk; r < std::min(rows, (k + 1) * kBiasChunk); ++r)
        for (int64_t c = 0; c < N; ++c) {
          W dz = W(g[r * N + c]) * act_slope<A, W>(W(h[r * N + c]) + W(bias[c]));
          dh[r * N + c] = T(dz);
          part[c] += dz;
        }
    }
  }, 1);
  for (int64_t c = 0; c < N; ++c) {
    W s = 0;
    for (int64_t k = 0; k < chunks; ++k) s += partial[size_t(k * N + c)];
    dbias[c] = B(s);
  }
}

// f(T, B, W, Y) for h's dtype (see bias_act_cpu); wide_out: Y = B (a residual), else Y = T.
template <class F>
void with_bias_act_types(DType h, bool wide_out, F&& f) {
  auto go = [&](auto t, auto b) {
    if (wide_out) f(t, b, b, b);
    else f(t, b, b, t);
  };
  if (h == DType::f64) return go(double(), double());
  if (h == DType::f32) return go(float(), float());
  if (h == DType::bf16) return go(bfloat16(), float());
  return go(float16(), float());
}
}  // namespace

Tensor bias_act(const Tensor& h, const Tensor& bias, BiasActivation act, const Tensor& residual) {
  const char* op = "bias_act";
  LD_CHECK(h.defined() && is_floating(h.dtype()) && h.dim() >= 1, op, ": h must be a floating tensor [.., N]");
  const int64_t N = h.size(-1), rows = N ? h.numel() / N : 0;
  DType wide = is_half(h.dtype()) ? DType::f32 : h.dtype();
  TensorOptions ow{wide, h.device()};
  LD_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == N), op, ": h ", shape_str(h.shape()), " ",
           dtype_name(h.dtype()), " and bias ", shape_str(bias.shape()), " do not match (expected h [.., N] and bias [N])");
  LD_CHECK(!bias.defined() || bias.dtype() == wide, op, ": bias must be ", dtype_name(wide), " for h in ",
           dtype_name(h.dtype()), ", got ", dtype_name(bias.dtype()));
  LD_CHECK(!residual.defined() || (residual.shape() == h.shape() && residual.dtype() == wide), op, ": residual ",
           shape_str(residual.shape()), " ", dtype_name(residual.dtype()), " must be ", shape_str(h.shape()), " ",
           dtype_name(wide));
  for (const Tensor* t : {&bias, &residual})
    LD_CHECK(!t->defined() || t->device() == h.device(), op, ": h is on ", h.device().str(), ", an argument on ",
             t->device().str());
  Tensor hc = h.contiguous(), bc = bias.defined() ? bias.contiguous() : zeros({N}, ow);
  Tensor rc = residual.defined() ? residual.contiguous() : Tensor();
  Tensor y = empty(h.shape(), {residual.defined() ? wide : h.dtype(), h.device()});
  if (!h.device().is_cpu()) {
    kernels::bias_act(h.device(), hc, bc, bias_act_name(act), rc, y);
  } else {
    with_bias_act_types(h.dtype(), rc.defined(), [&](auto t, auto b, auto w, auto yt) {
      using T = decltype(t);
      using B = decltype(b);
      using Y = decltype(yt);
      with_act(act, [&](auto A) {
        bias_act_cpu<decltype(A)::value, T, B, decltype(w), Y>(static_cast<const T*>(hc.device_data()),
                                                    static_cast<const B*>(bc.device_data()),
                                                    rc.defined() ? static_cast<const B*>(rc.device_data()) : nullptr,
                                                    static_cast<Y*>(y.device_data()), rows, N);
      });
    });
  }
  if (needs_grad({&h, &bias, &residual})) {
    SavedTensor sh(hc, op), sb(bc, op);
    bool has_bias = bias.defined(), has_res = residual.defined();
    record(op, y, {h, bias, residual}, [=](const Tensor& g_in) {
      Tensor g = g_in.contiguous();
      const Tensor &hv = sh.get(), &bv = sb.get();
      Tensor dh = empty(hv.shape(), {hv.dtype(), hv.device()}), db = empty(bv.shape(), {bv.dtype(), bv.device()});
      if (!hv.device().is_cpu()) {
        kernels::bias_act_backward.labelled("bias_act", " backward", hv.device(), hv, bv, g, bias_act_name(act), dh, db);
      } else {
        with_bias_act_types(hv.dtype(), has_res, [&](auto t, auto b, auto w, auto yt) {
          using T = decltype(t);
          using B = decltype(b);
          using Y = decltype(yt);
          with_act(act, [&](auto A) {
            bias_act_backward_cpu<decltype(A)::value, T, B, decltype(w), Y>(static_cast<const T*>(hv.device_data()),
                                                                 static_cast<const B*>(bv.device_data()),
                                                                 static_cast<const Y*>(g.device_data()),
                                                                 static_cast<T*>(dh.device_data()),
                                                                 static_cast<B*>(db.device_data()), rows, N);
          });
        });
      }
      return std::vector<Tensor>{dh, has_bias ? db : Tensor(), has_res ? g_in : Tensor()};
    });
  }
  return y;
}

Tensor dropout(const Tensor& x, double p, bool train, Generator& gen) {
  LD_CHECK(p >= 0 && p < 1, "dropout: p must be in [0, 1), got ", p);
  if (!train || p == 0) return x;
  // The uniforms come from the CPU generator on every device, so a seed drops the same units everywhere.
  Tensor u = rand(x.shape(), gen, x.dtype());
  double keep = 1.0 - p;
  // mask = 1/keep where kept, 0 where dropped; y = x * mask
  Tensor mask = LD_DISPATCH_FLOAT(x.dtype(), "dropout", [&] {
    scalar_t k = scalar_t(keep), inv = scalar_t(1.0 / keep);
    return map<scalar_t, 1>(x.shape(), {&u}, [k, inv](scalar_t v) { return v < k ? inv : scalar_t(0); });
  });
  return mul(x, mask.to(x.device()));
}

}  // namespace liandan
