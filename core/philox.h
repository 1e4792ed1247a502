#pragma once
// The element formulas of liandan's random draws, shared word for word by the CPU (core/random.cpp) and the
// CUDA kernels (core/cuda/random.cu), so that a seed and offset give the same numbers on every device.
// Philox 4x32-10 (Salmon et al. 2011) is integer arithmetic; uniforms scale its words exactly and apply
// lo + u·(hi − lo) as one fused multiply-add (fma is correctly rounded everywhere, while a compiler's
// choice to contract `u * s + lo` or not is not); normals use Box-Muller in double. C++17, no std::array
// (nvcc compiles this header for the device).
#include <cmath>
#include <cstdint>

#include "core/host_device.h"

namespace liandan::philox {

struct Block {
  uint32_t w[4];
};

LD_HOST_DEVICE inline Block philox4x32_10(Block c, uint32_t k0, uint32_t k1) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int r = 0; r < 10; ++r) {
    uint64_t p0 = uint64_t(M0) * c.w[0], p1 = uint64_t(M1) * c.w[2];
    c = {{uint32_t(p1 >> 32) ^ c.w[1] ^ k0, uint32_t(p1), uint32_t(p0 >> 32) ^ c.w[3] ^ k1, uint32_t(p0)}};
    k0 += W0;
    k1 += W1;
  }
  return c;
}

// Block `counter` of the stream of `seed`.
LD_HOST_DEVICE inline Block block(uint64_t seed, uint64_t counter) {
  return philox4x32_10({{uint32_t(counter), uint32_t(counter >> 32), 0, 0}}, uint32_t(seed), uint32_t(seed >> 32));
}

// Uniforms in [0, 1): 24 random bits for f32, 53 for f64 (exact in their formats).
LD_HOST_DEVICE inline float u24(uint32_t w) { return float(w >> 8) * (1.0f / 16777216.0f); }
LD_HOST_DEVICE inline double u53(uint32_t hi, uint32_t lo) {
  return double((uint64_t(hi) << 21) ^ (lo >> 11)) * (1.0 / 9007199254740992.0);
}

// Elements per Philox block: a uniform f32 draw uses one 32-bit word per element, f64 two; a normal
// draw uses a whole block per pair of elements (two 53-bit uniforms for Box-Muller).
template <class T> LD_HOST_DEVICE constexpr int uniform_per_block() { return sizeof(T) == 4 ? 4 : 2; }
constexpr int kNormalPerBlock = 2;

// Element j (< uniform_per_block<T>()) of a uniform block, mapped to [lo, hi): lo + u·(hi − lo) in T.
template <class T>
LD_HOST_DEVICE inline T uniform_element(const Block& b, int j, T lo, T span) {
  if constexpr (sizeof(T) == 4) return fmaf(u24(b.w[j]), span, lo);
  else return fma(u53(b.w[2 * j], b.w[2 * j + 1]), span, lo);
}

// The pair of N(mean, std²) values of a normal block, in double.
LD_HOST_DEVICE inline void normal_pair(const Block& b, double mean, double std, double* z0, double* z1) {
  constexpr double kTwoPi = 2.0 * 3.14159265358979323846;  // = 2.0 * M_PI, exactly
  double u1 = 1.0 - u53(b.w[0], b.w[1]);  // (0, 1]: log is finite
  double u2 = u53(b.w[2], b.w[3]);
  double r = sqrt(-2.0 * log(u1)), th = kTwoPi * u2;
  *z0 = fma(std * r, cos(th), mean);
  *z1 = fma(std * r, sin(th), mean);
}

}  // namespace liandan::philox
