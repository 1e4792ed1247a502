#pragma once
// The model interface shared by every sampler and training objective.
//
// A Denoiser maps a noisy batch x [B, ...] and its times t [B] to one of three equivalent targets
// (x_t = a_t·x0 + σ_t·ε, see diffusion/schedule.h):
//   eps  ε̂            (DDPM's parameterisation; the score is −ε̂/σ_t)
//   x0   x̂0
//   v    a_t·ε − σ_t·x0  (Salimans & Ho 2022)
// The times are an f64 tensor [B] in the units of the process the model is used with: an index 0 … T−1 for a
// DiscreteSchedule, t ∈ [0, 1] for an SDE. A network that wants other units (the U-Net's sinusoidal embedding
// expects 0 … 999) gets them from ModuleDenoiser's time_scale. Samplers call predict_eps (under NoGradGuard);
// the losses call forward and compare in the model's own target space.
#include <functional>
#include <memory>
#include <utility>

#include "core/ops.h"
#include "diffusion/schedule.h"

namespace liandan::diffusion {

enum class Prediction { eps, x0, v };
const char* prediction_name(Prediction p);

class Denoiser {
 public:
  virtual ~Denoiser() = default;
  virtual Tensor forward(const Tensor& x, const Tensor& t) = 0;  // raw output, same shape as x
  virtual Prediction prediction() const { return Prediction::eps; }
};

// Converts a model output between targets, given x and the (broadcastable) coefficients a_t, σ_t. For v with
// general a, σ: x = a·x0 + σ·ε and v = a·ε − σ·x0 solve to ε = (σx + av)/(a²+σ²), x0 = (ax − σv)/(a²+σ²).
Tensor convert_prediction(const Tensor& out, Prediction from, Prediction to, const Tensor& x, const Tensor& a,
                          const Tensor& sigma);
// The target `p` for clean data x0 and noise ε: ε, x0 or a·ε − σ·x0.
Tensor prediction_target(Prediction p, const Tensor& x0, const Tensor& noise, const Tensor& a, const Tensor& sigma);

// ε̂ and x̂0 of any denoiser on `process` at times t [B] (f64).
Tensor predict_eps(Denoiser& model, const Process& process, const Tensor& x, const Tensor& t);
Tensor predict_x0(Denoiser& model, const Process& process, const Tensor& x, const Tensor& t);
// The score ∇log p_t(x) ≈ −ε̂/σ_t.
Tensor predict_score(Denoiser& model, const Process& process, const Tensor& x, const Tensor& t);

// A Denoiser from a function (tests, closures over models with other signatures).
class FunctionDenoiser : public Denoiser {
 public:
  using Fn = std::function<Tensor(const Tensor& x, const Tensor& t)>;
  explicit FunctionDenoiser(Fn fn, Prediction p = Prediction::eps) : fn_(std::move(fn)), pred_(p) {}
  Tensor forward(const Tensor& x, const Tensor& t) override { return fn_(x, t); }
  Prediction prediction() const override { return pred_; }

 private:
  Fn fn_;
  Prediction pred_;
};

// Adapter for an nn::Module with `Tensor forward(const Tensor& x, const Tensor& t)`, t a float tensor [B] (the
// U-Net, MLPDenoiser). The module sees t·time_scale in x's dtype: 1 for a DiscreteSchedule (indices), 999 for
// a VP SDE trained like score_sde (label 999·t), or whatever the module was trained with.
template <class M>
class ModuleDenoiser : public Denoiser {
 public:
  explicit ModuleDenoiser(std::shared_ptr<M> module, Prediction p = Prediction::eps, double time_scale = 1.0)
      : module(std::move(module)), pred(p), time_scale(time_scale) {}
  Tensor forward(const Tensor& x, const Tensor& t) override {
    Tensor label = time_scale == 1.0 ? t : mul(t, time_scale);
    return module->forward(x, label.dtype() == x.dtype() ? label : label.to(x.dtype()));
  }
  Prediction prediction() const override { return pred; }

  std::shared_ptr<M> module;
  Prediction pred;
  double time_scale;
};

}  // namespace liandan::diffusion
