#pragma once
// Math functions the compiler can vectorize. glibc's expf/tanhf/erff are scalar calls that block
// auto-vectorization (without -ffast-math), which makes exp-heavy kernels (softmax, GELU, SiLU)
// several times slower than PyTorch's SLEEF kernels. For f32 we use Cephes-style polynomials
// (max error ~2 ulp for exp, ~1.5e-7 absolute for erf; tests compare them with f64 libm); f64 keeps
// libm, so gradient checks in f64 test the exact formulas.
#include <cmath>
#include <cstdint>
#include <cstring>

// Always inlined: an out-of-line call per element blocks vectorization (GCC otherwise declines to
// inline vexp into big loops).
#define LD_VINLINE inline __attribute__((always_inline))

namespace liandan::cpu {

inline float bits_to_float(int32_t i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}

// Results below FLT_MIN (x < -87.3) flush to 0; above FLT_MAX (x > 88.72) they overflow to inf.
// Written with plain comparisons and selects (no fmin/fmax/isnan calls) so GCC if-converts and
// vectorizes it. NaN propagates: every comparison with NaN is false and the polynomial yields NaN.
LD_VINLINE float vexp(float x) {
  float xc = x < -87.3f ? -87.3f : x;
  xc = xc > 88.75f ? 88.75f : xc;
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
  return x > 88.75f ? INFINITY : v;
}
LD_VINLINE double vexp(double x) { return std::exp(x); }

LD_VINLINE float vtanh(float x) {
  float ax = std::fabs(x);
  float z = x * x;  // small |x|: odd polynomial, avoids cancellation in 1 - 2/(e^2x + 1)
  float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z +
                  1.33314422036e-1f) * z - 3.33332819422e-1f) * z * x + x;
  float big = 1.0f - 2.0f / (vexp(2.0f * ax) + 1.0f);
  big = std::copysign(big, x);
  return ax < 0.625f ? small : big;
}
LD_VINLINE double vtanh(double x) { return std::tanh(x); }

LD_VINLINE float vsigmoid(float x) { return 1.0f / (1.0f + vexp(-x)); }
LD_VINLINE double vsigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// erf with Abramowitz & Stegun 7.1.26 refined: absolute error < 1.5e-7.
LD_VINLINE float verf(float x) {
  float ax = std::fabs(x);
  float t = 1.0f / (1.0f + 0.3275911f * ax);
  float p = ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f) * t;
  float y = 1.0f - p * vexp(-ax * ax);
  return std::copysign(y, x);
}
LD_VINLINE double verf(double x) { return std::erf(x); }

}  // namespace liandan::cpu

namespace liandan::cpu {

// Row reductions with 16 independent lanes: GCC vectorizes them (a single accumulator is a serial
// dependency it may not reorder). The lane order is fixed, so results never depend on threads.
constexpr int kLanes = 16;

template <class T>
inline T lanes_total(const T* acc) {
  T s = 0;
  for (int j = 0; j < kLanes; ++j) s += acc[j];
  return s;
}

template <class T>
inline T row_sum(const T* __restrict x, int64_t n) {
  T acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += x[i + j];
  for (; i < n; ++i) acc[0] += x[i];
  return lanes_total(acc);
}

template <class T>
inline T row_dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  T acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += a[i + j] * b[i + j];
  for (; i < n; ++i) acc[0] += a[i] * b[i];
  return lanes_total(acc);
}

// sum(a * b * (x - m)) and sum(a * (x - m)): the centred forms avoid cancellation when |m| >> std.
template <class T>
inline T row_dot3_dev(const T* __restrict a, const T* __restrict b, const T* __restrict x, T m, int64_t n) {
  T acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += a[i + j] * b[i + j] * (x[i + j] - m);
  for (; i < n; ++i) acc[0] += a[i] * b[i] * (x[i] - m);
  return lanes_total(acc);
}
template <class T>
inline T row_dot_dev(const T* __restrict a, const T* __restrict x, T m, int64_t n) {
  T acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += a[i + j] * (x[i + j] - m);
  for (; i < n; ++i) acc[0] += a[i] * (x[i] - m);
  return lanes_total(acc);
}

// sum((x - m)^2)
template <class T>
inline T row_sq_dev(const T* __restrict x, T m, int64_t n) {
  T acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += (x[i + j] - m) * (x[i + j] - m);
  for (; i < n; ++i) acc[0] += (x[i] - m) * (x[i] - m);
  return lanes_total(acc);
}

// max with NaN propagation (a NaN anywhere gives NaN).
template <class T>
inline T row_max(const T* __restrict x, int64_t n) {
  T acc[kLanes];
  for (int j = 0; j < kLanes; ++j) acc[j] = -INFINITY;
  bool nan = false;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      acc[j] = x[i + j] > acc[j] ? x[i + j] : acc[j];
      nan |= x[i + j] != x[i + j];
    }
  for (; i < n; ++i) {
    acc[0] = x[i] > acc[0] ? x[i] : acc[0];
    nan |= x[i] != x[i];
  }
  T m = acc[0];
  for (int j = 1; j < kLanes; ++j) m = acc[j] > m ? acc[j] : m;
  return nan ? T(NAN) : m;
}

}  // namespace liandan::cpu
