#include "diffusion/denoiser.h"

namespace liandan::diffusion {

const char* prediction_name(Prediction p) {
  switch (p) {
    case Prediction::eps: return "eps";
    case Prediction::x0: return "x0";
    case Prediction::v: return "v";
  }
  return "?";
}

Tensor convert_prediction(const Tensor& out, Prediction from, Prediction to, const Tensor& x, const Tensor& a,
                          const Tensor& sigma) {
  if (from == to) return out;
  // Go through (ε, x0): every conversion is one of these two lines plus possibly forming v.
  Tensor eps, x0;
  switch (from) {
    case Prediction::eps:
      eps = out;
      if (to != Prediction::eps) x0 = div(sub(x, mul(sigma, eps)), a);
      break;
    case Prediction::x0:
      x0 = out;
      if (to != Prediction::x0) eps = div(sub(x, mul(a, x0)), sigma);
      break;
    case Prediction::v: {
      Tensor norm = add(square(a), square(sigma));
      if (to == Prediction::eps) return div(add(mul(sigma, x), mul(a, out)), norm);
      return div(sub(mul(a, x), mul(sigma, out)), norm);
    }
  }
  if (to == Prediction::eps) return eps;
  if (to == Prediction::x0) return x0;
  return sub(mul(a, eps), mul(sigma, x0));
}

Tensor prediction_target(Prediction p, const Tensor& x0, const Tensor& noise, const Tensor& a, const Tensor& sigma) {
  switch (p) {
    case Prediction::eps: return noise;
    case Prediction::x0: return x0;
    case Prediction::v: return sub(mul(a, noise), mul(sigma, x0));
  }
  return noise;
}

namespace {
Tensor predict(Denoiser& model, const Process& process, const Tensor& x, const Tensor& t, Prediction to) {
  Tensor out = model.forward(x, t);
  LD_CHECK(out.shape() == x.shape(), "Denoiser (", prediction_name(model.prediction()), "): output ",
           shape_str(out.shape()), " does not match the input ", shape_str(x.shape()));
  if (model.prediction() == to) return out;
  Tensor a = batch_coef(t, x, [&](double s) { return process.mean_coef(s); });
  Tensor sd = batch_coef(t, x, [&](double s) { return process.marginal_std(s); });
  return convert_prediction(out, model.prediction(), to, x, a, sd);
}
}  // namespace

Tensor predict_eps(Denoiser& model, const Process& process, const Tensor& x, const Tensor& t) {
  return predict(model, process, x, t, Prediction::eps);
}
Tensor predict_x0(Denoiser& model, const Process& process, const Tensor& x, const Tensor& t) {
  return predict(model, process, x, t, Prediction::x0);
}

Tensor predict_score(Denoiser& model, const Process& process, const Tensor& x, const Tensor& t) {
  Tensor inv = batch_coef(t, x, [&](double s) { return -1.0 / process.marginal_std(s); });
  return mul(predict_eps(model, process, x, t), inv);
}

}  // namespace liandan::diffusion
