// Reductions (core/ops/reduce.cpp): sum, mean, var, logsumexp, max/min (all and per dim, with
// indices), argmax, cumsum, sum_to.
//   - values against a naive reference (elements grouped by output index, accumulated in double)
//     over single, adjacent, non-adjacent, negative and all dims, keepdim true/false, on
//     contiguous, permuted and step-2-sliced inputs;
//   - f64 gradcheck of every op;
//   - closed forms (exact sums, hand-computed variance, overflow-free logsumexp);
//   - f32 results independent of the thread count (bit-exact);
//   - error messages.
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
using Tf = std::function<double(double)>;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNan = std::numeric_limits<double>::quiet_NaN();

Generator& gen() {
  static Generator g(42);
  return g;
}

Tensor data(const Shape& s, const Tf& tf = nullptr) {
  std::vector<double> v = randn(s, gen(), DType::f64).to_vector();
  if (tf) for (double& x : v) x = tf(x);
  return from_vector(v, s, DType::f64);
}

enum class Layout { contiguous, permuted, strided };
std::string layout_name(Layout l) {
  return l == Layout::contiguous ? "contiguous" : l == Layout::permuted ? "permuted" : "strided";
}

// f64 tensor of logical shape `s` (any rank >= 1) laid out as asked:
//   permuted  a view whose dims run in reverse storage order (permute of a contiguous tensor)
//   strided   every other element of the last dim (slice with step 2)
Tensor make(const Shape& s, Layout lay, const Tf& tf = nullptr) {
  if (lay == Layout::contiguous) return data(s, tf);
  if (lay == Layout::permuted) {
    Shape rs(s.rbegin(), s.rend()), perm;
    for (int64_t d = int64_t(s.size()) - 1; d >= 0; --d) perm.push_back(d);
    return data(rs, tf).permute(perm);
  }
  Shape st = s;
  st.back() *= 2;
  return data(st, tf).slice(-1, 0, st.back(), 2);
}
Tensor leaf(const Shape& s, Layout lay = Layout::contiguous, const Tf& tf = nullptr) {
  Tensor t = make(s, lay, tf);
  t.requires_grad_();
  return t;
}

// The elements of x grouped by output position of a reduction over `dims` (empty = all).
struct Groups {
  Shape keep_shape, drop_shape;
  std::vector<std::vector<double>> g;  // by flat row-major output index
};

Groups groups(const Tensor& x, Shape dims) {
  int64_t nd = x.dim();
  if (dims.empty()) for (int64_t d = 0; d < nd; ++d) dims.push_back(d);
  for (int64_t& d : dims) if (d < 0) d += nd;
  Groups G;
  G.keep_shape = x.shape();
  for (int64_t d : dims) G.keep_shape[size_t(d)] = 1;
  for (int64_t d = 0; d < nd; ++d)
    if (std::find(dims.begin(), dims.end(), d) == dims.end()) G.drop_shape.push_back(x.shape()[size_t(d)]);
  int64_t nout = 1;
  for (int64_t v : G.keep_shape) nout *= v;
  G.g.resize(size_t(nout));
  for_each_index(x.shape(), [&](const Shape& i) {
    int64_t o = 0;
    for (int64_t d = 0; d < nd; ++d) o = o * G.keep_shape[size_t(d)] + (G.keep_shape[size_t(d)] == 1 ? 0 : i[size_t(d)]);
    G.g[size_t(o)].push_back(x.at(i));
  });
  return G;
}

double ref_sum(const std::vector<double>& v) {
  double s = 0;
  for (double e : v) s += e;
  return s;
}
double ref_mean(const std::vector<double>& v) { return ref_sum(v) / double(v.size()); }
double ref_var(const std::vector<double>& v, int64_t correction) {
  double m = ref_mean(v), s = 0;
  for (double e : v) s += (e - m) * (e - m);
  return s / double(int64_t(v.size()) - correction);
}
double ref_lse(const std::vector<double>& v) {
  double m = *std::max_element(v.begin(), v.end()), s = 0;
  for (double e : v) s += std::exp(e - m);
  return m + std::log(s);
}

// Checks y against ref applied to each group, and the output shape.
void check_reduction(const Tensor& y, const Tensor& x, const Shape& dims, bool keepdim,
                     const std::function<double(const std::vector<double>&)>& ref, double tol) {
  Groups G = groups(x, dims);
  REQUIRE(y.shape() == (keepdim ? G.keep_shape : G.drop_shape));
  CHECK(y.dtype() == x.dtype());
  std::vector<double> got = y.to_vector();
  REQUIRE(got.size() == G.g.size());
  int64_t bad = 0;
  std::string first;
  for (size_t k = 0; k < got.size(); ++k) {
    double want = ref(G.g[k]);
    if (!(std::fabs(got[k] - want) <= tol * (1 + std::fabs(want))) && bad++ == 0)
      first = "output " + std::to_string(k) + ": " + std::to_string(got[k]) + " vs " + std::to_string(want);
  }
  INFO(first);
  CHECK(bad == 0);
}

// Runs with `n` threads for a scope, then restores 2 (the test default), even if an assertion throws.
struct ThreadCount {
  explicit ThreadCount(int n) { set_num_threads(n); }
  ~ThreadCount() { set_num_threads(2); }
  ThreadCount(const ThreadCount&) = delete;
  ThreadCount& operator=(const ThreadCount&) = delete;
};

bool bit_equal(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  std::vector<double> u = a.to_vector(), v = b.to_vector();
  for (size_t i = 0; i < u.size(); ++i)
    if (!(u[i] == v[i] || (std::isnan(u[i]) && std::isnan(v[i])))) return false;
  return true;
}

// The dims sets every reduction is checked over, for a 3-D input.
const std::vector<Shape> kDims3 = {{}, {0}, {1}, {2}, {-1}, {-3}, {0, 2}, {-3, -1}, {2, 0}, {0, 1}, {1, 2}, {0, 1, 2}};

struct ReduceOp {
  const char* name;
  std::function<Tensor(const Tensor&, const Shape&, bool)> op;
  std::function<double(const std::vector<double>&)> ref;
};

std::vector<ReduceOp> reduce_ops() {
  return {
      {"sum", [](const Tensor& x, const Shape& d, bool k) { return sum(x, d, k); }, ref_sum},
      {"mean", [](const Tensor& x, const Shape& d, bool k) { return mean(x, d, k); }, ref_mean},
      {"var(correction=1)", [](const Tensor& x, const Shape& d, bool k) { return var(x, d, 1, k); },
       [](const std::vector<double>& v) { return ref_var(v, 1); }},
      {"var(correction=0)", [](const Tensor& x, const Shape& d, bool k) { return var(x, d, 0, k); },
       [](const std::vector<double>& v) { return ref_var(v, 0); }},
      {"logsumexp", [](const Tensor& x, const Shape& d, bool k) { return logsumexp(x, d, k); }, ref_lse},
  };
}

}  // namespace

// ================================================================ sum, mean, var, logsumexp

TEST_CASE("sum/mean/var/logsumexp: values over single, multiple, negative and all dims") {
  for (const ReduceOp& r : reduce_ops()) {
    INFO("op ", std::string(r.name));
    for (Layout lay : {Layout::contiguous, Layout::permuted, Layout::strided}) {
      INFO("layout ", layout_name(lay));
      Tensor x = make({3, 4, 5}, lay);
      if (lay != Layout::contiguous) CHECK(!x.is_contiguous());
      for (const Shape& dims : kDims3) {
        INFO("dims ", shape_str(dims));
        for (bool keepdim : {false, true}) {
          INFO("keepdim ", keepdim);
          check_reduction(r.op(x, dims, keepdim), x, dims, keepdim, r.ref, 1e-12);
          Tensor x32 = x.to(DType::f32);
          Tensor y32 = r.op(x32, dims, keepdim);
          CHECK(y32.dtype() == DType::f32);
          check_reduction(y32, x32, dims, keepdim, r.ref, 1e-5);
        }
      }
    }
    // 4-D, non-adjacent dims in both orders and separated by two
    Tensor x4 = make({2, 3, 4, 5}, Layout::permuted);
    for (const Shape& dims : std::vector<Shape>{{0, 2}, {1, 3}, {0, 3}, {-1, -3}, {0, 1, 3}, {0, 2, 3}})
      for (bool keepdim : {false, true}) {
        INFO("4-D dims ", shape_str(dims), " keepdim ", keepdim);
        check_reduction(r.op(x4, dims, keepdim), x4, dims, keepdim, r.ref, 1e-12);
      }
    // an expanded (stride-0) input and a 1-D input
    Tensor e = data({1, 4}).expand({3, 4});
    check_reduction(r.op(e, {0}, false), e, {0}, false, r.ref, 1e-12);
    check_reduction(r.op(e, {}, false), e, {}, false, r.ref, 1e-12);
    Tensor v = data({7});
    check_reduction(r.op(v, {0}, true), v, {0}, true, r.ref, 1e-12);
    check_reduction(r.op(v, {}, false), v, {}, false, r.ref, 1e-12);
  }
}

TEST_CASE("sum/mean/var/logsumexp: gradcheck (f64) over dims, keepdim and layouts") {
  for (const ReduceOp& r : reduce_ops()) {
    INFO("op ", std::string(r.name));
    for (Layout lay : {Layout::contiguous, Layout::permuted, Layout::strided}) {
      INFO("layout ", layout_name(lay));
      for (const Shape& dims : std::vector<Shape>{{}, {1}, {-1}, {0, 2}, {0, 1}, {2, 0}}) {
        INFO("dims ", shape_str(dims));
        for (bool keepdim : {false, true}) {
          INFO("keepdim ", keepdim);
          Tensor x = leaf({2, 3, 4}, lay);
          Fn f = [&](const std::vector<Tensor>& xs) { return r.op(xs[0], dims, keepdim); };
          LD_GRADCHECK(f, {x});
        }
      }
    }
    {
      INFO("expanded input inside f");
      Fn f = [&](const std::vector<Tensor>& xs) { return r.op(xs[0].expand({3, 2, 4}), {0, 2}, false); };
      LD_GRADCHECK(f, {leaf({2, 1})});  // [2,1] -> [3,2,4]: broadcast over a new and an existing dim
    }
    {
      INFO("4-D non-adjacent dims {1, 3}");
      Fn f = [&](const std::vector<Tensor>& xs) { return r.op(xs[0], {1, 3}, false); };
      LD_GRADCHECK(f, {leaf({2, 2, 3, 3}, Layout::permuted)});
    }
  }
}

TEST_CASE("sum/mean: reductions of 0-d tensors and over zero-size dims") {
  for (DType dt : {DType::f64, DType::f32}) {
    Tensor s = full({}, 2.5, dt);
    CHECK(sum(s).shape() == Shape{});
    CHECK(sum(s).item() == 2.5);
    CHECK(mean(s).item() == 2.5);
    // torch allows dim 0 / -1 on a 0-d tensor and returns it unchanged
    for (int64_t d : {0, -1}) {
      INFO("dim ", d);
      for (bool keepdim : {false, true}) {
        Tensor y = sum(s, {d}, keepdim);
        CHECK(y.shape() == Shape{});
        CHECK(y.item() == 2.5);
        CHECK(mean(s, {d}, keepdim).item() == 2.5);
        CHECK(logsumexp(s, {d}, keepdim).item() == 2.5);
        CHECK(max(s, d, keepdim).first.item() == 2.5);
        CHECK(max(s, d, keepdim).second.item() == 0);
      }
    }
    CHECK(cumsum(s, 0).item() == 2.5);
    // sum over an empty dim is 0; mean over it is an error
    Tensor z = zeros({0, 3}, dt);
    CHECK(sum(z, {0}).to_vector() == std::vector<double>{0, 0, 0});
    CHECK(sum(z).item() == 0);
    CHECK(sum(z, {1}).shape() == Shape{0});
  }
  // the scalar's gradient
  Tensor s = full({}, 1.5, DType::f64).requires_grad_();
  Fn f = [](const std::vector<Tensor>& xs) { return mul(sum(xs[0], {0}), mean(xs[0], {-1}, true)); };
  LD_GRADCHECK(f, {s});
}

TEST_CASE("sum: exact results, f32 accumulates in double") {
  for (DType dt : {DType::f32, DType::f64}) {
    INFO("dtype ", std::string(dtype_name(dt)));
    Tensor o = ones({1000000}, dt);
    CHECK(sum(o).item() == 1e6);
    CHECK(mean(o).item() == 1.0);
    CHECK(var(o).item() == 0.0);
    Tensor m = ones({1000, 1000}, dt);
    CHECK(sum(m).item() == 1e6);
    std::vector<double> rows = sum(m, {1}).to_vector(), cols = sum(m, {0}).to_vector();
    CHECK(std::all_of(rows.begin(), rows.end(), [](double v) { return v == 1000; }));
    CHECK(std::all_of(cols.begin(), cols.end(), [](double v) { return v == 1000; }));
    // arange sums: n(n-1)/2 is exact in double; in f32 each element is exact below 2^24
    Tensor a = arange(0.0, 100000.0, 1.0, dt);
    CHECK(sum(a).item() == (dt == DType::f32 ? double(float(4999950000.0)) : 4999950000.0));
  }
  // 1e7 copies of 0.1f: a float accumulator drifts to ~1.09e6; double accumulation gives the
  // f32-rounded exact sum
  Tensor t = full({10000000}, 0.1, DType::f32);
  double exact = 1e7 * double(0.1f);
  CHECK(sum(t).item() == double(float(exact)));
  CHECK(mean(t).item() == double(float(exact / 1e7)));
  // a few long rows (the block-split path) and many short ones agree with the reference
  Tensor r = full({3, 400000}, 0.1, DType::f32);
  std::vector<double> rs = sum(r, {1}).to_vector();
  for (double v : rs) CHECK(v == double(float(400000 * double(0.1f))));
}

TEST_CASE("var: hand-computed values, correction 0 and 1") {
  Tensor x = from_vector(std::vector<double>{1, 2, 3, 4}, {4}, DType::f64);
  // mean 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5
  CHECK(var(x).item() == doctest::Approx(5.0 / 3.0).epsilon(1e-15));
  CHECK(var(x, {}, 1).item() == doctest::Approx(5.0 / 3.0).epsilon(1e-15));
  CHECK(var(x, {}, 0).item() == 1.25);
  CHECK(var(x, {0}, 0, true).shape() == Shape{1});
  // [[1, 2], [3, 5]]: over dim 0: var1 = (2, 4.5), var0 = (1, 2.25); over dim 1: var1 = (0.5, 2)
  Tensor m = from_vector(std::vector<double>{1, 2, 3, 5}, {2, 2}, DType::f64);
  CHECK(var(m, {0}).to_vector() == std::vector<double>{2, 4.5});
  CHECK(var(m, {0}, 0).to_vector() == std::vector<double>{1, 2.25});
  CHECK(var(m, {1}).to_vector() == std::vector<double>{0.5, 2});
  CHECK(var(m, {-1}, 1, true).shape() == Shape{2, 1});
  // all: mean 2.75, deviations^2 = 3.0625 + 0.5625 + 0.0625 + 5.0625 = 8.75
  CHECK(var(m).item() == doctest::Approx(8.75 / 3).epsilon(1e-15));
  CHECK(var(m, {0, 1}, 0).item() == doctest::Approx(8.75 / 4).epsilon(1e-15));
  // shift invariance: a large offset does not destroy precision (two-pass algorithm)
  Tensor big = from_vector(std::vector<double>{1e8 + 1, 1e8 + 2, 1e8 + 3, 1e8 + 4}, {4}, DType::f64);
  CHECK(var(big).item() == doctest::Approx(5.0 / 3.0).epsilon(1e-12));
  Tensor big32 = from_vector(std::vector<float>{1e4f + 1, 1e4f + 2, 1e4f + 3, 1e4f + 4}, {4});
  CHECK(var(big32).item() == doctest::Approx(5.0 / 3.0).epsilon(1e-6));
  // gradient: d var / dx_i = 2 (x_i - mean) / (n - correction)
  Tensor g = from_vector(std::vector<double>{1, 2, 3, 4}, {4}, DType::f64).requires_grad_();
  var(g).backward();
  std::vector<double> gv = g.grad().to_vector();
  std::vector<double> want = {2 * -1.5 / 3, 2 * -0.5 / 3, 2 * 0.5 / 3, 2 * 1.5 / 3};
  for (size_t i = 0; i < 4; ++i) CHECK(gv[i] == doctest::Approx(want[i]).epsilon(1e-14));
}

TEST_CASE("logsumexp: exact and overflow-free for large magnitudes, infinities") {
  auto lse = [](std::vector<double> v, DType dt) {
    return logsumexp(from_vector(v, {int64_t(v.size())}, dt), {0}).item();
  };
  CHECK(lse({1e4, 1e4}, DType::f64) == 1e4 + std::log(2.0));
  CHECK(lse({-1e4, -1e4}, DType::f64) == -1e4 + std::log(2.0));
  CHECK(lse({1e4, 0}, DType::f64) == 1e4);
  CHECK(lse({1e300, 1e300}, DType::f64) == 1e300);
  CHECK(lse({710, 710}, DType::f64) == doctest::Approx(710 + std::log(2.0)).epsilon(1e-15));
  CHECK(lse({1e4, 1e4}, DType::f32) == double(1e4f + float(std::log(2.0))));
  CHECK(lse({-1e4, -1e4}, DType::f32) == double(-1e4f + float(std::log(2.0))));
  CHECK(lse({100, 100, 100, 100}, DType::f32) == doctest::Approx(100 + std::log(4.0)).epsilon(1e-7));
  // -inf entries are ignored, an all -inf row gives -inf, +inf gives +inf
  CHECK(lse({-kInf, 0}, DType::f64) == 0);
  CHECK(lse({-kInf, -kInf}, DType::f64) == -kInf);
  CHECK(lse({kInf, 0}, DType::f64) == kInf);
  CHECK(lse({-kInf, -kInf}, DType::f32) == -kInf);
  CHECK(std::isnan(lse({kNan, 0}, DType::f64)));
  // the gradient at large values is the softmax, with no NaN
  Tensor x = from_vector(std::vector<double>{1e4, 1e4, 1e4 - std::log(2.0)}, {3}, DType::f64).requires_grad_();
  logsumexp(x, {0}).backward();
  std::vector<double> g = x.grad().to_vector();
  CHECK(g[0] == doctest::Approx(0.4).epsilon(1e-12));
  CHECK(g[1] == doctest::Approx(0.4).epsilon(1e-12));
  CHECK(g[2] == doctest::Approx(0.2).epsilon(1e-10));
  // per row, with rows of very different magnitude
  Tensor rows = from_vector(std::vector<double>{1e4, 1e4, -1e4, -1e4, 0, 0}, {3, 2}, DType::f64);
  std::vector<double> lr = logsumexp(rows, {1}).to_vector();
  CHECK(lr[0] == 1e4 + std::log(2.0));
  CHECK(lr[1] == -1e4 + std::log(2.0));
  CHECK(lr[2] == std::log(2.0));
  // gradcheck with large values (the max subtraction must not leak into the gradient)
  Tensor lg = leaf({3, 4}, Layout::contiguous, [](double z) { return 1000 + 3 * z; });
  Fn f = [](const std::vector<Tensor>& xs) { return logsumexp(xs[0], {1}); };
  LD_GRADCHECK(f, {lg}, GradcheckOptions{1e-6, 1e-6, 1e-5});
}

// ================================================================ max, min, argmax

TEST_CASE("max/min over all elements: values, tie-sharing gradient, gradcheck") {
  for (Layout lay : {Layout::contiguous, Layout::permuted, Layout::strided}) {
    INFO("layout ", layout_name(lay));
    Tensor x = make({3, 4, 5}, lay);
    std::vector<double> v = x.to_vector();
    CHECK(max(x).item() == *std::max_element(v.begin(), v.end()));
    CHECK(min(x).item() == *std::min_element(v.begin(), v.end()));
    CHECK(max(x).shape() == Shape{});
    Tensor x32 = x.to(DType::f32);
    CHECK(max(x32).item() == double(float(*std::max_element(v.begin(), v.end()))));
    Tensor xl = leaf({3, 4}, lay);
    LD_GRADCHECK([](const std::vector<Tensor>& xs) { return max(xs[0]); }, {xl});
    LD_GRADCHECK([](const std::vector<Tensor>& xs) { return min(xs[0]); }, {xl});
  }
  // ties share the gradient evenly (torch's rule for the all-reduce)
  Tensor t = from_vector(std::vector<double>{1, 3, 3, -2, -2, -2}, {2, 3}, DType::f64).requires_grad_();
  max(t).backward();
  CHECK(t.grad().to_vector() == std::vector<double>{0, 0.5, 0.5, 0, 0, 0});
  t.set_grad(Tensor());
  mul(min(t), 3.0).backward();
  CHECK(t.grad().to_vector() == std::vector<double>{0, 0, 0, 1, 1, 1});
  // NaN wins
  Tensor n = from_vector(std::vector<double>{1, kNan, 3}, {3}, DType::f64);
  CHECK(std::isnan(max(n).item()));
  CHECK(std::isnan(min(n).item()));
  // infinities
  Tensor i = from_vector(std::vector<double>{-kInf, 0, kInf}, {3}, DType::f64);
  CHECK(max(i).item() == kInf);
  CHECK(min(i).item() == -kInf);
}

TEST_CASE("max/min/argmax per dim: values, indices, keepdim, negative dims, gradcheck") {
  for (Layout lay : {Layout::contiguous, Layout::permuted, Layout::strided}) {
    INFO("layout ", layout_name(lay));
    Tensor x = make({3, 4, 5}, lay);
    for (int64_t dim : {0, 1, 2, -1, -2, -3}) {
      for (bool keepdim : {false, true}) {
        INFO("dim ", dim, " keepdim ", keepdim);
        auto [mx, imx] = max(x, dim, keepdim);
        auto [mn, imn] = min(x, dim, keepdim);
        Tensor am = argmax(x, dim, keepdim);
        CHECK(imx.dtype() == DType::i64);
        CHECK(am.dtype() == DType::i64);
        Groups G = groups(x, {dim});
        Shape want_shape = keepdim ? G.keep_shape : G.drop_shape;
        REQUIRE(mx.shape() == want_shape);
        REQUIRE(imx.shape() == want_shape);
        REQUIRE(mn.shape() == want_shape);
        REQUIRE(am.shape() == want_shape);
        std::vector<double> vmx = mx.to_vector(), vimx = imx.to_vector(), vmn = mn.to_vector(),
                            vimn = imn.to_vector(), vam = am.to_vector();
        int64_t bad = 0;
        for (size_t k = 0; k < G.g.size(); ++k) {
          const auto& g = G.g[k];
          auto itx = std::max_element(g.begin(), g.end());
          auto itn = std::min_element(g.begin(), g.end());
          bad += vmx[k] != *itx || vimx[k] != double(itx - g.begin()) || vam[k] != vimx[k];
          bad += vmn[k] != *itn || vimn[k] != double(itn - g.begin());
        }
        CHECK(bad == 0);
        // f32 picks the same indices
        CHECK(max(x.to(DType::f32), dim, keepdim).second.to_vector() == vimx);
      }
    }
    for (int64_t dim : {0, 1, -1}) {
      INFO("gradcheck dim ", dim);
      Tensor xl = leaf({3, 4, 2}, lay);
      LD_GRADCHECK([dim](const std::vector<Tensor>& xs) { return max(xs[0], dim).first; }, {xl});
      LD_GRADCHECK([dim](const std::vector<Tensor>& xs) { return min(xs[0], dim, true).first; }, {xl});
    }
  }
  // the gradient goes to the (first) selected element only
  Tensor t = from_vector(std::vector<double>{1, 5, 5, 0, -1, 2}, {2, 3}, DType::f64).requires_grad_();
  auto [v, i] = max(t, 1);
  CHECK(v.to_vector() == std::vector<double>{5, 2});
  CHECK(i.to_vector() == std::vector<double>{1, 2});  // first of the tied maxima
  sum(v).backward();
  CHECK(t.grad().to_vector() == std::vector<double>{0, 1, 0, 0, 0, 1});
  CHECK(argmax(t, 0).to_vector() == std::vector<double>{0, 0, 0});
  CHECK(min(t, 0).second.to_vector() == std::vector<double>{1, 1, 1});
  // NaN wins and its index is reported
  Tensor n = from_vector(std::vector<double>{1, kNan, 3, kNan}, {4}, DType::f64);
  CHECK(std::isnan(max(n, 0).first.item()));
  CHECK(max(n, 0).second.item() == 1);
  CHECK(argmax(n, 0).item() == 1);
  CHECK(min(n, 0).second.item() == 1);
  // argmax records no graph
  Tensor r = leaf({3, 4});
  CHECK(!argmax(r, 1).requires_grad());
  CHECK(max(r, 1).first.requires_grad());
  CHECK(!max(r, 1).second.requires_grad());
}

// ================================================================ cumsum

TEST_CASE("cumsum: values and gradcheck over every dim") {
  for (Layout lay : {Layout::contiguous, Layout::permuted, Layout::strided}) {
    INFO("layout ", layout_name(lay));
    Tensor x = make({3, 4, 5}, lay);
    for (int64_t dim : {0, 1, 2, -1, -3}) {
      INFO("dim ", dim);
      for (DType dt : {DType::f64, DType::f32}) {
        Tensor xt = x.to(dt);
        Tensor y = cumsum(xt, dim);
        REQUIRE(y.shape() == x.shape());
        CHECK(y.dtype() == dt);
        int64_t d = dim < 0 ? dim + 3 : dim;
        int64_t bad = 0;
        for_each_index(x.shape(), [&](const Shape& i) {
          double want = 0;
          Shape j = i;
          for (int64_t k = 0; k <= i[size_t(d)]; ++k) {
            j[size_t(d)] = k;
            want += xt.at(j);
          }
          if (std::fabs(y.at(i) - want) > (dt == DType::f64 ? 1e-12 : 1e-5)) ++bad;
        });
        CHECK(bad == 0);
      }
      Tensor xl = leaf({3, 4, 2}, lay);
      LD_GRADCHECK([dim](const std::vector<Tensor>& xs) { return cumsum(xs[0], dim); }, {xl});
    }
  }
  CHECK(cumsum(from_vector(std::vector<double>{1, 2, 3, 4}, {4}, DType::f64), 0).to_vector() ==
        std::vector<double>{1, 3, 6, 10});
  // the gradient of cumsum is the reversed cumsum of the incoming gradient
  Tensor t = from_vector(std::vector<double>{1, 2, 3, 4}, {4}, DType::f64).requires_grad_();
  sum(cumsum(t, 0)).backward();
  CHECK(t.grad().to_vector() == std::vector<double>{4, 3, 2, 1});
  // expanded input inside f
  LD_GRADCHECK([](const std::vector<Tensor>& xs) { return cumsum(xs[0].expand({3, 4}), 0); }, {leaf({4})});
}

// ================================================================ sum_to

TEST_CASE("sum_to: values, gradcheck, errors") {
  Tensor x = make({2, 3, 4}, Layout::permuted);
  for (const Shape& to : std::vector<Shape>{{2, 3, 4}, {3, 4}, {4}, {1, 4}, {3, 1}, {2, 1, 4}, {2, 3, 1}, {1, 1, 1}, {}}) {
    INFO("to ", shape_str(to));
    Tensor y = sum_to(x, to);
    REQUIRE(y.shape() == to);
    // reference: sum every x[i] into the target index it broadcasts from
    std::vector<double> want(size_t(std::max<int64_t>(1, shape_numel(to))), 0.0);
    int64_t lead = x.dim() - int64_t(to.size());
    for_each_index(x.shape(), [&](const Shape& i) {
      int64_t o = 0;
      for (size_t d = 0; d < to.size(); ++d) o = o * to[d] + (to[d] == 1 ? 0 : i[size_t(lead) + d]);
      want[size_t(o)] += x.at(i);
    });
    std::vector<double> got = y.to_vector();
    for (size_t k = 0; k < got.size(); ++k) CHECK(got[k] == doctest::Approx(want[k]).epsilon(1e-12));
    LD_GRADCHECK([to](const std::vector<Tensor>& xs) { return sum_to(xs[0], to); }, {leaf({2, 3, 4}, Layout::strided)});
  }
  CHECK_THROWS_WITH_AS(sum_to(x, {5}), "sum_to: cannot sum shape [2, 3, 4] to [5]", liandan::Error);
  CHECK_THROWS_WITH_AS(sum_to(x, {1, 2, 3, 4}), doctest::Contains("sum_to: cannot sum shape [2, 3, 4] to [1, 2, 3, 4]"),
                       liandan::Error);
}

// ================================================================ thread-count independence

TEST_CASE("f32 reductions are bit-identical on 1 and 2 threads") {
  Generator g(7);
  Tensor flat = randn({1 << 21}, g);                      // one long row: block-split path
  Tensor rows3 = randn({3, 300000}, g);                    // few long rows: block-split path
  Tensor cols = randn({3000, 200}, g);                     // column sums over dim 0
  Tensor many = randn({20000, 17}, g);                     // many short rows
  Tensor cube = randn({64, 50, 40}, g).permute({2, 0, 1});  // non-contiguous, non-adjacent dims
  auto run = [&] {
    return std::vector<Tensor>{
        sum(flat),
        mean(flat),
        var(flat),
        sum(rows3, {1}),
        sum(rows3, {0}),
        sum(cols, {0}),
        sum(cols, {1}),
        mean(cols, {0}),
        sum(many, {1}),
        sum(many),
        sum(cube, {0, 2}),
        var(cube, {1}),
        var(cube, {0, 2}, 0, true),
        logsumexp(cols, {1}),
        logsumexp(cube, {0, 2}),
        logsumexp(flat, {0}),
        max(cols, 0).first,
        max(cols, 1).second,
        min(cube, 1).first,
        max(flat),
        cumsum(cols, 0),
        cumsum(many, 1),
        sum_to(cols, {1, 200}),
    };
  };
  std::vector<Tensor> one;
  {
    ThreadCount t(1);
    REQUIRE(get_num_threads() == 1);
    one = run();
  }
  REQUIRE(get_num_threads() == 2);
  std::vector<Tensor> two = run();
  for (size_t i = 0; i < one.size(); ++i) {
    INFO("result ", i);
    CHECK(bit_equal(one[i], two[i]));
  }
  // and they are accurate: compare the f32 results with f64
  CHECK(sum(flat).item() == doctest::Approx(sum(flat.to(DType::f64)).item()).epsilon(1e-6));
  CHECK(sum(cube, {0, 2}).to_vector()[3] ==
        doctest::Approx(sum(cube.to(DType::f64), {0, 2}).to_vector()[3]).epsilon(1e-5));
}

// ================================================================ errors

TEST_CASE("reductions: errors name the op, the dims and the shape") {
  Tensor x = ones({2, 3, 4});
  CHECK_THROWS_WITH_AS(sum(x, {3}), "sum: dim 3 out of range for a tensor with 3 dims (expected -3 <= dim < 3)",
                       liandan::Error);
  CHECK_THROWS_WITH_AS(sum(x, {-4}), doctest::Contains("sum: dim -4 out of range"), liandan::Error);
  CHECK_THROWS_WITH_AS(mean(x, {0, 5}), doctest::Contains("mean: dim 5 out of range"), liandan::Error);
  CHECK_THROWS_WITH_AS(var(x, {7}), doctest::Contains("var: dim 7 out of range"), liandan::Error);
  CHECK_THROWS_WITH_AS(logsumexp(x, {3}), doctest::Contains("logsumexp: dim 3 out of range"), liandan::Error);
  CHECK_THROWS_WITH_AS(max(x, 3), doctest::Contains("max: dim 3 out of range"), liandan::Error);
  CHECK_THROWS_WITH_AS(min(x, -4), doctest::Contains("min: dim -4 out of range"), liandan::Error);
  CHECK_THROWS_WITH_AS(argmax(x, 3), doctest::Contains("argmax: dim 3 out of range"), liandan::Error);
  CHECK_THROWS_WITH_AS(cumsum(x, 3), doctest::Contains("cumsum: dim 3 out of range"), liandan::Error);
  CHECK_THROWS_WITH_AS(sum(x, {1, -2}), "sum: repeated dim in [1, -2]", liandan::Error);
  CHECK_THROWS_WITH_AS(var(x, {0, 0}), doctest::Contains("var: repeated dim"), liandan::Error);
  CHECK_THROWS_WITH_AS(var(ones({1, 3}), {0}), "var: 1 elements with correction 1 (shape [1, 3])", liandan::Error);
  CHECK_NOTHROW(var(ones({1, 3}), {0}, 0));
  CHECK_THROWS_WITH_AS(max(ones({0, 3})), "max: cannot reduce an empty tensor of shape [0, 3]", liandan::Error);
  CHECK_THROWS_WITH_AS(min(ones({2, 0}), 1), doctest::Contains("min: cannot reduce an empty tensor of shape [2, 0]"),
                       liandan::Error);
  CHECK_THROWS_WITH_AS(mean(ones({0, 3}), {0}), doctest::Contains("mean: reducing over zero elements (shape [0, 3]"),
                       liandan::Error);
  Tensor i = arange(6).to(DType::i64);
  CHECK_THROWS_WITH_AS(sum(i), "sum: expected a floating dtype (f32 or f64), got i64", liandan::Error);
  CHECK_THROWS_WITH_AS(cumsum(i, 0), doctest::Contains("cumsum: expected a floating dtype"), liandan::Error);
  CHECK_THROWS_WITH_AS(sum(Tensor()), doctest::Contains("sum: undefined"), liandan::Error);
}
