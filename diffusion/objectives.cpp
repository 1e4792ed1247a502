#include "diffusion/objectives.h"

namespace liandan::diffusion {

namespace {

void check_batch(const Tensor& x0, const Tensor& t, const Tensor& noise, const char* who) {
  LD_CHECK(x0.dim() >= 1 && x0.size(0) >= 1, who, ": x0 ", shape_str(x0.shape()), " has no examples (batch size 0)");
  LD_CHECK(x0.dim() >= 1 && t.dim() == 1 && t.size(0) == x0.size(0) && noise.shape() == x0.shape(), who,
           ": x0 ", shape_str(x0.shape()), ", t ", shape_str(t.shape()), ", noise ", shape_str(noise.shape()),
           " (expected x0 [B, ...], t [B], noise like x0)");
}

// Per-sample squared error reduced over the non-batch dims: [B].
Tensor per_sample(const Tensor& sq, bool reduce_mean) {
  Tensor flat = sq.reshape({sq.size(0), -1});
  return reduce_mean ? mean(flat, {1}) : mul(sum(flat, {1}), 0.5);
}

}  // namespace

Tensor ddpm_loss(Denoiser& model, const DiscreteSchedule& sched, const Tensor& x0, const Tensor& t,
                 const Tensor& noise) {
  check_batch(x0, t, noise, "ddpm_loss");
  Tensor tt = t.dtype() == DType::f64 ? t : t.to(DType::f64);
  Tensor a = batch_coef(tt, x0, [&](double s) { return sched.mean_coef(s); });
  Tensor sd = batch_coef(tt, x0, [&](double s) { return sched.marginal_std(s); });
  Tensor xt = add(mul(x0, a), mul(noise, sd));
  Tensor out = model.forward(xt, tt);
  LD_CHECK(out.shape() == x0.shape(), "ddpm_loss: model output ", shape_str(out.shape()), " for input ",
           shape_str(x0.shape()));
  Tensor target = prediction_target(model.prediction(), x0, noise, a, sd);
  return mean(square(sub(out, target)));
}

Tensor ddpm_loss(Denoiser& model, const DiscreteSchedule& sched, const Tensor& x0, Generator& gen) {
  LD_CHECK(x0.dim() >= 1 && x0.size(0) >= 1, "ddpm_loss: x0 ", shape_str(x0.shape()), " has no examples (batch size 0)");
  Tensor t = randint(0, sched.num_steps(), {x0.size(0)}, gen).to(DType::f64);
  Tensor noise = randn(x0.shape(), gen, {x0.dtype(), x0.device()});
  return ddpm_loss(model, sched, x0, t, noise);
}

Tensor dsm_loss(Denoiser& model, const SDE& sde, const Tensor& x0, const Tensor& t, const Tensor& noise,
                DSMOptions opt) {
  check_batch(x0, t, noise, "dsm_loss");
  Tensor tt = t.dtype() == DType::f64 ? t : t.to(DType::f64);
  Tensor a = batch_coef(tt, x0, [&](double s) { return sde.mean_coef(s); });
  Tensor sd = batch_coef(tt, x0, [&](double s) { return sde.marginal_std(s); });
  Tensor xt = add(mul(x0, a), mul(noise, sd));
  Tensor out = model.forward(xt, tt);
  LD_CHECK(out.shape() == x0.shape(), "dsm_loss: model output ", shape_str(out.shape()), " for input ",
           shape_str(x0.shape()));
  // λ(t)‖s + z/σ‖² with s = −ε̂/σ: σ²‖·‖² = ‖ε̂ − z‖², and g²‖·‖² = (g/σ)²‖ε̂ − z‖².
  Tensor eps = convert_prediction(out, model.prediction(), Prediction::eps, xt, a, sd);
  Tensor l = per_sample(square(sub(eps, noise)), opt.reduce_mean);
  if (opt.likelihood_weighting) {
    Tensor w = batch_coef(tt, l, [&](double s) {
      double r = sde.diffusion(s) / sde.marginal_std(s);
      return r * r;
    });
    l = mul(l, w);
  }
  return mean(l);
}

Tensor dsm_loss(Denoiser& model, const SDE& sde, const Tensor& x0, Generator& gen, DSMOptions opt) {
  LD_CHECK(opt.eps > 0 && opt.eps < 1, "dsm_loss: eps = ", opt.eps);
  LD_CHECK(x0.dim() >= 1 && x0.size(0) >= 1, "dsm_loss: x0 ", shape_str(x0.shape()), " has no examples (batch size 0)");
  Tensor t = add(mul(rand({x0.size(0)}, gen, DType::f64), 1.0 - opt.eps), opt.eps);
  Tensor noise = randn(x0.shape(), gen, {x0.dtype(), x0.device()});
  return dsm_loss(model, sde, x0, t, noise, opt);
}

}  // namespace liandan::diffusion
