// Elementwise ops (core/ops/elementwise.cpp, core/cpu/vecmath.h, core/cpu/map.h):
//   - forward values against scalar libm references, through every map path (flat, broadcast,
//     strided, transposed, expanded, 0-d, large enough to run in parallel);
//   - f64 gradcheck of every differentiable op on contiguous, transposed, step-2-sliced, expanded,
//     broadcast and 0-d inputs;
//   - f32 fast-math accuracy (vexp/vtanh/vsigmoid/verf) against the f64 (libm) results;
//   - comparisons, where/masked_fill, dropout, and the error messages.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "core/gradcheck.h"
#include "core/ops.h"
#include "core/threads.h"
#include "op_test_helpers.h"

using namespace liandan;

using liandan::testing::error_of;
using liandan::testing::for_each_index;
using liandan::testing::max_abs_diff;

namespace {

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;
using Tf = std::function<double(double)>;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNan = std::numeric_limits<double>::quiet_NaN();

Generator& gen() {
  static Generator g(42);
  return g;
}

// Contiguous f64 tensor of shape `s` holding tf(z) for z ~ N(0, 1).
Tensor data(const Shape& s, const Tf& tf = nullptr) {
  std::vector<double> v = randn(s, gen(), DType::f64).to_vector();
  if (tf) for (double& x : v) x = tf(x);
  return from_vector(v, s, DType::f64);
}

enum class Layout { contiguous, transposed, strided };
std::string layout_name(Layout l) {
  return l == Layout::contiguous ? "contiguous" : l == Layout::transposed ? "transposed" : "strided";
}

// A leaf f64 tensor of logical shape `s` that requires grad:
//   contiguous  plain
//   transposed  transpose(-1, -2) of a contiguous tensor (needs >= 2 dims)
//   strided     every other element of the last dim (slice with step 2)
Tensor leaf(const Shape& s, Layout lay = Layout::contiguous, const Tf& tf = nullptr) {
  Tensor t;
  if (lay == Layout::contiguous) {
    t = data(s, tf);
  } else if (lay == Layout::transposed) {
    Shape st = s;
    std::swap(st[st.size() - 2], st[st.size() - 1]);
    t = data(st, tf).transpose(-1, -2);
  } else {
    Shape st = s;
    st.back() *= 2;
    t = data(st, tf).slice(-1, 0, st.back(), 2);
  }
  t.requires_grad_();
  return t;
}

// Domains that keep finite differences away from kinks and singularities.
double positive(double x) { return std::fabs(x) + 0.5; }
double away_from_zero(double x) { return x >= 0 ? x + 0.3 : x - 0.3; }
double open_unit(double x) { return 0.9 * std::tanh(x); }  // (-0.9, 0.9): log1p's domain
Tf away_from(std::vector<double> kinks) {
  return [kinks](double x) {
    for (double k : kinks)
      if (std::fabs(x - k) < 0.05) x = k + (x >= k ? 0.1 : -0.1);
    return x;
  };
}

// The index of `t` that broadcasting to an output reads for output index `idx`.
Shape bindex(const Tensor& t, const Shape& idx) {
  Shape r(size_t(t.dim()));
  size_t lead = idx.size() - size_t(t.dim());
  for (size_t d = 0; d < r.size(); ++d) r[d] = t.shape()[d] == 1 ? 0 : idx[lead + d];
  return r;
}

bool close(double got, double want, double rtol, double atol) {
  if (std::isnan(want)) return std::isnan(got);
  if (std::isinf(want)) return got == want;
  return std::fabs(got - want) <= atol + rtol * std::fabs(want);
}

// Checks y[i] == ref(a[i'], b[i']) for every output index (inputs read through broadcasting).
void check_binary_values(const Tensor& y, const Tensor& a, const Tensor& b,
                         const std::function<double(double, double)>& ref, double rtol, double atol) {
  Shape want_shape = broadcast_shapes(a.shape(), b.shape(), "test");
  REQUIRE(y.shape() == want_shape);
  CHECK(y.dtype() == a.dtype());
  int64_t bad = 0;
  std::string first;
  for_each_index(want_shape, [&](const Shape& i) {
    double av = a.at(bindex(a, i)), bv = b.at(bindex(b, i)), got = y.at(i), want = ref(av, bv);
    if (!close(got, want, rtol, atol)) {
      if (bad++ == 0)
        first = "at " + shape_str(i) + ": f(" + std::to_string(av) + ", " + std::to_string(bv) + ") = " +
                std::to_string(got) + ", expected " + std::to_string(want);
    }
  });
  INFO(first);
  CHECK(bad == 0);
}

void check_unary_values(const Tensor& y, const Tensor& x, const Tf& ref, double rtol, double atol) {
  REQUIRE(y.shape() == x.shape());
  CHECK(y.dtype() == x.dtype());
  CHECK(y.is_contiguous());
  int64_t bad = 0;
  std::string first;
  for_each_index(x.shape(), [&](const Shape& i) {
    double xv = x.at(i), got = y.at(i), want = ref(xv);
    if (!close(got, want, rtol, atol) && bad++ == 0)
      first = "at " + shape_str(i) + ": f(" + std::to_string(xv) + ") = " + std::to_string(got) +
              ", expected " + std::to_string(want);
  });
  INFO(first);
  CHECK(bad == 0);
}

// ---------------------------------------------------------------- op tables

struct UnaryCase {
  const char* name;
  std::function<Tensor(const Tensor&)> op;
  Tf ref;
  Tf domain;  // maps N(0, 1) samples into the region where the op is smooth
};

double sigmoid_ref(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double gelu_ref(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }
double gelu_tanh_ref(double x) {
  return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}
double softplus_ref(double x, double beta, double threshold) {
  return beta * x > threshold ? x : std::log1p(std::exp(beta * x)) / beta;
}

std::vector<UnaryCase> unary_cases() {
  return {
      {"neg", [](const Tensor& x) { return neg(x); }, [](double x) { return -x; }, nullptr},
      {"exp", [](const Tensor& x) { return exp(x); }, [](double x) { return std::exp(x); }, nullptr},
      {"log", [](const Tensor& x) { return log(x); }, [](double x) { return std::log(x); }, positive},
      {"log1p", [](const Tensor& x) { return log1p(x); }, [](double x) { return std::log1p(x); }, open_unit},
      {"sqrt", [](const Tensor& x) { return sqrt(x); }, [](double x) { return std::sqrt(x); }, positive},
      {"rsqrt", [](const Tensor& x) { return rsqrt(x); }, [](double x) { return 1 / std::sqrt(x); }, positive},
      {"abs", [](const Tensor& x) { return abs(x); }, [](double x) { return std::fabs(x); }, away_from_zero},
      {"sin", [](const Tensor& x) { return sin(x); }, [](double x) { return std::sin(x); }, nullptr},
      {"cos", [](const Tensor& x) { return cos(x); }, [](double x) { return std::cos(x); }, nullptr},
      {"square", [](const Tensor& x) { return square(x); }, [](double x) { return x * x; }, nullptr},
      {"clamp(-0.5, 0.7)", [](const Tensor& x) { return clamp(x, -0.5, 0.7); },
       [](double x) { return std::clamp(x, -0.5, 0.7); }, away_from({-0.5, 0.7})},
      {"clamp(lo=-0.3)", [](const Tensor& x) { return clamp(x, -0.3, std::nullopt); },
       [](double x) { return std::max(x, -0.3); }, away_from({-0.3})},
      {"clamp(hi=0.4)", [](const Tensor& x) { return clamp(x, std::nullopt, 0.4); },
       [](double x) { return std::min(x, 0.4); }, away_from({0.4})},
      {"tanh", [](const Tensor& x) { return tanh(x); }, [](double x) { return std::tanh(x); }, nullptr},
      {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, sigmoid_ref, nullptr},
      {"relu", [](const Tensor& x) { return relu(x); }, [](double x) { return x > 0 ? x : 0.0; }, away_from_zero},
      {"gelu", [](const Tensor& x) { return gelu(x); }, gelu_ref, nullptr},
      {"gelu(none)", [](const Tensor& x) { return gelu(x, GeluApprox::none); }, gelu_ref, nullptr},
      {"gelu(tanh)", [](const Tensor& x) { return gelu(x, GeluApprox::tanh); }, gelu_tanh_ref, nullptr},
      {"silu", [](const Tensor& x) { return silu(x); }, [](double x) { return x * sigmoid_ref(x); }, nullptr},
      {"elu", [](const Tensor& x) { return elu(x); },
       [](double x) { return x > 0 ? x : std::exp(x) - 1; }, away_from_zero},
      {"elu(alpha=0.5)", [](const Tensor& x) { return elu(x, 0.5); },
       [](double x) { return x > 0 ? x : 0.5 * (std::exp(x) - 1); }, away_from_zero},
      {"softplus", [](const Tensor& x) { return softplus(x); },
       [](double x) { return softplus_ref(x, 1, 20); }, nullptr},
      {"softplus(beta=2, threshold=3)", [](const Tensor& x) { return softplus(x, 2.0, 3.0); },
       [](double x) { return softplus_ref(x, 2, 3); }, away_from({1.5})},
      {"softsign", [](const Tensor& x) { return softsign(x); }, [](double x) { return x / (1 + std::fabs(x)); },
       nullptr},
      {"add(scalar)", [](const Tensor& x) { return add(x, 1.5); }, [](double x) { return x + 1.5; }, nullptr},
      {"mul(scalar)", [](const Tensor& x) { return mul(x, -2.5); }, [](double x) { return x * -2.5; }, nullptr},
      {"rsub", [](const Tensor& x) { return rsub(x, 3.0); }, [](double x) { return 3.0 - x; }, nullptr},
      {"rdiv", [](const Tensor& x) { return rdiv(x, 2.0); }, [](double x) { return 2.0 / x; }, away_from_zero},
      {"pow(x, 3)", [](const Tensor& x) { return pow(x, 3.0); }, [](double x) { return x * x * x; }, nullptr},
      {"pow(x, 2)", [](const Tensor& x) { return pow(x, 2.0); }, [](double x) { return x * x; }, nullptr},
      {"pow(x, 0.5)", [](const Tensor& x) { return pow(x, 0.5); }, [](double x) { return std::sqrt(x); }, positive},
      {"pow(x, -1.5)", [](const Tensor& x) { return pow(x, -1.5); },
       [](double x) { return std::pow(x, -1.5); }, positive},
      {"pow(x, 0)", [](const Tensor& x) { return pow(x, 0.0); }, [](double) { return 1.0; }, nullptr},
      {"operator-(s, x)", [](const Tensor& x) { return 1.0 - x; }, [](double x) { return 1.0 - x; }, nullptr},
      {"operator/(s, x)", [](const Tensor& x) { return 1.0 / x; }, [](double x) { return 1.0 / x; }, away_from_zero},
      {"operator/(x, s)", [](const Tensor& x) { return x / 4.0; }, [](double x) { return x / 4.0; }, nullptr},
  };
}

struct BinaryCase {
  const char* name;
  std::function<Tensor(const Tensor&, const Tensor&)> op;
  std::function<double(double, double)> ref;
  Tf da, db;
};

std::vector<BinaryCase> binary_cases() {
  return {
      {"add", [](const Tensor& a, const Tensor& b) { return add(a, b); }, [](double a, double b) { return a + b; },
       nullptr, nullptr},
      {"sub", [](const Tensor& a, const Tensor& b) { return sub(a, b); }, [](double a, double b) { return a - b; },
       nullptr, nullptr},
      {"mul", [](const Tensor& a, const Tensor& b) { return mul(a, b); }, [](double a, double b) { return a * b; },
       nullptr, nullptr},
      {"div", [](const Tensor& a, const Tensor& b) { return div(a, b); }, [](double a, double b) { return a / b; },
       nullptr, away_from_zero},
      {"pow", [](const Tensor& a, const Tensor& b) { return pow(a, b); },
       [](double a, double b) { return std::pow(a, b); }, positive, nullptr},
      {"maximum", [](const Tensor& a, const Tensor& b) { return maximum(a, b); },
       [](double a, double b) { return std::max(a, b); }, nullptr, nullptr},
      {"minimum", [](const Tensor& a, const Tensor& b) { return minimum(a, b); },
       [](double a, double b) { return std::min(a, b); }, nullptr, nullptr},
      {"operator+", [](const Tensor& a, const Tensor& b) { return a + b; }, [](double a, double b) { return a + b; },
       nullptr, nullptr},
      {"operator-", [](const Tensor& a, const Tensor& b) { return a - b; }, [](double a, double b) { return a - b; },
       nullptr, nullptr},
      {"operator*", [](const Tensor& a, const Tensor& b) { return a * b; }, [](double a, double b) { return a * b; },
       nullptr, nullptr},
      {"operator/", [](const Tensor& a, const Tensor& b) { return a / b; }, [](double a, double b) { return a / b; },
       nullptr, away_from_zero},
  };
}

// Input configurations for a binary op: (a, b) and what f does to them before the op.
struct BinaryConfig {
  const char* name;
  Tensor a, b;
  std::function<Tensor(const Tensor&)> pre_a, pre_b;  // applied inside f (null: identity)
};

std::vector<BinaryConfig> binary_configs(const Tf& da, const Tf& db) {
  std::vector<BinaryConfig> c;
  c.push_back({"same shape", leaf({3, 4}, Layout::contiguous, da), leaf({3, 4}, Layout::contiguous, db), nullptr, nullptr});
  c.push_back({"broadcast [3,1,4] x [2,4]", leaf({3, 1, 4}, Layout::contiguous, da),
               leaf({2, 4}, Layout::contiguous, db), nullptr, nullptr});
  c.push_back({"broadcast [4] x [3,1]", leaf({4}, Layout::contiguous, da), leaf({3, 1}, Layout::contiguous, db), nullptr, nullptr});
  c.push_back({"tensor x 0-d", leaf({2, 3}, Layout::contiguous, da), leaf({}, Layout::contiguous, db), nullptr, nullptr});
  c.push_back({"0-d x tensor", leaf({}, Layout::contiguous, da), leaf({2, 3}, Layout::contiguous, db), nullptr, nullptr});
  c.push_back({"0-d x 0-d", leaf({}, Layout::contiguous, da), leaf({}, Layout::contiguous, db), nullptr, nullptr});
  c.push_back({"transposed x strided", leaf({3, 4}, Layout::transposed, da), leaf({3, 4}, Layout::strided, db), nullptr, nullptr});
  c.push_back({"strided x transposed", leaf({3, 4}, Layout::strided, da), leaf({3, 4}, Layout::transposed, db), nullptr, nullptr});
  c.push_back({"transposed [4,3] x strided [2,1,3]", leaf({4, 3}, Layout::transposed, da),
               leaf({2, 1, 3}, Layout::strided, db), nullptr, nullptr});
  c.push_back({"expanded [1,4]->[3,4] x expanded [3,1]->[3,4]", leaf({1, 4}, Layout::contiguous, da),
               leaf({3, 1}, Layout::contiguous, db), [](const Tensor& t) { return t.expand({3, 4}); },
               [](const Tensor& t) { return t.expand({3, 4}); }});
  c.push_back({"expanded new dims [4]->[2,3,4] x transposed [3,4]", leaf({4}, Layout::contiguous, da),
               leaf({3, 4}, Layout::transposed, db), [](const Tensor& t) { return t.expand({2, 3, 4}); }, nullptr});
  {
    Tensor b = data({3, 4}, db);  // only a requires grad
    c.push_back({"b constant", leaf({3, 4}, Layout::contiguous, da), b, nullptr, nullptr});
  }
  {
    Tensor a = data({2, 1, 4}, da);  // only b requires grad
    c.push_back({"a constant", a, leaf({3, 4}, Layout::strided, db), nullptr, nullptr});
  }
  return c;
}

}  // namespace

// ================================================================ unary ops

TEST_CASE("unary ops: forward values match libm on every layout") {
  for (const UnaryCase& c : unary_cases()) {
    INFO("op ", std::string(c.name));
    for (Layout lay : {Layout::contiguous, Layout::transposed, Layout::strided}) {
      INFO("layout ", layout_name(lay));
      Tensor x = leaf({5, 7}, lay, c.domain).detach();
      check_unary_values(c.op(x), x, c.ref, 1e-12, 1e-14);
    }
    // 0-d, expanded (stride 0), and a 3-D permuted view
    Tensor s = leaf({}, Layout::contiguous, c.domain).detach();
    check_unary_values(c.op(s), s, c.ref, 1e-12, 1e-14);
    Tensor e = data({1, 6}, c.domain).expand({4, 6});
    check_unary_values(c.op(e), e, c.ref, 1e-12, 1e-14);
    Tensor p = data({3, 4, 5}, c.domain).permute({2, 0, 1});
    check_unary_values(c.op(p), p, c.ref, 1e-12, 1e-14);
    // f32 agrees with f64 to f32 precision
    Tensor x32 = data({4, 5}, c.domain).to(DType::f32);
    Tensor y32 = c.op(x32);
    CHECK(y32.dtype() == DType::f32);
    check_unary_values(y32, x32, c.ref, 2e-6, 1e-6);
  }
}

TEST_CASE("unary ops: large inputs take the parallel paths and agree with the serial result") {
  // 60000 elements > kParallelGrain: flat parallel loop (contiguous) and nd_for_each (transposed).
  for (const UnaryCase& c : unary_cases()) {
    INFO("op ", std::string(c.name));
    Tensor base = data({200, 300}, c.domain);
    for (DType dt : {DType::f32, DType::f64}) {
      Tensor x = base.to(dt), xt = base.t().contiguous().to(dt).t();  // same values, transposed layout
      REQUIRE(!xt.is_contiguous());
      Tensor y = c.op(x), yt = c.op(xt);
      std::vector<double> a = y.to_vector(), b = yt.to_vector();
      CHECK(a == b);  // bit-identical whatever the layout
      // spot-check values against the reference
      double tol = dt == DType::f32 ? 2e-6 : 1e-12;
      int64_t bad = 0;
      std::vector<double> xv = x.to_vector();
      for (size_t i = 0; i < xv.size(); i += 97)
        if (!close(a[i], c.ref(xv[i]), tol, tol)) ++bad;
      CHECK(bad == 0);
    }
  }
}

TEST_CASE("unary ops: gradcheck (f64) on contiguous, transposed, strided, expanded and 0-d inputs") {
  for (const UnaryCase& c : unary_cases()) {
    INFO("op ", std::string(c.name));
    Fn f = [&](const std::vector<Tensor>& xs) { return c.op(xs[0]); };
    for (Layout lay : {Layout::contiguous, Layout::transposed, Layout::strided}) {
      INFO("layout ", layout_name(lay));
      Tensor x = leaf({3, 4}, lay, c.domain);
      if (lay != Layout::contiguous) CHECK(!x.is_contiguous());
      LD_GRADCHECK(f, {x});
    }
    {
      INFO("0-d");
      LD_GRADCHECK(f, {leaf({}, Layout::contiguous, c.domain)});
    }
    {
      INFO("expanded [1,4] -> [3,4] inside f");
      Fn fe = [&](const std::vector<Tensor>& xs) { return c.op(xs[0].expand({3, 4})); };
      LD_GRADCHECK(fe, {leaf({1, 4}, Layout::contiguous, c.domain)});
    }
    {
      INFO("3-D permuted view");
      Tensor x = data({2, 3, 4}, c.domain).permute({1, 2, 0});
      x.requires_grad_();
      LD_GRADCHECK(f, {x});
    }
  }
}

TEST_CASE("unary ops: the gradient flows through a chain and accumulates into a non-contiguous leaf") {
  Tensor x = leaf({4, 3}, Layout::transposed);
  Tensor y = sum(mul(tanh(x), sigmoid(x)));
  y.backward();
  REQUIRE(x.grad().defined());
  CHECK(x.grad().shape() == Shape{4, 3});
  for_each_index({4, 3}, [&](const Shape& i) {
    double v = x.at(i), t = std::tanh(v), s = sigmoid_ref(v);
    double want = (1 - t * t) * s + t * s * (1 - s);
    CHECK(x.grad().at(i) == doctest::Approx(want).epsilon(1e-12));
  });
}

TEST_CASE("softsign: values and gradient in closed form (f32 and f64), including 0 and large |x|") {
  for (DType dt : {DType::f32, DType::f64}) {
    std::vector<double> xs{-1e6, -3.0, -0.5, 0.0, 0.25, 2.0, 1e6};
    Tensor x = from_vector(xs, {int64_t(xs.size())}, dt).requires_grad_();
    Tensor y = softsign(x);
    sum(y).backward();
    double tol = dt == DType::f64 ? 1e-15 : 1e-7;
    for (size_t i = 0; i < xs.size(); ++i) {
      CAPTURE(xs[i]);
      double a = 1 + std::fabs(xs[i]);
      CHECK(y.at({int64_t(i)}) == doctest::Approx(xs[i] / a).epsilon(tol));
      CHECK(x.grad().at({int64_t(i)}) == doctest::Approx(1 / (a * a)).epsilon(tol));
      CHECK(std::fabs(y.at({int64_t(i)})) < 1.0);
    }
  }
}

TEST_CASE("special cases: softplus above threshold is linear, clamp/abs/relu at kinks, pow(0, b)") {
  // softplus: beta * x > threshold is the identity with gradient 1
  Tensor x = from_vector(std::vector<double>{15.0, 25.0, -30.0}, {3}, DType::f64).requires_grad_();
  Tensor y = softplus(x, 2.0, 20.0);
  CHECK(y.at({0}) == 15.0);
  CHECK(y.at({1}) == 25.0);
  CHECK(y.at({2}) == doctest::Approx(std::log1p(std::exp(-60.0)) / 2));
  sum(y).backward();
  CHECK(x.grad().at({0}) == 1.0);
  CHECK(x.grad().at({1}) == 1.0);
  CHECK(x.grad().at({2}) == doctest::Approx(sigmoid_ref(-60.0)));

  // at a kink the gradient follows torch: clamp passes it at the bounds (inclusive), abs gives 0,
  // relu gives 0
  Tensor k = from_vector(std::vector<double>{-1.0, 0.0, 1.0}, {3}, DType::f64).requires_grad_();
  sum(clamp(k, -1.0, 1.0)).backward();
  CHECK(k.grad().to_vector() == std::vector<double>{1, 1, 1});
  k.set_grad(Tensor());
  sum(abs(k)).backward();
  CHECK(k.grad().to_vector() == std::vector<double>{-1, 0, 1});
  k.set_grad(Tensor());
  sum(relu(k)).backward();
  CHECK(k.grad().to_vector() == std::vector<double>{0, 0, 1});

  // clamp and maximum propagate NaN
  Tensor n = from_vector(std::vector<double>{kNan, 2.0}, {2}, DType::f64);
  CHECK(std::isnan(clamp(n, 0.0, 1.0).at({0})));
  CHECK(clamp(n, 0.0, 1.0).at({1}) == 1.0);
  CHECK(std::isnan(maximum(n, zeros({2}, DType::f64)).at({0})));
  CHECK(std::isnan(maximum(zeros({2}, DType::f64), n).at({0})));
  CHECK(std::isnan(minimum(n, zeros({2}, DType::f64)).at({0})));
  CHECK(std::isnan(minimum(zeros({2}, DType::f64), n).at({0})));

  // pow(0, b): value 0 (b > 0), and d/db taken as 0 instead of NaN (0 * log 0)
  Tensor a = zeros({2}, DType::f64).requires_grad_();
  Tensor b = from_vector(std::vector<double>{2.0, 3.0}, {2}, DType::f64).requires_grad_();
  Tensor p = pow(a, b);
  CHECK(p.to_vector() == std::vector<double>{0, 0});
  sum(p).backward();
  CHECK(b.grad().to_vector() == std::vector<double>{0, 0});
  CHECK(a.grad().to_vector() == std::vector<double>{0, 0});

  // pow with a negative base and an integral exponent (tensor and scalar forms)
  Tensor nb = from_vector(std::vector<double>{-2.0, -3.0}, {2}, DType::f64);
  CHECK(pow(nb, full({2}, 3.0, DType::f64)).to_vector() == std::vector<double>{-8, -27});
  CHECK(pow(nb, 3.0).to_vector() == std::vector<double>{-8, -27});
  CHECK(pow(nb, 2.0).to_vector() == std::vector<double>{4, 9});
}

TEST_CASE("maximum/minimum: ties split the gradient evenly") {
  Tensor a = from_vector(std::vector<double>{1.0, 2.0, 3.0}, {3}, DType::f64).requires_grad_();
  Tensor b = from_vector(std::vector<double>{2.0, 2.0, 1.0}, {3}, DType::f64).requires_grad_();
  sum(maximum(a, b)).backward();
  CHECK(a.grad().to_vector() == std::vector<double>{0, 0.5, 1});
  CHECK(b.grad().to_vector() == std::vector<double>{1, 0.5, 0});
  a.set_grad(Tensor());
  b.set_grad(Tensor());
  sum(minimum(a, b)).backward();
  CHECK(a.grad().to_vector() == std::vector<double>{1, 0.5, 0});
  CHECK(b.grad().to_vector() == std::vector<double>{0, 0.5, 1});
}

// ================================================================ binary ops

TEST_CASE("binary ops: forward values with broadcasting and non-contiguous inputs") {
  for (const BinaryCase& c : binary_cases()) {
    INFO("op ", std::string(c.name));
    for (const BinaryConfig& cfg : binary_configs(c.da, c.db)) {
      INFO("config ", std::string(cfg.name));
      Tensor a = cfg.pre_a ? cfg.pre_a(cfg.a.detach()) : cfg.a.detach();
      Tensor b = cfg.pre_b ? cfg.pre_b(cfg.b.detach()) : cfg.b.detach();
      check_binary_values(c.op(a, b), a, b, c.ref, 1e-14, 1e-15);
      Tensor a32 = a.to(DType::f32), b32 = b.to(DType::f32);
      check_binary_values(c.op(a32, b32), a32, b32, c.ref, 2e-6, 1e-6);
    }
  }
}

TEST_CASE("binary ops: gradcheck (f64) with broadcasting, 0-d, transposed, strided and expanded inputs") {
  for (const BinaryCase& c : binary_cases()) {
    INFO("op ", std::string(c.name));
    for (const BinaryConfig& cfg : binary_configs(c.da, c.db)) {
      INFO("config ", std::string(cfg.name));
      auto pa = cfg.pre_a, pb = cfg.pre_b;
      Fn f = [&](const std::vector<Tensor>& xs) {
        return c.op(pa ? pa(xs[0]) : xs[0], pb ? pb(xs[1]) : xs[1]);
      };
      LD_GRADCHECK(f, {cfg.a, cfg.b});
    }
  }
}

TEST_CASE("binary ops: gradient of a constant operand is not computed, the other one is") {
  Tensor a = leaf({2, 3});
  Tensor b = data({3});
  Tensor y = sum(mul(a, b));
  y.backward();
  CHECK(a.grad().defined());
  CHECK(!b.grad().defined());
  CHECK(!b.requires_grad());
  // with grad mode off, no graph is recorded at all
  NoGradGuard ng;
  Tensor z = add(a, b);
  CHECK(!z.requires_grad());
  CHECK(z.grad_fn() == nullptr);
}

TEST_CASE("binary ops: large broadcast non-contiguous inputs run in parallel and match the reference") {
  // [300, 200] (transposed view) op [200] -> 60000 outputs through nd_for_each in parallel
  for (const BinaryCase& c : binary_cases()) {
    INFO("op ", std::string(c.name));
    Tensor a = data({200, 300}, c.da), b = data({200}, c.db);
    for (DType dt : {DType::f64, DType::f32}) {
      Tensor at = a.to(dt).t(), bt = b.to(dt);
      REQUIRE(!at.is_contiguous());
      Tensor y = c.op(at, bt);
      REQUIRE(y.shape() == Shape{300, 200});
      std::vector<double> yv = y.to_vector(), av = at.to_vector(), bv = bt.to_vector();
      double tol = dt == DType::f32 ? 2e-6 : 1e-14;
      int64_t bad = 0;
      for (int64_t i = 0; i < 300; ++i)
        for (int64_t j = 0; j < 200; ++j)
          if (!close(yv[size_t(i * 200 + j)], c.ref(av[size_t(i * 200 + j)], bv[size_t(j)]), tol, tol)) ++bad;
      CHECK(bad == 0);
      // same values through the contiguous (flat) path
      Tensor yc = c.op(at.contiguous(), bt.expand({300, 200}).contiguous());
      CHECK(yc.to_vector() == yv);
    }
  }
}

TEST_CASE("binary ops: the same tensor on both sides; zero-size broadcasting") {
  for (const BinaryCase& c : binary_cases()) {
    INFO("op ", std::string(c.name));
    Tensor x = leaf({3, 4}, Layout::transposed, positive);
    Fn f = [&](const std::vector<Tensor>& xs) { return c.op(xs[0], xs[0]); };
    LD_GRADCHECK(f, {x});
    // x op x.t(): two different views of one leaf
    Tensor s = leaf({3, 3}, Layout::strided, positive);
    Fn g = [&](const std::vector<Tensor>& xs) { return c.op(xs[0], xs[0].t()); };
    LD_GRADCHECK(g, {s});
  }
  // broadcasting against an empty dim gives an empty result, and empty gradients of the right shape
  Tensor a = zeros({0, 3}, DType::f64).requires_grad_(), b = ones({3}, DType::f64).requires_grad_();
  Tensor y = mul(a, b);
  CHECK(y.shape() == Shape{0, 3});
  sum(y).backward();
  CHECK(a.grad().shape() == Shape{0, 3});
  CHECK(b.grad().to_vector() == std::vector<double>{0, 0, 0});
  CHECK(exp(zeros({2, 0})).shape() == Shape{2, 0});
}

TEST_CASE("elementwise ops: an in-place write to a tensor saved for backward is detected") {
  Tensor x = leaf({3});
  Tensor y = exp(x);  // saves its output
  {
    NoGradGuard ng;
    y.mul_(2.0);
  }
  CHECK_THROWS_WITH_AS(sum(y).backward(), doctest::Contains("exp backward"), liandan::Error);
  Tensor p = leaf({3}, Layout::contiguous, positive);
  Tensor q = mul(log(p), 2.0);  // log saves its input
  {
    NoGradGuard ng;
    p.add_(ones({3}, DType::f64));
  }
  CHECK_THROWS_WITH_AS(sum(q).backward(), doctest::Contains("log backward"), liandan::Error);
}

// ================================================================ comparisons

TEST_CASE("comparisons: values with broadcasting, dtype kept, no gradient") {
  // small integers so that ties (eq, le, ge) actually occur
  Tf small_int = [](double z) { return std::floor(2 * z); };
  struct Cmp {
    const char* name;
    std::function<Tensor(const Tensor&, const Tensor&)> op;
    std::function<bool(double, double)> ref;
  };
  std::vector<Cmp> cmps = {
      {"eq", [](const Tensor& a, const Tensor& b) { return eq(a, b); }, [](double a, double b) { return a == b; }},
      {"ne", [](const Tensor& a, const Tensor& b) { return ne(a, b); }, [](double a, double b) { return a != b; }},
      {"lt", [](const Tensor& a, const Tensor& b) { return lt(a, b); }, [](double a, double b) { return a < b; }},
      {"le", [](const Tensor& a, const Tensor& b) { return le(a, b); }, [](double a, double b) { return a <= b; }},
      {"gt", [](const Tensor& a, const Tensor& b) { return gt(a, b); }, [](double a, double b) { return a > b; }},
      {"ge", [](const Tensor& a, const Tensor& b) { return ge(a, b); }, [](double a, double b) { return a >= b; }},
  };
  for (const Cmp& c : cmps) {
    INFO("op ", std::string(c.name));
    for (DType dt : {DType::f64, DType::f32}) {
      Tensor a = data({3, 1, 5}, small_int).to(dt), b = data({4, 5}, small_int).to(dt).t().contiguous().t();
      a.requires_grad_();
      Tensor y = c.op(a, b);
      CHECK(y.dtype() == dt);
      CHECK(!y.requires_grad());
      CHECK(y.grad_fn() == nullptr);
      check_binary_values(y, a.detach(), b, [&](double u, double v) { return c.ref(u, v) ? 1.0 : 0.0; }, 0, 0);
      int64_t ones_count = int64_t(sum(y).item());
      CHECK(ones_count > 0);              // the data hits both outcomes
      CHECK(ones_count < y.numel());
    }
  }
  // scalar forms
  Tensor x = from_vector(std::vector<double>{-1.0, 0.5, 2.0}, {3}, DType::f64);
  CHECK(gt(x, 0.5).to_vector() == std::vector<double>{0, 0, 1});
  CHECK(lt(x, 0.5).to_vector() == std::vector<double>{1, 0, 0});
  // NaN compares unequal to everything, itself included
  Tensor n = full({1}, kNan, DType::f64);
  CHECK(eq(n, n).item() == 0);
  CHECK(ne(n, n).item() == 1);
  CHECK(lt(n, x).to_vector() == std::vector<double>{0, 0, 0});
  CHECK(ge(n, x).to_vector() == std::vector<double>{0, 0, 0});
  // infinities
  Tensor i = from_vector(std::vector<double>{-kInf, kInf}, {2}, DType::f64);
  CHECK(lt(i, full({2}, 1e308, DType::f64)).to_vector() == std::vector<double>{1, 0});
  CHECK(eq(i, i).to_vector() == std::vector<double>{1, 1});
}

// ================================================================ where, masked_fill

TEST_CASE("where: values, broadcasting of all three operands, gradcheck") {
  Tf bit = [](double z) { return z > 0 ? 1.0 : 0.0; };
  Tensor cond = data({3, 1}, bit);
  cond.set({0, 0}, 1.0);
  cond.set({1, 0}, 0.0);  // both branches are taken
  Tensor a = leaf({1, 4}), b = leaf({3, 4}, Layout::transposed);
  Tensor y = where(cond, a, b);
  REQUIRE(y.shape() == Shape{3, 4});
  for_each_index({3, 4}, [&](const Shape& i) {
    CHECK(y.at(i) == (cond.at({i[0], 0}) != 0 ? a.at({0, i[1]}) : b.at(i)));
  });
  // a non-zero condition other than 1 counts as true
  Tensor c2 = from_vector(std::vector<double>{-2.0, 0.0, 0.5}, {3}, DType::f64);
  CHECK(where(c2, ones({3}, DType::f64), zeros({3}, DType::f64)).to_vector() == std::vector<double>{1, 0, 1});

  Fn f = [&](const std::vector<Tensor>& xs) { return where(cond, xs[0], xs[1]); };
  LD_GRADCHECK(f, {a, b});
  // 3-D broadcast: cond [2,1,4], a [3,4] strided, b 0-d
  Tensor c3 = data({2, 1, 4}, bit);
  LD_GRADCHECK(
      [&](const std::vector<Tensor>& xs) { return where(c3, xs[0], xs[1]); },
      {leaf({3, 4}, Layout::strided), leaf({})});
  // the gradient routes to the selected branch only
  Tensor a2 = leaf({3}), b2 = leaf({3});
  sum(where(c2, a2, b2)).backward();
  CHECK(a2.grad().to_vector() == std::vector<double>{1, 0, 1});
  CHECK(b2.grad().to_vector() == std::vector<double>{0, 1, 0});
}

TEST_CASE("masked_fill: values (including -inf), broadcast mask, gradcheck") {
  Tensor x = leaf({3, 4}, Layout::transposed);
  Tensor mask = from_vector(std::vector<double>{1, 0, 0, 1}, {4}, DType::f64);
  Tensor y = masked_fill(x, mask, -kInf);
  for_each_index({3, 4}, [&](const Shape& i) {
    if (mask.at({i[1]}) != 0) CHECK(y.at(i) == -kInf);
    else CHECK(y.at(i) == x.at(i));
  });
  Tensor y2 = masked_fill(x, mask, 7.5);
  CHECK(y2.at({1, 0}) == 7.5);
  CHECK(y2.at({1, 1}) == x.at({1, 1}));
  Fn f = [&](const std::vector<Tensor>& xs) { return masked_fill(xs[0], mask, 7.5); };
  LD_GRADCHECK(f, {x});
  Tensor x2 = leaf({3, 4});
  sum(masked_fill(x2, mask, 3.0)).backward();
  for_each_index({3, 4}, [&](const Shape& i) { CHECK(x2.grad().at(i) == (mask.at({i[1]}) != 0 ? 0.0 : 1.0)); });
  // a mask with more dims than x broadcasts x up
  Tensor m3 = from_vector(std::vector<double>{0, 1}, {2, 1, 1}, DType::f64);
  CHECK(masked_fill(x.detach(), m3, 0.0).shape() == Shape{2, 3, 4});
}

// ================================================================ dropout

TEST_CASE("dropout: scale, drop fraction, seeding, eval mode, gradient") {
  for (DType dt : {DType::f32, DType::f64}) {
    INFO("dtype ", std::string(dtype_name(dt)));
    for (double p : {0.1, 0.3, 0.5, 0.9}) {
      INFO("p ", p);
      const int64_t n = 200000;
      Tensor x = ones({400, 500}, dt);
      Generator g1(123);
      Tensor y = dropout(x, p, true, g1);
      REQUIRE(y.shape() == x.shape());
      CHECK(y.dtype() == dt);
      std::vector<double> v = y.to_vector();
      double scale = dt == DType::f32 ? double(float(1.0 / (1.0 - p))) : 1.0 / (1.0 - p);
      int64_t zeros_n = 0, other = 0;
      for (double e : v) {
        if (e == 0) ++zeros_n;
        else if (e != scale) ++other;
      }
      CHECK(other == 0);  // kept elements are scaled by exactly 1/(1-p)
      double frac = double(zeros_n) / double(n);
      // binomial std is sqrt(p(1-p)/n) <= 1.2e-3; 0.006 is > 5 sigma
      CHECK(std::fabs(frac - p) < 0.006);
      // the expectation is preserved
      CHECK(std::fabs(sum(y).item() / double(n) - 1.0) < 0.03);

      // same seed -> same mask; a second draw from the same generator -> a different mask
      Generator g2(123);
      CHECK(dropout(x, p, true, g2).to_vector() == v);
      CHECK(dropout(x, p, true, g2).to_vector() != v);
      Generator g3(124);
      CHECK(dropout(x, p, true, g3).to_vector() != v);
    }
    // eval mode and p = 0 are the identity
    Tensor x = data({3, 4}).to(dt);
    Generator g(5);
    CHECK(dropout(x, 0.5, false, g).to_vector() == x.to_vector());
    CHECK(dropout(x, 0.0, true, g).to_vector() == x.to_vector());
  }

  // the gradient is the mask: dL/dx = y / x for sum(y)
  Tensor x = data({8, 16}, positive).requires_grad_();
  Generator g(9);
  Tensor y = dropout(x, 0.4, true, g);
  sum(y).backward();
  std::vector<double> gx = x.grad().to_vector(), yv = y.to_vector(), xv = x.to_vector();
  int64_t bad = 0, dropped = 0;
  for (size_t i = 0; i < gx.size(); ++i) {
    double mask = yv[i] / xv[i];
    if (yv[i] == 0) ++dropped;
    if (std::fabs(gx[i] - mask) > 1e-12 || (mask != 0 && std::fabs(mask - 1 / 0.6) > 1e-12)) ++bad;
  }
  CHECK(bad == 0);
  CHECK(dropped > 0);
  CHECK(dropped < int64_t(gx.size()));

  // gradcheck with a fixed mask (a fresh generator in every call of f), non-contiguous input
  Fn f = [](const std::vector<Tensor>& xs) {
    Generator gg(77);
    return dropout(xs[0], 0.3, true, gg);
  };
  LD_GRADCHECK(f, {leaf({4, 5}, Layout::transposed)});
}

// ================================================================ f32 fast-math accuracy

namespace {

// Largest violation of |y32 - y64| <= rtol |y64| + atol over x, with the input where it happens.
struct Accuracy {
  double worst_ratio = 0;  // max |err| / (rtol |ref| + atol); <= 1 passes
  double at_x = 0, got = 0, want = 0;
  double max_rel = 0;      // max relative error where |ref| >= 1e-30 (reported)
};

Accuracy accuracy(const std::function<Tensor(const Tensor&)>& op, const Tensor& x32, double rtol, double atol) {
  Tensor y32 = op(x32);
  Tensor y64 = op(x32.to(DType::f64));  // same inputs, f64 libm path
  std::vector<double> a = y32.to_vector(), b = y64.to_vector(), xv = x32.to_vector();
  Accuracy acc;
  for (size_t i = 0; i < a.size(); ++i) {
    double want = double(float(b[i]));  // the correctly rounded f32 result (up to double rounding)
    double err = std::fabs(a[i] - want);
    double ratio = err / (rtol * std::fabs(want) + atol);
    if (!(ratio <= acc.worst_ratio)) {
      acc.worst_ratio = std::isnan(ratio) ? 1e300 : ratio;
      acc.at_x = xv[i];
      acc.got = a[i];
      acc.want = want;
    }
    if (std::fabs(want) >= 1e-30) acc.max_rel = std::max(acc.max_rel, err / std::fabs(want));
  }
  return acc;
}

void check_accuracy(const char* name, const std::function<Tensor(const Tensor&)>& op, const Tensor& x32,
                    double rtol, double atol) {
  Accuracy acc = accuracy(op, x32, rtol, atol);
  INFO(std::string(name), ": worst at x = ", acc.at_x, ": f32 ", acc.got, " vs f64 ", acc.want, " (", acc.worst_ratio,
       " x tolerance; max relative error ", acc.max_rel, ")");
  CHECK(acc.worst_ratio <= 1.0);
}

constexpr double kUlp = 1.0 / (1 << 23);  // f32 machine epsilon, 1.19e-7

}  // namespace

TEST_CASE("f32 fast math: exp/tanh/sigmoid/gelu/silu agree with f64 libm over [-20, 20]") {
  Tensor x = linspace(-20, 20, 100001, DType::f32);
  // Tolerances (relative to the f32-rounded f64 result; eps = 2^-23 = 1.19e-7):
  //   exp, tanh: 2 eps relative (measured: 1.0 eps)
  //   sigmoid, silu: 4 eps relative = 4.8e-7 (measured: 1.3 and 1.6 eps)
  //   (plus 1e-37 absolute for results that leave the normal f32 range)
  //   gelu (both forms): 4 eps relative plus 2e-7 * max(1, |x|) absolute (measured: 4.8e-7
  //     absolute at x = -5.5). 0.5 x (1 + erf(x/sqrt2)) cancels
  //     in the negative tail (as in torch); verf is within 1.5e-7 absolute of erf.
  check_accuracy("exp", [](const Tensor& t) { return exp(t); }, x, 2 * kUlp, 1e-37);
  check_accuracy("tanh", [](const Tensor& t) { return tanh(t); }, x, 2 * kUlp, 1e-37);
  check_accuracy("sigmoid", [](const Tensor& t) { return sigmoid(t); }, x, 4 * kUlp, 1e-37);
  check_accuracy("silu", [](const Tensor& t) { return silu(t); }, x, 4 * kUlp, 1e-37);
  for (GeluApprox ap : {GeluApprox::none, GeluApprox::tanh}) {
    std::vector<double> xv = x.to_vector();
    Tensor y32 = gelu(x, ap), y64 = gelu(x.to(DType::f64), ap);
    std::vector<double> a = y32.to_vector(), b = y64.to_vector();
    double worst = 0, wx = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      double r = std::fabs(a[i] - b[i]) / (4 * kUlp * std::fabs(b[i]) + 2e-7 * std::max(1.0, std::fabs(xv[i])));
      if (!(r <= worst)) { worst = std::isnan(r) ? 1e300 : r; wx = xv[i]; }
    }
    INFO("gelu ", std::string(ap == GeluApprox::none ? "none" : "tanh"), ": worst ", worst, " x tolerance at x = ", wx);
    CHECK(worst <= 1.0);
  }
  // small arguments: tanh(x) ~ x, sigmoid ~ 1/2 + x/4, keep full relative precision
  Tensor tiny = linspace(-1e-3, 1e-3, 20001, DType::f32);
  check_accuracy("tanh small", [](const Tensor& t) { return tanh(t); }, tiny, 2 * kUlp, 1e-45);
  check_accuracy("sigmoid small", [](const Tensor& t) { return sigmoid(t); }, tiny, 2 * kUlp, 0);
  check_accuracy("exp small", [](const Tensor& t) { return exp(t); }, tiny, 2 * kUlp, 0);
}

TEST_CASE("f32 fast math: exp over its whole finite range, and at the overflow/underflow edges") {
  // expf is finite up to ln(FLT_MAX) = 88.7228; normal results down to ln(FLT_MIN) = -87.3365.
  Tensor x = linspace(-87.3f, 88.72f, 200001, DType::f32);
  check_accuracy("exp full range", [](const Tensor& t) { return exp(t); }, x, 2 * kUlp, 0);
  Tensor edge = from_vector(std::vector<float>{88.0f, 88.5f, 88.7f, 88.72f, -87.0f, -87.3f}, {6});
  std::vector<double> y = exp(edge).to_vector();
  for (size_t i = 0; i < y.size(); ++i) {
    double want = double(std::exp(float(edge.at({int64_t(i)}))));
    INFO("exp(", edge.at({int64_t(i)}), ") = ", y[i], ", expf: ", want);
    CHECK(std::isfinite(y[i]));
    CHECK(y[i] == doctest::Approx(want).epsilon(4 * kUlp));
  }
  // below ln(FLT_MIN) results are subnormal or 0: absolute error below FLT_MIN
  Tensor under = linspace(-110.0f, -87.4f, 1001, DType::f32);
  std::vector<double> u = exp(under).to_vector(), uv = under.to_vector();
  double worst = 0;
  for (size_t i = 0; i < u.size(); ++i) worst = std::max(worst, std::fabs(u[i] - std::exp(uv[i])));
  CHECK(worst < double(std::numeric_limits<float>::min()));
  // above ln(FLT_MAX): inf
  CHECK(exp(full({1}, 88.73, DType::f32)).item() == kInf);
  CHECK(exp(full({1}, 89.0, DType::f32)).item() == kInf);
}

TEST_CASE("f32/f64 special values: exp, tanh, sigmoid, silu, gelu") {
  for (DType dt : {DType::f32, DType::f64}) {
    INFO("dtype ", std::string(dtype_name(dt)));
    auto e = [&](double v) { return exp(full({}, v, dt)).item(); };
    CHECK(e(-kInf) == 0.0);
    CHECK(e(kInf) == kInf);
    CHECK(std::isnan(e(kNan)));
    CHECK(e(0.0) == 1.0);
    CHECK(e(-100.0) >= 0.0);
    CHECK(e(-100.0) < 1e-43);
    if (dt == DType::f32) {
      CHECK(e(100.0) == kInf);
      CHECK(e(-100.0) < 1e-44);  // below the smallest f32 subnormal, or 0
    } else {
      CHECK(e(100.0) == doctest::Approx(std::exp(100.0)));
    }
    auto th = [&](double v) { return tanh(full({}, v, dt)).item(); };
    CHECK(th(kInf) == 1.0);
    CHECK(th(-kInf) == -1.0);
    CHECK(th(0.0) == 0.0);
    CHECK(th(50.0) == 1.0);
    CHECK(th(-50.0) == -1.0);
    CHECK(std::isnan(th(kNan)));
    CHECK(th(1e-20) == doctest::Approx(1e-20).epsilon(1e-6));
    auto sg = [&](double v) { return sigmoid(full({}, v, dt)).item(); };
    CHECK(sg(-100.0) < 1e-43);
    if (dt == DType::f32) CHECK(sg(-100.0) == 0.0);
    CHECK(sg(100.0) == 1.0);
    CHECK(sg(kInf) == 1.0);
    CHECK(sg(-kInf) == 0.0);
    CHECK(sg(0.0) == 0.5);
    CHECK(std::isnan(sg(kNan)));
    CHECK(silu(full({}, 100.0, dt)).item() == 100.0);
    CHECK(std::fabs(silu(full({}, -100.0, dt)).item()) < 1e-40);
    CHECK(gelu(full({}, 10.0, dt)).item() == 10.0);
    CHECK(std::fabs(gelu(full({}, -10.0, dt)).item()) < 1e-6);
    CHECK(gelu(full({}, 10.0, dt), GeluApprox::tanh).item() == 10.0);
    CHECK(gelu(full({}, 0.0, dt)).item() == 0.0);
    CHECK(softplus(full({}, -100.0, dt)).item() >= 0.0);
    CHECK(softplus(full({}, 100.0, dt)).item() == 100.0);
    CHECK(std::isnan(log(full({}, -1.0, dt)).item()));
    CHECK(log(full({}, 0.0, dt)).item() == -kInf);
    CHECK(rsqrt(full({}, 0.0, dt)).item() == kInf);
  }
}

// ================================================================ errors

TEST_CASE("errors: broadcasting mismatches name the op and both shapes") {
  Tensor a = ones({2, 3}), b = ones({4});
  std::vector<std::pair<const char*, std::function<Tensor()>>> ops = {
      {"add", [&] { return add(a, b); }},     {"sub", [&] { return sub(a, b); }},
      {"mul", [&] { return mul(a, b); }},     {"div", [&] { return div(a, b); }},
      {"pow", [&] { return pow(a, b); }},     {"maximum", [&] { return maximum(a, b); }},
      {"minimum", [&] { return minimum(a, b); }}, {"eq", [&] { return eq(a, b); }},
      {"ne", [&] { return ne(a, b); }},       {"lt", [&] { return lt(a, b); }},
      {"le", [&] { return le(a, b); }},       {"gt", [&] { return gt(a, b); }},
      {"ge", [&] { return ge(a, b); }},       {"where", [&] { return where(ones({2, 3}), a, b); }},
      {"where", [&] { return masked_fill(a, ones({5}), 0.0); }},
  };
  for (auto& [name, fn] : ops) {
    INFO("op ", std::string(name));
    CHECK_THROWS_WITH_AS(fn(), doctest::Contains(name), liandan::Error);
    std::string msg = error_of([&] { fn(); });
    CHECK(msg.find(std::string(name) + ":") == 0);
    CHECK(msg.find("[2, 3]") != std::string::npos);
    CHECK((msg.find("[4]") != std::string::npos || msg.find("[5]") != std::string::npos));
  }
  // the exact message documented in core/error.h
  CHECK(error_of([&] { add(a, b); }) == "add: cannot broadcast shapes [2, 3] and [4] (dim -1: 3 vs 4)");
  CHECK_THROWS_WITH_AS(add(ones({3, 1, 4}), ones({2, 5})), doctest::Contains("[3, 1, 4]"), liandan::Error);
}

TEST_CASE("errors: dtype mismatch, non-floating input, bad arguments") {
  Tensor f32 = ones({2, 3}), f64 = ones({2, 3}, DType::f64);
  for (auto [name, fn] : std::vector<std::pair<const char*, std::function<Tensor()>>>{
           {"add", [&] { return add(f32, f64); }},
           {"mul", [&] { return mul(f32, f64); }},
           {"div", [&] { return div(f64, f32); }},
           {"maximum", [&] { return maximum(f32, f64); }},
           {"lt", [&] { return lt(f32, f64); }},
           {"where", [&] { return where(f32, f32, f64); }}}) {
    INFO("op ", std::string(name));
    std::string msg = error_of([&] { fn(); });
    CHECK(msg.find(name) == 0);
    CHECK(msg.find("dtype mismatch") != std::string::npos);
    CHECK(msg.find("f32") != std::string::npos);
    CHECK(msg.find("f64") != std::string::npos);
  }
  CHECK_THROWS_WITH_AS(where(f32, f64, f64), doctest::Contains("where (condition)"), liandan::Error);
  Tensor i64 = arange(4).to(DType::i64);
  CHECK_THROWS_WITH_AS(exp(i64), "exp: expected a floating dtype (f32 or f64), got i64", liandan::Error);
  CHECK_THROWS_WITH_AS(add(i64, i64), doctest::Contains("add: expected a floating dtype"), liandan::Error);
  CHECK_THROWS_WITH_AS(gelu(i64), doctest::Contains("gelu"), liandan::Error);
  CHECK_THROWS_WITH_AS(add(Tensor(), f32), doctest::Contains("add: undefined"), liandan::Error);
  CHECK_THROWS_WITH_AS(exp(Tensor()), doctest::Contains("exp: undefined"), liandan::Error);
  CHECK_THROWS_WITH_AS(clamp(f32, 1.0, 0.0), doctest::Contains("clamp: min 1 > max 0"), liandan::Error);
  CHECK_THROWS_WITH_AS(softplus(f32, 0.0), doctest::Contains("softplus: beta must be positive"), liandan::Error);
  Generator g(1);
  CHECK_THROWS_WITH_AS(dropout(f32, 1.0, true, g), doctest::Contains("dropout: p must be in [0, 1)"),
                       liandan::Error);
  CHECK_THROWS_WITH_AS(dropout(f32, -0.1, true, g), doctest::Contains("dropout"), liandan::Error);
}

// ------------------------------------------------------------------------------- bias_act

TEST_CASE("bias_act: act(h + bias) in one pass; gradients (f64 gradcheck), thread-count independent") {
  Generator gen(31);
  Tensor h = randn({3, 70, 9}, gen, DType::f64), b = randn({9}, gen, DType::f64);
  for (auto [act, ref] : {std::pair{BiasActivation::none, std::function<Tensor(const Tensor&)>([](const Tensor& z) { return z; })},
                          std::pair{BiasActivation::gelu, std::function<Tensor(const Tensor&)>([](const Tensor& z) { return gelu(z); })},
                          std::pair{BiasActivation::gelu_tanh, std::function<Tensor(const Tensor&)>([](const Tensor& z) {
                                      return gelu(z, GeluApprox::tanh);
                                    })}}) {
    CAPTURE(int(act));
    CHECK(max_abs_diff(bias_act(h, b, act), ref(add(h, b))) <= 1e-14);
    LD_GRADCHECK([act](const std::vector<Tensor>& in) { return bias_act(in[0], in[1], act); },
                 {h.slice(1, 0, 7).detach().requires_grad_(), b.detach().requires_grad_()});
    // the bias gradient sums 210 rows in fixed chunks: the same bits on 1 or 2 threads
    auto grads = [&] {
      Tensor hl = h.detach().requires_grad_(), bl = b.detach().requires_grad_();
      sum(mul(bias_act(hl, bl, act), hl)).backward();
      return std::pair{hl.grad().to_vector(), bl.grad().to_vector()};
    };
    set_num_threads(1);
    auto one = grads();
    set_num_threads(2);
    CHECK(grads() == one);
  }
}

TEST_CASE("bias_act: bf16 h with an f32 bias is the f32 result rounded once; a residual add; errors are named") {
  Generator gen(32);
  Tensor h = randn({40, 12}, gen).to(DType::bf16), b = randn({12}, gen);
  Tensor y = bias_act(h, b, BiasActivation::gelu);
  CHECK(y.dtype() == DType::bf16);
  CHECK(y.to_vector() == gelu(add(h.to(DType::f32), b)).to(DType::bf16).to_vector());
  Tensor hl = h.detach().requires_grad_(), bl = b.detach().requires_grad_();
  Tensor up = randn({40, 12}, gen);
  sum(mul(bias_act(hl, bl, BiasActivation::gelu).to(DType::f32), up)).backward();
  CHECK(hl.grad().dtype() == DType::bf16);
  CHECK(bl.grad().dtype() == DType::f32);
  // dh = bf16(up_rounded · gelu'(h + b)); db = Σ rows of the unrounded products
  Tensor z = add(h.to(DType::f32), b).detach().requires_grad_();
  sum(mul(gelu(z), up.to(DType::bf16).to(DType::f32))).backward();
  CHECK(hl.grad().to_vector() == z.grad().to(DType::bf16).to_vector());
  CHECK(max_abs_diff(bl.grad(), sum(z.grad(), {0})) <= 1e-5 * max(abs(bl.grad())).item());
  // with a residual (the residual stream's f32): y = r + act(h + b) in f32, dr = g, no bias: b = 0
  Tensor r = randn({40, 12}, gen);
  Tensor yr = bias_act(h, b, BiasActivation::gelu, r);
  CHECK(yr.dtype() == DType::f32);
  CHECK(max_abs_diff(yr, add(r, gelu(add(h.to(DType::f32), b)))) <= 1e-6);
  CHECK(bias_act(h, Tensor(), BiasActivation::none, r).to_vector() == add(r, h.to(DType::f32)).to_vector());
  Generator g64(33);
  LD_GRADCHECK([](const std::vector<Tensor>& in) { return bias_act(in[0], in[1], BiasActivation::gelu_tanh, in[2]); },
               {randn({6, 5}, g64, DType::f64).requires_grad_(), randn({5}, g64, DType::f64).requires_grad_(),
                randn({6, 5}, g64, DType::f64).requires_grad_()});
  LD_GRADCHECK([](const std::vector<Tensor>& in) { return bias_act(in[0], Tensor(), BiasActivation::gelu, in[1]); },
               {randn({6, 5}, g64, DType::f64).requires_grad_(), randn({6, 5}, g64, DType::f64).requires_grad_()});
  CHECK(error_of([&] { bias_act(h, b, BiasActivation::none, randn({40, 12}, gen).to(DType::bf16)); }) ==
        "bias_act: residual [40, 12] bf16 must be [40, 12] f32");
  CHECK(error_of([&] { bias_act(h, randn({5}, gen), BiasActivation::none); }).find("bias_act: h [40, 12]") !=
        std::string::npos);
  CHECK(error_of([&] { bias_act(h, b.to(DType::bf16), BiasActivation::none); }) ==
        "bias_act: bias must be f32 for h in bf16, got bf16");
}
