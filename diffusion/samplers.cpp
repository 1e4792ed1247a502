#include "diffusion/samplers.h"

#include <algorithm>
#include <cmath>

#include "core/autograd.h"

namespace liandan::diffusion {

namespace {

Tensor times(double t, int64_t B) { return full({B}, t, DType::f64); }

struct Clip {
  bool on;
  double lo, hi;
};

// ε̂(x, t); with clipping, ε̂ re-derived from the clamped x̂0 = (x − σ_t ε̂)/a_t.
Tensor eps_at(Denoiser& model, const Process& p, const Tensor& x, double t, const Clip& clip) {
  Tensor eps = predict_eps(model, p, x, times(t, x.size(0)));
  if (!clip.on) return eps;
  double a = p.mean_coef(t), s = p.marginal_std(t);
  Tensor x0 = clamp(mul(sub(x, mul(eps, s)), 1.0 / a), clip.lo, clip.hi);
  return mul(sub(x, mul(x0, a)), 1.0 / s);
}

// The starting point: x_init (checked, converted to dtype) or a prior draw.
Tensor initial(const Process& p, const Shape& shape, Generator& gen, DType dtype, Device device, const Tensor& x_init,
               const char* who) {
  LD_CHECK(!shape.empty() && shape[0] >= 1, who, ": shape ", shape_str(shape), " needs a batch dim");
  if (!x_init.defined()) return p.prior_sample(shape, gen, dtype).to(device);  // drawn on the CPU: same on every device
  LD_CHECK(x_init.shape() == shape, who, ": x_init has shape ", shape_str(x_init.shape()), ", expected ",
           shape_str(shape));
  Tensor x = x_init.detach().to(device);
  return x.dtype() == dtype ? x : x.to(dtype);
}

// x + c·z with z ~ N(0, I) drawn from gen; no draw when c = 0.
Tensor add_noise(const Tensor& x, double c, Generator& gen) {
  if (c == 0.0) return x;
  return add(x, mul(randn(x.shape(), gen, {x.dtype(), x.device()}), c));
}

double end_time(double eps, const SDE& sde) { return std::isnan(eps) ? sde.sampling_eps() : eps; }

}  // namespace

// ---------------------------------------------------------------- step subsequences

std::vector<int64_t> timesteps(int64_t T, int64_t steps, Spacing spacing) {
  LD_CHECK(T >= 1 && steps >= 1 && steps <= T, "timesteps: ", steps, " steps of a ", T, "-step schedule");
  std::vector<int64_t> seq;
  switch (spacing) {
    case Spacing::uniform:  // ermongroup's range(0, T, T // steps), cut to `steps` entries when steps ∤ T
      for (int64_t i = 0; i < steps; ++i) seq.push_back(i * (T / steps));
      break;
    case Spacing::quadratic: {
      double top = std::sqrt(0.8 * double(T));
      for (int64_t i = 0; i < steps; ++i) {
        double u = steps == 1 ? 0.0 : top * double(i) / double(steps - 1);
        int64_t v = int64_t(u * u);
        if (seq.empty() || v != seq.back()) seq.push_back(v);
      }
      if (steps == T) {  // the full sequence, whatever the formula says
        seq.clear();
        for (int64_t i = 0; i < T; ++i) seq.push_back(i);
      }
      break;
    }
    case Spacing::trailing:  // lucidrains: int(linspace(−1, T−1, steps+1))[1:]
      for (int64_t i = 1; i <= steps; ++i) seq.push_back(int64_t(-1.0 + double(T) * double(i) / double(steps)));
      break;
  }
  return seq;
}

// ---------------------------------------------------------------- DDPM / DDIM

Tensor ddpm_sample(Denoiser& model, const DiscreteSchedule& sched, const Shape& shape, int64_t steps,
                   Generator& gen, DDPMOptions opt) {
  NoGradGuard ng;
  std::vector<int64_t> tau = timesteps(sched.num_steps(), steps, opt.spacing);
  Tensor x = initial(sched, shape, gen, opt.dtype, opt.device, opt.x_init, "ddpm_sample");
  for (int64_t i = int64_t(tau.size()) - 1; i >= 0; --i) {
    int64_t t = tau[size_t(i)], tp = i > 0 ? tau[size_t(i - 1)] : -1;
    Tensor eps = predict_eps(model, sched, x, times(double(t), shape[0]));
    double a = sched.mean_coef(double(t)), s = sched.marginal_std(double(t));
    Tensor x0 = mul(sub(x, mul(eps, s)), 1.0 / a);
    if (opt.clip_x0) x0 = clamp(x0, opt.clip_min, opt.clip_max);
    DiscreteSchedule::Posterior post = sched.posterior(t, tp);
    Tensor mean = add(mul(x0, post.c1), mul(x, post.c2));
    double var = opt.variance == DDPMVariance::beta ? post.beta : post.beta_tilde;
    x = tp < 0 ? mean : add_noise(mean, std::sqrt(var), gen);  // no noise on the last step
  }
  return x;
}

Tensor ddim_sample(Denoiser& model, const DiscreteSchedule& sched, const Shape& shape, int64_t steps,
                   Generator& gen, DDIMOptions opt) {
  NoGradGuard ng;
  LD_CHECK(opt.eta >= 0, "ddim_sample: eta = ", opt.eta, " must be >= 0");
  std::vector<int64_t> tau = timesteps(sched.num_steps(), steps, opt.spacing);
  Tensor x = initial(sched, shape, gen, opt.dtype, opt.device, opt.x_init, "ddim_sample");
  Clip clip{opt.clip_x0, opt.clip_min, opt.clip_max};
  for (int64_t i = int64_t(tau.size()) - 1; i >= 0; --i) {
    int64_t t = tau[size_t(i)], tp = i > 0 ? tau[size_t(i - 1)] : -1;
    Tensor eps = eps_at(model, sched, x, double(t), clip);
    double ab = sched.alpha_bar(t), abp = sched.alpha_bar(tp);
    Tensor x0 = mul(sub(x, mul(eps, std::sqrt(1.0 - ab))), 1.0 / std::sqrt(ab));
    double sigma = opt.eta * std::sqrt((1.0 - ab / abp) * (1.0 - abp) / (1.0 - ab));
    double dir = std::sqrt(std::max(0.0, 1.0 - abp - sigma * sigma));
    x = add_noise(add(mul(x0, std::sqrt(abp)), mul(eps, dir)), sigma, gen);
  }
  return x;
}

Tensor ddim_invert(Denoiser& model, const DiscreteSchedule& sched, const Tensor& x0, int64_t steps,
                   DDIMOptions opt) {
  NoGradGuard ng;
  std::vector<int64_t> tau = timesteps(sched.num_steps(), steps, opt.spacing);
  Generator unused(0);
  Tensor x = initial(sched, x0.shape(), unused, opt.dtype, opt.device, x0, "ddim_invert");
  Clip clip{opt.clip_x0, opt.clip_min, opt.clip_max};
  int64_t tp = -1;
  for (int64_t t : tau) {
    Tensor eps = eps_at(model, sched, x, double(t), clip);
    double abp = sched.alpha_bar(tp), ab = sched.alpha_bar(t);
    Tensor xh = mul(sub(x, mul(eps, std::sqrt(1.0 - abp))), 1.0 / std::sqrt(abp));
    if (opt.clip_x0) xh = clamp(xh, opt.clip_min, opt.clip_max);
    x = add(mul(xh, std::sqrt(ab)), mul(eps, std::sqrt(1.0 - ab)));
    tp = t;
  }
  return x;
}

// ---------------------------------------------------------------- reverse SDE samplers

namespace {

// Per-sample L2 norm averaged over the batch (score_sde's Langevin step-size statistic).
double mean_norm(const Tensor& v) { return mean(sqrt(sum(square(v.reshape({v.size(0), -1})), {1}))).item(); }

}  // namespace

Tensor sde_sample(Denoiser& model, const SDE& sde, const Shape& shape, int64_t N, Generator& gen, SDEOptions opt) {
  NoGradGuard ng;
  LD_CHECK(N >= 2, "sde_sample: N = ", N, " steps (need >= 2)");
  double eps = end_time(opt.eps, sde);
  LD_CHECK(eps > 0 && eps < 1, "sde_sample: eps = ", eps, " outside (0, 1)");
  Clip clip{opt.clip_x0, opt.clip_min, opt.clip_max};
  auto score = [&](const Tensor& x, double t) { return mul(eps_at(model, sde, x, t, clip), -1.0 / sde.marginal_std(t)); };

  Tensor x = initial(sde, shape, gen, opt.dtype, opt.device, opt.x_init, "sde_sample"), x_mean = x;
  for (int64_t i = 0; i < N; ++i) {
    double t = 1.0 + double(i) * (eps - 1.0) / double(N - 1);  // linspace(1, eps, N)
    bool last = i == N - 1;
    if (opt.corrector == Corrector::langevin) {
      double alpha = sde.langevin_alpha(t, N);
      for (int64_t j = 0; j < opt.corrector_steps; ++j) {
        Tensor s = score(x, t);
        Tensor z = randn(x.shape(), gen, {x.dtype(), x.device()});
        // A zero score (an untrained model) makes score_sde's step size infinite and the sample NaN: no
        // gradient to follow, so the corrector does nothing.
        double s_norm = mean_norm(s);
        double r = s_norm > 0 ? opt.snr * mean_norm(z) / s_norm : 0.0;
        double step = 2.0 * alpha * r * r;
        x_mean = add(x, mul(s, step));
        x = add(x_mean, mul(z, std::sqrt(2.0 * step)));
      }
    }
    bool skip_noise = last && opt.denoise;  // the returned value is x_mean: its noise would be thrown away
    switch (opt.predictor) {
      case Predictor::none:
        break;
      case Predictor::euler_maruyama: {
        double f = sde.drift_coef(t), g = sde.diffusion(t), dt = 1.0 / double(N);
        Tensor s = score(x, t);
        x_mean = sub(x, mul(sub(mul(x, f), mul(s, g * g)), dt));
        x = skip_noise ? x_mean : add_noise(x_mean, g * std::sqrt(dt), gen);
        break;
      }
      case Predictor::reverse_diffusion: {
        SDE::Discrete d = sde.discretize(t, N);
        Tensor s = score(x, t);
        x_mean = add(mul(x, 1.0 - d.f), mul(s, d.G * d.G));
        x = skip_noise ? x_mean : add_noise(x_mean, d.G, gen);
        break;
      }
    }
  }
  return opt.denoise ? x_mean : x;
}

Tensor euler_maruyama_sample(Denoiser& model, const SDE& sde, const Shape& shape, int64_t N, Generator& gen,
                             SDEOptions opt) {
  opt.predictor = Predictor::euler_maruyama;
  opt.corrector = Corrector::none;
  return sde_sample(model, sde, shape, N, gen, opt);
}

Tensor reverse_diffusion_sample(Denoiser& model, const SDE& sde, const Shape& shape, int64_t N, Generator& gen,
                                SDEOptions opt) {
  opt.predictor = Predictor::reverse_diffusion;
  opt.corrector = Corrector::none;
  return sde_sample(model, sde, shape, N, gen, opt);
}

Tensor pc_sample(Denoiser& model, const SDE& sde, const Shape& shape, int64_t N, Generator& gen, SDEOptions opt) {
  opt.predictor = Predictor::reverse_diffusion;
  opt.corrector = Corrector::langevin;
  return sde_sample(model, sde, shape, N, gen, opt);
}

// ---------------------------------------------------------------- probability-flow ODE

namespace {

struct ODE {
  Denoiser& model;
  const SDE& sde;
  Clip clip;
  int64_t nfe = 0;
  // dx/dt = f(t)·x − ½g²·s = f(t)·x + ½g²/σ_t·ε̂
  Tensor operator()(const Tensor& x, double t) {
    ++nfe;
    double g = sde.diffusion(t);
    return add(mul(x, sde.drift_coef(t)), mul(eps_at(model, sde, x, t, clip), 0.5 * g * g / sde.marginal_std(t)));
  }
};

// RMS norm over all elements, as scipy's solve_ivp.
double rms(const Tensor& v) { return std::sqrt(mean(square(v)).item()); }

// acc + Σ c_i·k_i (one pass per term, in place on a fresh copy).
Tensor lincomb(const Tensor& acc, std::initializer_list<std::pair<double, const Tensor*>> terms) {
  Tensor out = acc.clone();
  for (auto& [c, k] : terms)
    if (c != 0.0) out.add_(*k, c);
  return out;
}

void fixed_steps(ODE& f, Tensor& x, double t0, double t1, int64_t steps, bool heun, ODEResult& r) {
  LD_CHECK(steps >= 1, "pf_ode: ", steps, " steps");
  double h = (t1 - t0) / double(steps);
  for (int64_t k = 0; k < steps; ++k) {
    double t = t0 + double(k) * h, tn = k + 1 == steps ? t1 : t0 + double(k + 1) * h;
    Tensor d1 = f(x, t);
    if (!heun) {
      x = lincomb(x, {{tn - t, &d1}});
    } else {
      Tensor xe = lincomb(x, {{tn - t, &d1}});
      Tensor d2 = f(xe, tn);
      x = lincomb(x, {{0.5 * (tn - t), &d1}, {0.5 * (tn - t), &d2}});
    }
    ++r.accepted;
  }
}

// Dormand–Prince 5(4) with scipy's RK45 step control (safety 0.9, factor in [0.2, 10], error exponent −1/5,
// no growth right after a rejection) and scipy's initial step selection. FSAL: 6 evaluations per attempt.
void rk45(ODE& f, Tensor& x, double t0, double t1, double rtol, double atol, int64_t max_nfe, ODEResult& r) {
  static constexpr double C[6] = {0, 1.0 / 5, 3.0 / 10, 4.0 / 5, 8.0 / 9, 1};
  static constexpr double A[6][5] = {{0, 0, 0, 0, 0},
                                     {1.0 / 5, 0, 0, 0, 0},
                                     {3.0 / 40, 9.0 / 40, 0, 0, 0},
                                     {44.0 / 45, -56.0 / 15, 32.0 / 9, 0, 0},
                                     {19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729, 0},
                                     {9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656}};
  static constexpr double B[6] = {35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84};
  static constexpr double E[7] = {-71.0 / 57600, 0, 71.0 / 16695, -71.0 / 1920, 17253.0 / 339200, -22.0 / 525,
                                  1.0 / 40};
  const double dir = t1 > t0 ? 1.0 : -1.0, span = std::fabs(t1 - t0);
  auto scaled_rms = [&](const Tensor& v, const Tensor& y) { return rms(div(v, add(mul(abs(y), rtol), atol))); };

  Tensor k[7];
  k[0] = f(x, t0);
  // Initial step (scipy's select_initial_step, order 4).
  double h;
  {
    double d0 = scaled_rms(x, x), d1 = scaled_rms(k[0], x);
    double h0 = (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 : 0.01 * d0 / d1;
    h0 = std::min(h0, span);
    Tensor f1 = f(lincomb(x, {{h0 * dir, &k[0]}}), t0 + h0 * dir);
    double d2 = scaled_rms(sub(f1, k[0]), x) / h0;
    double h1 = (d1 <= 1e-15 && d2 <= 1e-15) ? std::max(1e-6, h0 * 1e-3) : std::pow(0.01 / std::max(d1, d2), 0.2);
    h = std::min({100 * h0, h1, span});
  }
  double t = t0;
  while (dir * (t1 - t) > 0) {
    bool rejected = false;
    while (true) {
      LD_CHECK(f.nfe <= max_nfe, "pf_ode rk45: more than ", max_nfe, " evaluations at t = ", t, " (step ", h, ")");
      double tn = t + dir * h;
      if (dir * (tn - t1) > 0) tn = t1;
      double hs = tn - t;
      for (int s = 1; s < 6; ++s) {
        Tensor xs = x.clone();
        for (int j = 0; j < s; ++j)
          if (A[s][j] != 0.0) xs.add_(k[j], hs * A[s][j]);
        k[s] = f(xs, t + C[s] * hs);
      }
      Tensor y = x.clone();
      for (int j = 0; j < 6; ++j)
        if (B[j] != 0.0) y.add_(k[j], hs * B[j]);
      k[6] = f(y, tn);
      Tensor err = zeros_like(x);
      for (int j = 0; j < 7; ++j)
        if (E[j] != 0.0) err.add_(k[j], hs * E[j]);
      double en = rms(div(err, add(mul(maximum(abs(x), abs(y)), rtol), atol)));
      if (en < 1.0) {
        double factor = en == 0.0 ? 10.0 : std::min(10.0, 0.9 * std::pow(en, -0.2));
        if (rejected) factor = std::min(1.0, factor);
        h = std::fabs(hs) * factor;
        t = tn;
        x = y;
        k[0] = k[6];  // first same as last
        ++r.accepted;
        break;
      }
      h = std::fabs(hs) * std::max(0.2, 0.9 * std::pow(en, -0.2));
      rejected = true;
      ++r.rejected;
    }
  }
}

ODEResult integrate(Denoiser& model, const SDE& sde, Tensor x, double t0, double t1, int64_t steps,
                    const ODEOptions& opt) {
  ODE f{model, sde, Clip{opt.clip_x0, opt.clip_min, opt.clip_max}};
  ODEResult r;
  switch (opt.method) {
    case ODEMethod::euler: fixed_steps(f, x, t0, t1, steps, false, r); break;
    case ODEMethod::heun: fixed_steps(f, x, t0, t1, steps, true, r); break;
    case ODEMethod::rk45: rk45(f, x, t0, t1, opt.rtol, opt.atol, opt.max_nfe, r); break;
  }
  r.x = x;
  r.nfe = f.nfe;
  return r;
}

}  // namespace

ODEResult pf_ode_sample(Denoiser& model, const SDE& sde, const Shape& shape, int64_t steps, Generator& gen,
                        ODEOptions opt) {
  NoGradGuard ng;
  double eps = end_time(opt.eps, sde);
  LD_CHECK(eps > 0 && eps < 1, "pf_ode_sample: eps = ", eps, " outside (0, 1)");
  Tensor x = initial(sde, shape, gen, opt.dtype, opt.device, opt.x_init, "pf_ode_sample");
  ODEResult r = integrate(model, sde, x, 1.0, eps, steps, opt);
  if (opt.denoise) {  // reverse-diffusion step at eps, mean only (on score_sde's N = 1000 grid)
    SDE::Discrete d = sde.discretize(eps, 1000);
    Tensor s = mul(eps_at(model, sde, r.x, eps, Clip{opt.clip_x0, opt.clip_min, opt.clip_max}),
                   -1.0 / sde.marginal_std(eps));
    r.x = add(mul(r.x, 1.0 - d.f), mul(s, d.G * d.G));
    ++r.nfe;
  }
  return r;
}

ODEResult pf_ode_encode(Denoiser& model, const SDE& sde, const Tensor& x0, int64_t steps, ODEOptions opt) {
  NoGradGuard ng;
  double eps = end_time(opt.eps, sde);
  LD_CHECK(eps > 0 && eps < 1, "pf_ode_encode: eps = ", eps, " outside (0, 1)");
  Generator unused(0);
  Tensor x = initial(sde, x0.shape(), unused, opt.dtype, opt.device, x0, "pf_ode_encode");
  return integrate(model, sde, x, eps, 1.0, steps, opt);
}

}  // namespace liandan::diffusion
