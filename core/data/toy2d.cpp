#include "core/data/toy2d.h"

#include <cmath>

namespace liandan::data {

namespace {

// out[i] = point(u_i) + noise·z_i, with u ~ U[0, 1) and z ~ N(0, I) drawn in f64 (one draw each, in this order).
template <class F>
Tensor sample_points(int64_t n, Generator& gen, double noise, F point) {
  LD_CHECK(n >= 0, "toy2d: n must be >= 0, got ", n);
  Tensor u = rand({n}, gen, DType::f64), z = randn({n, 2}, gen, DType::f64);
  const double *pu = u.data_ptr<double>(), *pz = z.data_ptr<double>();
  Tensor out = empty({n, 2});
  float* o = out.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    auto [x, y] = point(i, pu[i]);
    o[2 * i] = float(x + noise * pz[2 * i]);
    o[2 * i + 1] = float(y + noise * pz[2 * i + 1]);
  }
  return out;
}

}  // namespace

Tensor ring_gaussians(int64_t n, Generator& gen, int64_t modes, double radius, double std) {
  LD_CHECK(modes >= 1, "ring_gaussians: modes must be >= 1, got ", modes);
  return sample_points(n, gen, std, [&](int64_t, double u) {
    int64_t j = std::min(modes - 1, int64_t(u * double(modes)));
    double th = 2.0 * M_PI * double(j) / double(modes);
    return std::pair{radius * std::cos(th), radius * std::sin(th)};
  });
}

Tensor grid_gaussians(int64_t n, Generator& gen, int64_t side, double spacing, double std) {
  LD_CHECK(side >= 1, "grid_gaussians: side must be >= 1, got ", side);
  return sample_points(n, gen, std, [&](int64_t, double u) {
    int64_t j = std::min(side * side - 1, int64_t(u * double(side * side)));
    double half = double(side - 1) / 2;
    return std::pair{spacing * (double(j % side) - half), spacing * (double(j / side) - half)};
  });
}

Tensor two_moons(int64_t n, Generator& gen, double noise) {
  // Even i on the upper moon, odd i on the lower one: exactly half each, as scikit-learn.
  return sample_points(n, gen, noise, [](int64_t i, double u) {
    double th = M_PI * u;
    return i % 2 == 0 ? std::pair{std::cos(th), std::sin(th)} : std::pair{1.0 - std::cos(th), 0.5 - std::sin(th)};
  });
}

Tensor swiss_roll(int64_t n, Generator& gen, double noise, double scale) {
  return sample_points(n, gen, noise, [&](int64_t, double u) {
    double t = 1.5 * M_PI * (1.0 + 2.0 * u);
    return std::pair{scale * t * std::cos(t), scale * t * std::sin(t)};
  });
}

Tensor toy2d(const std::string& name, int64_t n, Generator& gen) {
  if (name == "ring") return ring_gaussians(n, gen);
  if (name == "grid") return grid_gaussians(n, gen);
  if (name == "moons") return two_moons(n, gen);
  if (name == "swiss_roll") return swiss_roll(n, gen);
  LD_FAIL("toy2d: unknown distribution '", name, "' (ring, grid, moons, swiss_roll)");
}

}  // namespace liandan::data
