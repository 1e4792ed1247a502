#pragma once
// 2-D toy distributions for diffusion models, sampled with liandan's Philox generator (f32 [n, 2]).
// Their moments have closed forms (tests/test_data.cpp checks them):
//   ring:       k equal-weight N(c_j, σ²I), c_j = R·(cos 2πj/k, sin 2πj/k): mean 0, Cov = (R²/2 + σ²)·I (k >= 3)
//   grid:       side² equal-weight N(c, σ²I) on the grid spacing·(i - (side-1)/2): mean 0,
//               Cov = (spacing²·(side² - 1)/12 + σ²)·I
//   moons:      half the points (cos θ, sin θ), half (1 - cos θ, 1/2 - sin θ), θ ~ U[0, π] (scikit-learn's
//               make_moons), plus N(0, noise²I): mean (1/2, 1/4), Var x = 3/4 + noise², Var y = 9/16 - 1/π + noise²
//   swiss_roll: t ~ U[3π/2, 9π/2], (t cos t, t sin t)·scale (scikit-learn's roll seen along its axis), plus
//               N(0, noise²I): mean (2, 2/(3π))·scale, E|x|² = 39π²/4·scale² + 2·noise²
#include <cstdint>
#include <string>

#include "core/random.h"

namespace liandan::data {

Tensor ring_gaussians(int64_t n, Generator& gen, int64_t modes = 8, double radius = 2.0, double std = 0.05);
Tensor grid_gaussians(int64_t n, Generator& gen, int64_t side = 5, double spacing = 1.0, double std = 0.05);
Tensor two_moons(int64_t n, Generator& gen, double noise = 0.05);
Tensor swiss_roll(int64_t n, Generator& gen, double noise = 0.0, double scale = 0.25);

// By name with the defaults above: "ring", "grid", "moons", "swiss_roll" (an error lists them otherwise).
Tensor toy2d(const std::string& name, int64_t n, Generator& gen);

}  // namespace liandan::data
