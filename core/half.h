#pragma once
// 16-bit floating-point formats: bfloat16 (8-bit exponent, 7-bit mantissa: f32's range) and IEEE half
// (5-bit exponent, 10-bit mantissa: max 65504). liandan stores them as tensors of dtype bf16 / f16 and uses
// them as GEMM inputs under autocast (core/autocast.h) and in safetensors files; arithmetic stays in f32.
// Conversions round to nearest even, keep NaN a NaN, and (f16) overflow to ±inf and produce subnormals, so
// the bits equal torch's `x.to(torch.bfloat16)` / `x.to(torch.float16)` and cuda_bf16.h's `__float2bfloat16_rn`.
// Header-only and C++17 (nvcc compiles it too), so the element loops that convert inline them.
#include <cmath>
#include <cstdint>
#include <cstring>

namespace liandan {

namespace half_detail {
inline uint32_t bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float from_bits(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
}  // namespace half_detail

inline uint16_t float_to_bf16(float f) {
  uint32_t x = half_detail::bits(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t((x >> 16) | 0x0040u);  // NaN: keep it a (quiet) NaN
  uint32_t bias = 0x7FFFu + ((x >> 16) & 1u);                                 // round to nearest even
  return uint16_t((x + bias) >> 16);
}

inline float bf16_to_float(uint16_t h) { return half_detail::from_bits(uint32_t(h) << 16); }

inline uint16_t float_to_f16(float f) {
  uint32_t x = half_detail::bits(f);
  uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  uint32_t ax = x & 0x7FFFFFFFu;
  if (ax > 0x7F800000u) return uint16_t(sign | 0x7E00u | ((ax >> 13) & 0x3FFu));  // NaN
  if (ax >= 0x47800000u) return uint16_t(sign | 0x7C00u);                         // >= 65536 or inf
  int32_t e = int32_t(ax >> 23) - 127;
  if (e >= -14) {  // a normal half (the rounding carry may reach the exponent, up to inf: correct)
    uint32_t h = (uint32_t(e + 15) << 10) | ((ax >> 13) & 0x3FFu);
    uint32_t rem = ax & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
    return uint16_t(sign | h);
  }
  if (e < -25) return sign;  // below half of the smallest subnormal (2^-24): rounds to zero
  uint32_t mant = (ax & 0x7FFFFFu) | 0x800000u;
  int shift = -(e + 1);  // 14 .. 24: the value is m * 2^-24
  uint32_t m = mant >> shift, rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1);
  if (rem > half || (rem == half && (m & 1u))) ++m;  // m = 0x400 is the smallest normal: still correct
  return uint16_t(sign | m);
}

inline float f16_to_float(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
  if (e == 0x1F) return half_detail::from_bits(sign | 0x7F800000u | (m << 13));
  if (e == 0) {
    float v = float(m) * 0x1p-24f;  // exact
    return sign ? -v : v;
  }
  return half_detail::from_bits(sign | ((e + 112u) << 23) | (m << 13));
}

// f64 -> f32 rounding to odd: the later rounding to bf16/f16 (at least 2 bits narrower) is then the
// correctly rounded f64 -> bf16/f16 result (no double-rounding error).
inline float double_to_float_odd(double d) {
  float f = float(d);
  if (std::isnan(d) || double(f) == d) return f;
  if (std::fabs(double(f)) > std::fabs(d)) f = std::nextafter(f, 0.0f);  // truncate toward zero
  return half_detail::from_bits(half_detail::bits(f) | 1u);
}

// The element types of bf16 / f16 tensors: 2 bytes of storage, converted on every read and write. They
// convert explicitly from any arithmetic type (correctly rounded) and implicitly to float.
template <uint16_t (*Encode)(float), float (*Decode)(uint16_t)>
struct Float16Storage {
  uint16_t bits = 0;
  Float16Storage() = default;
  explicit Float16Storage(float f) : bits(Encode(f)) {}
  explicit Float16Storage(double d) : bits(Encode(double_to_float_odd(d))) {}
  explicit Float16Storage(int64_t i) : Float16Storage(double(i)) {}
  explicit Float16Storage(int i) : Float16Storage(double(i)) {}
  operator float() const { return Decode(bits); }  // NOLINT: exact, so implicit like torch's
  static Float16Storage from_bits(uint16_t b) { Float16Storage h; h.bits = b; return h; }
};
using bfloat16 = Float16Storage<float_to_bf16, bf16_to_float>;
using float16 = Float16Storage<float_to_f16, f16_to_float>;

}  // namespace liandan
