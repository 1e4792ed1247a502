// nn layers against their core-op formulas (written out here in double loops), gradcheck in f64 through
// tiny models, Dropout in train/eval mode, and initializer statistics with tolerances derived from the
// sample size.
#include <doctest/doctest.h>

#include <cmath>

#include "core/gradcheck.h"
#include "core/ops.h"
#include "nn/attention.h"
#include "nn/init.h"
#include "nn/layers.h"
#include "op_test_helpers.h"

using namespace liandan;
using liandan::testing::max_abs_diff;
namespace init = nn::init;

namespace {

struct Stats {
  double mean = 0, var = 0, min = INFINITY, max = -INFINITY;
  int64_t n = 0;
};
Stats stats(const Tensor& t) {
  Stats s;
  auto v = t.to_vector();
  s.n = int64_t(v.size());
  for (double x : v) {
    s.mean += x;
    s.min = std::min(s.min, x);
    s.max = std::max(s.max, x);
  }
  s.mean /= double(s.n);
  for (double x : v) s.var += (x - s.mean) * (x - s.mean);
  s.var /= double(s.n);
  return s;
}
// Sample mean and variance of n i.i.d. draws lie within 5 standard errors of the truth:
// se(mean) = sigma / sqrt(n), se(var) = sqrt((mu4 - sigma^4) / n), mu4 = kurtosis * sigma^4.
void check_moments(const Tensor& t, double mean, double std, double kurtosis) {
  Stats s = stats(t);
  double n = double(s.n);
  CAPTURE(s.mean);
  CAPTURE(s.var);
  CHECK(std::fabs(s.mean - mean) < 5 * std / std::sqrt(n));
  CHECK(std::fabs(s.var - std * std) < 5 * std * std * std::sqrt((kurtosis - 1) / n));
}

// gradcheck over every parameter of `m` (converted to f64) and the input x.
GradcheckResult check_module(nn::Module& m, const Tensor& x, const std::function<void()>& before = {}) {
  m.to(DType::f64);
  std::vector<Tensor> inputs = m.parameters();
  inputs.push_back(x);
  return gradcheck(
      [&](const std::vector<Tensor>& in) {
        if (before) before();
        return m.forward(in.back());
      },
      inputs);
}

double phi(double z) { return std::exp(-0.5 * z * z) / std::sqrt(2 * M_PI); }
double Phi(double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); }

}  // namespace

// ---------------------------------------------------------------- layers vs formulas

TEST_CASE("Linear computes x W^T + b with W [out, in]") {
  Generator g(1);
  nn::Linear lin(3, 4, true, g);
  CHECK(lin.weight.shape() == Shape{4, 3});
  CHECK(lin.bias.shape() == Shape{4});
  for (Shape xs : {Shape{5, 3}, Shape{2, 4, 3}, Shape{3}}) {
    Tensor x = randn(xs, g);
    Tensor y = lin.forward(x);
    Shape ys = xs;
    ys.back() = 4;
    REQUIRE(y.shape() == ys);
    auto vx = x.to_vector(), vy = y.to_vector();
    int64_t rows = x.numel() / 3;
    double worst = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t o = 0; o < 4; ++o) {
        double acc = lin.bias.at({o});
        for (int64_t i = 0; i < 3; ++i) acc += vx[size_t(r * 3 + i)] * lin.weight.at({o, i});
        worst = std::max(worst, std::fabs(acc - vy[size_t(r * 4 + o)]));
      }
    CHECK(worst < 1e-5);
  }
  nn::Linear nob(3, 2, false, g);
  CHECK(!nob.bias.defined());
  Tensor x = randn({2, 3}, g);
  CHECK(max_abs_diff(nob.forward(x), matmul(x, nob.weight.t().contiguous())) < 1e-6);
  CHECK_THROWS_WITH_AS(lin.forward(randn({2, 5}, g)), doctest::Contains("Linear(3, 4): expected input [..., 3], got [2, 5]"),
                       Error);
}

TEST_CASE("Linear and Conv2d default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), reproducible by seed") {
  Generator g1(5), g2(5), g3(6);
  nn::Linear a(256, 300, true, g1), b(256, 300, true, g2), c(256, 300, true, g3);
  CHECK(a.weight.to_vector() == b.weight.to_vector());
  CHECK(a.bias.to_vector() == b.bias.to_vector());
  CHECK(a.weight.to_vector() != c.weight.to_vector());
  double bound = 1.0 / 16.0;
  Stats s = stats(a.weight);
  CHECK(s.min >= -bound);
  CHECK(s.max <= bound);
  CHECK(s.max > 0.99 * bound);
  check_moments(a.weight, 0.0, bound / std::sqrt(3.0), 1.8);
  Stats sb = stats(a.bias);
  CHECK(sb.min >= -bound);
  CHECK(sb.max <= bound);
  nn::Conv2d conv(8, 64, 3, {.groups = 2}, g1);  // fan_in = 4 * 9 = 36
  Stats sc = stats(conv.weight);
  CHECK(sc.max <= 1.0 / 6.0);
  CHECK(sc.max > 0.98 / 6.0);
  CHECK(stats(conv.bias).max <= 1.0 / 6.0);
}

TEST_CASE("Embedding looks up rows; init N(0, 1)") {
  Generator g(2);
  nn::Embedding emb(500, 64, g);
  Tensor idx = from_vector(std::vector<int64_t>{3, 0, 499, 3, 7, 1}, {2, 3});
  Tensor y = emb.forward(idx);
  REQUIRE(y.shape() == Shape{2, 3, 64});
  std::vector<int64_t> ids = {3, 0, 499, 3, 7, 1};
  double worst = 0;
  for (int64_t k = 0; k < 6; ++k)
    for (int64_t d = 0; d < 64; ++d) worst = std::max(worst, std::fabs(y.at({k / 3, k % 3, d}) - emb.weight.at({ids[size_t(k)], d})));
  CHECK(worst == 0.0);
  check_moments(emb.weight, 0.0, 1.0, 3.0);
  CHECK_THROWS_AS(emb.forward(from_vector(std::vector<int64_t>{500}, {1})), Error);
}

TEST_CASE("LayerNorm, RMSNorm and GroupNorm match their formulas") {
  Generator g(3);
  SUBCASE("LayerNorm over two trailing dims") {
    nn::LayerNorm ln(Shape{3, 4}, 1e-5);
    init::normal_(ln.weight, g, 1.0, 0.5);
    init::normal_(ln.bias, g, 0.0, 0.5);
    Tensor x = mul(randn({2, 3, 4}, g), 3.0);
    Tensor y = ln.forward(x);
    double worst = 0;
    for (int64_t b = 0; b < 2; ++b) {
      double m = 0, v = 0;
      for (int64_t i = 0; i < 12; ++i) m += x.at({b, i / 4, i % 4});
      m /= 12;
      for (int64_t i = 0; i < 12; ++i) v += std::pow(x.at({b, i / 4, i % 4}) - m, 2);
      v /= 12;
      for (int64_t i = 0; i < 12; ++i) {
        double ref = (x.at({b, i / 4, i % 4}) - m) / std::sqrt(v + 1e-5) * ln.weight.at({i / 4, i % 4}) +
                     ln.bias.at({i / 4, i % 4});
        worst = std::max(worst, std::fabs(ref - y.at({b, i / 4, i % 4})));
      }
    }
    CHECK(worst < 1e-5);
    nn::LayerNorm plain(4, 1e-5, false);
    CHECK(plain.parameters().empty());
    Tensor z = plain.forward(x.reshape({6, 4}));
    CHECK(max_abs_diff(z, layer_norm(x.reshape({6, 4}), {4}, Tensor(), Tensor())) == 0.0);
    CHECK(std::fabs(stats(z.select(0, 0)).var - 1.0) < 1e-3);
  }
  SUBCASE("RMSNorm") {
    nn::RMSNorm rn(5, 1e-6);
    init::normal_(rn.weight, g, 1.0, 0.5);
    Tensor x = randn({3, 5}, g);
    Tensor y = rn.forward(x);
    double worst = 0;
    for (int64_t r = 0; r < 3; ++r) {
      double ms = 0;
      for (int64_t i = 0; i < 5; ++i) ms += x.at({r, i}) * x.at({r, i});
      ms /= 5;
      for (int64_t i = 0; i < 5; ++i)
        worst = std::max(worst, std::fabs(x.at({r, i}) / std::sqrt(ms + 1e-6) * rn.weight.at({i}) - y.at({r, i})));
    }
    CHECK(worst < 1e-5);
  }
  SUBCASE("GroupNorm") {
    nn::GroupNorm gn(3, 6, 1e-5);
    init::normal_(gn.weight, g, 1.0, 0.5);
    init::normal_(gn.bias, g, 0.0, 0.5);
    Tensor x = randn({2, 6, 3, 3}, g);
    Tensor y = gn.forward(x);
    double worst = 0;
    for (int64_t n = 0; n < 2; ++n)
      for (int64_t gr = 0; gr < 3; ++gr) {
        double m = 0, v = 0;
        for (int64_t c = 2 * gr; c < 2 * gr + 2; ++c)
          for (int64_t k = 0; k < 9; ++k) m += x.at({n, c, k / 3, k % 3});
        m /= 18;
        for (int64_t c = 2 * gr; c < 2 * gr + 2; ++c)
          for (int64_t k = 0; k < 9; ++k) v += std::pow(x.at({n, c, k / 3, k % 3}) - m, 2);
        v /= 18;
        for (int64_t c = 2 * gr; c < 2 * gr + 2; ++c)
          for (int64_t k = 0; k < 9; ++k) {
            double ref = (x.at({n, c, k / 3, k % 3}) - m) / std::sqrt(v + 1e-5) * gn.weight.at({c}) + gn.bias.at({c});
            worst = std::max(worst, std::fabs(ref - y.at({n, c, k / 3, k % 3})));
          }
      }
    CHECK(worst < 1e-5);
    CHECK_THROWS_WITH_AS(gn.forward(randn({2, 4, 3}, g)), doctest::Contains("GroupNorm(3, 6)"), Error);
    CHECK_THROWS_WITH_AS(nn::GroupNorm(4, 6), doctest::Contains("not divisible"), Error);
  }
}

TEST_CASE("Conv2d with stride, padding and groups matches a direct convolution") {
  Generator g(4);
  nn::Conv2d conv(4, 6, 3, {.stride = 2, .padding = 1, .groups = 2}, g);
  CHECK(conv.weight.shape() == Shape{6, 2, 3, 3});
  Tensor x = randn({2, 4, 5, 6}, g);
  Tensor y = conv.forward(x);
  REQUIRE(y.shape() == Shape{2, 6, 3, 3});
  double worst = 0;
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t o = 0; o < 6; ++o)
      for (int64_t i = 0; i < 3; ++i)
        for (int64_t j = 0; j < 3; ++j) {
          double acc = conv.bias.at({o});
          int64_t grp = o / 3;
          for (int64_t c = 0; c < 2; ++c)
            for (int64_t ki = 0; ki < 3; ++ki)
              for (int64_t kj = 0; kj < 3; ++kj) {
                int64_t h = i * 2 - 1 + ki, w = j * 2 - 1 + kj;
                if (h < 0 || h >= 5 || w < 0 || w >= 6) continue;
                acc += x.at({n, grp * 2 + c, h, w}) * conv.weight.at({o, c, ki, kj});
              }
          worst = std::max(worst, std::fabs(acc - y.at({n, o, i, j})));
        }
  CHECK(worst < 1e-5);
  nn::Conv2d nob(4, 2, 1, {.bias = false}, g);
  CHECK(!nob.bias.defined());
  CHECK(nob.forward(x).shape() == Shape{2, 2, 5, 6});
}

TEST_CASE("feed-forward blocks: GELU MLP, SwiGLU, GeGLU, ReGLU") {
  Generator g(5);
  Tensor x = randn({3, 4}, g);
  auto lin = [](const nn::Linear& l, const std::vector<double>& v) {
    std::vector<double> out(size_t(l.out_features));
    for (int64_t o = 0; o < l.out_features; ++o) {
      double acc = l.bias.defined() ? l.bias.at({o}) : 0.0;
      for (int64_t i = 0; i < l.in_features; ++i) acc += v[size_t(i)] * l.weight.at({o, i});
      out[size_t(o)] = acc;
    }
    return out;
  };
  auto row = [&](int64_t r) {
    std::vector<double> v;
    for (int64_t i = 0; i < 4; ++i) v.push_back(x.at({r, i}));
    return v;
  };
  auto gelu_d = [](double z) { return z * Phi(z); };
  auto gelu_tanh = [](double z) { return 0.5 * z * (1 + std::tanh(std::sqrt(2 / M_PI) * (z + 0.044715 * z * z * z))); };
  auto silu_d = [](double z) { return z / (1 + std::exp(-z)); };
  auto relu_d = [](double z) { return z > 0 ? z : 0.0; };

  for (GeluApprox ap : {GeluApprox::none, GeluApprox::tanh}) {
    nn::FeedForward ff(4, 8, true, ap, g);
    Tensor y = ff.forward(x);
    REQUIRE(y.shape() == Shape{3, 4});
    double worst = 0;
    for (int64_t r = 0; r < 3; ++r) {
      auto h = lin(*ff.fc1, row(r));
      for (auto& v : h) v = ap == GeluApprox::none ? gelu_d(v) : gelu_tanh(v);
      auto o = lin(*ff.fc2, h);
      for (int64_t i = 0; i < 4; ++i) worst = std::max(worst, std::fabs(o[size_t(i)] - y.at({r, i})));
    }
    CHECK(worst < 1e-5);
  }
  struct Case {
    nn::GLUActivation act;
    std::function<double(double)> f;
    const char* name;
  };
  for (auto& c : {Case{nn::GLUActivation::swiglu, silu_d, "SwiGLU"}, Case{nn::GLUActivation::geglu, gelu_d, "GeGLU"},
                  Case{nn::GLUActivation::reglu, relu_d, "ReGLU"}}) {
    nn::GLUFeedForward ff(4, 6, c.act, true, g);
    CHECK(ff.type_name() == c.name);
    Tensor y = ff.forward(x);
    double worst = 0;
    for (int64_t r = 0; r < 3; ++r) {
      auto a = lin(*ff.gate_proj, row(r)), u = lin(*ff.up_proj, row(r));
      for (size_t j = 0; j < a.size(); ++j) a[j] = c.f(a[j]) * u[j];
      auto o = lin(*ff.down_proj, a);
      for (int64_t i = 0; i < 4; ++i) worst = std::max(worst, std::fabs(o[size_t(i)] - y.at({r, i})));
    }
    CAPTURE(c.name);
    CHECK(worst < 1e-5);
  }
  nn::SwiGLU sw(4, 6, false, g);
  CHECK(sw.activation == nn::GLUActivation::swiglu);
  CHECK(!sw.gate_proj->bias.defined());
  nn::GeGLU ge(4, 6, false, g);
  CHECK(ge.activation == nn::GLUActivation::geglu);
}

TEST_CASE("Sequential chains its modules; activation modules apply their ops") {
  Generator g(6);
  auto l1 = std::make_shared<nn::Linear>(3, 5, true, g);
  auto l2 = std::make_shared<nn::Linear>(5, 2, true, g);
  nn::Sequential seq({l1, std::make_shared<nn::GELU>(GeluApprox::tanh), l2, std::make_shared<nn::Tanh>()});
  Tensor x = randn({4, 3}, g);
  CHECK(max_abs_diff(seq.forward(x), tanh(l2->forward(gelu(l1->forward(x), GeluApprox::tanh)))) == 0.0);
  Tensor img = randn({2, 3, 2, 2}, g);
  CHECK(nn::Flatten().forward(img).shape() == Shape{2, 12});
  CHECK(max_abs_diff(nn::SiLU().forward(x), silu(x)) == 0.0);
  CHECK(max_abs_diff(nn::ReLU().forward(x), relu(x)) == 0.0);
  CHECK(max_abs_diff(nn::Sigmoid().forward(x), sigmoid(x)) == 0.0);
  CHECK(nn::Identity().forward(x).same(x));
  nn::Functional twice([](const Tensor& t) { return mul(t, 2.0); }, "Twice");
  CHECK(max_abs_diff(twice(x), mul(x, 2.0)) == 0.0);
  CHECK(twice.type_name() == "Twice");
}

TEST_CASE("Dropout: training mode drops with probability p and rescales; eval mode is the identity") {
  Generator g(7);
  nn::Dropout drop(0.3, g);
  Tensor x = ones({200000});
  Tensor y = drop.forward(x);
  auto v = y.to_vector();
  int64_t zeros_n = 0;
  bool values_ok = true;
  for (double e : v) {
    if (e == 0) ++zeros_n;
    else values_ok &= std::fabs(e - 1.0 / 0.7) < 1e-6;
  }
  CHECK(values_ok);
  double frac = double(zeros_n) / double(v.size()), se = std::sqrt(0.3 * 0.7 / double(v.size()));
  CHECK(std::fabs(frac - 0.3) < 5 * se);
  // same generator state -> same mask; the stream moves on otherwise
  Generator ga(42), gb(42);
  nn::Dropout da(0.5, ga), db(0.5, gb);
  Tensor xs = ones({64});
  Tensor m1 = da.forward(xs);
  CHECK(m1.to_vector() == db.forward(xs).to_vector());
  CHECK(m1.to_vector() != da.forward(xs).to_vector());
  // eval (also through a container) returns the input untouched
  nn::Sequential seq({std::make_shared<nn::Dropout>(0.5, g)});
  seq.eval();
  CHECK(seq.forward(x).same(x));
  seq.train();
  CHECK(!seq.forward(x).same(x));
  CHECK_THROWS_WITH_AS(nn::Dropout(1.0), doctest::Contains("[0, 1)"), Error);
}

// ---------------------------------------------------------------- gradcheck through tiny models

TEST_CASE("gradcheck (f64) through tiny models of layers") {
  Generator g(8);
  SUBCASE("Linear, LayerNorm, GELU, Linear") {
    nn::Sequential m({std::make_shared<nn::Linear>(3, 4, true, g), std::make_shared<nn::LayerNorm>(4),
                      std::make_shared<nn::GELU>(), std::make_shared<nn::Linear>(4, 2, true, g)});
    init::normal_(m.at<nn::LayerNorm>(1)->weight, g, 1.0, 0.3);  // non-trivial affine parameters
    init::normal_(m.at<nn::LayerNorm>(1)->bias, g, 0.0, 0.3);
    Tensor x = testing::rnd({2, 5, 3}, g);
    auto r = check_module(m, x);
    INFO(r.message);
    CHECK(r.ok);
    CHECK(m.at<nn::Linear>(0)->weight.grad().defined());
  }
  SUBCASE("RMSNorm, SwiGLU, GeGLU, FeedForward") {
    nn::Sequential m({std::make_shared<nn::RMSNorm>(4), std::make_shared<nn::SwiGLU>(4, 5, true, g),
                      std::make_shared<nn::GeGLU>(4, 3, false, g),
                      std::make_shared<nn::FeedForward>(4, 6, true, GeluApprox::tanh, g)});
    init::normal_(m.at<nn::RMSNorm>(0)->weight, g, 1.0, 0.3);
    Tensor x = testing::rnd({3, 4}, g);
    auto r = check_module(m, x);
    INFO(r.message);
    CHECK(r.ok);
  }
  SUBCASE("Conv2d, GroupNorm, SiLU, Conv2d, Flatten, Linear") {
    nn::Sequential m({std::make_shared<nn::Conv2d>(2, 4, 3, nn::Conv2dOptions{.stride = 1, .padding = 1, .groups = 2}, g),
                      std::make_shared<nn::GroupNorm>(2, 4), std::make_shared<nn::SiLU>(),
                      std::make_shared<nn::Conv2d>(4, 2, 2, nn::Conv2dOptions{.stride = 2}, g),
                      std::make_shared<nn::Flatten>(), std::make_shared<nn::Linear>(8, 3, true, g)});
    init::normal_(m.at<nn::GroupNorm>(1)->weight, g, 1.0, 0.3);
    Tensor x = testing::rnd({2, 2, 4, 4}, g);
    auto r = check_module(m, x);
    INFO(r.message);
    CHECK(r.ok);
  }
  SUBCASE("Embedding into Linear, Dropout in training mode with a replayed mask") {
    Generator dg(99);
    auto emb = std::make_shared<nn::Embedding>(6, 4, g);
    nn::Sequential m({emb, std::make_shared<nn::Dropout>(0.25, dg), std::make_shared<nn::Linear>(4, 3, true, g)});
    Tensor idx = from_vector(std::vector<int64_t>{0, 5, 2, 2}, {2, 2});
    m.to(DType::f64);
    std::vector<Tensor> params = m.parameters();
    auto r = gradcheck(
        [&](const std::vector<Tensor>&) {
          dg.set_state(99, 0);  // the same dropout mask on every evaluation
          return m.forward(idx);
        },
        params);
    INFO(r.message);
    CHECK(r.ok);
    // the rows never looked up get no gradient
    CHECK(max(abs(emb->weight.grad().select(0, 1))).item() == 0.0);
    CHECK(max(abs(emb->weight.grad().select(0, 5))).item() > 0.0);
  }
}

// ---------------------------------------------------------------- initializers

TEST_CASE("normal_ and uniform_: moments within 5 standard errors; bounds exact") {
  Generator g(10);
  Tensor t = empty({400, 250});
  init::normal_(t, g, 2.0, 3.0);
  check_moments(t, 2.0, 3.0, 3.0);
  init::uniform_(t, g, -1.0, 3.0);
  Stats s = stats(t);
  CHECK(s.min >= -1.0);
  CHECK(s.max < 3.0);
  check_moments(t, 1.0, 4.0 / std::sqrt(12.0), 1.8);
  // non-contiguous targets and f64
  Tensor base = zeros({50, 40}, DType::f64);
  Tensor view = base.t();
  init::normal_(view, g, 0.0, 1.0);
  check_moments(base, 0.0, 1.0, 3.0);
  init::constant_(base, 0.5);
  CHECK(stats(base).min == 0.5);
  init::zeros_(base);
  CHECK(stats(base).max == 0.0);
  init::ones_(base);
  CHECK(stats(base).mean == 1.0);
  CHECK_THROWS_WITH_AS(init::normal_(zeros({2}, DType::i64), g), doctest::Contains("floating"), Error);
}

TEST_CASE("initializers run in place on parameters without recording a graph, reproducibly") {
  Generator g1(3), g2(3);
  nn::Linear a(8, 8, true, g1);
  uint64_t v = a.weight.version();
  init::xavier_uniform_(a.weight, g1);
  CHECK(a.weight.version() > v);
  CHECK(a.weight.is_leaf());
  CHECK(a.weight.requires_grad());
  nn::Linear b(8, 8, true, g2);
  init::xavier_uniform_(b.weight, g2);
  CHECK(a.weight.to_vector() == b.weight.to_vector());
}

TEST_CASE("xavier and kaiming: bounds and variances from the fans") {
  Generator g(11);
  Tensor w = empty({200, 300});  // fan_in 300, fan_out 200
  CHECK(init::calculate_fans(w) == std::pair<int64_t, int64_t>{300, 200});
  CHECK(init::calculate_fans(empty({16, 8, 3, 3})) == std::pair<int64_t, int64_t>{72, 144});
  CHECK(init::calculate_fans(empty({7})) == std::pair<int64_t, int64_t>{7, 7});

  init::xavier_uniform_(w, g, 2.0);
  double bound = 2.0 * std::sqrt(6.0 / 500.0);
  Stats s = stats(w);
  CHECK(s.min >= -bound);
  CHECK(s.max <= bound);
  CHECK(s.max > 0.99 * bound);
  check_moments(w, 0.0, bound / std::sqrt(3.0), 1.8);

  init::xavier_normal_(w, g);
  check_moments(w, 0.0, std::sqrt(2.0 / 500.0), 3.0);

  init::kaiming_uniform_(w, g, 0.0, init::FanMode::fan_in, init::Nonlinearity::relu);
  bound = std::sqrt(2.0) * std::sqrt(3.0 / 300.0);
  s = stats(w);
  CHECK(s.max <= bound);
  CHECK(s.min >= -bound);
  CHECK(s.max > 0.99 * bound);
  check_moments(w, 0.0, std::sqrt(2.0 / 300.0), 1.8);

  init::kaiming_normal_(w, g, 0.0, init::FanMode::fan_out, init::Nonlinearity::relu);
  check_moments(w, 0.0, std::sqrt(2.0 / 200.0), 3.0);
  init::kaiming_normal_(w, g, 0.0, init::FanMode::fan_in, init::Nonlinearity::gelu);
  check_moments(w, 0.0, init::calculate_gain(init::Nonlinearity::gelu) / std::sqrt(300.0), 3.0);
  init::kaiming_normal_(w, g, 0.0, init::FanMode::fan_in, init::Nonlinearity::linear);
  check_moments(w, 0.0, 1.0 / std::sqrt(300.0), 3.0);

  // torch's default (a = sqrt 5, leaky_relu): bound 1/sqrt(fan_in)
  init::kaiming_uniform_(w, g, std::sqrt(5.0));
  CHECK(stats(w).max <= 1.0 / std::sqrt(300.0));
  CHECK(stats(w).max > 0.99 / std::sqrt(300.0));
}

TEST_CASE("calculate_gain: PyTorch's values, and 1/sqrt(E[f(z)^2]) for gelu and silu") {
  using NL = init::Nonlinearity;
  CHECK(init::calculate_gain(NL::linear) == 1.0);
  CHECK(init::calculate_gain(NL::tanh) == doctest::Approx(5.0 / 3.0));
  CHECK(init::calculate_gain(NL::relu) == doctest::Approx(std::sqrt(2.0)));
  CHECK(init::calculate_gain(NL::leaky_relu) == doctest::Approx(std::sqrt(2.0 / (1 + 0.01 * 0.01))));
  CHECK(init::calculate_gain(NL::leaky_relu, 0.2) == doctest::Approx(std::sqrt(2.0 / 1.04)));
  CHECK(init::calculate_gain(NL::selu) == 0.75);
  // E[f(z)^2] for z ~ N(0,1) by the trapezoid rule on [-12, 12]; relu's gives back sqrt 2.
  auto second_moment = [](auto f) {
    const int N = 24000;
    double h = 24.0 / N, s = 0;
    for (int i = 0; i <= N; ++i) {
      double z = -12 + i * h, w = (i == 0 || i == N) ? 0.5 : 1.0;
      s += w * f(z) * f(z) * phi(z);
    }
    return s * h;
  };
  double relu_m = second_moment([](double z) { return z > 0 ? z : 0.0; });
  CHECK(1 / std::sqrt(relu_m) == doctest::Approx(init::calculate_gain(NL::relu)).epsilon(1e-6));
  double gelu_m = second_moment([](double z) { return z * Phi(z); });
  CHECK(1 / std::sqrt(gelu_m) == doctest::Approx(init::calculate_gain(NL::gelu)).epsilon(1e-9));
  double silu_m = second_moment([](double z) { return z / (1 + std::exp(-z)); });
  CHECK(1 / std::sqrt(silu_m) == doctest::Approx(init::calculate_gain(NL::silu)).epsilon(1e-9));
}

TEST_CASE("normal_quantile inverts the normal CDF (relative 1e-12 in p, tails included)") {
  double worst = 0;
  for (double p : {1e-300, 1e-100, 1e-20, 1e-8, 0.001, 0.02425, 0.1, 0.3, 0.5, 0.7, 0.9, 0.97575, 0.999, 1 - 1e-10}) {
    double z = init::normal_quantile(p);
    // compare in the tail where the CDF is accurate
    double rel = p < 0.5 ? std::fabs(Phi(z) - p) / p : std::fabs(Phi(-z) - (1 - p)) / (1 - p);
    worst = std::max(worst, rel);
  }
  CHECK(worst < 1e-12);
  CHECK(init::normal_quantile(0.5) == doctest::Approx(0.0).epsilon(1e-15));
  CHECK(init::normal_quantile(0.975) == doctest::Approx(1.959963984540054).epsilon(1e-14));
  CHECK_THROWS_AS(init::normal_quantile(0.0), Error);
}

TEST_CASE("trunc_normal_: bounds exact, moments of the truncated distribution") {
  Generator g(12);
  // Mean, std and kurtosis of N(mu, sd^2) restricted to [a, b], by the trapezoid rule.
  auto truncated_moments = [](double mu, double sd, double a, double b) {
    double al = (a - mu) / sd, be = (b - mu) / sd;
    const int N = 20000;
    double h = (be - al) / N, m[5] = {0, 0, 0, 0, 0};
    for (int i = 0; i <= N; ++i) {
      double z = al + i * h, w = (i == 0 || i == N ? 0.5 : 1.0) * phi(z) * h, zk = 1;
      for (int k = 0; k < 5; ++k, zk *= z) m[k] += w * zk;
    }
    double mean = m[1] / m[0], var = m[2] / m[0] - mean * mean;
    double c4 = m[4] / m[0] - 4 * mean * m[3] / m[0] + 6 * mean * mean * m[2] / m[0] - 3 * std::pow(mean, 4);
    return std::tuple{mu + sd * mean, sd * std::sqrt(var), c4 / (var * var)};
  };
  struct Case {
    double mean, std, a, b;
    DType dt;
  };
  for (auto c : {Case{0, 1, -2, 2, DType::f32}, Case{1, 2, -1, 2, DType::f32}, Case{0, 1, 3, 3.5, DType::f32},
                 Case{0, 0.02, -0.04, 0.04, DType::f64}, Case{5, 1, -10, 4.9, DType::f64}, Case{0, 1, -0.1, 0.1, DType::f32}}) {
    CAPTURE(c.a);
    CAPTURE(c.b);
    Tensor t = empty({300, 200}, c.dt);
    init::trunc_normal_(t, g, c.mean, c.std, c.a, c.b);
    Stats s = stats(t);
    CHECK(s.min >= c.a);  // exact, also for bounds like 0.1 that f32 cannot represent
    CHECK(s.max <= c.b);
    // a bound with real probability mass next to it is reached
    if (c.a > c.mean - 4 * c.std) CHECK(s.min < c.a + 0.01 * (c.b - c.a));
    if (c.b < c.mean + 4 * c.std) CHECK(s.max > c.b - 0.01 * (c.b - c.a));
    auto [m, sd, kurt] = truncated_moments(c.mean, c.std, c.a, c.b);
    check_moments(t, m, sd, kurt);
  }
  // An interval a dozen f32 steps wide around 0.1 (which f32 rounds up): rounding to f32 would step over
  // the bounds for many draws; none may.
  Tensor narrow = empty({10000});
  init::trunc_normal_(narrow, g, 0.0, 1.0, 0.0999999, 0.1);
  Stats s = stats(narrow);
  CHECK(s.min >= 0.0999999);
  CHECK(s.max <= 0.1);
  CHECK(s.max > 0.09999999);
  CHECK_THROWS_AS(init::trunc_normal_(empty({3}), g, 0, 1, 1, -1), Error);
}

TEST_CASE("variance_scaling_ and scale_aware_") {
  Generator g(13);
  Tensor w = empty({300, 200});
  using D = init::Distribution;
  for (auto [mode, fan] : {std::pair{init::FanMode::fan_in, 200.0}, std::pair{init::FanMode::fan_out, 300.0},
                           std::pair{init::FanMode::fan_avg, 250.0}}) {
    double sd = std::sqrt(2.0 / fan);
    init::variance_scaling_(w, g, 2.0, mode, D::truncated_normal);
    Stats s = stats(w);
    CHECK(s.max <= 2 * sd / 0.87962566103423978);
    check_moments(w, 0.0, sd, 3.0);
    init::variance_scaling_(w, g, 2.0, mode, D::uniform);
    CHECK(stats(w).max <= std::sqrt(3.0) * sd);
    check_moments(w, 0.0, sd, 1.8);
    init::variance_scaling_(w, g, 2.0, mode, D::normal);
    check_moments(w, 0.0, sd, 3.0);
  }
  // scale-aware: mean exactly 0 and RMS exactly std
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor t = empty({64, 48}, dt);
    init::scale_aware_(t, g, 0.02);
    Stats s = stats(t);
    CHECK(std::fabs(s.mean) < 1e-9);
    CHECK(std::sqrt(s.var + s.mean * s.mean) == doctest::Approx(0.02).epsilon(1e-6));
  }
  Tensor one = empty({1});
  init::scale_aware_(one, g, 0.5);
  CHECK(std::fabs(one.item()) == 0.5);
}

TEST_CASE("layer constructors refuse nonsense sizes and rates with an error naming them (#21)") {
  Generator g(0);
  CHECK_THROWS_WITH_AS(nn::Dropout(-1), "Dropout: p must be in [0, 1), got -1", Error);
  CHECK_THROWS_WITH_AS(nn::Dropout(std::nan("")), "Dropout: p must be in [0, 1), got nan", Error);
  CHECK_THROWS_WITH_AS(nn::Dropout(1.0), "Dropout: p must be in [0, 1), got 1", Error);
  CHECK_THROWS_WITH_AS(nn::FeedForward(8, 0, true, GeluApprox::none, g),
                       "FeedForward: dim and hidden must be >= 1, got 8 and 0", Error);  // was: a view error at forward
  CHECK_THROWS_WITH_AS(nn::GLUFeedForward(0, 8, nn::GLUActivation::swiglu, false, g),
                       "SwiGLU: dim and hidden must be >= 1, got 0 and 8", Error);
  CHECK_THROWS_WITH_AS(nn::LayerNorm(0), "LayerNorm: normalized_shape [0] has a size < 1", Error);
  CHECK_THROWS_WITH_AS(nn::RMSNorm(Shape{4, -1}), "RMSNorm: normalized_shape [4, -1] has a size < 1", Error);
  CHECK_THROWS_WITH_AS(nn::GroupNorm(0, 8), "GroupNorm: 8 channels are not divisible into 0 groups", Error);
  CHECK_THROWS_WITH_AS(nn::GroupNorm(2, 0), "GroupNorm: num_channels must be >= 1, got 0", Error);
  nn::AttentionConfig a;
  a.dropout = 2;
  CHECK_THROWS_WITH_AS(nn::MultiheadAttention(8, 2, a, g), "MultiheadAttention: dropout must be in [0, 1), got 2", Error);
  a.dropout = 0;
  CHECK_THROWS_WITH_AS(nn::MultiheadAttention(0, 2, a, g), "MultiheadAttention: d_model must be >= 1, got 0", Error);
  CHECK(nn::FeedForward(4, 1, true, GeluApprox::none, g).forward(zeros({2, 4})).shape() == Shape{2, 4});
}
