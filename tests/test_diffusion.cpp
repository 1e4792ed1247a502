// Diffusion building blocks: schedules and SDEs against the numbers of algorithms.md §5.5 D1 / §7.5 S1 and their
// defining identities, the closed-form Gaussian / mixture models (score = ∇log p by finite differences, minimal
// loss = 1 − σ²/v), the prediction-type conversions, the training objectives (against hand-written formulas and a
// gradcheck through the MLP denoiser). Samplers: test_diffusion_samplers.cpp; training: test_diffusion_train.cpp.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>

#include "core/gradcheck.h"
#include "core/ops.h"
#include "diffusion/denoiser.h"
#include "diffusion/gaussian_model.h"
#include "diffusion/mlp_denoiser.h"
#include "diffusion/objectives.h"
#include "diffusion/schedule.h"
#include "diffusion/unet.h"
#include "op_test_helpers.h"

using namespace liandan;
using namespace liandan::diffusion;
using liandan::testing::max_abs_diff;

namespace {

Tensor times_of(std::vector<double> t) { return from_vector(t, {int64_t(t.size())}, DType::f64); }

double rel(double a, double b) { return std::fabs(a - b) / std::fabs(b); }

}  // namespace

// ---------------------------------------------------------------- discrete schedules

TEST_CASE("DDPM linear schedule: alpha_bar = prod(1 - beta) and the D1 numbers") {
  DiscreteSchedule s = DiscreteSchedule::linear();
  REQUIRE(s.num_steps() == 1000);
  CHECK(s.beta(0) == doctest::Approx(1e-4).epsilon(1e-12));
  CHECK(s.beta(999) == doctest::Approx(0.02).epsilon(1e-12));
  double prod = 1.0;
  for (int64_t t = 0; t < 1000; ++t) {
    prod *= 1.0 - s.beta(t);
    CHECK(rel(s.alpha_bar(t), prod) < 1e-13);
  }
  CHECK(s.alpha_bar(-1) == 1.0);
  // D1 (printed to 7 digits, so 1e-6 relative).
  CHECK(rel(s.alpha_bar(999), 4.035830e-05) < 1e-6);
  CHECK(rel(s.mean_coef(999), 6.352818e-03) < 1e-6);
  CHECK(rel(s.alpha_bar(0), 0.9999) < 1e-12);
  CHECK(rel(s.posterior_variance(1), 5.453188e-05) < 1e-6);
  CHECK(s.posterior_variance(0) == 0.0);  // ᾱ_{−1} = 1: no noise on the first (last sampled) step
  // The marginal is N(√ᾱ x0, 1−ᾱ): a² + σ² = 1 for the discrete process.
  for (double t : {0.0, 10.0, 500.0, 999.0})
    CHECK(std::fabs(s.mean_coef(t) * s.mean_coef(t) + s.marginal_std(t) * s.marginal_std(t) - 1.0) < 1e-15);
  CHECK_THROWS_AS(s.mean_coef(2.5), Error);
  CHECK_THROWS_AS(s.mean_coef(1000), Error);
}

TEST_CASE("DDPM cosine schedule: the D1 numbers, only the last beta clipped") {
  DiscreteSchedule s = DiscreteSchedule::cosine();
  CHECK(rel(s.beta(0), 4.128422e-05) < 1e-6);
  CHECK(rel(s.beta(499), 3.145886e-03) < 1e-6);
  CHECK(rel(s.alpha_bar(499), 0.493844) < 2e-6);
  CHECK(rel(s.alpha_bar(999), 2.428767e-09) < 1e-6);
  int clipped = 0;
  for (int64_t t = 0; t < 1000; ++t) clipped += s.beta(t) == 0.999;
  CHECK(clipped == 1);
  CHECK(s.beta(999) == 0.999);
}

TEST_CASE("Su's notation: mean_coef is Su's alpha_bar (seeds-math §5 test 1)") {
  // Su's α_t = √(1 − 0.02t/T) is Ho's β_t = 0.02t/T (t = 1 … T); Su's ᾱ_t = √(Ho's ᾱ_t) = mean_coef(t−1).
  std::vector<double> b;
  for (int t = 1; t <= 1000; ++t) b.push_back(0.02 * t / 1000.0);
  DiscreteSchedule s(b, "su");
  CHECK(rel(s.mean_coef(0), 0.999990) < 1e-6);
  CHECK(rel(s.mean_coef(99), 0.950722) < 1e-6);
  CHECK(rel(s.mean_coef(249), 0.730318) < 1e-6);
  CHECK(rel(s.mean_coef(499), 0.284592) < 2e-6);
  CHECK(rel(s.mean_coef(749), 0.058986) < 1e-5);
  CHECK(rel(s.mean_coef(999), 0.006482) < 1e-4);
}

TEST_CASE("posterior q(x_t' | x_t, x0) preserves the marginals, also for strided steps") {
  // x_t' = c1·x0 + c2·x_t + √β̃·z with x_t ~ N(√ᾱ_t x0, 1−ᾱ_t) must be N(√ᾱ_t' x0, 1−ᾱ_t'):
  //   c1 + c2√ᾱ_t = √ᾱ_t'   and   c2²(1−ᾱ_t) + β̃ = 1−ᾱ_t'.
  for (const DiscreteSchedule& s : {DiscreteSchedule::linear(), DiscreteSchedule::cosine()}) {
    for (auto [t, tp] : std::vector<std::pair<int64_t, int64_t>>{{1, 0}, {0, -1}, {500, 499}, {999, 979}, {900, 0}}) {
      auto p = s.posterior(t, tp);
      CHECK(std::fabs(p.c1 + p.c2 * s.mean_coef(double(t)) - s.mean_coef(double(tp))) < 1e-12);
      CHECK(std::fabs(p.c2 * p.c2 * (1 - s.alpha_bar(t)) + p.beta_tilde - (1 - s.alpha_bar(tp))) < 1e-12);
    }
    // Consecutive steps: β of the posterior is the schedule's β_t.
    CHECK(std::fabs(s.posterior(700, 699).beta - s.beta(700)) < 1e-14);
  }
}

// ---------------------------------------------------------------- SDEs

TEST_CASE("VP SDE: S1 numbers; discretisation equals DDPM linear at N = 1000") {
  VPSDE vp;
  CHECK(rel(vp.mean_coef(1.0), 6.571586e-03) < 1e-6);
  CHECK(rel(vp.marginal_std(1.0), 0.99997841) < 1e-8);
  CHECK(rel(vp.marginal_std(1e-3), 1.048542e-02) < 1e-6);
  DiscreteSchedule lin = DiscreteSchedule::linear();
  double worst = 0;
  for (int64_t i = 0; i < 1000; ++i) {
    double t = (double(i) + 0.5) / 999.0;  // inside grid cell i (floor(t·999) = i without rounding doubts)
    if (t > 1) t = 1;
    worst = std::max(worst, std::fabs(vp.discrete_beta(t, 1000) - lin.beta(i)));
  }
  CHECK(worst < 1e-17);
}

TEST_CASE("VP SDE marginals are the limit of the discrete DDPM as T grows") {
  // Discrete β_i = (β_min + i/(T−1)(β_max−β_min))/T at index i stands for t = (i+1)/T. The gap to e^{ℓ(t)} is O(1/T)
  // (a Riemann sum plus the second-order term of log(1−β)); measured max gaps ≈ 1.3e-2, 1.3e-3, 1.3e-4.
  VPSDE vp;
  std::vector<double> gap;
  for (int64_t T : {100, 1000, 10000}) {
    std::vector<double> b(static_cast<size_t>(T));
    for (int64_t i = 0; i < T; ++i)
      b[size_t(i)] = (vp.beta_min + double(i) / double(T - 1) * (vp.beta_max - vp.beta_min)) / double(T);
    DiscreteSchedule d(b);
    double g = 0;
    for (int64_t i = 0; i < T; ++i) {
      double t = double(i + 1) / double(T);
      g = std::max(g, std::fabs(d.mean_coef(double(i)) - vp.mean_coef(t)));
      g = std::max(g, std::fabs(d.marginal_std(double(i)) - vp.marginal_std(t)));
    }
    gap.push_back(g);
  }
  CAPTURE(gap[0]);
  CAPTURE(gap[1]);
  CAPTURE(gap[2]);
  CHECK(gap[1] < gap[0] / 5);  // first order: each 10x in T cuts the gap ~10x
  CHECK(gap[2] < gap[1] / 5);
  CHECK(gap[2] < 1e-3);
}

TEST_CASE("SDE drift and diffusion generate their marginals: f = d ln a/dt, g² = dσ²/dt − 2fσ²") {
  // For x_t = a_t x0 + σ_t ε to solve dx = f x dt + g dw: a' = f a and (σ²)' = 2fσ² + g² (Su's §7 design rule).
  VPSDE vp;
  SubVPSDE sub;
  VESDE ve;
  for (const SDE* sde : std::vector<const SDE*>{&vp, &sub, &ve}) {
    for (double t : {0.01, 0.1, 0.37, 0.8, 0.99}) {
      double h = 1e-6;
      double dlna = (std::log(sde->mean_coef(t + h)) - std::log(sde->mean_coef(t - h))) / (2 * h);
      auto var = [&](double u) { return sde->marginal_std(u) * sde->marginal_std(u); };
      double dvar = (var(t + h) - var(t - h)) / (2 * h);
      double g2 = sde->diffusion(t) * sde->diffusion(t);
      INFO(sde->name() << " t=" << t);
      CHECK(std::fabs(dlna - sde->drift_coef(t)) < 1e-6 * (1 + std::fabs(sde->drift_coef(t))));
      CHECK(std::fabs(dvar - (2 * sde->drift_coef(t) * var(t) + g2)) < 1e-6 * (1 + g2));
    }
  }
  // VP identity g² = −2f; the VE prior is N(0, σ_max²); the VE discretisation telescopes: Σ G_i² = σ_max².
  CHECK(std::fabs(vp.diffusion(0.3) * vp.diffusion(0.3) + 2 * vp.drift_coef(0.3)) < 1e-12);
  CHECK(ve.prior_std() == 50.0);
  double sum_g2 = 0;
  for (int64_t i = 0; i < 1000; ++i) {
    double G = ve.discretize((double(i) + 0.5) / 999.0 > 1 ? 1.0 : (double(i) + 0.5) / 999.0, 1000).G;
    sum_g2 += G * G;
  }
  CHECK(rel(sum_g2, 2500.0) < 1e-12);
  // Reverse-diffusion discretisation of VP: x_{i+1} = √(1−β_i) x_i + √β_i z.
  auto d = vp.discretize(0.5, 1000);
  double b = vp.discrete_beta(0.5, 1000);
  CHECK(std::fabs(d.f - (std::sqrt(1 - b) - 1)) < 1e-15);
  CHECK(std::fabs(d.G * d.G - b) < 1e-15);
  CHECK(std::fabs(vp.langevin_alpha(0.5, 1000) - (1 - b)) < 1e-15);
}

TEST_CASE("q_sample and prior_sample") {
  Generator gen(1);
  VESDE ve;
  Tensor p = ve.prior_sample({20000}, gen, DType::f64);
  // Sample std within 5 standard errors: se(var) = σ²√(2/n).
  double v = var(p, {}, 0).item();
  CHECK(std::fabs(v - 2500.0) < 5 * 2500.0 * std::sqrt(2.0 / 20000));
  DiscreteSchedule lin = DiscreteSchedule::linear();
  Tensor x0 = randn({3, 2}, gen, DType::f64), z = randn({3, 2}, gen, DType::f64);
  Tensor xt = lin.q_sample(x0, times_of({0, 500, 999}), z);
  for (int64_t b = 0; b < 3; ++b)
    for (int64_t d = 0; d < 2; ++d) {
      double t = b == 0 ? 0 : b == 1 ? 500 : 999;
      CHECK(std::fabs(xt.at({b, d}) - (lin.mean_coef(t) * x0.at({b, d}) + lin.marginal_std(t) * z.at({b, d}))) < 1e-15);
    }
}

// ---------------------------------------------------------------- predictions

TEST_CASE("prediction conversions round-trip (also with a² + σ² != 1)") {
  Generator gen(2);
  Tensor x0 = randn({4, 3}, gen, DType::f64), eps = randn({4, 3}, gen, DType::f64);
  for (auto [a, s] : std::vector<std::pair<double, double>>{{0.8, 0.6}, {1.0, 7.0}, {0.3, 0.2}}) {
    Tensor A = full({}, a, DType::f64), S = full({}, s, DType::f64);
    Tensor x = add(mul(x0, a), mul(eps, s));
    Tensor v = prediction_target(Prediction::v, x0, eps, A, S);
    CHECK(max_abs_diff(v, sub(mul(eps, a), mul(x0, s))) < 1e-15);
    const Tensor* truth[3] = {&eps, &x0, &v};
    Prediction ps[3] = {Prediction::eps, Prediction::x0, Prediction::v};
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) {
        INFO(prediction_name(ps[i]) << " -> " << prediction_name(ps[j]) << " a=" << a << " s=" << s);
        CHECK(max_abs_diff(convert_prediction(*truth[i], ps[i], ps[j], x, A, S), *truth[j]) < 1e-12);
      }
  }
}

// ---------------------------------------------------------------- closed-form models

TEST_CASE("Gaussian model: score = d/dx log p_t, eps* = -sigma*score, E[x0|x_t] = x0 from eps*") {
  VPSDE vp;
  SubVPSDE sub;
  VESDE ve;
  DiscreteSchedule lin = DiscreteSchedule::linear();
  Generator gen(3);
  for (const Process* p : std::vector<const Process*>{&vp, &sub, &ve, &lin}) {
    GaussianDenoiser g(*p, 0.3, 0.5);
    Tensor t = p->is_discrete() ? times_of({0, 17, 500, 999}) : times_of({1e-5, 0.1, 0.5, 1.0});
    Tensor x = mul(randn({4, 3}, gen, DType::f64), 2.0);
    Tensor sc = g.score(x, t);
    // Central differences of log p_t (log_prob sums over coordinates, so d/dx_j picks one term).
    double h = 1e-5, worst = 0;
    for (int64_t b = 0; b < 4; ++b)
      for (int64_t j = 0; j < 3; ++j) {
        Tensor xp = x.clone(), xm = x.clone();
        xp.set({b, j}, x.at({b, j}) + h);
        xm.set({b, j}, x.at({b, j}) - h);
        double fd = (g.log_prob(xp, t).at({b}) - g.log_prob(xm, t).at({b})) / (2 * h);
        worst = std::max(worst, std::fabs(fd - sc.at({b, j})) / (1 + std::fabs(fd)));
      }
    INFO(p->name());
    CHECK(worst < 1e-6);
    Tensor sd = batch_coef(t, x, [&](double u) { return p->marginal_std(u); });
    CHECK(max_abs_diff(g.forward(x, t), neg(mul(sc, sd))) < 1e-12);
    CHECK(max_abs_diff(predict_x0(g, *p, x, t), g.posterior_mean(x, t)) < 1e-9);
    CHECK(max_abs_diff(predict_score(g, *p, x, t), sc) < 1e-9);
  }
}

TEST_CASE("Gaussian model: eps* minimises the DDPM loss, minimum 1 - sigma²/v per element") {
  // At fixed t the residual ε − ε*(x_t) ~ N(0, L) with L = 1 − σ_t²/v_t, so the mean of n squared residuals lies
  // within 5 standard errors L·√(2/n) of L, and any other predictor (here 0.9·ε*) is worse on average.
  DiscreteSchedule lin = DiscreteSchedule::linear();
  GaussianDenoiser g(lin, 0.3, 0.5);
  FunctionDenoiser shrunk([&](const Tensor& x, const Tensor& t) { return mul(g.forward(x, t), 0.9); });
  Generator gen(4);
  int64_t n = 40000;
  for (double t : {10.0, 300.0, 900.0}) {
    Tensor x0 = add(mul(randn({n, 1}, gen, DType::f64), 0.5), 0.3);
    Tensor tt = full({n}, t, DType::f64), z = randn({n, 1}, gen, DType::f64);
    double L = 1 - std::pow(lin.marginal_std(t), 2) / g.marginal_var(t);
    double loss = ddpm_loss(g, lin, x0, tt, z).item();
    CAPTURE(t);
    CAPTURE(loss);
    CAPTURE(L);
    CHECK(std::fabs(loss - L) < 5 * L * std::sqrt(2.0 / double(n)));
    CHECK(ddpm_loss(shrunk, lin, x0, tt, z).item() > loss);
  }
}

TEST_CASE("mixture model: score by finite differences, K = 1 equals the Gaussian, samples have its moments") {
  VPSDE vp;
  VESDE ve;
  Generator gen(5);
  GaussianMixture mix;
  mix.weights = {0.2, 0.5, 0.3};
  mix.means = {{1.0, 0.0}, {-0.5, 0.8}, {0.0, -1.2}};
  mix.stds = {0.1, 0.3, 0.05};
  for (const Process* p : std::vector<const Process*>{&vp, &ve}) {
    MixtureDenoiser m(*p, mix);
    Tensor x = randn({5, 2}, gen, DType::f64);
    Tensor t = times_of({1e-3, 0.05, 0.2, 0.6, 1.0});
    Tensor sc = m.score(x, t);
    double h = 1e-6, worst = 0;
    for (int64_t b = 0; b < 5; ++b)
      for (int64_t j = 0; j < 2; ++j) {
        Tensor xp = x.clone(), xm = x.clone();
        xp.set({b, j}, x.at({b, j}) + h);
        xm.set({b, j}, x.at({b, j}) - h);
        double fd = (m.log_prob(xp, t).at({b}) - m.log_prob(xm, t).at({b})) / (2 * h);
        worst = std::max(worst, std::fabs(fd - sc.at({b, j})) / (1 + std::fabs(fd)));
      }
    INFO(p->name());
    CHECK(worst < 1e-5);
    // One component = the per-coordinate Gaussian.
    GaussianMixture one;
    one.weights = {1.0};
    one.means = {{0.3, 0.3}};
    one.stds = {0.5};
    MixtureDenoiser m1(*p, one);
    GaussianDenoiser g(*p, 0.3, 0.5);
    CHECK(max_abs_diff(m1.forward(x, t), g.forward(x, t)) < 1e-12);
    CHECK(max_abs_diff(m1.log_prob(x, t), g.log_prob(x, t)) < 1e-10);
  }
  // Sample moments within 5 standard errors: se(mean) = √(var/n), se(var) = √((m4 − var²)/n) with the sample's
  // fourth central moment m4 (the marginals are bimodal, so the Gaussian √(2/n)·var would be wrong).
  int64_t n = 50000;
  Tensor s = mix.sample(n, gen, DType::f64);
  auto mu = mix.mean();
  auto cov = mix.covariance();
  for (int64_t j = 0; j < 2; ++j) {
    Tensor col = s.select(1, j);
    double m = mean(col).item(), v = var(col, {}, 0).item();
    double m4 = mean(pow(add(col, -m), 4.0)).item();
    CHECK(std::fabs(m - mu[size_t(j)]) < 5 * std::sqrt(cov[size_t(3 * j)] / double(n)));
    CHECK(std::fabs(v - cov[size_t(3 * j)]) < 5 * std::sqrt((m4 - v * v) / double(n)));
  }
  // Off-diagonal covariance: se ≈ √(E[(x−m_x)²(y−m_y)²]/n) ≤ √(m4_x·m4_y)^{1/2}/√n; the loose bound √(var_x·var_y·3/n)
  // is not guaranteed for mixtures, so use the sample's own E[(x−m_x)²(y−m_y)²].
  Tensor cx = add(s.select(1, 0), -mean(s.select(1, 0)).item()), cy = add(s.select(1, 1), -mean(s.select(1, 1)).item());
  double cxy = mean(mul(cx, cy)).item(), m22 = mean(mul(square(cx), square(cy))).item();
  CHECK(std::fabs(cxy - cov[1]) < 5 * std::sqrt((m22 - cxy * cxy) / double(n)));
}

// ---------------------------------------------------------------- objectives

TEST_CASE("ddpm_loss: the three targets against hand-written formulas") {
  DiscreteSchedule lin = DiscreteSchedule::linear();
  Generator gen(6);
  Tensor x0 = randn({3, 2}, gen, DType::f64), z = randn({3, 2}, gen, DType::f64);
  Tensor t = times_of({0, 400, 999});
  Tensor out = randn({3, 2}, gen, DType::f64);
  for (Prediction p : {Prediction::eps, Prediction::x0, Prediction::v}) {
    FunctionDenoiser m([&](const Tensor& x, const Tensor& tt) {
      // The model sees x_t = √ᾱ x0 + √(1−ᾱ) ε and the index.
      for (int64_t b = 0; b < 3; ++b) {
        double a = lin.mean_coef(tt.at({b})), s = lin.marginal_std(tt.at({b}));
        CHECK(std::fabs(x.at({b, 1}) - (a * x0.at({b, 1}) + s * z.at({b, 1}))) < 1e-14);
      }
      return out;
    }, p);
    double want = 0;
    for (int64_t b = 0; b < 3; ++b) {
      double a = lin.mean_coef(t.at({b})), s = lin.marginal_std(t.at({b}));
      for (int64_t j = 0; j < 2; ++j) {
        double e = z.at({b, j}), x = x0.at({b, j});
        double target = p == Prediction::eps ? e : p == Prediction::x0 ? x : a * e - s * x;
        want += std::pow(out.at({b, j}) - target, 2) / 6.0;
      }
    }
    CHECK(std::fabs(ddpm_loss(m, lin, x0, t, z).item() - want) < 1e-13);
  }
}

TEST_CASE("dsm_loss: lambda = sigma² gives the eps-MSE; likelihood weighting; 0.5·sum; any prediction type") {
  VPSDE vp;
  Generator gen(7);
  Tensor x0 = randn({4, 3}, gen, DType::f64), z = randn({4, 3}, gen, DType::f64);
  Tensor t = times_of({1e-5, 0.2, 0.5, 1.0});
  Tensor out = randn({4, 3}, gen, DType::f64);
  FunctionDenoiser m([&](const Tensor&, const Tensor&) { return out; });
  Tensor sq = square(sub(out, z));
  CHECK(std::fabs(dsm_loss(m, vp, x0, t, z).item() - mean(sq).item()) < 1e-14);
  CHECK(std::fabs(dsm_loss(m, vp, x0, t, z, {.reduce_mean = false}).item() - 0.5 * sum(sq).item() / 4) < 1e-13);
  double want = 0;
  for (int64_t b = 0; b < 4; ++b) {
    double tb = t.at({b}), w = std::pow(vp.diffusion(tb) / vp.marginal_std(tb), 2);
    want += w * mean(sq.select(0, b)).item() / 4;
  }
  CHECK(rel(dsm_loss(m, vp, x0, t, z, {.likelihood_weighting = true}).item(), want) < 1e-12);
  // The same score through an x0-predicting model gives the same loss.
  GaussianDenoiser g(vp, 0.3, 0.5);
  FunctionDenoiser gx0([&](const Tensor& x, const Tensor& tt) { return g.posterior_mean(x, tt); }, Prediction::x0);
  CHECK(std::fabs(dsm_loss(gx0, vp, x0, t, z).item() - dsm_loss(g, vp, x0, t, z).item()) < 1e-9);
  // Sampled form: t ∈ [eps, 1].
  FunctionDenoiser check_t([&](const Tensor& x, const Tensor& tt) {
    for (double u : tt.to_vector()) CHECK((u >= 1e-5 && u <= 1.0));
    return zeros_like(x);
  });
  dsm_loss(check_t, vp, x0, gen);
}

// ---------------------------------------------------------------- the MLP denoiser

TEST_CASE("timestep_embedding: DDPM's [sin | cos] table") {
  Tensor e = timestep_embedding(times_of({0.0, 3.0}), 6);
  // half = 3: ω = 1, 10000^{-1/2} = 0.01, 10000^{-1} = 1e-4.
  double w[3] = {1.0, 0.01, 1e-4};
  for (int k = 0; k < 3; ++k) {
    CHECK(e.at({0, k}) == 0.0);
    CHECK(e.at({0, 3 + k}) == 1.0);
    CHECK(std::fabs(e.at({1, k}) - std::sin(3.0 * w[k])) < 1e-15);
    CHECK(std::fabs(e.at({1, 3 + k}) - std::cos(3.0 * w[k])) < 1e-15);
  }
  CHECK_THROWS_AS(timestep_embedding(times_of({1.0}), 5), Error);
}

TEST_CASE("MLPDenoiser: shapes, zero output at init, gradcheck of ddpm_loss through it") {
  Generator gen(8);
  auto net = std::make_shared<MLPDenoiser>(MLPDenoiserConfig{.dim = 2, .hidden = 8, .blocks = 2, .time_dim = 4}, gen);
  ModuleDenoiser<MLPDenoiser> model(net);
  Tensor x = randn({5, 2}, gen);
  Tensor y = model.forward(x, times_of({0, 1, 2, 3, 999}));
  CHECK(y.shape() == Shape{5, 2});
  CHECK(y.dtype() == DType::f32);
  CHECK(max(abs(y)).item() == 0.0);
  // Give the output layer weights, then check autograd of the loss against finite differences in f64.
  net->to(DType::f64);
  {
    NoGradGuard ng;
    net->out_proj->weight.copy_(randn({2, 8}, gen, DType::f64));
  }
  DiscreteSchedule lin = DiscreteSchedule::linear();
  Tensor x0 = randn({4, 2}, gen, DType::f64), z = randn({4, 2}, gen, DType::f64);
  Tensor t = times_of({3, 100, 500, 900});
  std::vector<Tensor> params = net->parameters();
  LD_GRADCHECK([&](const std::vector<Tensor>&) { return ddpm_loss(model, lin, x0, t, z); }, params);
  // v-prediction through the same network, and the continuous loss with the VP time scale 999.
  ModuleDenoiser<MLPDenoiser> vmodel(net, Prediction::v, 999.0);
  VPSDE vp;
  LD_GRADCHECK([&](const std::vector<Tensor>&) { return dsm_loss(vmodel, vp, x0, times_of({0.01, 0.2, 0.5, 1.0}), z); },
               params);
}

TEST_CASE("ModuleDenoiser passes t·time_scale in the input's dtype") {
  struct Probe : nn::Module {
    Tensor seen;
    using Module::forward;
    Tensor forward(const Tensor& x, const Tensor& t) {
      seen = t;
      return x;
    }
  };
  auto probe = std::make_shared<Probe>();
  ModuleDenoiser<Probe> m(probe, Prediction::x0, 999.0);
  m.forward(zeros({2, 3}), times_of({0.5, 1.0}));
  CHECK(probe->seen.dtype() == DType::f32);
  CHECK(probe->seen.at({0}) == doctest::Approx(499.5));
  CHECK(probe->seen.at({1}) == doctest::Approx(999.0));
  CHECK(m.prediction() == Prediction::x0);
}

// #21: the diffusion types check their own options. Each of these crashed (SIGSEGV in ddpm_loss on an empty batch,
// SIGFPE in the U-Net constructor) or was accepted before.
TEST_CASE("diffusion options: empty batches, schedules, SDEs, the MLP denoiser and the U-Net config are checked") {
  DiscreteSchedule s = DiscreteSchedule::linear(10, 1e-4, 0.02);
  GaussianDenoiser exact(s, 0.0, 1.0);
  Generator g(1);
  CHECK_THROWS_WITH_AS(ddpm_loss(exact, s, zeros({0, 2}), g), "ddpm_loss: x0 [0, 2] has no examples (batch size 0)", Error);
  VPSDE vp;
  CHECK_THROWS_WITH_AS(dsm_loss(exact, vp, zeros({0, 2}), g), "dsm_loss: x0 [0, 2] has no examples (batch size 0)", Error);
  CHECK(std::isfinite(ddpm_loss(exact, s, ones({3, 2}), g).item()));

  CHECK_THROWS_WITH_AS(DiscreteSchedule::linear(0, 1e-4, 0.02), "DiscreteSchedule::linear: T must be in [1, 16777216], got 0",
                       Error);
  CHECK_THROWS_WITH_AS(DiscreteSchedule::linear(int64_t(1) << 40, 1e-4, 0.02), doctest::Contains("T must be in [1, 16777216]"),
                       Error);  // was: std::bad_alloc for the vector of betas
  CHECK_THROWS_WITH_AS(DiscreteSchedule::linear(10, std::nan(""), 0.02),
                       doctest::Contains("beta_start and beta_end must be finite numbers in [0, 1), got nan and 0.02"), Error);
  CHECK_THROWS_WITH_AS(DiscreteSchedule::cosine(10, -1), doctest::Contains("s must be a finite number >= 0, got -1"), Error);
  CHECK_THROWS_WITH_AS(VPSDE(-1, 20), "VPSDE: beta_min and beta_max must be finite numbers >= 0, not both 0, got -1 and 20",
                       Error);
  CHECK_THROWS_WITH_AS(VPSDE(0, 0), doctest::Contains("not both 0, got 0 and 0"), Error);
  CHECK_THROWS_WITH_AS(SubVPSDE(0.1, INFINITY), doctest::Contains("got 0.1 and inf"), Error);
  CHECK_THROWS_WITH_AS(VESDE(0, 50), "VESDE: need finite 0 < sigma_min < sigma_max, got sigma_min 0 and sigma_max 50", Error);
  CHECK_THROWS_WITH_AS(VESDE(1, 1), doctest::Contains("got sigma_min 1 and sigma_max 1"), Error);
  CHECK_NOTHROW(VPSDE(0.1, 0.0));  // a decreasing β(t) is still a process

  auto mlp_err = [&](std::function<void(MLPDenoiserConfig&)> edit, const std::string& msg) {
    MLPDenoiserConfig c{.dim = 2, .hidden = 8, .blocks = 1, .time_dim = 8};
    edit(c);
    CHECK_THROWS_WITH_AS(MLPDenoiser(c, g), doctest::Contains(msg.c_str()), Error);
  };
  mlp_err([](auto& c) { c.hidden = 0; }, "MLPDenoiser: hidden must be in [1, 16777216], got 0");
  mlp_err([](auto& c) { c.blocks = -1; }, "MLPDenoiser: blocks must be in [0, 65536], got -1");
  mlp_err([](auto& c) { c.time_dim = 5; }, "MLPDenoiser: time_dim must be even and in [4, 16777216], got 5");  // was: at forward
  mlp_err([](auto& c) { c.max_period = std::nan(""); }, "max_period must be a finite number > 1, got nan");

  auto unet_err = [&](std::function<void(UNetConfig&)> edit, const std::string& msg) {
    UNetConfig c;
    c.base_channels = 8;
    c.channel_mult = {1, 2};
    c.num_res_blocks = 1;
    c.groups = 4;
    c.image_size = 8;
    edit(c);
    CHECK_THROWS_WITH_AS(UNet(c, g), doctest::Contains(msg.c_str()), Error);
  };
  unet_err([](auto& c) { c.groups = 0; }, "UNet: groups must be in [1, 1048576], got 0");  // was: SIGFPE
  unet_err([](auto& c) { c.groups = -2; }, "UNet: groups must be in [1, 1048576], got -2");
  unet_err([](auto& c) { c.groups = 3; }, "base_channels 8 is not divisible into groups = 3");
  unet_err([](auto& c) { c.channel_mult = {1, 0}; }, "channel_mult entries must be in [1, 131072]");
  unet_err([](auto& c) { c.channel_mult = {1, int64_t(1) << 62}; }, "channel_mult entries must be in [1, 131072]");  // no overflow
  unet_err([](auto& c) { c.channel_mult.assign(17, 1); }, "channel_mult must have 1 to 16 levels, got 17");
  unet_err([](auto& c) { c.base_channels = int64_t(1) << 62; }, "base_channels must be in [1, 1048576]");  // 4·base overflowed
  unet_err([](auto& c) { c.num_res_blocks = 0; }, "num_res_blocks must be in [1, 1024], got 0");
  unet_err([](auto& c) { c.attention_heads = 0; }, "attention_heads must be in [1, 1048576], got 0");
  unet_err([](auto& c) { c.dropout = std::nan(""); }, "UNet: dropout must be in [0, 1), got nan");
  unet_err([](auto& c) { c.time_scale = 0; }, "UNet: time_scale must be a finite number > 0, got 0");
  unet_err([](auto& c) { c.attention_resolutions = {0}; }, "attention_resolutions must be >= 1, got 0");
}
