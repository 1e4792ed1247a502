// softmax and log_softmax (core/ops/softmax.cpp):
//   - values against a reference in double over the last, middle and first dims, on contiguous,
//     permuted, step-2-sliced and expanded inputs;
//   - rows sum to 1, log_softmax == log(softmax), stability for huge and infinite inputs;
//   - f64 gradcheck, f32 accuracy against f64, thread-count independence, error messages.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "core/gradcheck.h"
#include "core/ops.h"
#include "core/threads.h"
#include "op_test_helpers.h"

using namespace liandan;

using liandan::testing::for_each_index;

namespace {

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

constexpr double kInf = std::numeric_limits<double>::infinity();

Generator& gen() {
  static Generator g(42);
  return g;
}

Tensor rnd(const Shape& s, double scale = 1.0) {
  Tensor t = randn(s, gen(), DType::f64);
  return scale == 1.0 ? t : mul(t, scale);
}

enum class Layout { contiguous, permuted, strided };
std::string layout_name(Layout l) {
  return l == Layout::contiguous ? "contiguous" : l == Layout::permuted ? "permuted" : "strided";
}

Tensor make(const Shape& s, Layout lay, double scale = 1.0) {
  if (lay == Layout::contiguous) return rnd(s, scale);
  if (lay == Layout::permuted) {
    Shape rs(s.rbegin(), s.rend()), perm;
    for (int64_t d = int64_t(s.size()) - 1; d >= 0; --d) perm.push_back(d);
    return rnd(rs, scale).permute(perm);
  }
  Shape st = s;
  st.back() *= 2;
  return rnd(st, scale).slice(-1, 0, st.back(), 2);
}
Tensor leaf(const Shape& s, Layout lay = Layout::contiguous) {
  Tensor t = make(s, lay);
  t.requires_grad_();
  return t;
}

// Reference (log_)softmax of x along dim, in double, in row-major order of x.
std::vector<double> ref_softmax(const Tensor& x, int64_t dim, bool log) {
  std::vector<double> out;
  if (x.dim() == 0) return {log ? 0.0 : 1.0};
  int64_t d = dim < 0 ? dim + x.dim() : dim;
  for_each_index(x.shape(), [&](const Shape& i) {
    Shape j = i;
    double m = -kInf;
    for (int64_t k = 0; k < x.shape()[size_t(d)]; ++k) {
      j[size_t(d)] = k;
      m = std::max(m, x.at(j));
    }
    double s = 0;
    for (int64_t k = 0; k < x.shape()[size_t(d)]; ++k) {
      j[size_t(d)] = k;
      s += std::exp(x.at(j) - m);
    }
    out.push_back(log ? x.at(i) - m - std::log(s) : std::exp(x.at(i) - m) / s);
  });
  return out;
}

void check_values(const Tensor& x, int64_t dim, bool log, double tol) {
  Tensor y = log ? log_softmax(x, dim) : softmax(x, dim);
  REQUIRE(y.shape() == x.shape());
  CHECK(y.dtype() == x.dtype());
  std::vector<double> got = y.to_vector(), want = ref_softmax(x, dim, log);
  int64_t bad = 0;
  std::string first;
  for (size_t i = 0; i < got.size(); ++i)
    if (!(std::fabs(got[i] - want[i]) <= tol * (1 + std::fabs(want[i]))) && bad++ == 0)
      first = "element " + std::to_string(i) + ": " + std::to_string(got[i]) + " vs " + std::to_string(want[i]);
  INFO(first);
  CHECK(bad == 0);
}

// max over the rows along `dim` of |sum(softmax) - 1|
double row_sum_error(const Tensor& y, int64_t dim) {
  std::vector<double> s = sum(y.to(DType::f64), {dim}).to_vector();
  double e = 0;
  for (double v : s) e = std::max(e, std::fabs(v - 1));
  return e;
}

// Runs with `n` threads for a scope, then restores 2 (the test default), even if an assertion throws.
struct ThreadCount {
  explicit ThreadCount(int n) { set_num_threads(n); }
  ~ThreadCount() { set_num_threads(2); }
  ThreadCount(const ThreadCount&) = delete;
  ThreadCount& operator=(const ThreadCount&) = delete;
};

bool bit_equal(const Tensor& a, const Tensor& b) { return a.shape() == b.shape() && a.to_vector() == b.to_vector(); }

}  // namespace

TEST_CASE("softmax/log_softmax: values over last, middle and first dims, every layout") {
  for (bool log : {false, true}) {
    INFO(std::string(log ? "log_softmax" : "softmax"));
    for (Layout lay : {Layout::contiguous, Layout::permuted, Layout::strided}) {
      INFO("layout ", layout_name(lay));
      Tensor x = make({3, 4, 5}, lay, 3.0);
      for (int64_t dim : {0, 1, 2, -1, -2, -3}) {
        INFO("dim ", dim);
        check_values(x, dim, log, 1e-13);
        check_values(x.to(DType::f32), dim, log, 2e-6);
      }
    }
    Tensor e = rnd({1, 6}).expand({4, 6});  // stride-0 rows
    check_values(e, -1, log, 1e-13);
    check_values(e, 0, log, 1e-13);         // softmax over identical values: uniform
    check_values(rnd({7}), 0, log, 1e-13);
    check_values(rnd({7}), -1, log, 1e-13);
    check_values(rnd({1, 1, 9}), 1, log, 1e-13);  // a size-1 dim: softmax is 1, log_softmax 0
    Tensor s = full({}, 3.0, DType::f64);
    Tensor ys = log ? log_softmax(s, 0) : softmax(s, -1);
    CHECK(ys.shape() == Shape{});
    CHECK(ys.item() == (log ? 0.0 : 1.0));
  }
}

TEST_CASE("softmax: rows sum to 1 and log_softmax == log(softmax)") {
  for (DType dt : {DType::f64, DType::f32}) {
    INFO("dtype ", std::string(dtype_name(dt)));
    Tensor x = make({6, 50, 7}, Layout::permuted, 5.0).to(dt);
    for (int64_t dim : {0, 1, 2}) {
      INFO("dim ", dim);
      Tensor y = softmax(x, dim);
      CHECK(row_sum_error(y, dim) < (dt == DType::f64 ? 1e-14 : 1e-6));
      std::vector<double> yv = y.to_vector();
      CHECK(std::all_of(yv.begin(), yv.end(), [](double v) { return v >= 0 && v <= 1; }));
      std::vector<double> a = log_softmax(x, dim).to_vector(), b = log(y).to_vector();
      double worst = 0;
      for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]) / (1 + std::fabs(b[i])));
      CHECK(worst < (dt == DType::f64 ? 1e-13 : 2e-6));
      // exp(log_softmax) sums to 1 too
      CHECK(row_sum_error(exp(log_softmax(x, dim)), dim) < (dt == DType::f64 ? 1e-14 : 1e-6));
    }
  }
}

TEST_CASE("softmax: stable for huge inputs, exact at the extremes, -inf masks") {
  for (DType dt : {DType::f64, DType::f32}) {
    INFO("dtype ", std::string(dtype_name(dt)));
    auto v = [&](std::vector<double> x) { return from_vector(x, {int64_t(x.size())}, dt); };
    CHECK(softmax(v({1000, 0}), 0).to_vector() == std::vector<double>{1, 0});
    CHECK(softmax(v({-1000, 0}), 0).to_vector() == std::vector<double>{0, 1});
    CHECK(log_softmax(v({1000, 0}), 0).to_vector() == std::vector<double>{0, -1000});
    CHECK(softmax(v({1e4, 1e4, 1e4, 1e4}), 0).to_vector() == std::vector<double>{0.25, 0.25, 0.25, 0.25});
    CHECK(softmax(v({-1e4, -1e4}), 0).to_vector() == std::vector<double>{0.5, 0.5});
    std::vector<double> ls = log_softmax(v({1e4, 1e4}), 0).to_vector();
    // (x - max) - log(sum): full precision even where ulp(x) is 1e-3
    CHECK(ls[0] == doctest::Approx(-std::log(2.0)).epsilon(1e-7));
    CHECK(ls[1] == ls[0]);
    std::vector<double> ls2 = log_softmax(v({1e4, 1e4 - 1}), 0).to_vector();
    CHECK(ls2[0] == doctest::Approx(-std::log1p(std::exp(-1.0))).epsilon(1e-7));
    CHECK(ls2[1] == doctest::Approx(-1 - std::log1p(std::exp(-1.0))).epsilon(1e-7));
    // a masked (-inf) entry gets probability 0 and log-probability -inf; the rest renormalize
    std::vector<double> m = softmax(v({0, -kInf, 1}), 0).to_vector();
    CHECK(m[0] == doctest::Approx(1 / (1 + std::exp(1.0))));
    CHECK(m[1] == 0);
    CHECK(m[2] == doctest::Approx(std::exp(1.0) / (1 + std::exp(1.0))));
    std::vector<double> lm = log_softmax(v({0, -kInf, 1}), 0).to_vector();
    CHECK(lm[1] == -kInf);
    CHECK(lm[0] == doctest::Approx(-std::log1p(std::exp(1.0))));
    // a row of -inf only is NaN (torch gives NaN too)
    std::vector<double> all = softmax(v({-kInf, -kInf}), 0).to_vector();
    CHECK(std::isnan(all[0]));
    // non-last dim: the strided row loop
    Tensor col = from_vector(std::vector<double>{1000, 0, 0, 0}, {2, 2}, dt);
    CHECK(softmax(col, 0).to_vector() == std::vector<double>{1, 0.5, 0, 0.5});
  }
  // the gradient through masked and saturated entries is finite
  Tensor x = from_vector(std::vector<double>{0, -kInf, 1, 1000}, {4}, DType::f64).requires_grad_();
  Tensor w = from_vector(std::vector<double>{1, 2, 3, 4}, {4}, DType::f64);
  sum(mul(softmax(x, 0), w)).backward();
  std::vector<double> g = x.grad().to_vector();
  CHECK(std::all_of(g.begin(), g.end(), [](double e) { return std::isfinite(e); }));
  CHECK(g[1] == 0);
  Tensor x2 = from_vector(std::vector<double>{0, -kInf, 1}, {3}, DType::f64).requires_grad_();
  sum(mul(log_softmax(x2, 0), from_vector(std::vector<double>{1, 0, 2}, {3}, DType::f64))).backward();
  std::vector<double> g2 = x2.grad().to_vector();
  CHECK(std::all_of(g2.begin(), g2.end(), [](double e) { return std::isfinite(e); }));
  CHECK(g2[1] == 0);
  // d/dx sum(w * log_softmax) = w - softmax * sum(w)
  double p0 = 1 / (1 + std::exp(1.0));
  CHECK(g2[0] == doctest::Approx(1 - 3 * p0).epsilon(1e-12));
}

TEST_CASE("softmax/log_softmax: gradcheck (f64) over dims and layouts") {
  for (bool log : {false, true}) {
    INFO(std::string(log ? "log_softmax" : "softmax"));
    auto op = [log](const Tensor& t, int64_t d) { return log ? log_softmax(t, d) : softmax(t, d); };
    for (Layout lay : {Layout::contiguous, Layout::permuted, Layout::strided}) {
      INFO("layout ", layout_name(lay));
      for (int64_t dim : {0, 1, 2, -1, -2}) {
        INFO("dim ", dim);
        Tensor x = leaf({2, 3, 4}, lay);
        LD_GRADCHECK([&](const std::vector<Tensor>& xs) { return op(xs[0], dim); }, {x});
      }
    }
    // 1-D, 0-d, and an expanded input built inside f
    LD_GRADCHECK([&](const std::vector<Tensor>& xs) { return op(xs[0], 0); }, {leaf({5})});
    LD_GRADCHECK([&](const std::vector<Tensor>& xs) { return op(xs[0], 0); }, {leaf({})});
    LD_GRADCHECK([&](const std::vector<Tensor>& xs) { return op(xs[0].expand({3, 4}), 1); }, {leaf({1, 4})});
    LD_GRADCHECK([&](const std::vector<Tensor>& xs) { return op(xs[0].expand({3, 4}), 0); }, {leaf({4})});
    // a non-contiguous incoming gradient (the output is transposed before use)
    Tensor w = rnd({4, 3});
    LD_GRADCHECK([&](const std::vector<Tensor>& xs) { return mul(op(xs[0], 1).t(), w); }, {leaf({3, 4})});
    // composed: cross-entropy-like log_softmax + gather-free NLL via a one-hot mask
    Tensor onehot = zeros({3, 4}, DType::f64);
    for (int64_t i = 0; i < 3; ++i) onehot.set({i, (i * 2) % 4}, 1.0);
    LD_GRADCHECK([&](const std::vector<Tensor>& xs) { return neg(sum(mul(op(xs[0], -1), onehot))); },
               {leaf({3, 4}, Layout::permuted)});
  }
}

TEST_CASE("softmax f32: accuracy against f64 on long rows") {
  // f32 softmax against the f64 result of the same inputs: relative error below 1e-5 for
  // probabilities above 1e-30 (exp is within 1 ulp; a row sum of up to 4096 terms accumulates
  // rounding error), and log_softmax within 2e-5 absolute.
  for (int64_t n : {10, 1000, 4096}) {
    for (int64_t dim : {0, 1}) {
      INFO("n ", n, " dim ", dim);
      Tensor x64 = dim == 1 ? rnd({8, n}, 4.0) : rnd({n, 8}, 4.0);
      Tensor x32 = x64.to(DType::f32);
      Tensor x32r = x32.to(DType::f64);  // compare on the same (f32-rounded) inputs
      std::vector<double> a = softmax(x32, dim).to_vector(), b = softmax(x32r, dim).to_vector();
      std::vector<double> la = log_softmax(x32, dim).to_vector(), lb = log_softmax(x32r, dim).to_vector();
      double worst = 0, worst_log = 0;
      for (size_t i = 0; i < a.size(); ++i) {
        if (b[i] > 1e-30) worst = std::max(worst, std::fabs(a[i] - b[i]) / b[i]);
        worst_log = std::max(worst_log, std::fabs(la[i] - lb[i]));
      }
      INFO("worst relative error ", worst, ", worst log error ", worst_log);
      CHECK(worst < 1e-5);
      CHECK(worst_log < 2e-5);
    }
  }
}

TEST_CASE("softmax: f32 results are bit-identical on 1 and 2 threads") {
  Generator g(11);
  Tensor a = mul(randn({4000, 64}, g), 3.0);   // many rows: parallel over rows (last dim)
  Tensor b = mul(randn({64, 3000}, g), 3.0);   // softmax over dim 0: strided rows
  Tensor c = mul(randn({16, 100, 40}, g), 3.0).permute({1, 0, 2});
  auto run = [&] {
    return std::vector<Tensor>{softmax(a, -1), log_softmax(a, -1), softmax(b, 0), log_softmax(b, 0),
                               softmax(c, 1), log_softmax(c, 0)};
  };
  std::vector<Tensor> one;
  Tensor al = a.clone().requires_grad_(), g1;
  {
    ThreadCount t(1);
    REQUIRE(get_num_threads() == 1);
    one = run();
    sum(mul(softmax(al, -1), a)).backward();  // the backward too
    g1 = al.grad();
  }
  REQUIRE(get_num_threads() == 2);
  std::vector<Tensor> two = run();
  al.set_grad(Tensor());
  sum(mul(softmax(al, -1), a)).backward();
  for (size_t i = 0; i < one.size(); ++i) {
    INFO("result ", i);
    CHECK(bit_equal(one[i], two[i]));
  }
  CHECK(bit_equal(g1, al.grad()));
}

TEST_CASE("softmax: errors") {
  Tensor x = ones({2, 3});
  CHECK_THROWS_WITH_AS(softmax(x, 2), "softmax: dim 2 out of range for a tensor with 2 dims (expected -2 <= dim < 2)",
                       liandan::Error);
  CHECK_THROWS_WITH_AS(softmax(x, -3), doctest::Contains("softmax: dim -3 out of range"), liandan::Error);
  CHECK_THROWS_WITH_AS(log_softmax(x, 5), doctest::Contains("log_softmax: dim 5 out of range"), liandan::Error);
  Tensor i = x.to(DType::i64);
  CHECK_THROWS_WITH_AS(softmax(i, 0), "softmax: expected a floating dtype (f32 or f64), got i64", liandan::Error);
  CHECK_THROWS_WITH_AS(log_softmax(i, 0), doctest::Contains("log_softmax: expected a floating dtype"), liandan::Error);
  CHECK_THROWS_WITH_AS(softmax(Tensor(), 0), doctest::Contains("softmax: undefined"), liandan::Error);
}
