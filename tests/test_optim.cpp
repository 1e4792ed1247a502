// Optimizers against the specification's oracles (algorithms.md §3–4, seeds-math.md article 8):
// hand-computed trajectories in f64, closed forms, invariants, state_dict resume, convergence.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numbers>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/random.h"
#include "core/serialize.h"
#include "nn/models.h"
#include "optim/adam.h"
#include "optim/amos.h"
#include "optim/clip.h"
#include "optim/ema.h"
#include "optim/schedule.h"
#include "optim/sgd.h"

using namespace liandan;
using namespace liandan::optim;

namespace {

Tensor param(std::vector<double> v, Shape shape = {}) {
  if (shape.empty() && v.size() != 1) shape = {int64_t(v.size())};
  Tensor t = from_vector(v, shape, DType::f64);
  t.requires_grad_(true);
  return t;
}

void set_grad(const Tensor& p, std::vector<double> g) { p.set_grad(from_vector(g, p.shape(), p.dtype())); }

// ---- f64 transcriptions of the reference update rules, one scalar at a time

struct RefAdam {
  double lr, b1, b2, eps, wd;
  bool decoupled, amsgrad = false;
  double m = 0, v = 0, vmax = 0;
  int t = 0;
  double step(double th, double g) {
    ++t;
    if (decoupled) th *= 1 - lr * wd;
    else g += wd * th;
    m = b1 * m + (1 - b1) * g;
    v = b2 * v + (1 - b2) * g * g;
    double vv = v;
    if (amsgrad) vv = vmax = std::max(vmax, v);
    double denom = std::sqrt(vv) / std::sqrt(1 - std::pow(b2, t)) + eps;
    return th - lr / (1 - std::pow(b1, t)) * m / denom;
  }
};

// Amos, per algorithms.md §4.2, for a tensor whose slot is one scalar (slot shape []).
struct RefAmos {
  double xi, eta, beta = 0.999, c = 0.25, d = 0.25, lambda = 0, eps = std::ldexp(1.0, -125);
  double mu = 0, clip = 0, fr = 1;
  double v = 0, b = 0;
  std::vector<double> u;
  int t = 0;
  void step(std::vector<double>& th, std::vector<double> g) {
    ++t;
    if (clip > 0)
      for (auto& x : g) x = std::clamp(x, -clip, clip);
    double g2 = 0;
    for (double x : g) g2 += x * x;
    g2 /= double(g.size());
    v = beta * v + (1 - beta) * g2;
    double r = (1 - std::pow(beta, t)) / std::max(v, eps);
    double ct = 1 / std::sqrt(1 + c * std::sqrt(xi) * b);
    double gamma = std::sqrt(fr) * ct * xi * xi * r * g2;
    double alpha = xi * eta;
    double dt = 1 / (1 + d * std::sqrt(alpha) * b);
    if (u.empty()) u.assign(th.size(), 0.0);
    for (size_t i = 0; i < th.size(); ++i) {
      double delta = fr * dt * (-alpha * std::sqrt(r) * g[i] - (gamma / 2 + lambda) * th[i]);
      if (mu > 0) delta = u[i] = mu * u[i] + (1 - mu) * delta;
      th[i] += delta;
    }
    b = b + gamma * (fr + b);
  }
};

// f(θ) = Σ (θ − target)², and Rosenbrock (1 − x)² + 100 (y − x²)².
Tensor quadratic(const Tensor& th, const std::vector<double>& target) {
  Tensor d = th - from_vector(target, th.shape(), th.dtype());
  return (d * d).sum();
}
Tensor rosenbrock(const Tensor& th) {
  Tensor x = th.narrow(0, 0, 1), y = th.narrow(0, 1, 1);
  Tensor a = 1.0 - x, b = y - x * x;
  return (a * a + 100.0 * b * b).sum();
}

template <class Opt, class Loss>
std::vector<double> minimise(Tensor th, Opt& opt, Loss loss, int steps) {
  for (int i = 0; i < steps; ++i) {
    opt.zero_grad();
    loss(th).backward();
    opt.step();
  }
  return th.to_vector();
}

}  // namespace

TEST_CASE("AdamW: the specification's oracle A1 and zero-gradient decay A2") {
  Tensor th = param({1.0});
  AdamW opt({th}, {});  // lr 1e-3, wd 1e-2, betas (0.9, 0.999), eps 1e-8: torch's defaults
  double expected[] = {0.998990000020, 0.998713673087, 0.998045574360};
  double grads[] = {0.5, -0.25, 1.0};
  for (int i = 0; i < 3; ++i) {
    set_grad(th, {grads[i]});
    opt.step();
    CHECK(th.item() == doctest::Approx(expected[i]).epsilon(1e-11));
  }
  CHECK(opt.states()[0][0].slot("exp_avg").item() == doctest::Approx(0.118).epsilon(1e-12));
  CHECK(opt.states()[0][0].slot("exp_avg_sq").item() == doctest::Approx(0.00131193775).epsilon(1e-9));

  Tensor z = param({2.0});
  AdamW zopt({z}, {.lr = 0.1, .weight_decay = 0.5});
  for (int t = 1; t <= 5; ++t) {
    set_grad(z, {0.0});
    zopt.step();
    CHECK(z.item() == doctest::Approx(2.0 * std::pow(1 - 0.1 * 0.5, t)).epsilon(1e-15));
  }
}

TEST_CASE("Adam and AdamW follow the f64 transcription for many steps (decay, bias correction, amsgrad)") {
  Generator gen(7);
  std::vector<double> g = randn({40}, gen, DType::f64).to_vector();
  for (bool decoupled : {false, true})
    for (bool amsgrad : {false, true}) {
      CAPTURE(decoupled);
      CAPTURE(amsgrad);
      Tensor th = param({0.7, -1.3});
      AdamOptions o{.lr = 0.05, .beta1 = 0.8, .beta2 = 0.95, .eps = 1e-6, .weight_decay = 0.3, .amsgrad = amsgrad};
      std::unique_ptr<Optimizer> opt;
      if (decoupled) {
        AdamWOptions w{.lr = o.lr, .beta1 = o.beta1, .beta2 = o.beta2, .eps = o.eps, .weight_decay = o.weight_decay,
                       .amsgrad = o.amsgrad};
        opt = std::make_unique<AdamW>(std::vector<Tensor>{th}, w);
      } else {
        opt = std::make_unique<Adam>(std::vector<Tensor>{th}, o);
      }
      RefAdam r0{0.05, 0.8, 0.95, 1e-6, 0.3, decoupled, amsgrad}, r1 = r0;
      double a = 0.7, b = -1.3;
      for (int t = 0; t < 20; ++t) {
        set_grad(th, {g[2 * t], g[2 * t + 1]});
        opt->step();
        a = r0.step(a, g[2 * t]);
        b = r1.step(b, g[2 * t + 1]);
        REQUIRE(th.at({0}) == doctest::Approx(a).epsilon(1e-13));
        REQUIRE(th.at({1}) == doctest::Approx(b).epsilon(1e-13));
      }
    }
}

TEST_CASE("AdamW in f32 stays within float rounding of the f64 trajectory") {
  Generator gen(3);
  Tensor g64 = randn({10, 64}, gen, DType::f64);
  Tensor th32 = randn({64}, gen, DType::f32);
  th32.requires_grad_(true);
  Tensor th64 = th32.detach().to(DType::f64);
  th64.requires_grad_(true);
  AdamW o32({th32}, {}), o64({th64}, {});
  for (int t = 0; t < 10; ++t) {
    th32.set_grad(g64.select(0, t).to(DType::f32));
    th64.set_grad(g64.select(0, t).clone());
    o32.step();
    o64.step();
  }
  auto a = th32.to_vector(), b = th64.to_vector();
  for (size_t i = 0; i < a.size(); ++i) CHECK(std::abs(a[i] - b[i]) < 1e-6 * (1 + std::abs(b[i])));
}

TEST_CASE("SGD: momentum, dampening, Nesterov and L2 as torch.optim.SGD") {
  for (bool nesterov : {false, true}) {
    Tensor th = param({1.5});
    SGD opt({th}, {.lr = 0.1, .momentum = 0.9, .dampening = 0.0, .nesterov = nesterov, .weight_decay = 0.01});
    double x = 1.5, buf = 0;
    double gs[] = {0.3, -0.7, 0.2, 1.1};
    for (int t = 0; t < 4; ++t) {
      set_grad(th, {gs[t]});
      opt.step();
      double d = gs[t] + 0.01 * x;
      buf = t == 0 ? d : 0.9 * buf + d;
      d = nesterov ? d + 0.9 * buf : buf;
      x -= 0.1 * d;
      CHECK(th.item() == doctest::Approx(x).epsilon(1e-15));
    }
  }
  Tensor th = param({1.0});
  CHECK_THROWS_WITH_AS(SGD({th}, {.momentum = 0.0, .nesterov = true}),
                       doctest::Contains("Nesterov momentum requires momentum > 0"), Error);
}

TEST_CASE("Amos: the scalar run M1 and the first step in closed form M2") {
  Tensor th = param({1.0});
  Amos opt({{.params = {{"w", th}}, .eta = 1.0}}, {.lr = 0.1, .factored = false});
  struct Row {
    double theta, v, b;
  } rows[] = {{0.895, 2.5e-4, 0.01},
              {0.790609295949, 4.9975e-4, 0.020096009990},
              {0.836807427203, 5.3925025e-4, 0.022361973222}};
  double grads[] = {0.5, 0.5, -0.2};
  for (int i = 0; i < 3; ++i) {
    set_grad(th, {grads[i]});
    opt.step();
    CHECK(th.item() == doctest::Approx(rows[i].theta).epsilon(1e-11));
    CHECK(opt.states()[0][0].slot("v").item() == doctest::Approx(rows[i].v).epsilon(1e-11));
    CHECK(opt.states()[0][0].slot("b").item() == doctest::Approx(rows[i].b).epsilon(1e-10));
  }

  // M2: θ₁ = θ₀ − ξη̃·sign(g) − ½ξ²θ₀ (λ = 0), b₁ = ξ², for a whole tensor with a scalar slot:
  // ḡ² is the tensor's mean g², so the step is ξη̃·g/√ḡ², which is ±ξη̃ when all |g| are equal.
  double xi = 0.03, eta = 0.2;
  Tensor w = param({0.5, -2.0, 3.0, 0.1});
  Amos o2({{.params = {{"w", w}}, .eta = eta}}, {.lr = xi});
  set_grad(w, {0.7, -0.7, 0.7, -0.7});
  o2.step();
  double w0[] = {0.5, -2.0, 3.0, 0.1}, sg[] = {1, -1, 1, -1};
  for (int i = 0; i < 4; ++i) CHECK(w.at({i}) == doctest::Approx(w0[i] - xi * eta * sg[i] - 0.5 * xi * xi * w0[i]).epsilon(1e-14));
  CHECK(o2.states()[0][0].slot("b").item() == doctest::Approx(xi * xi).epsilon(1e-14));
}

TEST_CASE("Amos: ten steps against the f64 transcription of the reference pseudo-code") {
  Generator gen(11);
  struct Case {
    double mu, clip, fr, lambda, init_b;
  } cases[] = {{0, 0, 1, 0, 0}, {0.9, 0.5, 1, 0, 0}, {0, 0, 0.3, 0.01, 2.0}, {0.5, 1.0, 0.7, 0.05, 0.5}};
  for (auto& c : cases) {
    CAPTURE(c.mu);
    CAPTURE(c.fr);
    std::vector<double> th0 = randn({6}, gen, DType::f64).to_vector();
    Tensor th = param(th0);
    Amos opt({{.params = {{"w", th}}, .weight_decay = c.lambda, .eta = 0.3}},
             {.lr = 0.05, .beta = 0.9, .momentum = c.mu, .clip_value = c.clip, .finetune_rate = c.fr, .init_b = c.init_b});
    RefAmos ref{.xi = 0.05, .eta = 0.3, .beta = 0.9, .lambda = c.lambda, .mu = c.mu, .clip = c.clip, .fr = c.fr};
    ref.b = c.init_b;
    std::vector<double> x = th0;
    for (int t = 0; t < 10; ++t) {
      std::vector<double> g = randn({6}, gen, DType::f64).to_vector();
      set_grad(th, g);
      opt.step();
      ref.step(x, g);
      for (int i = 0; i < 6; ++i) REQUIRE(th.at({i}) == doctest::Approx(x[i]).epsilon(1e-13));
      REQUIRE(opt.states()[0][0].slot("b").item() == doctest::Approx(ref.b).epsilon(1e-13));
    }
  }
}

TEST_CASE("Amos invariants M3: zero gradient, γ ≥ 0, b non-decreasing") {
  Tensor th = param({0.4, -0.9});
  Amos opt({{.params = {{"w", th}}, .eta = 1.0}}, {.lr = 0.1});
  set_grad(th, {0.0, 0.0});
  opt.step();  // v = 0: r = (1−β)/ε is huge, but √r·0 and r·ḡ² must stay 0, not NaN
  CHECK(th.at({0}) == 0.4);
  CHECK(th.at({1}) == -0.9);
  CHECK(opt.states()[0][0].slot("b").item() == 0.0);
  Generator gen(5);
  double prev_b = 0;
  for (int t = 0; t < 50; ++t) {
    set_grad(th, randn({2}, gen, DType::f64).to_vector());
    opt.step();
    double b = opt.states()[0][0].slot("b").item();
    CHECK(b >= prev_b);
    prev_b = b;
    CHECK(std::isfinite(th.at({0})));
  }
}

TEST_CASE("Amos: factored slots equal full slots when the gradient is constant along reduced axes; shapes") {
  // A Linear-like [out=3, in=4] weight: factored slots are [3, 1]. With g[o, i] = c_o·s_i, |s_i| = 1,
  // each row's mean g² equals every entry's g², so per-row and per-entry slots give the same update.
  std::vector<double> w0 = {0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.7, -0.8, 0.9, 1.0, -1.1, 1.2};
  Tensor a = param(w0, {3, 4}), b = param(w0, {3, 4});
  Amos fa({{.params = {{"w", a}}, .eta = 0.5}}, {.lr = 0.05}),
      fb({{.params = {{"w", b}}, .eta = 0.5}}, {.lr = 0.05, .factored = false});
  double c[] = {0.3, -1.0, 2.0}, s[] = {1, -1, -1, 1};
  for (int t = 0; t < 5; ++t) {
    std::vector<double> g;
    for (int o = 0; o < 3; ++o)
      for (int i = 0; i < 4; ++i) g.push_back(c[o] * s[i] * (1 + 0.5 * t));
    set_grad(a, g);
    set_grad(b, g);
    fa.step();
    fb.step();
  }
  CHECK(fa.states()[0][0].slot("v").shape() == Shape{3, 1});
  CHECK(fb.states()[0][0].slot("v").shape() == Shape{3, 4});
  auto va = a.to_vector(), vb = b.to_vector();
  for (size_t i = 0; i < va.size(); ++i) CHECK(va[i] == doctest::Approx(vb[i]).epsilon(1e-14));

  // Default slot shapes: conv [O, C, kh, kw] → [O, 1, 1, 1]; vectors → scalar. Overrides are validated.
  Amos o({{"conv", param(std::vector<double>(24, 0.1), {2, 3, 2, 2})}, {"bias", param({0.0, 0.0})}}, {});
  CHECK(o.slot_shape_for("conv", {2, 3, 2, 2}) == Shape{2, 1, 1, 1});
  CHECK(o.slot_shape_for("bias", {2}) == Shape{});
  CHECK_THROWS_WITH_AS(Amos({{"w", param(w0, {3, 4})}}, {.slot_shape = [](const std::string&, const Shape&) {
                         return Shape{1, 4};
                       }}),
                       doctest::Contains("Amos: slot shape [1, 4] for parameter 'w' [3, 4] must keep a prefix"), Error);
}

TEST_CASE("Amos: η̃ from the initialisation (RMS for matrices, 0.5 otherwise), overridable per group") {
  Generator gen(1);
  Tensor w = randn({64, 64}, gen, DType::f64) * 0.02;
  w.requires_grad_(true);
  Tensor bias = param(std::vector<double>(64, 0.0), {64});
  Amos opt({{.name = "m", .params = {{"w", w}}}, {.name = "v", .params = {{"b", bias}}}}, {});
  CHECK(opt.states()[0][0].scale == doctest::Approx(0.02).epsilon(0.05));
  CHECK(opt.states()[1][0].scale == 0.5);
  Amos opt2({{.name = "m", .params = {{"w", w}}, .eta = 0.1}}, {});
  CHECK(opt2.states()[0][0].scale == 0.1);
}

TEST_CASE("Amos slot memory on the reference RoFormer LM is at most 51 % of AdamW's") {
  Generator gen(0);
  nn::RoFormerLM lm({}, gen);  // the reference config: 256 vocab, d 256, 4 layers, 4 heads, d_ff 1024
  auto params = lm.named_parameters();
  for (auto& [n, p] : params) p.set_grad(zeros_like(p));
  AdamW adamw(params, {});
  Amos amos(params, {});
  adamw.step();
  amos.step();
  double ratio = double(amos.state_bytes()) / double(adamw.state_bytes());
  MESSAGE("RoFormer LM: ", lm.num_parameters(), " parameters; AdamW state ", adamw.state_bytes(), " B, Amos state ",
          amos.state_bytes(), " B (", 100 * ratio, " %)");
  CHECK(adamw.state_bytes() == 2 * 4 * lm.num_parameters());
  CHECK(ratio <= 0.51);
  Amos amos_full(params, {.factored = false});
  amos_full.step();
  CHECK(amos_full.state_bytes() == adamw.state_bytes());  // v and b at full shape: same as m and v
}

TEST_CASE("Amos, SGD and Adam(W) in tensor ops (the form a GPU runs) follow the fused CPU pass") {
  // Two copies of the same parameters (a matrix with factored slots, a 4-D tensor with a custom slot shape, a
  // vector and a scalar), the same gradients for 6 steps; the tensor-op form vs the fused pass, f64 and f32.
  for (DType dt : {DType::f64, DType::f32}) {
    CAPTURE(std::string(dtype_name(dt)));
    double tol = dt == DType::f64 ? 1e-12 : 2e-6;
    auto make = [&] {
      Generator g(31);
      NamedParams ps;
      for (auto [name, shape] : std::vector<std::pair<std::string, Shape>>{{"w", {6, 5}}, {"conv", {4, 3, 2, 2}},
                                                                          {"bias", {5}}, {"gain", {}}})
        ps.emplace_back(name, randn(shape, g, dt).requires_grad_());
      return ps;
    };
    auto run = [&](auto make_opt) {
      NamedParams ps = make();
      auto opt = make_opt(ps);
      Generator gg(32);
      for (int step = 0; step < 6; ++step) {
        for (auto& [n, p] : ps) p.set_grad(mul(randn(p.shape(), gg, dt), step == 3 ? 0.0 : 1.0 + step));
        opt->step();
      }
      NamedTensors out;
      for (auto& [n, p] : ps) out.emplace_back(n, p.detach());
      for (auto& kv : opt->state_dict()) out.push_back(kv);
      return out;
    };
    auto check_same = [&](const NamedTensors& a, const NamedTensors& b) {
      REQUIRE(a.size() == b.size());
      for (size_t i = 0; i < a.size(); ++i) {
        CAPTURE(a[i].first);
        REQUIRE(a[i].first == b[i].first);
        double scale = std::max(1e-3, max(abs(a[i].second.to(DType::f64))).item());
        CHECK(max(abs(sub(a[i].second.to(DType::f64), b[i].second.to(DType::f64)))).item() <= tol * scale);
      }
    };
    for (double momentum : {0.0, 0.9})
      for (double clip : {0.0, 1.5}) {
        CAPTURE(momentum);
        CAPTURE(clip);
        auto amos = [&](bool fused) {
          return [=](const NamedParams& ps) {
            AmosOptions o{.lr = 0.05, .momentum = momentum, .clip_value = clip, .fused = fused};
            o.slot_shape = [](const std::string& n, const Shape& s) { return n == "conv" ? Shape{4, 3, 1, 1} : Shape{}; };
            return std::make_unique<Amos>(std::vector<ParamGroup>{{.name = "a", .params = {ps[0], ps[1]}},
                                                                  {.name = "b", .params = {ps[2], ps[3]}, .weight_decay = 0.01}},
                                          o);
          };
        };
        check_same(run(amos(true)), run(amos(false)));
      }
    for (bool nesterov : {false, true})
      for (bool strategy : {false, true}) {
        auto sgd = [&](bool fused) {
          return [=](const NamedParams& ps) {
            SGDOptions o{.lr = 0.01, .momentum = 0.8, .nesterov = nesterov, .weight_decay = 1e-3, .fused = fused};
            o.strategy = {.per_tensor_lr = strategy, .tie_weight_decay = strategy};
            return std::make_unique<SGD>(ps, o);
          };
        };
        check_same(run(sgd(true)), run(sgd(false)));
      }
    for (bool amsgrad : {false, true})
      for (bool strategy : {false, true})
        for (bool decoupled : {false, true}) {
          CAPTURE(amsgrad);
          CAPTURE(strategy);
          CAPTURE(decoupled);
          auto adam = [&](bool fused) {
            return [=](const NamedParams& ps) -> std::unique_ptr<Optimizer> {
              AdamOptions o{.lr = 0.01, .weight_decay = 0.05, .amsgrad = amsgrad, .fused = fused};
              o.strategy = {.per_tensor_lr = strategy, .tie_weight_decay = strategy};
              if (decoupled) return std::make_unique<AdamW>(ps, AdamWOptions{.lr = o.lr, .weight_decay = o.weight_decay,
                                                                              .amsgrad = amsgrad, .strategy = o.strategy,
                                                                              .fused = fused});
              return std::make_unique<Adam>(ps, o);
            };
          };
          check_same(run(adam(true)), run(adam(false)));
        }
  }
}

TEST_CASE("Schedules: closed-form values, half-lives, composition; the scheduler drives the lr") {
  for (double T : {10.0, 1000.0}) {
    auto isq = inverse_square(T), itm = inverse_time(T);
    CHECK(isq(0) == 1.0);
    CHECK(itm(0) == 1.0);
    CHECK(isq(int64_t(T)) == doctest::Approx(0.5).epsilon(1e-12));
    CHECK(itm(int64_t(T)) == doctest::Approx(0.5).epsilon(1e-12));
    CHECK(isq(5) < isq(4));
    CHECK(itm(5) < itm(4));
    // Closed forms: (α₀p t + 1)^-2 with α₀p = (√2−1)/T; (2α₀p₀ t + 1)^-1 with 2α₀p₀ = 1/T.
    double a = (std::numbers::sqrt2 - 1) / T;
    CHECK(isq(7) == doctest::Approx(1 / ((a * 7 + 1) * (a * 7 + 1))).epsilon(1e-15));
    CHECK(itm(7) == doctest::Approx(1 / (7 / T + 1)).epsilon(1e-15));
  }
  auto cos = cosine(100, 0.1);
  CHECK(cos(0) == 1.0);
  CHECK(cos(50) == doctest::Approx(0.55));
  CHECK(cos(100) == doctest::Approx(0.1));
  CHECK(cos(500) == doctest::Approx(0.1));
  auto lin = linear_decay(10);
  CHECK(lin(5) == doctest::Approx(0.5));
  auto st = step_decay(3, 0.5);
  CHECK(st(2) == 1.0);
  CHECK(st(3) == 0.5);
  CHECK(st(7) == 0.25);
  auto wu = warmup(4, cosine(10));
  CHECK(wu(0) == 0.25);
  CHECK(wu(3) == 1.0);
  CHECK(wu(4) == 1.0);
  CHECK(wu(9) == doctest::Approx(0.5));

  Tensor th = param({1.0});
  SGD opt({th}, {.lr = 0.2});
  Scheduler sched(opt, warmup(2));
  CHECK(opt.param_groups()[0].lr == doctest::Approx(0.1));
  sched.step();
  CHECK(opt.param_groups()[0].lr == doctest::Approx(0.2));
  CHECK_THROWS_WITH_AS(inverse_time(0), "inverse_time: half_life must be a finite number > 0, got 0", Error);
}

TEST_CASE("Strategies: per-tensor lr moves each tensor by lr·√k·σ; tied decay ρ_t = α₀²/(2q)·s(t)") {
  Generator gen(2);
  Tensor w = randn({8, 16}, gen, DType::f64) * 0.1;
  w.requires_grad_(true);
  Tensor bvec = param(std::vector<double>(16, 0.0), {16});
  Tensor w0 = w.detach().clone(), b0 = bvec.detach().clone();
  double sigma = init_scale(w);
  AdamWOptions o;
  o.lr = 1e-2;
  o.weight_decay = 0;
  o.strategy.per_tensor_lr = true;
  AdamW opt({{"w", w}, {"b", bvec}}, o);
  w.set_grad(randn({8, 16}, gen, DType::f64));
  bvec.set_grad(randn({16}, gen, DType::f64));
  opt.step();
  auto norm = [](const Tensor& t) { return std::sqrt((t * t).sum().item()); };
  CHECK(norm(w.detach() - w0) == doctest::Approx(1e-2 * std::sqrt(128.0) * sigma).epsilon(1e-12));
  CHECK(norm(bvec.detach() - b0) == doctest::Approx(1e-2 * std::sqrt(16.0) * 0.5).epsilon(1e-12));

  // Tied decay with zero gradients: θ_t = θ₀·Π(1 − ρ_i), ρ_i = α₀²/(2q)·s(i), under an inverse-time schedule.
  Tensor z = param({3.0});
  SGDOptions so;
  so.lr = 0.1;
  so.weight_decay = 1.0;  // opts the group into decay; the tie replaces the value
  so.strategy.tie_weight_decay = true;
  so.strategy.q = 0.5;
  Tensor kept = param({3.0});
  SGD sopt({{.name = "decay", .params = {{"z", z}}}, {.name = "no_decay", .params = {{"k", kept}}, .weight_decay = 0.0}}, so);
  Scheduler sched(sopt, inverse_time(2));
  double x = 3.0;
  for (int t = 0; t < 6; ++t) {
    set_grad(z, {0.0});
    sopt.step();
    x *= 1 - 0.1 * 0.1 / (2 * 0.5) * inverse_time(2)(t);
    sched.step();
    CHECK(z.item() == doctest::Approx(x).epsilon(1e-14));
    set_grad(kept, {0.0});
  }
  sopt.step();
  CHECK(kept.item() == 3.0);  // a group with weight_decay 0 stays undecayed
}

TEST_CASE("state_dict: a resumed optimizer continues bit-identically (through a safetensors file)") {
  auto path = (std::filesystem::temp_directory_path() / "liandan_test_optim_state.safetensors").string();
  auto run = [&](int kind, bool resume) {
    Generator gen(42);
    Tensor w = randn({5, 3}, gen, DType::f32);
    w.requires_grad_(true);
    Tensor b = randn({3}, gen, DType::f32);
    b.requires_grad_(true);
    NamedParams ps = {{"w", w}, {"b", b}};
    auto make = [&]() -> std::unique_ptr<Optimizer> {
      if (kind == 0) return std::make_unique<AdamW>(ps, AdamWOptions{});
      if (kind == 1) return std::make_unique<SGD>(ps, SGDOptions{.lr = 0.1, .momentum = 0.9});
      return std::make_unique<Amos>(ps, AmosOptions{.lr = 0.05, .momentum = 0.9});
    };
    auto opt = make();
    Scheduler sched(*opt, cosine(10));
    for (int t = 0; t < 8; ++t) {
      if (resume && t == 4) {
        NamedTensors saved_w = {{"w", w.detach().clone()}, {"b", b.detach().clone()}};
        save_safetensors(path, opt->state_dict());
        opt = make();  // a fresh optimizer: only the file carries the state
        opt->load_state_dict(load_safetensors(path).tensors, path);
        sched = Scheduler(*opt, cosine(10));
        sched.set_steps_taken(4);
      }
      Generator g2(100 + uint64_t(t));
      w.set_grad(randn({5, 3}, g2, DType::f32));
      b.set_grad(randn({3}, g2, DType::f32));
      opt->step();
      sched.step();
    }
    auto out = w.to_vector();
    for (double x : b.to_vector()) out.push_back(x);
    return out;
  };
  for (int kind = 0; kind < 3; ++kind) {
    CAPTURE(kind);
    CHECK(run(kind, false) == run(kind, true));
  }
  std::filesystem::remove(path);

  Tensor w = param({1.0, 2.0});
  AdamW opt({{"w", w}}, {});
  set_grad(w, {0.1, 0.2});
  opt.step();
  NamedTensors sd = opt.state_dict();
  NamedTensors missing(sd.begin(), sd.end() - 1);
  AdamW fresh({{"w", w}}, {});
  CHECK_THROWS_WITH_AS(fresh.load_state_dict(missing, "ckpt.safetensors"),
                       "AdamW: ckpt.safetensors: missing optimizer state 'state.default.w.exp_avg_sq'", Error);
  NamedTensors extra = sd;
  extra.emplace_back("state.default.v.exp_avg", zeros({2}, DType::f64));
  CHECK_THROWS_WITH_AS(fresh.load_state_dict(extra, "ckpt.safetensors"),
                       doctest::Contains("unexpected optimizer state 'state.default.v.exp_avg'"), Error);
  NamedTensors wrong = sd;
  wrong.back().second = zeros({3}, DType::f64);
  CHECK_THROWS_WITH_AS(fresh.load_state_dict(wrong, "ckpt.safetensors"),
                       "AdamW: ckpt.safetensors: 'state.default.w.exp_avg_sq' has shape [3], expected [2]", Error);
}

TEST_CASE("Every optimizer converges on a convex quadratic and on Rosenbrock from a fixed start") {
  std::vector<double> target = {1, -1, 1};
  auto quad = [&](const Tensor& t) { return quadratic(t, target); };
  {  // Amos on the parabola as amos_test.py: lr 1, η 1, scalar slot, from [−1, 10, 1]
    Tensor th = param({-1, 10, 1});
    Amos opt({{.params = {{"t", th}}, .eta = 1.0}}, {.lr = 1.0});
    auto x = minimise(th, opt, quad, 10000);
    for (int i = 0; i < 3; ++i) CHECK(x[i] == doctest::Approx(target[i]).epsilon(1e-7));
  }
  {  // Amos on Rosenbrock as amos_test.py: lr 0.5, η 1, β 0.5, clip 1, momentum 0.9, from (0, 0)
    Tensor th = param({0, 0});
    Amos opt({{.params = {{"t", th}}, .eta = 1.0}}, {.lr = 0.5, .beta = 0.5, .momentum = 0.9, .clip_value = 1.0});
    auto x = minimise(th, opt, rosenbrock, 10000);
    CHECK(x[0] == doctest::Approx(1.0).epsilon(1e-6));
    CHECK(x[1] == doctest::Approx(1.0).epsilon(1e-6));
  }
  {
    Tensor th = param({-1, 10, 1});
    SGD opt({th}, {.lr = 0.1, .momentum = 0.5});
    auto x = minimise(th, opt, quad, 300);
    for (int i = 0; i < 3; ++i) CHECK(x[i] == doctest::Approx(target[i]).epsilon(1e-9));
    Tensor r = param({0, 0});
    SGD ropt({r}, {.lr = 1e-3, .momentum = 0.9, .nesterov = true});
    auto y = minimise(r, ropt, rosenbrock, 20000);
    CHECK(y[0] == doctest::Approx(1.0).epsilon(1e-4));
    CHECK(y[1] == doctest::Approx(1.0).epsilon(1e-4));
  }
  for (bool decoupled : {false, true}) {
    CAPTURE(decoupled);
    Tensor th = param({-1, 10, 1});
    Tensor r = param({0, 0});
    std::unique_ptr<Optimizer> q, ro;
    if (decoupled) {
      AdamWOptions o;
      o.lr = 0.1;
      o.weight_decay = 0;
      q = std::make_unique<AdamW>(std::vector<Tensor>{th}, o);
      o.lr = 0.02;
      ro = std::make_unique<AdamW>(std::vector<Tensor>{r}, o);
    } else {
      q = std::make_unique<Adam>(std::vector<Tensor>{th}, AdamOptions{.lr = 0.1});
      ro = std::make_unique<Adam>(std::vector<Tensor>{r}, AdamOptions{.lr = 0.02});
    }
    // Adam oscillates around the minimum at the scale lr·|g|/√v; a decaying lr settles it.
    Scheduler s1(*q, cosine(3000)), s2(*ro, cosine(8000));
    for (int t = 0; t < 8000; ++t) {
      if (t < 3000) {
        q->zero_grad();
        quad(th).backward();
        q->step();
        s1.step();
      }
      ro->zero_grad();
      rosenbrock(r).backward();
      ro->step();
      s2.step();
    }
    for (int i = 0; i < 3; ++i) CHECK(th.at({i}) == doctest::Approx(target[i]).epsilon(1e-5));
    CHECK(r.at({0}) == doctest::Approx(1.0).epsilon(1e-3));
    CHECK(r.at({1}) == doctest::Approx(1.0).epsilon(1e-3));
  }
}

TEST_CASE("Gradient clipping, the non-finite check and accumulation over micro-batches") {
  Tensor a = param({3.0, 0.0}), b = param({4.0});
  set_grad(a, {3.0, 0.0});
  set_grad(b, {4.0});
  NamedParams ps = {{"a", a}, {"b", b}};
  CHECK(clip_grad_norm_(ps, 1.0) == doctest::Approx(5.0));
  CHECK(a.grad().at({0}) == doctest::Approx(3.0 / (5.0 + 1e-6)));
  CHECK(grad_norm(ps) == doctest::Approx(1.0).epsilon(1e-6));
  CHECK(clip_grad_norm_(ps, 10.0) == doctest::Approx(1.0).epsilon(1e-6));  // below the limit: unchanged
  set_grad(a, {-7.0, 0.5});
  clip_grad_value_(ps, 1.0);
  CHECK(a.grad().to_vector() == std::vector<double>{-1.0, 0.5});
  CHECK_FALSE(first_nonfinite_grad(ps).has_value());
  set_grad(b, {std::nan("")});
  CHECK(first_nonfinite_grad(ps) == std::optional<std::string>("b"));

  // 4 micro-batches of 2 with the loss scaled by 1/4 give the gradient of the mean over all 8 rows.
  Generator gen(9);
  Tensor x = randn({8, 3}, gen, DType::f64), y = randn({8}, gen, DType::f64);
  Tensor w1 = param({0.1, 0.2, 0.3}), w2 = param({0.1, 0.2, 0.3});
  auto loss = [](const Tensor& w, const Tensor& xx, const Tensor& yy) {
    Tensor r = matmul(xx, w) - yy;
    return (r * r).mean();
  };
  loss(w1, x, y).backward();
  GradAccumulation acc(4);
  int steps = 0;
  for (int m = 0; m < 4; ++m) {
    (loss(w2, x.narrow(0, 2 * m, 2), y.narrow(0, 2 * m, 2)) * acc.loss_scale()).backward();
    steps += acc.micro_step();
  }
  CHECK(steps == 1);
  for (int i = 0; i < 3; ++i) CHECK(w2.grad().at({i}) == doctest::Approx(w1.grad().at({i})).epsilon(1e-13));
}

TEST_CASE("EMA: closed form, swap, state dict") {
  Tensor w = param({1.0, 2.0});
  EMA ema({{"w", w}}, 0.9);
  NoGradGuard ng;
  for (int t = 0; t < 3; ++t) {
    Tensor(w).fill_(10.0);
    ema.update();
  }
  // shadow = 0.9³·w₀ + (1 − 0.9³)·10
  CHECK(ema.shadow()[0].second.at({0}) == doctest::Approx(0.729 * 1 + 0.271 * 10).epsilon(1e-14));
  CHECK(ema.shadow()[0].second.at({1}) == doctest::Approx(0.729 * 2 + 0.271 * 10).epsilon(1e-14));
  ema.swap();
  CHECK(w.at({0}) == doctest::Approx(3.439));
  ema.swap();
  CHECK(w.at({0}) == 10.0);
  Tensor other = param({0.0, 0.0});
  ema.copy_to({{"w", other}});
  CHECK(other.at({1}) == doctest::Approx(4.168));
  EMA e2({{"w", w}}, 0.9);
  e2.load_state_dict(ema.state_dict());
  CHECK(e2.updates() == 3);
  CHECK(e2.shadow()[0].second.at({1}) == doctest::Approx(4.168));
  EMA wu({{"w", w}}, 0.9999, true);
  Tensor(w).fill_(0.0);
  wu.update();  // first decay min(0.9999, 1/10) = 0.1
  CHECK(wu.shadow()[0].second.at({0}) == doctest::Approx(1.0));
}

TEST_CASE("Optimizer errors name the problem") {
  Tensor w = param({1.0});
  CHECK_THROWS_WITH_AS(AdamW({{"w", w}, {"again", w}}, {}), doctest::Contains("parameter 'again' appears twice"), Error);
  Tensor i = from_vector(std::vector<int64_t>{1, 2}, {2});
  CHECK_THROWS_WITH_AS(SGD({{"idx", i}}, {}), doctest::Contains("parameter 'idx' has dtype i64"), Error);
  Tensor nc = param({1, 2, 3, 4}, {2, 2}).detach().t();
  nc.requires_grad_(true);
  CHECK_THROWS_WITH_AS(Amos({{"wt", nc}}, {}), "Amos: parameter 'wt' is not contiguous", Error);
  AdamW opt({{"w", w}}, {});
  w.set_grad(zeros({2}, DType::f64));
  CHECK_THROWS_WITH_AS(opt.step(), "AdamW: gradient of 'w' has shape [2], parameter has []", Error);
  CHECK_THROWS_WITH_AS(AdamW({{.params = {{"w", w}}, .lr = -1.0}}, {}),
                       "AdamW: group 'default': invalid lr -1", Error);
}

TEST_CASE("foreach_axpby_ and sums_of_squares over contiguous and strided tensors") {
  Generator g(71);
  Tensor y = randn({3, 4}, g, DType::f64), x = randn({3, 4}, g, DType::f64);
  Tensor ys = randn({4, 3}, g, DType::f64).transpose(0, 1);  // a strided view
  Tensor y0 = y.clone(), ys0 = ys.clone();
  foreach_axpby_({y, ys}, {x, x}, 0.25, -2.0);
  CHECK(max(abs(sub(y, add(mul(y0, 0.25), mul(x, -2.0))))).item() == 0);
  CHECK(max(abs(sub(ys, add(mul(ys0, 0.25), mul(x, -2.0))))).item() <= 1e-15);
  foreach_axpby_({y, ys}, {}, 0.5, 0.0);  // y ← a·y
  CHECK(max(abs(sub(y, mul(add(mul(y0, 0.25), mul(x, -2.0)), 0.5)))).item() == 0);
  std::vector<double> ss = sums_of_squares({y, x, zeros({0})});
  CHECK(ss[0] == doctest::Approx(sum(square(y)).item()).epsilon(1e-14));
  CHECK(ss[1] == doctest::Approx(sum(square(x)).item()).epsilon(1e-14));
  CHECK(ss[2] == 0);
  CHECK_THROWS_WITH_AS(foreach_axpby_({y}, {x, x}, 1, 1), doctest::Contains("2 inputs"), Error);
  CHECK_THROWS_WITH_AS(foreach_axpby_({y}, {zeros({2})}, 1, 1), doctest::Contains("input 0 must have its output's shape [3, 4]"), Error);
}

// #21: the optimizers check their options before anything is built, with the option's name in the error.
TEST_CASE("optimizer options and schedules: nonsense rates, betas, eps and decays are errors naming the option") {
  Tensor w = ones({2, 2});
  NamedParams p = {{"w", w}};
  auto adamw = [&](AdamWOptions o) { return AdamW(p, o); };
  CHECK_THROWS_WITH_AS(adamw({.lr = -1}), "AdamW: lr must be a finite number >= 0, got -1", Error);
  CHECK_THROWS_WITH_AS(adamw({.lr = std::nan("")}), "AdamW: lr must be a finite number >= 0, got nan", Error);  // was: "group ..."
  CHECK_THROWS_WITH_AS(adamw({.lr = INFINITY}), "AdamW: lr must be a finite number >= 0, got inf", Error);
  CHECK_THROWS_WITH_AS(adamw({.beta1 = 1.0}), "AdamW: beta1 must be in [0, 1), got 1", Error);
  CHECK_THROWS_WITH_AS(adamw({.beta2 = -0.1}), "AdamW: beta2 must be in [0, 1), got -0.1", Error);
  CHECK_THROWS_WITH_AS(adamw({.eps = 0}), "AdamW: eps must be a finite number > 0, got 0", Error);  // was: accepted
  CHECK_THROWS_WITH_AS(adamw({.weight_decay = std::nan("")}), "AdamW: weight_decay must be a finite number >= 0, got nan", Error);
  CHECK_THROWS_WITH_AS(adamw({.strategy = {.q = 0}}), "AdamW: strategy q must be a finite number > 0, got 0", Error);
  CHECK_THROWS_WITH_AS(Adam(p, {.weight_decay = -1}), "Adam: weight_decay must be a finite number >= 0, got -1", Error);
  CHECK_THROWS_WITH_AS(SGD(p, {.lr = -0.5}), "SGD: lr must be a finite number >= 0, got -0.5", Error);
  CHECK_THROWS_WITH_AS(SGD(p, {.momentum = 1.0}), "SGD: momentum must be in [0, 1), got 1", Error);  // was: accepted
  CHECK_THROWS_WITH_AS(SGD(p, {.dampening = 2}), "SGD: dampening must be in [0, 1], got 2", Error);
  CHECK_THROWS_WITH_AS(Amos(p, {.lr = std::nan("")}), "Amos: lr must be a finite number >= 0, got nan", Error);
  CHECK_THROWS_WITH_AS(Amos(p, {.c_coef = -1}), "Amos: c_coef must be a finite number >= 0, got -1", Error);
  CHECK_THROWS_WITH_AS(Amos(p, {.init_b = INFINITY}), "Amos: init_b must be a finite number >= 0, got inf", Error);
  CHECK_THROWS_WITH_AS(Amos(p, {.epsilon = 0}), "Amos: epsilon must be a finite number > 0, got 0", Error);
  CHECK_NOTHROW(AdamW(p, {.lr = 0, .beta1 = 0, .beta2 = 0, .weight_decay = 0}));  // the closed ends are valid
  CHECK_NOTHROW(SGD(p, {.lr = 0, .momentum = 0.99, .dampening = 1}));

  CHECK_THROWS_WITH_AS(inverse_square(std::nan("")), "inverse_square: half_life must be a finite number > 0, got nan", Error);
  CHECK_THROWS_WITH_AS(inverse_time(INFINITY), "inverse_time: half_life must be a finite number > 0, got inf", Error);
  CHECK_THROWS_WITH_AS(step_decay(0, 0.5), "step_decay: step_size must be > 0, got 0", Error);
  CHECK_THROWS_WITH_AS(step_decay(10, 2.0), "step_decay: gamma must be in [0, 1] (a decay), got 2", Error);
  CHECK_THROWS_WITH_AS(cosine(10, std::nan("")), "cosine: min_factor must be in [0, 1], got nan", Error);
  CHECK_THROWS_WITH_AS(linear_decay(10, -1), "linear_decay: end_factor (min_factor) must be in [0, 1], got -1", Error);
  CHECK_THROWS_WITH_AS(warmup(-1, constant_schedule()), "warmup: warmup steps must be >= 0, got -1", Error);
  CHECK(step_decay(10, 0.5)(25) == 0.25);
}
