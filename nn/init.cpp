#include "nn/init.h"

#include <cmath>

#include "core/autograd.h"
#include "core/ops.h"

namespace liandan::nn::init {

namespace {

void check(const Tensor& t, const char* op) {
  LD_CHECK(t.defined(), "init::", op, ": undefined tensor");
  LD_CHECK(is_floating(t.dtype()), "init::", op, ": expected a floating tensor, got ", dtype_name(t.dtype()));
}

// Writes `src` (any floating dtype, same shape) into `t` without recording a graph.
void assign(const Tensor& t, const Tensor& src) {
  NoGradGuard ng;
  Tensor dst = t;
  dst.copy_(src);
}

double fan_of(const Tensor& t, FanMode mode) {
  auto [fi, fo] = calculate_fans(t);
  double f = mode == FanMode::fan_in ? double(fi) : mode == FanMode::fan_out ? double(fo) : 0.5 * double(fi + fo);
  LD_CHECK(f > 0, "init: fan of tensor ", shape_str(t.shape()), " is zero");
  return f;
}

}  // namespace

double calculate_gain(Nonlinearity f, double param) {
  switch (f) {
    case Nonlinearity::linear:
    case Nonlinearity::identity:
    case Nonlinearity::sigmoid: return 1.0;
    case Nonlinearity::tanh: return 5.0 / 3.0;
    case Nonlinearity::relu: return std::sqrt(2.0);
    case Nonlinearity::leaky_relu: {
      double slope = param < 0 ? 0.01 : param;
      return std::sqrt(2.0 / (1.0 + slope * slope));
    }
    case Nonlinearity::gelu: return 1.0 / std::sqrt(1.0 / 3.0 + 1.0 / (2.0 * std::sqrt(3.0) * M_PI));
    case Nonlinearity::silu: return 1.0 / std::sqrt(0.3557755198173356);
    case Nonlinearity::selu: return 0.75;
  }
  LD_FAIL("calculate_gain: unknown nonlinearity");
}

std::pair<int64_t, int64_t> calculate_fans(const Tensor& t) {
  LD_CHECK(t.defined(), "calculate_fans: undefined tensor");
  if (t.dim() == 0) return {1, 1};
  if (t.dim() == 1) return {t.size(0), t.size(0)};
  int64_t receptive = 1;
  for (int64_t d = 2; d < t.dim(); ++d) receptive *= t.size(d);
  return {t.size(1) * receptive, t.size(0) * receptive};
}

Tensor zeros_(const Tensor& t) { return constant_(t, 0.0); }
Tensor ones_(const Tensor& t) { return constant_(t, 1.0); }
Tensor constant_(const Tensor& t, double value) {
  LD_CHECK(t.defined(), "init::constant_: undefined tensor");
  NoGradGuard ng;
  Tensor d = t;
  d.fill_(value);
  return t;
}

Tensor uniform_(const Tensor& t, Generator& gen, double lo, double hi) {
  check(t, "uniform_");
  LD_CHECK(lo <= hi, "init::uniform_: lo ", lo, " > hi ", hi);
  if (t.is_contiguous()) {
    Tensor d = t;
    fill_uniform_(d, lo, hi, gen);
  } else {
    Tensor tmp = empty(t.shape(), t.dtype());
    fill_uniform_(tmp, lo, hi, gen);
    assign(t, tmp);
  }
  return t;
}

Tensor normal_(const Tensor& t, Generator& gen, double mean, double std) {
  check(t, "normal_");
  LD_CHECK(std >= 0, "init::normal_: std must be >= 0, got ", std);
  if (t.is_contiguous()) {
    Tensor d = t;
    fill_normal_(d, mean, std, gen);
  } else {
    Tensor tmp = empty(t.shape(), t.dtype());
    fill_normal_(tmp, mean, std, gen);
    assign(t, tmp);
  }
  return t;
}

double normal_quantile(double p) {
  LD_CHECK(p > 0 && p < 1, "normal_quantile: p must be in (0, 1), got ", p);
  // Acklam's rational approximation (relative error 1.15e-9), then one Halley step on the exact CDF.
  static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                             1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                             6.680131188771972e+01,  -1.328068155288572e+01};
  static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                             -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
  static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                             3.754408661907416e+00};
  constexpr double plow = 0.02425;
  double x;
  if (p < plow) {
    double q = std::sqrt(-2 * std::log(p));
    x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  } else if (p <= 1 - plow) {
    double q = p - 0.5, r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
  } else {
    double q = std::sqrt(-2 * std::log1p(-p));
    x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  // e = Phi(x) - p, computed through the complement above 1/2 (1 - p is exact there) so the upper tail
  // keeps its relative accuracy.
  double e = p < 0.5 ? 0.5 * std::erfc(-x / std::sqrt(2.0)) - p : (1 - p) - 0.5 * std::erfc(x / std::sqrt(2.0));
  double u = e * std::sqrt(2 * M_PI) * std::exp(x * x / 2);
  return x - u / (1 + x * u / 2);
}

Tensor trunc_normal_(const Tensor& t, Generator& gen, double mean, double std, double a, double b) {
  check(t, "trunc_normal_");
  LD_CHECK(std > 0 && a < b, "init::trunc_normal_: need std > 0 and a < b, got std ", std, ", [", a, ", ", b, "]");
  int64_t n = t.numel();
  if (n == 0) return t;
  // Standardized bounds; sample in the lower tail (where Phi is accurate in double) and mirror.
  double lo = (a - mean) / std, hi = (b - mean) / std, sign = 1;
  if (lo + hi > 0) {
    std::swap(lo, hi);
    lo = -lo;
    hi = -hi;
    sign = -1;
  }
  auto Phi = [](double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); };
  double plo = Phi(lo), phi = Phi(hi);
  Tensor u = rand(t.shape(), gen, DType::f64);
  Tensor out = empty(t.shape(), t.dtype());
  const double* pu = u.data_ptr<double>();
  LD_DISPATCH_FLOAT(t.dtype(), "init::trunc_normal_", [&] {
    scalar_t* po = out.data_ptr<scalar_t>();
    for (int64_t i = 0; i < n; ++i) {
      double p = plo + pu[i] * (phi - plo);
      double z = p <= 0 ? lo : p >= 1 ? hi : normal_quantile(p);
      z = std::min(hi, std::max(lo, z));
      double v = std::min(b, std::max(a, mean + std * sign * z));
      scalar_t s = scalar_t(v);
      // Rounding to f32 may step over a bound that f32 cannot represent: step back inside.
      if (double(s) > b) s = std::nextafter(s, scalar_t(-INFINITY));
      if (double(s) < a) s = std::nextafter(s, scalar_t(INFINITY));
      po[i] = s;
    }
  });
  assign(t, out);
  return t;
}

Tensor xavier_uniform_(const Tensor& t, Generator& gen, double gain) {
  check(t, "xavier_uniform_");
  if (t.numel() == 0) return t;
  double bound = gain * std::sqrt(3.0 / fan_of(t, FanMode::fan_avg));  // = gain sqrt(6 / (fi + fo))
  return uniform_(t, gen, -bound, bound);
}

Tensor xavier_normal_(const Tensor& t, Generator& gen, double gain) {
  check(t, "xavier_normal_");
  if (t.numel() == 0) return t;
  return normal_(t, gen, 0.0, gain * std::sqrt(1.0 / fan_of(t, FanMode::fan_avg)));
}

Tensor kaiming_uniform_(const Tensor& t, Generator& gen, double a, FanMode mode, Nonlinearity f) {
  check(t, "kaiming_uniform_");
  if (t.numel() == 0) return t;
  double std = calculate_gain(f, a) / std::sqrt(fan_of(t, mode));
  double bound = std::sqrt(3.0) * std;
  return uniform_(t, gen, -bound, bound);
}

Tensor kaiming_normal_(const Tensor& t, Generator& gen, double a, FanMode mode, Nonlinearity f) {
  check(t, "kaiming_normal_");
  if (t.numel() == 0) return t;
  return normal_(t, gen, 0.0, calculate_gain(f, a) / std::sqrt(fan_of(t, mode)));
}

Tensor variance_scaling_(const Tensor& t, Generator& gen, double scale, FanMode mode, Distribution dist) {
  check(t, "variance_scaling_");
  LD_CHECK(scale > 0, "init::variance_scaling_: scale must be > 0, got ", scale);
  if (t.numel() == 0) return t;
  double std = std::sqrt(scale / fan_of(t, mode));
  switch (dist) {
    case Distribution::normal: return normal_(t, gen, 0.0, std);
    case Distribution::uniform: return uniform_(t, gen, -std::sqrt(3.0) * std, std::sqrt(3.0) * std);
    case Distribution::truncated_normal: {
      // std of N(0, 1) cut at +-2 (the constant of Keras and JAX): divide it out.
      constexpr double kTruncStd = 0.87962566103423978;
      double s = std / kTruncStd;
      return trunc_normal_(t, gen, 0.0, s, -2 * s, 2 * s);
    }
  }
  return t;
}

Tensor scale_aware_(const Tensor& t, Generator& gen, double std) {
  check(t, "scale_aware_");
  LD_CHECK(std >= 0, "init::scale_aware_: std must be >= 0, got ", std);
  int64_t n = t.numel();
  if (n == 0) return t;
  Tensor z = randn(t.shape(), gen, DType::f64);
  double* p = z.data_ptr<double>();
  if (n == 1) {
    p[0] = p[0] < 0 ? -std : std;
  } else {
    double m = 0, ss = 0;
    for (int64_t i = 0; i < n; ++i) m += p[i];
    m /= double(n);
    for (int64_t i = 0; i < n; ++i) ss += (p[i] - m) * (p[i] - m);
    double k = ss > 0 ? std / std::sqrt(ss / double(n)) : 0.0;
    for (int64_t i = 0; i < n; ++i) p[i] = (p[i] - m) * k;
  }
  assign(t, z);
  return t;
}

}  // namespace liandan::nn::init
