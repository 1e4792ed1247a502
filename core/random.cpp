#include "core/random.h"

#include <cmath>
#include <numeric>

#include "core/threads.h"

namespace liandan {

std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> c, std::array<uint32_t, 2> k) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int r = 0; r < 10; ++r) {
    uint64_t p0 = uint64_t(M0) * c[0], p1 = uint64_t(M1) * c[2];
    c = {uint32_t(p1 >> 32) ^ c[1] ^ k[0], uint32_t(p1), uint32_t(p0 >> 32) ^ c[3] ^ k[1], uint32_t(p0)};
    k[0] += W0;
    k[1] += W1;
  }
  return c;
}

void Generator::manual_seed(uint64_t seed) { set_state(seed, 0); }
void Generator::set_state(uint64_t seed, uint64_t offset) {
  std::lock_guard<std::mutex> lock(mu_);
  seed_ = seed;
  offset_ = offset;
}
uint64_t Generator::reserve(uint64_t blocks) {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t first = offset_;
  offset_ += blocks;
  return first;
}

Generator& default_generator() {
  static Generator g(0);
  return g;
}
void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

namespace {

std::array<uint32_t, 4> block(uint64_t seed, uint64_t counter) {
  return philox4x32_10({uint32_t(counter), uint32_t(counter >> 32), 0, 0},
                       {uint32_t(seed), uint32_t(seed >> 32)});
}
inline float u24(uint32_t w) { return float(w >> 8) * (1.0f / 16777216.0f); }
inline double u53(uint32_t hi, uint32_t lo) {
  return double((uint64_t(hi) << 21) ^ (lo >> 11)) * (1.0 / 9007199254740992.0);
}

// Element i of a uniform draw: f32 takes word i%4 of block i/4; f64 takes words 2(i%2), 2(i%2)+1
// of block i/2. Block b of the draw is Philox(seed, first + b).
template <class T>
void uniform_kernel(T* out, int64_t n, uint64_t seed, uint64_t first, double lo, double hi) {
  constexpr int per = std::is_same_v<T, float> ? 4 : 2;
  int64_t nblocks = (n + per - 1) / per;
  T scale = T(hi - lo), shift = T(lo);
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t b = 0; b < nblocks; ++b) {
    auto w = block(seed, first + uint64_t(b));
    for (int j = 0; j < per; ++j) {
      int64_t i = b * per + j;
      if (i >= n) break;
      T u;
      if constexpr (std::is_same_v<T, float>) u = u24(w[j]);
      else u = T(u53(w[2 * j], w[2 * j + 1]));
      out[i] = u * scale + shift;
    }
  }
}

// Normals by Box-Muller: elements (2b, 2b+1) come from block b (two 53-bit uniforms), computed
// in double for both dtypes so f32 and f64 draws agree up to rounding.
template <class T>
void normal_kernel(T* out, int64_t n, uint64_t seed, uint64_t first, double mean, double std) {
  int64_t nblocks = (n + 1) / 2;
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t b = 0; b < nblocks; ++b) {
    auto w = block(seed, first + uint64_t(b));
    double u1 = 1.0 - u53(w[0], w[1]);  // (0, 1]: log is finite
    double u2 = u53(w[2], w[3]);
    double r = std::sqrt(-2.0 * std::log(u1)), th = 2.0 * M_PI * u2;
    out[2 * b] = T(mean + std * r * std::cos(th));
    if (2 * b + 1 < n) out[2 * b + 1] = T(mean + std * r * std::sin(th));
  }
}

void check_fillable(const Tensor& t, const char* op) {
  LD_CHECK(t.defined() && t.is_contiguous() && is_floating(t.dtype()), op,
           ": expected a contiguous floating tensor");
}

}  // namespace

void fill_uniform_(Tensor& out, double lo, double hi, Generator& gen) {
  check_fillable(out, "fill_uniform_");
  int64_t n = out.numel();
  LD_DISPATCH_FLOAT(out.dtype(), "fill_uniform_", [&] {
    constexpr int per = std::is_same_v<scalar_t, float> ? 4 : 2;
    uint64_t first = gen.reserve(uint64_t((n + per - 1) / per));
    uniform_kernel(out.data_ptr<scalar_t>(), n, gen.seed(), first, lo, hi);
  });
  out.bump_version();
}

void fill_normal_(Tensor& out, double mean, double std, Generator& gen) {
  check_fillable(out, "fill_normal_");
  int64_t n = out.numel();
  LD_DISPATCH_FLOAT(out.dtype(), "fill_normal_", [&] {
    uint64_t first = gen.reserve(uint64_t((n + 1) / 2));
    normal_kernel(out.data_ptr<scalar_t>(), n, gen.seed(), first, mean, std);
  });
  out.bump_version();
}

// On another device the numbers are drawn on the CPU and copied: the same seed and offset give the same
// tensor on every device (the Philox stream is the CPU's; a device-side generator is issue #9's next step).
Tensor rand(const Shape& shape, Generator& gen, TensorOptions opt) {
  Tensor t = empty(shape, opt.dtype);
  fill_uniform_(t, 0.0, 1.0, gen);
  return t.to(opt.device).requires_grad_(opt.requires_grad);
}

Tensor randn(const Shape& shape, Generator& gen, TensorOptions opt) {
  Tensor t = empty(shape, opt.dtype);
  fill_normal_(t, 0.0, 1.0, gen);
  return t.to(opt.device).requires_grad_(opt.requires_grad);
}

Tensor randint(int64_t low, int64_t high, const Shape& shape, Generator& gen) {
  LD_CHECK(high > low, "randint: empty range [", low, ", ", high, ")");
  Tensor u = rand(shape, gen, DType::f64);
  Tensor out = empty(shape, DType::i64);
  const double* pu = u.data_ptr<double>();
  int64_t* po = out.data_ptr<int64_t>();
  double span = double(high - low);
  for (int64_t i = 0; i < out.numel(); ++i)
    po[i] = std::min(high - 1, low + int64_t(pu[i] * span));
  return out;
}

Tensor randperm(int64_t n, Generator& gen) {
  // Fisher-Yates driven by one uniform draw, so the permutation is a function of the generator.
  Tensor u = rand({n}, gen, DType::f64);
  Tensor out = empty({n}, DType::i64);
  int64_t* p = out.data_ptr<int64_t>();
  std::iota(p, p + n, int64_t(0));
  const double* pu = u.data_ptr<double>();
  for (int64_t i = n - 1; i > 0; --i) {
    int64_t j = std::min(i, int64_t(pu[i] * double(i + 1)));
    std::swap(p[i], p[j]);
  }
  return out;
}

}  // namespace liandan
