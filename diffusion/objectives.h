#pragma once
// Training objectives. Each returns a scalar loss Tensor that backpropagates into the model's parameters.
//
//   ddpm_loss  discrete DDPM (Ho's L_simple): t ~ U{0 … T−1}, ε ~ N(0, I), x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε,
//              loss = mean over all elements of (model(x_t, t) − target)², the target being ε, x0 or
//              v = √ᾱ_t·ε − √(1−ᾱ_t)·x0 for the model's Prediction (lucidrains' pred_noise / pred_x0 / pred_v).
//   dsm_loss   continuous-time denoising score matching (score_sde's get_sde_loss_fn): t ~ U(eps, 1), eps = 1e-5,
//              x_t = a_t·x0 + σ_t·z, score s = −ε̂/σ_t from the model (any Prediction, converted), loss per sample
//              λ(t)·‖s + z/σ_t‖² with λ(t) = σ_t² (= ‖ε̂ − z‖²) or, with likelihood weighting, λ(t) = g(t)².
//              Reduced over the dims by their mean (reduce_mean, the DDPM++ configs) or 0.5·sum (score_sde's
//              default), then averaged over the batch.
// Both also come in a form with explicit t and noise (deterministic; what the tests call).
#include <cstdint>

#include "diffusion/denoiser.h"
#include "diffusion/schedule.h"

namespace liandan::diffusion {

// x0: [B, ...]; t: [B] f64 indices; noise: like x0.
Tensor ddpm_loss(Denoiser& model, const DiscreteSchedule& sched, const Tensor& x0, const Tensor& t,
                 const Tensor& noise);
Tensor ddpm_loss(Denoiser& model, const DiscreteSchedule& sched, const Tensor& x0, Generator& gen);

struct DSMOptions {
  double eps = 1e-5;
  bool reduce_mean = true;
  bool likelihood_weighting = false;
};
// t: [B] f64 in [0, 1]; noise: like x0.
Tensor dsm_loss(Denoiser& model, const SDE& sde, const Tensor& x0, const Tensor& t, const Tensor& noise,
                DSMOptions opt = {});
Tensor dsm_loss(Denoiser& model, const SDE& sde, const Tensor& x0, Generator& gen, DSMOptions opt = {});

}  // namespace liandan::diffusion
