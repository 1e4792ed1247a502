#pragma once
// Forward (noising) processes of diffusion models: the discrete DDPM schedules and the VP, sub-VP and VE
// SDEs of Song et al. (2021). Formulas and defaults: shared/docs/algorithms.md §5.1, §7.1, §8.
//
// Every process here is linear and Gaussian, x_t | x_0 ~ N(a_t·x_0, σ_t²·I):
//
//   process             time t                     a_t (mean_coef)        σ_t (marginal_std)
//   DiscreteSchedule    index 0 … T−1 (Ho: 1 … T)   √ᾱ_t                  √(1−ᾱ_t)
//   VPSDE               t ∈ [0, 1]                 e^{ℓ(t)}               √(1−e^{2ℓ(t)})
//   SubVPSDE            t ∈ [0, 1]                 e^{ℓ(t)}               1−e^{2ℓ(t)}
//   VESDE               t ∈ [0, 1]                 1                      σ_min(σ_max/σ_min)^t
//
// with ℓ(t) = −¼t²(β_max−β_min) − ½tβ_min. `Process` is the part every sampler, loss and the closed-form model
// share; DiscreteSchedule adds ᾱ, β̃ and the posterior coefficients, SDE adds drift f(t)·x, diffusion g(t)
// and the N-step discretisation used by the reverse-diffusion predictor and the Langevin corrector.
// (Su's notation writes a_t as ᾱ_t and σ_t as β̄_t; see diffusion/README.md.)
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/random.h"
#include "core/tensor.h"

namespace liandan::diffusion {

class Process {
 public:
  virtual ~Process() = default;
  virtual std::string name() const = 0;
  virtual bool is_discrete() const = 0;
  virtual double mean_coef(double t) const = 0;     // a_t
  virtual double marginal_std(double t) const = 0;  // σ_t
  virtual double prior_std() const { return 1.0; }  // x_T ~ N(0, prior_std²·I)

  Tensor prior_sample(const Shape& shape, Generator& gen, DType dtype = DType::f32) const;
  // x_t = a_t·x0 + σ_t·noise, with t: [B] (one time per sample, f64) and x0, noise: [B, ...].
  Tensor q_sample(const Tensor& x0, const Tensor& t, const Tensor& noise) const;
};

// Per-sample coefficient f(t_b) shaped to broadcast against x [B, ...]: [B, 1, …, 1] in x's dtype, or a
// 0-d tensor when every t_b is the same (the samplers' case: one scalar multiply per op).
Tensor batch_coef(const Tensor& t, const Tensor& x, const std::function<double(double)>& f);

// ---------------------------------------------------------------- discrete DDPM (Ho et al. 2020)
// Index t = 0 … T−1 (paper t = 1 … T). α_t = 1−β_t, ᾱ_t = Π_{s≤t} α_s, computed in double; ᾱ_{−1} = 1
// stands for the data, so t = −1 is accepted wherever ᾱ is read.
class DiscreteSchedule : public Process {
 public:
  explicit DiscreteSchedule(std::vector<double> betas, std::string name = "custom");
  // β = linspace(beta_start, beta_end, T) (DDPM: 1e-4 → 0.02, T = 1000).
  static DiscreteSchedule linear(int64_t T = 1000, double beta_start = 1e-4, double beta_end = 0.02);
  // Nichol & Dhariwal: ᾱ(t) = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s)·π/2), β_t = 1 − ᾱ_t/ᾱ_{t−1} clipped to
  // [0, max_beta] (lucidrains' cosine_beta_schedule; ᾱ is then recomputed from the clipped β).
  static DiscreteSchedule cosine(int64_t T = 1000, double s = 0.008, double max_beta = 0.999);

  std::string name() const override { return name_; }
  bool is_discrete() const override { return true; }
  double mean_coef(double t) const override;     // √ᾱ_t; t must be an integer in [−1, T−1]
  double marginal_std(double t) const override;  // √(1−ᾱ_t)

  int64_t num_steps() const { return int64_t(betas_.size()); }  // T
  double beta(int64_t t) const;
  double alpha(int64_t t) const { return 1.0 - beta(t); }
  double alpha_bar(int64_t t) const;  // ᾱ_t, ᾱ_{−1} = 1
  // Posterior q(x_{t'} | x_t, x_0) of a (possibly strided) step t → t' < t, with α = ᾱ_t/ᾱ_{t'}, β = 1−α:
  // mean c1·x0 + c2·x_t, variance β̃ = β(1−ᾱ_{t'})/(1−ᾱ_t). t' = t−1 is Ho's eq. 7; t' = −1 ends at the data.
  struct Posterior {
    double c1, c2, beta, beta_tilde;
  };
  Posterior posterior(int64_t t, int64_t t_prev) const;
  double posterior_variance(int64_t t) const { return posterior(t, t - 1).beta_tilde; }  // β̃_t

  const std::vector<double>& betas() const { return betas_; }
  const std::vector<double>& alphas_cumprod() const { return alpha_bar_; }
  // Validates a (float) time label: an integer in [−1, T−1].
  int64_t index(double t) const;

 private:
  std::vector<double> betas_, alpha_bar_;
  std::string name_;
};

// ---------------------------------------------------------------- SDEs (Song et al. 2021), t ∈ [0, 1]
// dx = f(t)·x dt + g(t) dw. The reverse-time SDE has drift f·x − g²·∇log p_t, the probability-flow ODE
// f·x − ½g²·∇log p_t.
class SDE : public Process {
 public:
  bool is_discrete() const override { return false; }
  virtual double drift_coef(double t) const = 0;  // f(t)
  virtual double diffusion(double t) const = 0;   // g(t)
  Tensor drift(const Tensor& x, double t) const;  // f(t)·x
  // Default end of the sampling interval [eps, 1] (score_sde's run_lib: 1e-3 for VP/sub-VP, 1e-5 for VE).
  virtual double sampling_eps() const { return 1e-3; }

  // One step of the N-step discretisation at time t: x_{i+1} = x_i + f·x_i + G·z (score_sde's `discretize`).
  // Default (sub-VP): Euler, f = f(t)/N, G = g(t)/√N.
  struct Discrete {
    double f, G;
  };
  virtual Discrete discretize(double t, int64_t N) const;
  // α of the Langevin corrector's step size: 1 − β_i for VP and sub-VP, 1 for VE.
  virtual double langevin_alpha(double t, int64_t N) const { return 1.0; }
  // score_sde's index of time t on an N-point grid: floor(t·(N−1)).
  static int64_t step_index(double t, int64_t N);
};

// Variance preserving: β(t) = β_min + t(β_max−β_min), f = −½β(t), g = √β(t). Its discretisation
// β_i = linspace(β_min/N, β_max/N, N) is DDPM's linear schedule for N = 1000.
class VPSDE : public SDE {
 public:
  // beta_min, beta_max finite, >= 0 and not both 0 (else an error naming them).
  explicit VPSDE(double beta_min = 0.1, double beta_max = 20.0);
  std::string name() const override { return "vp"; }
  double beta(double t) const { return beta_min + t * (beta_max - beta_min); }
  double log_mean_coef(double t) const;  // ℓ(t)
  double mean_coef(double t) const override;
  double marginal_std(double t) const override;
  double drift_coef(double t) const override { return -0.5 * beta(t); }
  double diffusion(double t) const override;
  Discrete discretize(double t, int64_t N) const override;  // f = √(1−β_i) − 1, G = √β_i
  double langevin_alpha(double t, int64_t N) const override { return 1.0 - discrete_beta(t, N); }
  double discrete_beta(double t, int64_t N) const;  // β_i, i = step_index(t, N)
  double beta_min, beta_max;
};

// sub-VP: the VP drift with g² = β(t)(1 − e^{−2β_min t − (β_max−β_min)t²}); std = 1 − e^{2ℓ} (not its square
// root). No discrete form of its own: the reverse-diffusion predictor uses the Euler default.
class SubVPSDE : public VPSDE {
 public:
  explicit SubVPSDE(double beta_min = 0.1, double beta_max = 20.0) : VPSDE(beta_min, beta_max) {}
  std::string name() const override { return "subvp"; }
  double marginal_std(double t) const override;
  double diffusion(double t) const override;
  Discrete discretize(double t, int64_t N) const override { return SDE::discretize(t, N); }
};

// Variance exploding: σ(t) = σ_min(σ_max/σ_min)^t, f = 0, g = σ(t)√(2 ln(σ_max/σ_min)). The marginal std is σ(t)
// as in score_sde (the exact √(σ(t)² − σ_min²) is not used), the prior N(0, σ_max²).
class VESDE : public SDE {
 public:
  // 0 < sigma_min < sigma_max, both finite (else an error naming them).
  explicit VESDE(double sigma_min = 0.01, double sigma_max = 50.0);
  std::string name() const override { return "ve"; }
  double sigma(double t) const;
  double mean_coef(double t) const override { return 1.0; }
  double marginal_std(double t) const override { return sigma(t); }
  double prior_std() const override { return sigma_max; }
  double drift_coef(double t) const override { return 0.0; }
  double diffusion(double t) const override;
  double sampling_eps() const override { return 1e-5; }
  // σ_i = exp(linspace(ln σ_min, ln σ_max, N))[i]; f = 0, G = √(σ_i² − σ_{i−1}²) with σ_{−1} = 0.
  Discrete discretize(double t, int64_t N) const override;
  double sigma_min, sigma_max;
};

}  // namespace liandan::diffusion
