#include "diffusion/schedule.h"

#include <cmath>

#include "core/ops.h"

namespace liandan::diffusion {

// ---------------------------------------------------------------- Process

Tensor Process::prior_sample(const Shape& shape, Generator& gen, DType dtype) const {
  Tensor x = randn(shape, gen, dtype);
  return prior_std() == 1.0 ? x : mul(x, prior_std());
}

Tensor Process::q_sample(const Tensor& x0, const Tensor& t, const Tensor& noise) const {
  LD_CHECK(x0.shape() == noise.shape(), "q_sample: x0 ", shape_str(x0.shape()), " and noise ",
           shape_str(noise.shape()), " differ");
  Tensor a = batch_coef(t, x0, [&](double s) { return mean_coef(s); });
  Tensor sd = batch_coef(t, x0, [&](double s) { return marginal_std(s); });
  return add(mul(x0, a), mul(noise, sd));
}

Tensor batch_coef(const Tensor& t, const Tensor& x, const std::function<double(double)>& f) {
  LD_CHECK(t.dim() == 1 && x.dim() >= 1 && t.size(0) == x.size(0), "batch_coef: times ", shape_str(t.shape()),
           " must be [B] for a batch ", shape_str(x.shape()));
  std::vector<double> ts = t.to_vector();
  bool uniform = true;
  for (double s : ts) uniform = uniform && s == ts[0];
  if (uniform) return full({}, f(ts[0]), {x.dtype(), x.device()});
  std::vector<double> v(ts.size());
  for (size_t i = 0; i < ts.size(); ++i) v[i] = f(ts[i]);
  Shape s(size_t(x.dim()), 1);
  s[0] = x.size(0);
  return from_vector(v, s, {x.dtype(), x.device()});
}

// ---------------------------------------------------------------- DiscreteSchedule

namespace {
// More steps than this is nonsense (DDPM uses 1000) and would not fit in memory as a table of betas.
constexpr int64_t kMaxSteps = int64_t(1) << 24;
}  // namespace

DiscreteSchedule::DiscreteSchedule(std::vector<double> betas, std::string name)
    : betas_(std::move(betas)), name_(std::move(name)) {
  LD_CHECK(!betas_.empty(), "DiscreteSchedule: no betas");
  double ab = 1.0;
  for (size_t i = 0; i < betas_.size(); ++i) {
    LD_CHECK(betas_[i] >= 0.0 && betas_[i] < 1.0, "DiscreteSchedule(", name_, "): beta[", i, "] = ", betas_[i],
             " is outside [0, 1)");
    ab *= 1.0 - betas_[i];
    alpha_bar_.push_back(ab);
  }
}

DiscreteSchedule DiscreteSchedule::linear(int64_t T, double beta_start, double beta_end) {
  LD_CHECK(T >= 1 && T <= kMaxSteps, "DiscreteSchedule::linear: T must be in [1, ", kMaxSteps, "], got ", T);
  LD_CHECK(std::isfinite(beta_start) && std::isfinite(beta_end) && beta_start >= 0 && beta_end >= 0 && beta_start < 1 &&
               beta_end < 1,
           "DiscreteSchedule::linear: beta_start and beta_end must be finite numbers in [0, 1), got ", beta_start,
           " and ", beta_end);
  std::vector<double> b(size_t(T), beta_start);
  for (int64_t i = 1; i < T; ++i) b[size_t(i)] = beta_start + (beta_end - beta_start) * double(i) / double(T - 1);
  return DiscreteSchedule(std::move(b), "linear");
}

DiscreteSchedule DiscreteSchedule::cosine(int64_t T, double s, double max_beta) {
  LD_CHECK(T >= 1 && T <= kMaxSteps, "DiscreteSchedule::cosine: T must be in [1, ", kMaxSteps, "], got ", T);
  LD_CHECK(std::isfinite(s) && s >= 0, "DiscreteSchedule::cosine: s must be a finite number >= 0, got ", s);
  LD_CHECK(max_beta > 0 && max_beta < 1, "DiscreteSchedule::cosine: max_beta must be in (0, 1), got ", max_beta);
  auto f = [&](int64_t i) {
    double c = std::cos((double(i) / double(T) + s) / (1.0 + s) * M_PI * 0.5);
    return c * c;
  };
  std::vector<double> b(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) b[size_t(i)] = std::min(std::max(1.0 - f(i + 1) / f(i), 0.0), max_beta);
  return DiscreteSchedule(std::move(b), "cosine");
}

int64_t DiscreteSchedule::index(double t) const {
  LD_CHECK(t == std::floor(t) && t >= -1 && t < double(num_steps()), "DiscreteSchedule(", name_,
           "): time label ", t, " is not an integer index in [-1, ", num_steps() - 1, "]");
  return int64_t(t);
}

double DiscreteSchedule::beta(int64_t t) const {
  LD_CHECK(t >= 0 && t < num_steps(), "DiscreteSchedule::beta: index ", t, " outside [0, ", num_steps() - 1, "]");
  return betas_[size_t(t)];
}

double DiscreteSchedule::alpha_bar(int64_t t) const {
  LD_CHECK(t >= -1 && t < num_steps(), "DiscreteSchedule::alpha_bar: index ", t, " outside [-1, ",
           num_steps() - 1, "]");
  return t < 0 ? 1.0 : alpha_bar_[size_t(t)];
}

double DiscreteSchedule::mean_coef(double t) const { return std::sqrt(alpha_bar(index(t))); }
double DiscreteSchedule::marginal_std(double t) const { return std::sqrt(1.0 - alpha_bar(index(t))); }

DiscreteSchedule::Posterior DiscreteSchedule::posterior(int64_t t, int64_t t_prev) const {
  LD_CHECK(t_prev < t, "DiscreteSchedule::posterior: step ", t, " -> ", t_prev, " does not go back in time");
  double ab = alpha_bar(t), ab_prev = alpha_bar(t_prev);
  double a = ab / ab_prev, b = 1.0 - a;
  Posterior p;
  p.beta = b;
  p.c1 = b * std::sqrt(ab_prev) / (1.0 - ab);
  p.c2 = (1.0 - ab_prev) * std::sqrt(a) / (1.0 - ab);
  p.beta_tilde = b * (1.0 - ab_prev) / (1.0 - ab);
  return p;
}

// ---------------------------------------------------------------- SDEs

Tensor SDE::drift(const Tensor& x, double t) const { return mul(x, drift_coef(t)); }

SDE::Discrete SDE::discretize(double t, int64_t N) const {
  double dt = 1.0 / double(N);
  return {drift_coef(t) * dt, diffusion(t) * std::sqrt(dt)};
}

int64_t SDE::step_index(double t, int64_t N) {
  LD_CHECK(N >= 2 && t >= 0 && t <= 1, "SDE::step_index: t = ", t, ", N = ", N);
  return int64_t(std::floor(t * double(N - 1)));
}

VPSDE::VPSDE(double beta_min, double beta_max) : beta_min(beta_min), beta_max(beta_max) {
  // β(t) interpolates the two: both >= 0, not both 0 (no noise at all).
  LD_CHECK(std::isfinite(beta_min) && std::isfinite(beta_max) && beta_min >= 0 && beta_max >= 0 && beta_min + beta_max > 0,
           "VPSDE: beta_min and beta_max must be finite numbers >= 0, not both 0, got ", beta_min, " and ", beta_max);
}

double VPSDE::log_mean_coef(double t) const { return -0.25 * t * t * (beta_max - beta_min) - 0.5 * t * beta_min; }
double VPSDE::mean_coef(double t) const { return std::exp(log_mean_coef(t)); }
// √(1 − e^{2ℓ}) with expm1, so small t keeps its digits.
double VPSDE::marginal_std(double t) const { return std::sqrt(-std::expm1(2.0 * log_mean_coef(t))); }
double VPSDE::diffusion(double t) const { return std::sqrt(beta(t)); }

double VPSDE::discrete_beta(double t, int64_t N) const {
  int64_t i = step_index(t, N);
  return (beta_min + (beta_max - beta_min) * double(i) / double(N - 1)) / double(N);
}

SDE::Discrete VPSDE::discretize(double t, int64_t N) const {
  double b = discrete_beta(t, N);
  // β_i = β(t)/N must stay below 1 (√(1 − β_i)): too few steps for this SDE otherwise.
  LD_CHECK(b < 1.0, "VP SDE: the ", N, "-step discretisation has β_i = ", b, " >= 1 at t = ", t,
           " (reverse-diffusion / PC samplers need N > β_max = ", beta_max, ")");
  return {std::sqrt(1.0 - b) - 1.0, std::sqrt(b)};
}

double SubVPSDE::marginal_std(double t) const { return -std::expm1(2.0 * log_mean_coef(t)); }
// g² = β(t)(1 − e^{4ℓ(t)}), since 4ℓ = −2β_min t − (β_max−β_min)t².
double SubVPSDE::diffusion(double t) const { return std::sqrt(beta(t) * -std::expm1(4.0 * log_mean_coef(t))); }

VESDE::VESDE(double sigma_min, double sigma_max) : sigma_min(sigma_min), sigma_max(sigma_max) {
  LD_CHECK(std::isfinite(sigma_max) && sigma_min > 0 && sigma_min < sigma_max,
           "VESDE: need finite 0 < sigma_min < sigma_max, got sigma_min ", sigma_min, " and sigma_max ", sigma_max);
}

double VESDE::sigma(double t) const { return sigma_min * std::pow(sigma_max / sigma_min, t); }
double VESDE::diffusion(double t) const { return sigma(t) * std::sqrt(2.0 * std::log(sigma_max / sigma_min)); }

SDE::Discrete VESDE::discretize(double t, int64_t N) const {
  int64_t i = step_index(t, N);
  auto s = [&](int64_t j) {
    return std::exp(std::log(sigma_min) + (std::log(sigma_max) - std::log(sigma_min)) * double(j) / double(N - 1));
  };
  double si = s(i), prev = i == 0 ? 0.0 : s(i - 1);
  return {0.0, std::sqrt(si * si - prev * prev)};
}

}  // namespace liandan::diffusion
