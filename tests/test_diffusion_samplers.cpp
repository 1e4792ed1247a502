// Samplers with the closed-form model (algorithms.md §8): for data N(μ, s²) the exact ε* is affine in x, so every
// sampler except the Langevin corrector is an affine map plus Gaussian noise per step, x' = A·x + B + c·z, and its
// expected final moments follow the recursion mean' = A·mean + B, var' = A²·var + c² (§8.3). The tests
//   1. check the recursions (written here independently of the samplers, from a_t, σ_t, f, g and ε*) against the
//      numbers printed in algorithms.md §5.5 D2–D3, §6.3 I1, §7.5 S2–S3;
//   2. run each sampler by Monte Carlo and require the sample mean/variance within 5 standard errors of the
//      recursion's exact expectation: se(mean) = √(var/n), se(var) = var·√(2/n) (Gaussian output);
//   3. require the expectation itself to be within the stated discretisation bias of the data (μ, s²) where the
//      sampler is consistent at that step count (1000 steps). With 50 DDIM steps the variance shrinks by design
//      (§8.4: 0.223 for η = 0, 0.197 for η = 1), which the MC reproduces.
// n = 8192 samples ([4096, 2], f32, the dtype networks use): se(mean) = 5.5e-3, se(var) = 3.9e-3 for var 0.25.
// (Sizes keep the file at a few seconds: the cost is one N(0, 1) draw per element per noisy step.)
#include <doctest/doctest.h>

#include <cmath>

#include "core/ops.h"
#include "diffusion/gaussian_model.h"
#include "diffusion/samplers.h"
#include "diffusion/schedule.h"
#include "op_test_helpers.h"

using namespace liandan;
using namespace liandan::diffusion;
using liandan::testing::max_abs_diff;

namespace {

constexpr double kMu = 0.3, kS = 0.5;
const Shape kShape = {4096, 2};

struct Moments {
  double mean, var;
};

// One affine step of the recursion: x' = A·x + B + c·z.
void step(Moments& m, double A, double B, double c2) {
  m.mean = A * m.mean + B;
  m.var = A * A * m.var + c2;
}

// ε*(x, t) = e1·x + e0 on process p (e1 = σ/v, e0 = −σ·m/v).
std::pair<double, double> eps_coefs(const Process& p, double t, double mu, double s) {
  double a = p.mean_coef(t), sd = p.marginal_std(t), v = a * a * s * s + sd * sd;
  return {sd / v, -sd * a * mu / v};
}

Moments ddpm_recursion(const DiscreteSchedule& sch, double mu, double s, DDPMVariance var) {
  Moments m{0, 1};
  for (int64_t t = sch.num_steps() - 1; t >= 0; --t) {
    auto [e1, e0] = eps_coefs(sch, double(t), mu, s);
    double a = sch.mean_coef(double(t)), sd = sch.marginal_std(double(t));
    auto p = sch.posterior(t, t - 1);
    // x̂0 = ((1 − sd·e1)x − sd·e0)/a;  x' = c1·x̂0 + c2·x + noise.
    double A = p.c1 * (1 - sd * e1) / a + p.c2, B = -p.c1 * sd * e0 / a;
    step(m, A, B, t == 0 ? 0.0 : (var == DDPMVariance::beta ? p.beta : p.beta_tilde));
  }
  return m;
}

Moments ddim_recursion(const DiscreteSchedule& sch, int64_t S, double eta, double mu, double s,
                       Spacing sp = Spacing::uniform) {
  std::vector<int64_t> tau = timesteps(sch.num_steps(), S, sp);
  Moments m{0, 1};
  for (int64_t i = int64_t(tau.size()) - 1; i >= 0; --i) {
    int64_t t = tau[size_t(i)], tp = i > 0 ? tau[size_t(i - 1)] : -1;
    auto [e1, e0] = eps_coefs(sch, double(t), mu, s);
    double ab = sch.alpha_bar(t), abp = sch.alpha_bar(tp), a = std::sqrt(ab), sd = std::sqrt(1 - ab);
    double sig2 = eta * eta * (1 - ab / abp) * (1 - abp) / (1 - ab);
    double dir = std::sqrt(std::max(0.0, 1 - abp - sig2));
    double A = std::sqrt(abp) * (1 - sd * e1) / a + dir * e1, B = -std::sqrt(abp) * sd * e0 / a + dir * e0;
    step(m, A, B, sig2);
  }
  return m;
}

// Euler–Maruyama (step 1/N on linspace(1, eps, N)) or reverse diffusion, score −(x − m)/v, noise-free last step.
Moments sde_recursion(const SDE& sde, int64_t N, double eps, bool reverse_diffusion, double mu, double s) {
  Moments m{0, sde.prior_std() * sde.prior_std()};
  for (int64_t i = 0; i < N; ++i) {
    double t = 1.0 + double(i) * (eps - 1.0) / double(N - 1);
    double a = sde.mean_coef(t), sd = sde.marginal_std(t), v = a * a * s * s + sd * sd, mt = a * mu;
    bool last = i == N - 1;
    if (!reverse_diffusion) {
      double f = sde.drift_coef(t), g2 = sde.diffusion(t) * sde.diffusion(t);
      step(m, 1 - (f + g2 / v) / double(N), g2 * mt / (v * double(N)), last ? 0 : g2 / double(N));
    } else {
      auto d = sde.discretize(t, N);
      double G2 = d.G * d.G;
      step(m, 1 - d.f - G2 / v, G2 * mt / v, last ? 0 : G2);
    }
  }
  return m;
}

// Probability-flow ODE, dx/dt = p(t)x + q(t) with p = f + ½g²/v, q = −½g²m/v; Euler or Heun on a uniform grid.
Moments ode_recursion(const SDE& sde, int64_t N, double eps, bool heun, double mu, double s) {
  auto pq = [&](double t) {
    double a = sde.mean_coef(t), sd = sde.marginal_std(t), v = a * a * s * s + sd * sd;
    double g2 = sde.diffusion(t) * sde.diffusion(t);
    return std::pair<double, double>{sde.drift_coef(t) + 0.5 * g2 / v, -0.5 * g2 * a * mu / v};
  };
  Moments m{0, sde.prior_std() * sde.prior_std()};
  double h = (eps - 1.0) / double(N);
  for (int64_t k = 0; k < N; ++k) {
    double t = 1.0 + double(k) * h, tn = k + 1 == N ? eps : 1.0 + double(k + 1) * h;
    auto [p0, q0] = pq(t);
    if (!heun) {
      step(m, 1 + (tn - t) * p0, (tn - t) * q0, 0);
    } else {
      auto [p1, q1] = pq(tn);
      double hh = tn - t;
      step(m, 1 + 0.5 * hh * (p0 + p1 * (1 + hh * p0)), 0.5 * hh * (q0 + p1 * hh * q0 + q1), 0);
    }
  }
  return m;
}

// The exact flow from the prior at t = 1 to eps (§8.2 / S3): x_eps = m_eps + √(v_eps/v_1)(x_1 − m_1).
Moments exact_flow_moments(const SDE& sde, double eps, double mu, double s) {
  GaussianDenoiser g(sde, mu, s);
  double r = std::sqrt(g.marginal_var(eps) / g.marginal_var(1.0));
  return {g.marginal_mean(eps) - r * g.marginal_mean(1.0), r * r * sde.prior_std() * sde.prior_std()};
}

Moments sample_moments(const Tensor& x) {
  return {mean(x).item(), var(x, {}, 0).item()};
}

// Monte Carlo moments within 5 standard errors of the exact expectation.
void check_mc(const Tensor& x, Moments want, const char* what) {
  Moments got = sample_moments(x);
  double n = double(x.numel());
  INFO(what << ": got (" << got.mean << ", " << got.var << "), expected (" << want.mean << ", " << want.var
            << ")");
  CHECK(std::fabs(got.mean - want.mean) < 5 * std::sqrt(want.var / n));
  CHECK(std::fabs(got.var - want.var) < 5 * want.var * std::sqrt(2.0 / n));
}

}  // namespace

TEST_CASE("moment recursions reproduce algorithms.md D2, D3, I1, S2, S3") {
  DiscreteSchedule lin = DiscreteSchedule::linear();
  auto near = [](Moments m, double mean, double var, double tol = 1.5e-6) {
    INFO("(" << m.mean << ", " << m.var << ") vs (" << mean << ", " << var << ")");
    CHECK(std::fabs(m.mean - mean) < tol);
    CHECK(std::fabs(m.var - var) < tol);
  };
  // D2 / D3 (DDPM).
  near(ddpm_recursion(lin, kMu, kS, DDPMVariance::beta), 0.299997, 0.250752);
  near(ddpm_recursion(lin, kMu, kS, DDPMVariance::beta_tilde), 0.299997, 0.246125);
  near(ddpm_recursion(lin, kMu, 1.0, DDPMVariance::beta), 0.29998789, 0.9999, 1e-8);
  // I1 (DDIM, uniform τ).
  near(ddim_recursion(lin, 10, 0, kMu, kS), 0.298155, 0.139972);
  near(ddim_recursion(lin, 20, 0, kMu, kS), 0.298660, 0.188126);
  near(ddim_recursion(lin, 50, 0, kMu, kS), 0.298911, 0.223199);
  near(ddim_recursion(lin, 100, 0, kMu, kS), 0.298986, 0.236177);
  near(ddim_recursion(lin, 1000, 0, kMu, kS), 0.299050, 0.248498);
  near(ddim_recursion(lin, 10, 1, kMu, kS), 0.299980, 0.111064);
  near(ddim_recursion(lin, 50, 1, kMu, kS), 0.299996, 0.197245);
  near(ddim_recursion(lin, 1000, 1, kMu, kS), 0.299997, 0.246125);
  // §8.4: the η = 0 variance rises monotonically towards s² with the number of steps.
  double prev = 0;
  for (int64_t S : {10, 20, 50, 100, 200, 500, 1000}) {
    double v = ddim_recursion(lin, S, 0, kMu, kS).var;
    CHECK(v > prev);
    CHECK(v < kS * kS);
    prev = v;
  }
  // S2 (Euler–Maruyama, N = 1000, denoise) and S3 (exact flow from the prior).
  VPSDE vp;
  SubVPSDE sub;
  VESDE ve;
  near(sde_recursion(vp, 1000, 1e-3, false, kMu, kS), 0.300177, 0.250233);
  near(sde_recursion(sub, 1000, 1e-3, false, kMu, kS), 0.300235, 0.250398);
  near(sde_recursion(ve, 1000, 1e-5, false, kMu, kS), 0.299972, 0.250349);
  near(exact_flow_moments(vp, 1e-3, kMu, kS), 0.29899759, 0.25009056, 1e-8);
  near(exact_flow_moments(sub, 1e-3, kMu, kS), 0.29899779, 0.24999142, 1e-8);
  near(exact_flow_moments(ve, 1e-5, kMu, kS), 0.29699955, 0.25007501, 1e-8);
}

TEST_CASE("DDPM ancestral sampling (sigma² = beta, beta~) reproduces the data moments") {
  DiscreteSchedule lin = DiscreteSchedule::linear();
  GaussianDenoiser g(lin, kMu, kS);
  for (DDPMVariance v : {DDPMVariance::beta, DDPMVariance::beta_tilde}) {
    Generator gen(11);
    Tensor x = ddpm_sample(g, lin, kShape, 1000, gen, {.variance = v});
    CHECK(x.dtype() == DType::f32);
    Moments want = ddpm_recursion(lin, kMu, kS, v);
    check_mc(x, want, v == DDPMVariance::beta ? "ddpm beta" : "ddpm beta~");
    // Discretisation bias of 1000 steps (D2): |Δmean| = 3e-6, |Δvar| ≤ 3.9e-3 (β̃: 0.246125).
    CHECK(std::fabs(want.mean - kMu) < 1e-5);
    CHECK(std::fabs(want.var - kS * kS) < 4e-3);
  }
}

TEST_CASE("DDIM eta in {0, 0.5, 1} at 1000 and 50 steps matches its exact expected moments") {
  DiscreteSchedule lin = DiscreteSchedule::linear();
  GaussianDenoiser g(lin, kMu, kS);
  for (double eta : {0.0, 0.5, 1.0})
    for (int64_t S : {1000, 50}) {
      Generator gen(12);
      Tensor x = ddim_sample(g, lin, kShape, S, gen, {.eta = eta});
      Moments want = ddim_recursion(lin, S, eta, kMu, kS);
      std::string what = "ddim eta=" + std::to_string(eta) + " S=" + std::to_string(S);
      check_mc(x, want, what.c_str());
      INFO(what);
      // Bias of the expectation vs the data: 1000 steps: |Δmean| < 1e-3, |Δvar| < 4e-3 (I1: 0.299050 / 0.248498 for
      // η = 0). 50 steps: the variance shrinks (0.223 for η = 0 down to 0.197 for η = 1), the mean stays within 2e-3.
      CHECK(std::fabs(want.mean - kMu) < 2e-3);
      if (S == 1000) CHECK(std::fabs(want.var - kS * kS) < 4e-3);
      if (S == 50) CHECK((want.var > 0.19 && want.var < 0.23));
    }
  // The quadratic subsequence (10 steps) also matches its own recursion.
  Generator gen(13);
  Tensor x = ddim_sample(g, lin, kShape, 10, gen, {.spacing = Spacing::quadratic});
  check_mc(x, ddim_recursion(lin, 10, 0, kMu, kS, Spacing::quadratic), "ddim quadratic S=10");
}

TEST_CASE("timestep subsequences") {
  CHECK(timesteps(1000, 10, Spacing::uniform) == std::vector<int64_t>{0, 100, 200, 300, 400, 500, 600, 700, 800, 900});
  CHECK(timesteps(1000, 10, Spacing::quadratic) == std::vector<int64_t>{0, 9, 39, 88, 158, 246, 355, 483, 632, 800});
  CHECK(timesteps(1000, 10, Spacing::trailing) ==
        std::vector<int64_t>{99, 199, 299, 399, 499, 599, 699, 799, 899, 999});
  for (Spacing sp : {Spacing::uniform, Spacing::quadratic, Spacing::trailing}) {
    auto full_seq = timesteps(1000, 1000, sp);
    REQUIRE(full_seq.size() == 1000);
    CHECK((full_seq.front() == 0 && full_seq.back() == 999));
    auto q = timesteps(1000, 50, sp);
    for (size_t i = 1; i < q.size(); ++i) CHECK(q[i] > q[i - 1]);  // strictly increasing (duplicates dropped)
  }
}

TEST_CASE("DDIM with eta = 1 on all steps equals DDPM with sigma² = beta~ for the same noise") {
  // Same generator seed → same x_T and the same z at every step (neither draws on the noise-free last step); the
  // means c1·x̂0 + c2·x and √ᾱ'·x̂0 + √(1−ᾱ'−σ²)·ε̂ are equal algebraically, so only rounding differs (f64).
  DiscreteSchedule lin = DiscreteSchedule::linear();
  GaussianDenoiser g(lin, kMu, kS);
  Generator g1(21), g2(21);
  Tensor a = ddpm_sample(g, lin, {64, 3}, 1000, g1, {.variance = DDPMVariance::beta_tilde, .dtype = DType::f64});
  Tensor b = ddim_sample(g, lin, {64, 3}, 1000, g2, {.eta = 1.0, .dtype = DType::f64});
  CHECK(max_abs_diff(a, b) < 1e-12);
  CHECK(g1.offset() == g2.offset());
  // Also respaced: DDPM on 50 steps of ᾱ with β̃ is DDIM η = 1 on the same subsequence.
  Generator g3(22), g4(22);
  Tensor c = ddpm_sample(g, lin, {64, 3}, 50, g3, {.variance = DDPMVariance::beta_tilde, .dtype = DType::f64});
  Tensor d = ddim_sample(g, lin, {64, 3}, 50, g4, {.eta = 1.0, .dtype = DType::f64});
  CHECK(max_abs_diff(c, d) < 1e-12);
}

TEST_CASE("DDIM eta = 0 is deterministic; every sampler is a function of the generator state") {
  DiscreteSchedule lin = DiscreteSchedule::linear();
  GaussianDenoiser g(lin, kMu, kS);
  Generator gx(31);
  Tensor xT = randn({16, 2}, gx);
  Generator ga(1), gb(2);
  Tensor a = ddim_sample(g, lin, {16, 2}, 50, ga, {.x_init = xT});
  Tensor b = ddim_sample(g, lin, {16, 2}, 50, gb, {.x_init = xT});
  CHECK(max_abs_diff(a, b) == 0.0);
  CHECK(ga.offset() == 0);  // η = 0 with a given x_T draws nothing
  VPSDE vp;
  GaussianDenoiser gv(vp, kMu, kS);
  Generator s1(5), s2(5);
  CHECK(max_abs_diff(pc_sample(gv, vp, {16, 2}, 100, s1), pc_sample(gv, vp, {16, 2}, 100, s2)) == 0.0);
  Generator s3(6), s4(6);
  CHECK(max_abs_diff(ddpm_sample(g, lin, {16, 2}, 100, s3), ddpm_sample(g, lin, {16, 2}, 100, s4)) == 0.0);
}

TEST_CASE("point-mass data: DDIM eta = 0 returns x* for any subsequence (seeds-math §6 test 3)") {
  DiscreteSchedule lin = DiscreteSchedule::linear();
  GaussianDenoiser point(lin, 0.7, 0.0);  // ε*(x) = (x − √ᾱ x*)/√(1−ᾱ), so x̂0 = x* at every step
  for (Spacing sp : {Spacing::uniform, Spacing::quadratic, Spacing::trailing}) {
    Generator gen(7);
    Tensor x = ddim_sample(point, lin, {32, 2}, 10, gen, {.spacing = sp, .dtype = DType::f64});
    CHECK(max(abs(add(x, -0.7))).item() < 1e-9);
  }
}

TEST_CASE("x0 clipping keeps DDPM and DDIM samples in [-1, 1]") {
  // Data N(0, 1.5²) puts most x̂0 outside [−1, 1] early on; the last step of both samplers returns the clipped x̂0.
  DiscreteSchedule lin = DiscreteSchedule::linear();
  GaussianDenoiser g(lin, 0.0, 1.5);
  Generator gen(8);
  Tensor a = ddpm_sample(g, lin, {256, 2}, 100, gen, {.clip_x0 = true});
  Tensor b = ddim_sample(g, lin, {256, 2}, 20, gen, {.eta = 0.5, .clip_x0 = true});
  CHECK(max(abs(a)).item() <= 1.0);
  CHECK(max(abs(b)).item() <= 1.0 + 1e-6);  // re-derived ε̂ and x̂0 round once more in f32
  Tensor c = ddim_sample(g, lin, {256, 2}, 20, gen, {.eta = 0.5});
  CHECK(max(abs(c)).item() > 2.0);  // without clipping the data's spread survives
}

TEST_CASE("Euler-Maruyama and reverse-diffusion samplers match their expected moments (VP, sub-VP, VE)") {
  VPSDE vp;
  SubVPSDE sub;
  VESDE ve;
  for (const SDE* sde : std::vector<const SDE*>{&vp, &sub, &ve}) {
    GaussianDenoiser g(*sde, kMu, kS);
    Generator gen(41);
    Tensor x = euler_maruyama_sample(g, *sde, kShape, 500, gen);
    Moments want = sde_recursion(*sde, 500, sde->sampling_eps(), false, kMu, kS);
    check_mc(x, want, ("euler-maruyama " + sde->name()).c_str());
    // Bias of 500 EM steps (recursion): mean ≤ 4e-4, variance ≤ 9.1e-4 (sub-VP); 1000 steps halve it (S2).
    CHECK(std::fabs(want.mean - kMu) < 1e-3);
    CHECK(std::fabs(want.var - kS * kS) < 2e-3);
  }
  for (const SDE* sde : std::vector<const SDE*>{&vp, &ve}) {
    GaussianDenoiser g(*sde, kMu, kS);
    Generator gen(42);
    Tensor x = reverse_diffusion_sample(g, *sde, kShape, 500, gen);
    Moments want = sde_recursion(*sde, 500, sde->sampling_eps(), true, kMu, kS);
    check_mc(x, want, ("reverse diffusion " + sde->name()).c_str());
    // Bias of 500 reverse-diffusion steps: mean ≤ 3e-5, variance 2.3e-3 (VP), 4.2e-3 (VE).
    CHECK(std::fabs(want.mean - kMu) < 1e-3);
    CHECK(std::fabs(want.var - kS * kS) < 5e-3);
  }
}

TEST_CASE("predictor-corrector (reverse diffusion + Langevin, snr 0.16) reproduces the data moments") {
  // The Langevin step size depends on batch norms, so there is no linear recursion (S4); the corrector steps
  // target p_t itself, so the result must be the data within 5 se plus a bias budget of 1e-2: measured with
  // n = 65536 for N = 100 … 1000, the variance is 0.2525 … 0.2582 and the mean within 2.5e-3 of 0.3.
  VPSDE vp;
  VESDE ve;
  for (const SDE* sde : std::vector<const SDE*>{&vp, &ve}) {
    GaussianDenoiser g(*sde, kMu, kS);
    Generator gen(51);
    Tensor x = pc_sample(g, *sde, kShape, 200, gen);
    Moments got = sample_moments(x);
    double n = double(x.numel());
    INFO(sde->name() << ": (" << got.mean << ", " << got.var << ")");
    CHECK(std::fabs(got.mean - kMu) < 5 * std::sqrt(0.25 / n) + 1e-2);
    CHECK(std::fabs(got.var - kS * kS) < 5 * 0.25 * std::sqrt(2.0 / n) + 1e-2);
  }
}

TEST_CASE("probability-flow ODE: Euler, Heun (exact recursion) and RK45 (exact flow map per sample)") {
  VPSDE vp;
  SubVPSDE sub;
  VESDE ve;
  for (const SDE* sde : std::vector<const SDE*>{&vp, &sub, &ve}) {
    GaussianDenoiser g(*sde, kMu, kS);
    double eps = sde->sampling_eps();
    // Fixed-step methods: each step is affine, so the output is the deterministic image of x_T; MC over x_T.
    for (bool heun : {false, true}) {
      int64_t N = heun ? 100 : 500;
      Generator gen(61);
      ODEResult r = pf_ode_sample(g, *sde, kShape, N, gen, {.method = heun ? ODEMethod::heun : ODEMethod::euler});
      CHECK(r.nfe == (heun ? 2 * N : N));
      Moments want = ode_recursion(*sde, N, eps, heun, kMu, kS);
      check_mc(r.x, want, (sde->name() + (heun ? " heun" : " euler")).c_str());
      // Bias vs the exact flow's moments (S3), measured by the recursion: Euler (first order, 500 steps) ≤ 1.2e-3
      // for VP/sub-VP but 2.1e-2 for VE (σ spans 0.01 … 50: stiff); Heun (100 steps) ≤ 1.3e-4 / 2.5e-3 (VE).
      Moments exact = exact_flow_moments(*sde, eps, kMu, kS);
      double tol = sde->name() == "ve" ? (heun ? 3e-3 : 2.5e-2) : (heun ? 5e-4 : 2e-3);
      CHECK(std::fabs(want.mean - exact.mean) < tol);
      CHECK(std::fabs(want.var - exact.var) < tol);
    }
    // RK45 (f64): per sample the exact map x_eps = m_eps + √(v_eps/v_1)(x_1 − m_1) within 50·tolerance (measured max
    // errors over 1024 values: 2.5e-5 VP, 8.2e-5 sub-VP, 1.4e-5 VE, with 56, 68 and 104 evaluations).
    Generator gen(62);
    Tensor xT = sde->prior_sample({512, 2}, gen, DType::f64);
    ODEResult r = pf_ode_sample(g, *sde, {512, 2}, 0, gen, {.dtype = DType::f64, .x_init = xT});
    double err = max_abs_diff(r.x, g.flow(xT, 1.0, eps));
    INFO(sde->name() << " rk45: nfe " << r.nfe << ", accepted " << r.accepted << ", rejected " << r.rejected
                     << ", max error " << err);
    CHECK(err < 5e-4);
    CHECK((r.nfe > 20 && r.nfe < 2000));
    CHECK(r.nfe == 2 + 6 * (r.accepted + r.rejected));
    // And in f32 from the prior, the moments (MC over x_T) are S3's.
    Generator gen2(63);
    ODEResult r32 = pf_ode_sample(g, *sde, kShape, 0, gen2);
    check_mc(r32.x, exact_flow_moments(*sde, eps, kMu, kS), (sde->name() + " rk45").c_str());
  }
}

TEST_CASE("round trips x0 -> x_T -> x0: PF-ODE (RK45) and DDIM inversion") {
  Generator gen(71);
  Tensor x0 = add(mul(randn({256, 2}, gen, DType::f64), kS), kMu);
  // PF-ODE: encoding is the exact flow map forward; decoding brings x0 back. Both within the RK45 tolerance.
  VPSDE vp;
  GaussianDenoiser g(vp, kMu, kS);
  ODEOptions o{.eps = 1e-3, .dtype = DType::f64};
  ODEResult enc = pf_ode_encode(g, vp, x0, 0, o);
  CHECK(max_abs_diff(enc.x, g.flow(x0, 1e-3, 1.0)) < 1e-3);
  o.x_init = enc.x;
  ODEResult dec = pf_ode_sample(g, vp, x0.shape(), 0, gen, o);
  double ode_err = max_abs_diff(dec.x, x0);
  CAPTURE(ode_err);
  CHECK(ode_err < 2e-3);
  // DDIM inversion uses ε̂ at the next time: first order in the step, so 1000 steps reconstruct far better than 50
  // (measured max errors over 512 values: 0.098 with 50 steps, 0.0050 with 1000).
  DiscreteSchedule lin = DiscreteSchedule::linear();
  GaussianDenoiser gd(lin, kMu, kS);
  double err[2];
  int k = 0;
  for (int64_t S : {50, 1000}) {
    Tensor xT = ddim_invert(gd, lin, x0, S, {.dtype = DType::f64});
    Tensor back = ddim_sample(gd, lin, x0.shape(), S, gen, {.dtype = DType::f64, .x_init = xT});
    err[k++] = max_abs_diff(back, x0);
  }
  CAPTURE(err[0]);
  CAPTURE(err[1]);
  CHECK(err[0] < 0.15);
  CHECK(err[1] < 1e-2);
  CHECK(err[1] < err[0] / 5);
}

TEST_CASE("mixture data: DDPM and RK45 samples have the mixture's mean and covariance") {
  // The exact ε* of a 4-component ring is nonlinear; tolerances: 5 se of each sample moment (se from the samples'
  // own fourth moments) plus 0.02 for discretisation (DDPM respaced to 100 steps; measured variances 0.490 … 0.519
  // for 100 … 1000 steps against 0.51).
  GaussianMixture mix = GaussianMixture::ring(4, 1.0, 0.1);
  auto mu = mix.mean();
  auto cov = mix.covariance();
  DiscreteSchedule lin = DiscreteSchedule::linear();
  VPSDE vp;
  MixtureDenoiser md(lin, mix), mv(vp, mix);
  Generator gen(81);
  int64_t n = 4096;
  Tensor a = ddpm_sample(md, lin, {n, 2}, 100, gen, {.variance = DDPMVariance::beta_tilde});
  Tensor b = pf_ode_sample(mv, vp, {n, 2}, 0, gen).x;
  for (const Tensor* x : {&a, &b}) {
    for (int64_t j = 0; j < 2; ++j) {
      Tensor col = x->select(1, j);
      double m = mean(col).item(), v = var(col, {}, 0).item();
      double m4 = mean(pow(add(col, -m), 4.0)).item();
      CHECK(std::fabs(m - mu[size_t(j)]) < 5 * std::sqrt(cov[size_t(3 * j)] / double(n)) + 0.02);
      CHECK(std::fabs(v - cov[size_t(3 * j)]) < 5 * std::sqrt(std::max(m4 - v * v, 1e-4) / double(n)) + 0.02);
    }
    // Every sample near one of the four modes (radius 1): |‖x‖ − 1| small for nearly all.
    Tensor r = sqrt(sum(square(*x), {1}));
    double far = mean(gt(abs(add(r, -1.0)), 0.4)).item();
    CHECK(far < 0.01);
  }
}

TEST_CASE("sampler argument errors") {
  DiscreteSchedule lin = DiscreteSchedule::linear();
  GaussianDenoiser g(lin, kMu, kS);
  Generator gen(9);
  CHECK_THROWS_AS(ddim_sample(g, lin, {4, 2}, 2000, gen), Error);
  CHECK_THROWS_AS(ddim_sample(g, lin, {4, 2}, 10, gen, {.x_init = zeros({3, 2})}), Error);
  VPSDE vp;
  GaussianDenoiser gv(vp, kMu, kS);
  CHECK_THROWS_AS(sde_sample(gv, vp, {4, 2}, 1, gen), Error);
  CHECK_THROWS_AS(pf_ode_sample(gv, vp, {4, 2}, 10, gen, {.max_nfe = 5}), Error);
}
