#pragma once
// Math functions the compiler can vectorize. glibc's expf/tanhf/erff are scalar calls that block
// auto-vectorization (without -ffast-math), which makes exp-heavy kernels (softmax, GELU, SiLU)
// several times slower than PyTorch's SLEEF kernels. For f32 we use Cephes-style polynomials
// (max error ~2 ulp for exp, ~1.5e-7 absolute for erf; tests compare them with f64 libm); f64 keeps
// libm, so gradient checks in f64 test the exact formulas.
#include <cmath>
#include <cstdint>
#include <cstring>

namespace liandan::cpu {

inline float bits_to_float(int32_t i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}

// Results below FLT_MIN (x < -87.3) flush to 0; above FLT_MAX (x > 88.72) they overflow to inf.
inline float vexp(float x) {
  float xc = std::fmin(std::fmax(x, -87.3f), 88.75f);
  float n = std::floor(xc * 1.44269504088896341f + 0.5f);  // in [-126, 128]
  float r = xc - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  float y = p * r * r + r + 1.0f;
  // 2^n as 2^h * 2^(n-h): 2^128 is not a float, yet e^x is finite up to x = 88.72 (n = 128, y < 1).
  int32_t ni = int32_t(n), h = ni >> 1;
  float v = y * bits_to_float((h + 127) << 23) * bits_to_float((ni - h + 127) << 23);
  v = x < -87.3f ? 0.0f : v;
  v = x > 88.75f ? INFINITY : v;
  return x != x ? x : v;
}
inline double vexp(double x) { return std::exp(x); }

inline float vtanh(float x) {
  float ax = std::fabs(x);
  float z = x * x;  // small |x|: odd polynomial, avoids cancellation in 1 - 2/(e^2x + 1)
  float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z +
                  1.33314422036e-1f) * z - 3.33332819422e-1f) * z * x + x;
  float big = 1.0f - 2.0f / (vexp(2.0f * ax) + 1.0f);
  big = std::copysign(big, x);
  return ax < 0.625f ? small : big;
}
inline double vtanh(double x) { return std::tanh(x); }

inline float vsigmoid(float x) { return 1.0f / (1.0f + vexp(-x)); }
inline double vsigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// erf with Abramowitz & Stegun 7.1.26 refined: absolute error < 1.5e-7.
inline float verf(float x) {
  float ax = std::fabs(x);
  float t = 1.0f / (1.0f + 0.3275911f * ax);
  float p = ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f) * t;
  float y = 1.0f - p * vexp(-ax * ax);
  return std::copysign(y, x);
}
inline double verf(double x) { return std::erf(x); }

}  // namespace liandan::cpu
