#pragma once
// The unary elementwise ops, each formula written once: y = f(x) and its derivative dx = d(x, y, g), as functors
// that both the CPU loop (core/ops/elementwise.cpp) and the one generic CUDA kernel (core/cuda/elementwise.cu)
// instantiate, so the two sides cannot drift apart. Adding a unary op: its functor and its LD_UNARY_OPS entry
// here, its one-line public function (core/ops.h, core/ops/elementwise.cpp) and its test entry.
//
// A formula calls its math through M: the CPU passes cpu::vexp & co. (f32 polynomials that vectorize, f64
// libm: core/cpu/vecmath.h), the device its libm (::exp, ...), so each side computes what it computed before the
// formulas were shared. p0, p1 are the op's scalar parameters (a scalar operand, clamp's bounds, softplus's beta
// and threshold, elu's alpha), converted to T where the formula uses them. Included by .cu files: C++17.
#include "core/host_device.h"

// Always inlined (LD_HOST_DEVICE_INLINE): an out-of-line call per element would keep the CPU loops from vectorizing.
#define LD_UNARY_FWD \
  template <class M, class T> LD_HOST_DEVICE_INLINE static T f(T x, [[maybe_unused]] double p0, [[maybe_unused]] double p1)
#define LD_UNARY_BWD                                                                                 \
  template <class M, class T>                                                                        \
  LD_HOST_DEVICE_INLINE static T d([[maybe_unused]] T x, [[maybe_unused]] T y, T g, [[maybe_unused]] double p0, \
                             [[maybe_unused]] double p1)

namespace liandan::unary_ops {

// ---- scalar forms (p0: the scalar)
struct AddScalar {
  LD_UNARY_FWD { return x + T(p0); }
  LD_UNARY_BWD { return g; }
};
struct MulScalar {
  LD_UNARY_FWD { return x * T(p0); }
  LD_UNARY_BWD { return g * T(p0); }
};
struct Rsub {  // p0 - x
  LD_UNARY_FWD { return T(p0) - x; }
  LD_UNARY_BWD { return -g; }
};
struct Rdiv {  // p0 / x
  LD_UNARY_FWD { return T(p0) / x; }
  LD_UNARY_BWD { return -g * y / x; }
};
struct PowScalar {  // x^p0
  LD_UNARY_FWD { return M::pow(x, T(p0)); }
  LD_UNARY_BWD { return p0 == 0 ? T(0) : g * T(p0) * M::pow(x, T(p0 - 1)); }
};

// ---- math
struct Neg {
  LD_UNARY_FWD { return -x; }
  LD_UNARY_BWD { return -g; }
};
struct Exp {
  LD_UNARY_FWD { return M::exp(x); }
  LD_UNARY_BWD { return g * y; }
};
struct Log {
  LD_UNARY_FWD { return M::log(x); }
  LD_UNARY_BWD { return g / x; }
};
struct Log1p {
  LD_UNARY_FWD { return M::log1p(x); }
  LD_UNARY_BWD { return g / (1 + x); }
};
struct Sqrt {
  LD_UNARY_FWD { return M::sqrt(x); }
  LD_UNARY_BWD { return g / (2 * y); }
};
struct Rsqrt {
  LD_UNARY_FWD { return T(1) / M::sqrt(x); }
  LD_UNARY_BWD { return -g * y / (2 * x); }
};
struct Abs {  // the gradient at 0 is 0
  LD_UNARY_FWD { return M::abs(x); }
  LD_UNARY_BWD { return x > 0 ? g : x < 0 ? -g : T(0); }
};
struct Sin {
  LD_UNARY_FWD { return M::sin(x); }
  LD_UNARY_BWD { return g * M::cos(x); }
};
struct Cos {
  LD_UNARY_FWD { return M::cos(x); }
  LD_UNARY_BWD { return -g * M::sin(x); }
};
struct Square {
  LD_UNARY_FWD { return x * x; }
  LD_UNARY_BWD { return 2 * g * x; }
};
struct Clamp {  // into [p0, p1]; NaN stays NaN; the gradient flows where p0 <= x <= p1 (inclusive, as torch)
  LD_UNARY_FWD { return x != x ? x : x < T(p0) ? T(p0) : x > T(p1) ? T(p1) : x; }
  LD_UNARY_BWD { return (x >= T(p0) && x <= T(p1)) ? g : T(0); }
};

// ---- activations
struct Tanh {
  LD_UNARY_FWD { return M::tanh(x); }
  LD_UNARY_BWD { return g * (1 - y * y); }
};
struct Sigmoid {
  LD_UNARY_FWD { return M::sigmoid(x); }
  LD_UNARY_BWD { return g * y * (1 - y); }
};
struct Relu {  // NaN stays NaN
  LD_UNARY_FWD { return x > 0 || x != x ? x : T(0); }
  LD_UNARY_BWD { return x > 0 ? g : T(0); }
};
// GELU, exact: x Φ(x), d/dx = Φ(x) + x φ(x). Also bias_act's activation (its d with g = the incoming gradient).
struct Gelu {
  LD_UNARY_FWD { return T(0.5) * x * (1 + M::erf(x * T(0.7071067811865476))); }
  LD_UNARY_BWD {
    T cdf = T(0.5) * (1 + M::erf(x * T(0.7071067811865476)));
    T pdf = T(0.3989422804014327) * M::exp(T(-0.5) * x * x);
    return g * (cdf + x * pdf);
  }
};
// GELU, tanh form: 0.5 x (1 + tanh(u)), u = sqrt(2/π) (x + 0.044715 x³).
struct GeluTanh {
  LD_UNARY_FWD {
    T u = T(0.7978845608028654) * (x + T(0.044715) * x * x * x);
    return T(0.5) * x * (1 + M::tanh(u));
  }
  LD_UNARY_BWD {
    T u = T(0.7978845608028654) * (x + T(0.044715) * x * x * x);
    T th = M::tanh(u);
    T du = T(0.7978845608028654) * (1 + T(3 * 0.044715) * x * x);
    return g * (T(0.5) * (1 + th) + T(0.5) * x * (1 - th * th) * du);
  }
};
struct Silu {
  LD_UNARY_FWD { return x * M::sigmoid(x); }
  LD_UNARY_BWD {
    T s = M::sigmoid(x);
    return g * s * (1 + x * (1 - s));
  }
};
struct Elu {  // p0 = alpha
  LD_UNARY_FWD { return x > 0 ? x : T(p0) * (M::exp(x) - 1); }
  LD_UNARY_BWD { return x > 0 ? g : g * (y + T(p0)); }
};
// (1/β) log(1 + e^{βx}) with p0 = β; the identity above βx > p1 = threshold (as torch), for stability.
struct Softplus {
  LD_UNARY_FWD {
    T bx = T(p0) * x;
    return bx > T(p1) ? x : M::log1p(M::exp(bx)) / T(p0);
  }
  LD_UNARY_BWD {
    T bx = T(p0) * x;
    return bx > T(p1) ? g : g * M::sigmoid(bx);
  }
};

struct Softsign {  // x / (1 + |x|); d/dx = 1 / (1 + |x|)²
  LD_UNARY_FWD { return x / (1 + M::abs(x)); }
  LD_UNARY_BWD {
    T a = 1 + M::abs(x);
    return g / (a * a);
  }
};

// Every op: X(name, Functor). The name is the op's (errors, autograd nodes, the GPU profile); the CUDA kernel
// table is generated from this list, so an op here runs on every device.
#define LD_UNARY_OPS(X)                                                                                     \
  X(add_scalar, AddScalar) X(mul_scalar, MulScalar) X(rsub, Rsub) X(rdiv, Rdiv) X(pow_scalar, PowScalar)   \
  X(neg, Neg) X(exp, Exp) X(log, Log) X(log1p, Log1p) X(sqrt, Sqrt) X(rsqrt, Rsqrt) X(abs, Abs) X(sin, Sin) \
  X(cos, Cos) X(square, Square) X(clamp, Clamp) X(tanh, Tanh) X(sigmoid, Sigmoid) X(relu, Relu)            \
  X(gelu, Gelu) X(gelu_tanh, GeluTanh) X(silu, Silu) X(elu, Elu) X(softplus, Softplus) X(softsign, Softsign)

// name<F>: the op's name from the list.
template <class F>
inline constexpr const char* name = nullptr;
#define LD_UNARY_NAME(op, F) \
  template <>                \
  inline constexpr const char* name<F> = #op;
LD_UNARY_OPS(LD_UNARY_NAME)
#undef LD_UNARY_NAME

}  // namespace liandan::unary_ops
