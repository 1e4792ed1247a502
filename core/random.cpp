#include "core/random.h"

#include <cmath>
#include <numeric>

#include "core/device.h"
#include "core/philox.h"
#include "core/threads.h"

namespace liandan {

std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> c, std::array<uint32_t, 2> k) {
  philox::Block b = philox::philox4x32_10({{c[0], c[1], c[2], c[3]}}, k[0], k[1]);
  return {b.w[0], b.w[1], b.w[2], b.w[3]};
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

// Element i of a uniform draw: f32 takes word i%4 of block i/4; f64 takes words 2(i%2), 2(i%2)+1
// of block i/2. Block b of the draw is Philox(seed, first + b). The formulas are core/philox.h's.
template <class T>
void uniform_kernel(T* out, int64_t n, uint64_t seed, uint64_t first, double lo, double hi) {
  constexpr int per = philox::uniform_per_block<T>();
  int64_t nblocks = (n + per - 1) / per;
  T span = T(hi - lo), low = T(lo);
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t b = 0; b < nblocks; ++b) {
    philox::Block w = philox::block(seed, first + uint64_t(b));
    for (int j = 0; j < per && b * per + j < n; ++j) out[b * per + j] = philox::uniform_element<T>(w, j, low, span);
  }
}

// Normals by Box-Muller: elements (2b, 2b+1) come from block b (two 53-bit uniforms), computed
// in double for both dtypes so f32 and f64 draws agree up to rounding.
template <class T>
void normal_kernel(T* out, int64_t n, uint64_t seed, uint64_t first, double mean, double std) {
  int64_t nblocks = (n + 1) / 2;
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t b = 0; b < nblocks; ++b) {
    double z0, z1;
    philox::normal_pair(philox::block(seed, first + uint64_t(b)), mean, std, &z0, &z1);
    out[2 * b] = T(z0);
    if (2 * b + 1 < n) out[2 * b + 1] = T(z1);
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
    constexpr int per = philox::uniform_per_block<scalar_t>();
    uint64_t first = gen.reserve(uint64_t((n + per - 1) / per));
    if (!out.device().is_cpu()) return device_backend(out.device()).fill_uniform(out, lo, hi, gen.seed(), first);
    uniform_kernel(out.data_ptr<scalar_t>(), n, gen.seed(), first, lo, hi);
  });
  out.bump_version();
}

void fill_normal_(Tensor& out, double mean, double std, Generator& gen) {
  check_fillable(out, "fill_normal_");
  int64_t n = out.numel();
  LD_DISPATCH_FLOAT(out.dtype(), "fill_normal_", [&] {
    uint64_t first = gen.reserve(uint64_t((n + philox::kNormalPerBlock - 1) / philox::kNormalPerBlock));
    if (!out.device().is_cpu()) return device_backend(out.device()).fill_normal(out, mean, std, gen.seed(), first);
    normal_kernel(out.data_ptr<scalar_t>(), n, gen.seed(), first, mean, std);
  });
  out.bump_version();
}

// On a GPU the numbers are drawn there, by the same formulas: the same seed and offset give the same tensor
// on every device.
Tensor rand(const Shape& shape, Generator& gen, TensorOptions opt) {
  Tensor t = empty(shape, {opt.dtype, opt.device});
  fill_uniform_(t, 0.0, 1.0, gen);
  return t.requires_grad_(opt.requires_grad);
}

Tensor randn(const Shape& shape, Generator& gen, TensorOptions opt) {
  Tensor t = empty(shape, {opt.dtype, opt.device});
  fill_normal_(t, 0.0, 1.0, gen);
  return t.requires_grad_(opt.requires_grad);
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
