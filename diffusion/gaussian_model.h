#pragma once
// Closed-form "models": for Gaussian data (and mixtures of isotropic Gaussians) the marginals of any linear
// forward process are Gaussian (mixtures) again, so the optimal ε-predictor and the score are known exactly at
// every t (algorithms.md §8). Plugged into a sampler they stand for a perfectly trained network, which isolates
// sampler bugs from training.
//
// With x_t | x0 ~ N(a_t·x0, σ_t²) and data N(μ, s²) per coordinate:
//   m_t = a_t·μ,  v_t = a_t²s² + σ_t²,  ∇log p_t(x) = −(x − m_t)/v_t,  ε*(x, t) = σ_t(x − m_t)/v_t = −σ_t·score,
//   E[x0 | x_t] = μ + a_t s²(x − m_t)/v_t.
// Both models work for any Process: the discrete DDPM (t an index) and the VP, sub-VP and VE SDEs. They keep a
// reference to the process, which must outlive them.
#include <vector>

#include "diffusion/denoiser.h"
#include "diffusion/schedule.h"

namespace liandan::diffusion {

// Data x0 ~ N(μ, s²·I), the same μ and s for every coordinate. s = 0 is a point mass at μ.
class GaussianDenoiser : public Denoiser {
 public:
  GaussianDenoiser(const Process& process, double mu, double s);
  Tensor forward(const Tensor& x, const Tensor& t) override;  // ε*(x, t)
  Tensor score(const Tensor& x, const Tensor& t) const;
  Tensor posterior_mean(const Tensor& x, const Tensor& t) const;  // E[x0 | x_t]
  double marginal_mean(double t) const { return process.mean_coef(t) * mu; }
  double marginal_var(double t) const;
  // Exact probability-flow map from t0 to t1 (§8.2): z = (x − m_t)/√v_t is constant along the ODE.
  Tensor flow(const Tensor& x, double t0, double t1) const;
  // log p_t(x) summed over the coordinates of each sample: [B].
  Tensor log_prob(const Tensor& x, const Tensor& t) const;

  const Process& process;
  double mu, s;
};

// Σ_k w_k·N(μ_k, s_k²·I) in R^D.
struct GaussianMixture {
  std::vector<double> weights;             // [K], normalised by the constructor helpers and checked on use
  std::vector<std::vector<double>> means;  // [K][D]
  std::vector<double> stds;                // [K]

  int64_t num_components() const { return int64_t(weights.size()); }
  int64_t dim() const { return means.empty() ? 0 : int64_t(means[0].size()); }
  void check() const;  // shapes agree, weights positive and summing to 1, stds ≥ 0
  // K equal-weight components on a circle of radius r in the first two coordinates (a 2-D toy data set).
  static GaussianMixture ring(int64_t K, double radius, double std, int64_t dim = 2);
  Tensor sample(int64_t n, Generator& gen, DType dtype = DType::f32) const;  // [n, D]
  std::vector<double> mean() const;                                         // [D]
  std::vector<double> covariance() const;                                   // [D·D], row-major
};

class MixtureDenoiser : public Denoiser {
 public:
  MixtureDenoiser(const Process& process, GaussianMixture mixture);
  Tensor forward(const Tensor& x, const Tensor& t) override;  // ε* = −σ_t·score, x: [B, D]
  // Posterior-weighted component scores: Σ_k r_k(x)·(−(x − a_t μ_k)/(a_t²s_k² + σ_t²)).
  Tensor score(const Tensor& x, const Tensor& t) const;
  Tensor log_prob(const Tensor& x, const Tensor& t) const;  // [B]

  const Process& process;
  GaussianMixture mixture;

 private:
  // Per-component log densities [B, K] and the differences x − a_t μ_k [B, K, D], variances [B|1, K].
  struct Parts {
    Tensor logp, diff, var;
  };
  Parts parts(const Tensor& x, const Tensor& t) const;
};

}  // namespace liandan::diffusion
