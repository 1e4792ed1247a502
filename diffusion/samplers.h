#pragma once
// Samplers: each is a function of (model, process, shape, steps, generator, options) and returns the samples.
// All randomness comes from the generator (the prior draw first, then one normal draw per noisy update, none
// when an update adds no noise), so a sampler is a pure function of (model, options, generator state).
// Samplers run under NoGradGuard, in `dtype` (f32 for networks; f64 makes the oracle tests exact to rounding).
// Coefficients are computed in double.
//
//   discrete (DiscreteSchedule, t an index 0 … T−1)
//     ddpm_sample          ancestral sampling, σ² = β_t ("fixedlarge", Ho's CIFAR-10 setting) or β̃_t ("fixedsmall")
//     ddim_sample          DDIM with η (0 deterministic; 1 with all T steps = DDPM with β̃_t) on a step subsequence
//     ddim_invert          deterministic DDIM encoding x0 → x_{τ_last}
//   continuous (SDE, t from 1 down to eps)
//     sde_sample           predictor (Euler–Maruyama or reverse diffusion) + optional Langevin corrector
//     euler_maruyama_sample, reverse_diffusion_sample, pc_sample: its three usual configurations
//     pf_ode_sample        probability-flow ODE, Euler / Heun / adaptive RK45 (Dormand–Prince); reports the NFE
//     pf_ode_encode        the same ODE forward in time, x0 (at t = eps) → x_1
//
// x0 clipping (clip_x0): the model's x̂0 = (x − σ_t ε̂)/a_t is clamped to [clip_min, clip_max] and ε̂ re-derived
// from it (as lucidrains' DDIM does), so every sampler clips the same way; DDPM's mean μ̃(x̂0, x_t) then uses the
// clipped x̂0 exactly as Ho's p_sample.
// Algorithm details and the reference codes' quirks that are reproduced: algorithms.md §5.2, §6.1, §7.2.
#include <cstdint>
#include <limits>
#include <vector>

#include "diffusion/denoiser.h"
#include "diffusion/schedule.h"

namespace liandan::diffusion {

// ---------------------------------------------------------------- step subsequences
// Ascending timestep subsequences τ of 0 … T−1 for `steps` sampling steps (ermongroup/ddim's skip types):
//   uniform    range(0, T, T/steps): [0, 100, …, 900] for 10 of 1000 (never visits T−1)
//   quadratic  int(linspace(0, √(0.8T), steps)²): [0, 9, 39, …, 800]; repeated entries (small indices at many
//              steps) are dropped, so it may return fewer than `steps` entries
//   trailing   round(linspace(T−1, 0, steps)) reversed: starts at T−1 (lucidrains / "trailing")
// steps == T gives 0 … T−1 for every spacing.
enum class Spacing { uniform, quadratic, trailing };
std::vector<int64_t> timesteps(int64_t T, int64_t steps, Spacing spacing = Spacing::uniform);

// ---------------------------------------------------------------- DDPM / DDIM
enum class DDPMVariance { beta, beta_tilde };  // σ² = β_t ("fixedlarge") or β̃_t ("fixedsmall")

struct DDPMOptions {
  DDPMVariance variance = DDPMVariance::beta;
  Spacing spacing = Spacing::uniform;  // steps < T: DDPM on the respaced schedule ᾱ_{τ_i} (Nichol & Dhariwal)
  bool clip_x0 = false;                // Ho clips by default for images in [−1, 1]: set it there
  double clip_min = -1.0, clip_max = 1.0;
  DType dtype = DType::f32;
  Device device = Device::cpu();  // where the samples live: the model's device
  Tensor x_init;  // start here instead of drawing x_T ~ N(0, I)
};
// For t = τ_last … τ_0 (next τ' = previous entry, −1 after τ_0, ᾱ_{−1} = 1): x̂0 from ε̂, mean = c1·x̂0 + c2·x_t,
// x ← mean + σ·z, with no noise on the last step.
Tensor ddpm_sample(Denoiser& model, const DiscreteSchedule& sched, const Shape& shape, int64_t steps,
                   Generator& gen, DDPMOptions opt = {});

struct DDIMOptions {
  double eta = 0.0;
  Spacing spacing = Spacing::uniform;
  bool clip_x0 = false;  // ermongroup's generalized_steps does not clip
  double clip_min = -1.0, clip_max = 1.0;
  DType dtype = DType::f32;
  Device device = Device::cpu();  // where the samples live: the model's device
  Tensor x_init;
};
// x_{t'} = √ᾱ_{t'}·x̂0 + √(1−ᾱ_{t'}−σ²)·ε̂ + σ·z,  σ = η·√((1−ᾱ_t/ᾱ_{t'})(1−ᾱ_{t'})/(1−ᾱ_t)).
Tensor ddim_sample(Denoiser& model, const DiscreteSchedule& sched, const Shape& shape, int64_t steps,
                   Generator& gen, DDIMOptions opt = {});
// DDIM run backwards with η = 0 (opt.eta is ignored): x0 → x_{τ_1} → … → x_{τ_last}. Each step from t' to t
// uses ε̂(x_{t'}, t) (the next time, as diffusers' DDIMInverseScheduler; the exact ε̂(x_t, t) is implicit), so the
// round trip through ddim_sample(x_init = result) is exact only as the steps shrink.
Tensor ddim_invert(Denoiser& model, const DiscreteSchedule& sched, const Tensor& x0, int64_t steps,
                   DDIMOptions opt = {});

// ---------------------------------------------------------------- reverse SDE samplers (score_sde)
enum class Predictor { none, euler_maruyama, reverse_diffusion };
enum class Corrector { none, langevin };

struct SDEOptions {
  Predictor predictor = Predictor::euler_maruyama;
  Corrector corrector = Corrector::none;
  double snr = 0.16;              // Langevin corrector's signal-to-noise ratio r
  int64_t corrector_steps = 1;
  double eps = std::numeric_limits<double>::quiet_NaN();  // end time; NaN: sde.sampling_eps()
  bool denoise = true;            // return the last step's mean (score_sde's noise_removal)
  bool clip_x0 = false;
  double clip_min = -1.0, clip_max = 1.0;
  DType dtype = DType::f32;
  Device device = Device::cpu();  // where the samples live: the model's device
  Tensor x_init;  // start here instead of x_1 ~ prior
};
// For t in linspace(1, eps, N): corrector at t, then predictor at t (score_sde's order). Score s = −ε̂/σ_t.
//   Euler–Maruyama:     x_mean = x − (f(t)x − g²s)/N;  x = x_mean + g/√N·z   (step 1/N on the (1−eps)/(N−1)
//                       grid: score_sde's quirk, kept so its numbers reproduce)
//   reverse diffusion:  (f, G) = sde.discretize(t, N);  x_mean = x − f·x + G²s;  x = x_mean + G·z
//   Langevin:           ε_L = 2α(r·‖z‖/‖s‖)², norms per sample averaged over the batch;
//                       x_mean = x + ε_L·s;  x = x_mean + √(2ε_L)·z
Tensor sde_sample(Denoiser& model, const SDE& sde, const Shape& shape, int64_t N, Generator& gen,
                  SDEOptions opt = {});
Tensor euler_maruyama_sample(Denoiser& model, const SDE& sde, const Shape& shape, int64_t N, Generator& gen,
                             SDEOptions opt = {});  // predictor EM, no corrector
Tensor reverse_diffusion_sample(Denoiser& model, const SDE& sde, const Shape& shape, int64_t N, Generator& gen,
                                SDEOptions opt = {});  // predictor reverse diffusion, no corrector
Tensor pc_sample(Denoiser& model, const SDE& sde, const Shape& shape, int64_t N, Generator& gen,
                 SDEOptions opt = {});  // reverse diffusion + Langevin (the NCSN++ VE setting)

// ---------------------------------------------------------------- probability-flow ODE
// dx/dt = f(t)x − ½g(t)²·s(x, t), integrated from t = 1 to eps (sampling) or eps to 1 (encoding).
enum class ODEMethod { euler, heun, rk45 };

struct ODEOptions {
  ODEMethod method = ODEMethod::rk45;
  double rtol = 1e-5, atol = 1e-5;  // rk45: scipy's error norm, RMS over the whole batch of err/(atol + rtol·|y|)
  double eps = std::numeric_limits<double>::quiet_NaN();  // NaN: sde.sampling_eps()
  bool denoise = false;     // one reverse-diffusion step at eps without its noise (score_sde's ODE option)
  int64_t max_nfe = 100000; // rk45 gives up (Error) past this many evaluations
  bool clip_x0 = false;
  double clip_min = -1.0, clip_max = 1.0;
  DType dtype = DType::f32;
  Device device = Device::cpu();  // where the samples live: the model's device
  Tensor x_init;  // sampling: start here instead of the prior
};
struct ODEResult {
  Tensor x;
  int64_t nfe = 0;                // model evaluations
  int64_t accepted = 0, rejected = 0;  // rk45 steps (euler/heun: accepted = steps)
};
// Euler and Heun take `steps` uniform steps (NFE steps and 2·steps); rk45 ignores `steps`.
ODEResult pf_ode_sample(Denoiser& model, const SDE& sde, const Shape& shape, int64_t steps, Generator& gen,
                        ODEOptions opt = {});
ODEResult pf_ode_encode(Denoiser& model, const SDE& sde, const Tensor& x0, int64_t steps, ODEOptions opt = {});

}  // namespace liandan::diffusion
