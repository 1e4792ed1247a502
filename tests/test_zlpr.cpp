// ZLPR and the n×m losses (losses/zlpr.cpp), against shared/docs/seeds-math.md §3-§4 and
// algorithms.md §2:
//   - hard ZLPR: the closed-form oracles Z1/Z2, the naive formula at moderate logits, exactness and
//     finiteness at |s| = 1e4, the threshold-class identities, the BCE bound, gradient ranges;
//   - soft ZLPR: soft == hard bit for bit on 0/1 targets, the optimum s* = ½·logit(t) (zero gradient,
//     L* = 2·log(1 + Σ√(t(1-t))), GD converges there), symmetry, the masking fix, σ(2s) helper;
//   - fused kernels == composite reference (values and gradients), thread independence;
//   - sparse ZLPR == dense; n×m Loss-1/Loss-3: m = 2 reductions to soft ZLPR, Loss-3 stationarity at
//     s = log t + c, the article's Loss-3 failure on hard labels, Loss-1's printed gradient;
//   - gradcheck (f64) of every loss on contiguous and non-contiguous logits; errors.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "losses/losses.h"
#include "op_test_helpers.h"

using namespace liandan;
using namespace liandan::testing;
using losses::Reduction;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

Tensor vec(const std::vector<double>& v, const Shape& s, DType dt = DType::f64) { return from_vector(v, s, dt); }
Tensor vec(const std::vector<double>& v) { return from_vector(v, {int64_t(v.size())}, DType::f64); }

// Random 0/1 targets with about `p` positives.
Tensor bernoulli(const Shape& s, double p, Generator& g, DType dt = DType::f64) {
  return lt(rand(s, g, DType::f64), p).to(dt);
}

// Naive hard ZLPR of one row, straight from the formula (moderate logits only).
double naive_hard(const std::vector<double>& s, const std::vector<double>& y) {
  double a = 1, b = 1;
  for (size_t i = 0; i < s.size(); ++i) (y[i] > 0.5 ? b : a) += std::exp(y[i] > 0.5 ? -s[i] : s[i]);
  return std::log(a) + std::log(b);
}
double naive_soft(const std::vector<double>& s, const std::vector<double>& t) {
  double a = 1, b = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    a += (1 - t[i]) * std::exp(s[i]);
    b += t[i] * std::exp(-s[i]);
  }
  return std::log(a) + std::log(b);
}

// Gradient of sum(f(x)) w.r.t. a fresh leaf copy of x.
Tensor grad_of(const std::function<Tensor(const Tensor&)>& f, const Tensor& x) {
  Tensor l = x.detach().clone().requires_grad_();
  Tensor y = f(l);
  sum(y).backward();
  return l.grad();
}

bool all_finite(const Tensor& t) {
  for (double v : t.to_vector())
    if (!std::isfinite(v)) return false;
  return true;
}

bool bit_equal(const Tensor& a, const Tensor& b) { return a.shape() == b.shape() && a.to_vector() == b.to_vector(); }

}  // namespace

// ==================================================================================== hard ZLPR

TEST_CASE("zlpr: closed-form oracles (algorithms.md Z1, Z2)") {
  // Z1: s = [1, -2, 0.5, 3], y = [1, 0, 1, 0]: neg = log(1 + e^-2 + e^3), pos = log(1 + e^-1 + e^-0.5).
  Tensor s = vec({1, -2, 0.5, 3}), y = vec({1, 0, 1, 0});
  CHECK(losses::zlpr(s, y).item() == doctest::Approx(3.735254906).epsilon(1e-9));
  CHECK(losses::zlpr(s, y).item() == doctest::Approx(3.054985235 + 0.680269671).epsilon(1e-9));
  CHECK(losses::zlpr_composite(s, y).item() == doctest::Approx(3.735254906).epsilon(1e-9));
  CHECK(losses::zlpr(s.to(DType::f32), y.to(DType::f32)).item() == doctest::Approx(3.735254906).epsilon(1e-6));
  // Z2: all logits 0 and no positives, C = 3: log 4; no positives -> pos term 0; no negatives -> neg term 0.
  CHECK(losses::zlpr(zeros({3}, DType::f64), zeros({3}, DType::f64)).item() == doctest::Approx(std::log(4.0)).epsilon(1e-15));
  CHECK(losses::zlpr(vec({0.5, -1}), vec({0, 0})).item() == doctest::Approx(std::log(1 + std::exp(0.5) + std::exp(-1.0))));
  CHECK(losses::zlpr(vec({0.5, -1}), vec({1, 1})).item() == doctest::Approx(std::log(1 + std::exp(-0.5) + std::exp(1.0))));
  // no labels at all (C = 0): both sums are empty, loss log 1 + log 1 = 0 (not NaN)
  Tensor e = losses::zlpr(zeros({2, 0}, DType::f64), zeros({2, 0}, DType::f64), Reduction::none);
  CHECK(e.shape() == Shape{2});
  CHECK(e.to_vector() == std::vector<double>{0, 0});
  // the per-row losses keep the batch dims; mean and sum reduce them
  Generator g(1);
  Tensor x = randn({2, 3, 5}, g, DType::f64), t = bernoulli({2, 3, 5}, 0.4, g);
  Tensor none = losses::zlpr(x, t, Reduction::none);
  REQUIRE(none.shape() == Shape{2, 3});
  std::vector<double> nv = none.to_vector(), xv = x.to_vector(), tv = t.to_vector();
  double total = 0;
  for (size_t r = 0; r < 6; ++r) {
    std::vector<double> sr(xv.begin() + long(r * 5), xv.begin() + long(r * 5 + 5)),
        tr(tv.begin() + long(r * 5), tv.begin() + long(r * 5 + 5));
    CHECK(nv[r] == doctest::Approx(naive_hard(sr, tr)).epsilon(1e-13));
    total += nv[r];
  }
  CHECK(losses::zlpr(x, t, Reduction::sum).item() == doctest::Approx(total).epsilon(1e-14));
  CHECK(losses::zlpr(x, t, Reduction::mean).item() == doctest::Approx(total / 6).epsilon(1e-14));
  CHECK(losses::zlpr(x, t).item() == doctest::Approx(total / 6).epsilon(1e-14));  // mean by default
}

TEST_CASE("zlpr: equals the naive formula at moderate logits, f64 and f32") {
  Generator g(2);
  for (int64_t C : {1, 7, 16, 33, 300}) {
    INFO("C ", C);
    Tensor x = mul(randn({9, C}, g, DType::f64), 3.0), t = bernoulli({9, C}, 0.3, g);
    std::vector<double> l64 = losses::zlpr(x, t, Reduction::none).to_vector();
    std::vector<double> l32 = losses::zlpr(x.to(DType::f32), t.to(DType::f32), Reduction::none).to_vector();
    std::vector<double> xv = x.to(DType::f32).to(DType::f64).to_vector(), xv64 = x.to_vector(), tv = t.to_vector();
    for (size_t r = 0; r < 9; ++r) {
      auto row = [&](const std::vector<double>& v) {
        return std::vector<double>(v.begin() + long(r * size_t(C)), v.begin() + long((r + 1) * size_t(C)));
      };
      CHECK(l64[r] == doctest::Approx(naive_hard(row(xv64), row(tv))).epsilon(1e-13));
      CHECK(l32[r] == doctest::Approx(naive_hard(row(xv), row(tv))).epsilon(2e-6));
    }
  }
}

TEST_CASE("zlpr: exact and finite for |s| up to 1e4") {
  for (DType dt : {DType::f64, DType::f32}) {
    INFO("dtype ", std::string(dtype_name(dt)));
    // every label right by 1e4: log(1 + e^-1e4) per side = 0 exactly
    Tensor good = vec({1e4, -1e4, 1e4, -1e4}, {4}, dt), y = vec({1, 0, 1, 0}, {4}, dt);
    CHECK(losses::zlpr(good, y).item() == 0.0);
    // every label wrong by 1e4: neg = log(1 + 2e^1e4) = 1e4 + log 2, pos the same
    Tensor bad = neg(good);
    double want = 2 * (1e4 + std::log(2.0));
    CHECK(losses::zlpr(bad, y).item() == doctest::Approx(want).epsilon(dt == DType::f64 ? 1e-15 : 1e-7));
    // mixed magnitudes: the large term dominates exactly
    Tensor mix = vec({-1e4, 3, 1e4, 0.5}, {4}, dt), y2 = vec({1, 0, 0, 1}, {4}, dt);
    double pos = 1e4 + std::log1p(std::exp(-1e4) + std::exp(-0.5 - 1e4)), negl = 1e4 + std::log1p(std::exp(3 - 1e4));
    CHECK(losses::zlpr(mix, y2).item() == doctest::Approx(pos + negl).epsilon(dt == DType::f64 ? 1e-15 : 1e-7));
    for (auto* f : {&losses::zlpr, &losses::zlpr_composite}) {
      Tensor gr = grad_of([&](const Tensor& s) { return (*f)(s, y2, Reduction::sum); }, mix);
      REQUIRE(all_finite(gr));
      std::vector<double> gv = gr.to_vector();
      // d/ds of log(1 + e^{1e4} + ...) at the dominant entry is 1 (resp. -1 on the positive side)
      CHECK(gv[0] == doctest::Approx(-1.0));
      CHECK(gv[2] == doctest::Approx(1.0));
      CHECK(std::fabs(gv[1]) < 1e-30);
      CHECK(std::fabs(gv[3]) < 1e-30);
    }
    // soft targets at ±1e4: log(1 + 0.7e^{1e4} + ...) + log(1 + 0.6e^{1e4} + ...) = 2e4 + log 0.7 + log 0.6
    Tensor ss = vec({1e4, -1e4}, {2}, dt), st = vec({0.3, 0.6}, {2}, dt);
    CHECK(losses::zlpr_soft(ss, st).item() ==
          doctest::Approx(2e4 + std::log(0.7) + std::log(0.6)).epsilon(dt == DType::f64 ? 1e-15 : 3e-7));
    CHECK(losses::zlpr_soft_composite(ss, st).item() ==
          doctest::Approx(2e4 + std::log(0.7) + std::log(0.6)).epsilon(dt == DType::f64 ? 1e-15 : 3e-7));
    Tensor big = mul(randn({4, 50}, default_generator(), dt), 1e4);
    Tensor ty = bernoulli({4, 50}, 0.5, default_generator(), dt);
    CHECK(all_finite(losses::zlpr(big, ty, Reduction::none)));
    CHECK(all_finite(losses::zlpr_soft(big, ty, Reduction::none)));
    CHECK(all_finite(grad_of([&](const Tensor& s) { return losses::zlpr(s, ty); }, big)));
    CHECK(all_finite(grad_of([&](const Tensor& s) { return losses::zlpr_soft(s, ty); }, big)));
  }
}

TEST_CASE("zlpr: the threshold class, the pairwise form and the BCE bound") {
  Generator g(3);
  Tensor x = randn({6, 8}, g, DType::f64), t = bernoulli({6, 8}, 0.4, g);
  std::vector<double> l = losses::zlpr(x, t, Reduction::none).to_vector();
  std::vector<double> xv = x.to_vector(), tv = t.to_vector();
  for (size_t r = 0; r < 6; ++r) {
    double sneg = 0, spos = 0, pair = 0, bce = 0;
    int npos = 0, nneg = 0;
    for (size_t i = 0; i < 8; ++i) {
      double si = xv[r * 8 + i];
      bool p = tv[r * 8 + i] > 0.5;
      (p ? spos : sneg) += std::exp(p ? -si : si);
      (p ? npos : nneg)++;
      bce += std::log1p(std::exp(p ? -si : si));
      if (!p)
        for (size_t j = 0; j < 8; ++j)
          if (tv[r * 8 + j] > 0.5) pair += std::exp(si - xv[r * 8 + j]);
    }
    // e^L = 1 + Σ_neg e^{s_i} + Σ_pos e^{-s_j} + Σ_{i∈neg, j∈pos} e^{s_i - s_j}: pairwise ranking
    // plus the threshold class s0 = 0 that every target must exceed and every non-target stay under.
    CHECK(std::exp(l[r]) == doctest::Approx(1 + sneg + spos + pair).epsilon(1e-13));
    // the truncation of summed BCE: never above it, equal when each side has at most one label
    CHECK(l[r] <= bce + 1e-14);
    if (npos <= 1 && nneg <= 1) CHECK(l[r] == doctest::Approx(bce));
  }
  // a threshold class with score s0 instead of 0: log(e^{s0} + Σ_neg e^s) + log(e^{-s0} + Σ_pos e^{-s})
  // equals zlpr(s - s0): the loss only sees the logits relative to the threshold.
  double s0 = 0.7;
  std::vector<double> ls0 = losses::zlpr(add(x, -s0), t, Reduction::none).to_vector();
  for (size_t r = 0; r < 6; ++r) {
    double a = std::exp(s0), b = std::exp(-s0);
    for (size_t i = 0; i < 8; ++i) (tv[r * 8 + i] > 0.5 ? b : a) += std::exp(tv[r * 8 + i] > 0.5 ? -xv[r * 8 + i] : xv[r * 8 + i]);
    CHECK(ls0[r] == doctest::Approx(std::log(a) + std::log(b)).epsilon(1e-13));
  }
  // two-label case: BCE with the hard labels exactly (each side a single term)
  CHECK(losses::zlpr(vec({0.3, -1.1}), vec({1, 0})).item() ==
        doctest::Approx(std::log1p(std::exp(-0.3)) + std::log1p(std::exp(-1.1))).epsilon(1e-15));
}

TEST_CASE("zlpr: gradients lie in (-1, 0) on positives and (0, 1) on negatives, each side summing below 1") {
  Generator g(4);
  Tensor x = mul(randn({5, 12}, g, DType::f64), 2.0), t = bernoulli({5, 12}, 0.5, g);
  std::vector<double> gv = grad_of([&](const Tensor& s) { return losses::zlpr(s, t, Reduction::sum); }, x).to_vector();
  std::vector<double> tv = t.to_vector(), xv = x.to_vector();
  for (size_t r = 0; r < 5; ++r) {
    double sp = 0, sn = 0, dp = 1, dn = 1;
    for (size_t i = 0; i < 12; ++i) (tv[r * 12 + i] > 0.5 ? dp : dn) += std::exp(tv[r * 12 + i] > 0.5 ? -xv[r * 12 + i] : xv[r * 12 + i]);
    for (size_t i = 0; i < 12; ++i) {
      size_t q = r * 12 + i;
      if (tv[q] > 0.5) {
        CHECK(gv[q] < 0);
        CHECK(gv[q] > -1);
        CHECK(gv[q] == doctest::Approx(-std::exp(-xv[q]) / dp).epsilon(1e-13));  // -e^{-s_i}/(1 + Σ_pos e^{-s})
        sp -= gv[q];
      } else {
        CHECK(gv[q] > 0);
        CHECK(gv[q] < 1);
        CHECK(gv[q] == doctest::Approx(std::exp(xv[q]) / dn).epsilon(1e-13));  // e^{s_j}/(1 + Σ_neg e^{s})
        sn += gv[q];
      }
    }
    CHECK(sp < 1);
    CHECK(sn < 1);
  }
}

// ==================================================================================== soft ZLPR

TEST_CASE("zlpr_soft: equals hard ZLPR bit for bit on 0/1 targets (values and gradients)") {
  Generator g(5);
  for (DType dt : {DType::f64, DType::f32}) {
    for (int64_t C : {1, 5, 16, 37, 1000}) {
      INFO("dtype ", std::string(dtype_name(dt)), " C ", C);
      Tensor x = mul(randn({6, C}, g, dt), 4.0), t = bernoulli({6, C}, 0.3, g, dt);
      for (int64_t i = 0; i < C; ++i) {  // an all-zero row and an all-one row
        t.set({0, i}, 0.0);
        t.set({1, i}, 1.0);
      }
      if (C > 3) x.set({2, 3}, -1e12);  // a masked logit
      Tensor h = losses::zlpr(x, t, Reduction::none), s = losses::zlpr_soft(x, t, Reduction::none);
      CHECK(bit_equal(h, s));
      Tensor gh = grad_of([&](const Tensor& v) { return losses::zlpr(v, t, Reduction::sum); }, x);
      Tensor gs = grad_of([&](const Tensor& v) { return losses::zlpr_soft(v, t, Reduction::sum); }, x);
      CHECK(bit_equal(gh, gs));
      // the naive soft formula agrees too
      if (dt == DType::f64 && C <= 37) {
        std::vector<double> xv = x.to_vector(), tv = t.to_vector(), sv = s.to_vector();
        for (size_t r = 3; r < 6; ++r) {  // row 2 holds the masked logit
          std::vector<double> xr(xv.begin() + long(r * size_t(C)), xv.begin() + long((r + 1) * size_t(C)));
          std::vector<double> tr(tv.begin() + long(r * size_t(C)), tv.begin() + long((r + 1) * size_t(C)));
          CHECK(sv[r] == doctest::Approx(naive_soft(xr, tr)).epsilon(1e-13));
        }
      }
    }
  }
  // hard ZLPR accepts integer 0/1 targets
  Tensor x = vec({1, -2, 0.5, 3});
  CHECK(losses::zlpr(x, from_vector(std::vector<int64_t>{1, 0, 1, 0}, {4})).item() == doctest::Approx(3.735254906));
}

TEST_CASE("zlpr_soft: the optimum t = σ(2s) (algorithms.md Z3)") {
  // Property tested: the gradient -t_i e^{-s_i}/(1+Σ t e^{-s}) + (1-t_i) e^{s_i}/(1+Σ(1-t)e^{s}) vanishes
  // exactly when t_i = σ(2 s_i) for every i; the loss there is L* = 2·log(1 + Σ√(t(1-t))).
  std::vector<double> tv = {0.9, 0.2, 0.5, 0.01};
  std::vector<double> sstar;
  for (double t : tv) sstar.push_back(0.5 * std::log(t / (1 - t)));
  CHECK(sstar[0] == doctest::Approx(1.098612).epsilon(1e-6));
  CHECK(sstar[3] == doctest::Approx(-2.297560).epsilon(1e-6));
  Tensor t = vec(tv), s = vec(sstar);
  double Lstar = 2 * std::log(1 + std::sqrt(0.09) + std::sqrt(0.16) + 0.5 + std::sqrt(0.0099));
  CHECK(losses::zlpr_soft(s, t).item() == doctest::Approx(1.665382323).epsilon(1e-9));
  CHECK(losses::zlpr_soft(s, t).item() == doctest::Approx(Lstar).epsilon(1e-14));
  CHECK(losses::zlpr_soft_min(t).item() == doctest::Approx(Lstar).epsilon(1e-14));
  for (auto* f : {&losses::zlpr_soft, &losses::zlpr_soft_composite}) {
    std::vector<double> gv = grad_of([&](const Tensor& v) { return (*f)(v, t, Reduction::sum, 1e-7); }, s).to_vector();
    for (double v : gv) CHECK(std::fabs(v) < 1e-15);
  }
  // the helper reads the optimum back as probabilities
  std::vector<double> p = losses::zlpr_probs(s).to_vector();
  for (size_t i = 0; i < 4; ++i) CHECK(p[i] == doctest::Approx(tv[i]).epsilon(1e-14));
  // σ(s) is not the optimum: the gradient there is not 0
  Tensor s1 = vec({std::log(9.0), std::log(0.25), 0, std::log(0.01 / 0.99)});
  std::vector<double> g1 = grad_of([&](const Tensor& v) { return losses::zlpr_soft(v, t); }, s1).to_vector();
  CHECK(std::fabs(g1[0]) > 1e-3);
  // gradient descent from s = 0 converges to s* (convex loss), and the divergence L - L* goes to 0
  Tensor x = zeros({4}, DType::f64);
  for (int it = 0; it < 1500; ++it) {
    Tensor gr = grad_of([&](const Tensor& v) { return losses::zlpr_soft(v, t); }, x);
    NoGradGuard ng;
    x = sub(x, mul(gr, 3.0));
  }
  std::vector<double> xv = x.to_vector();
  for (size_t i = 0; i < 4; ++i) CHECK(xv[i] == doctest::Approx(sstar[i]).epsilon(1e-6));
  CHECK(losses::zlpr_soft(x, t).item() - Lstar < 1e-12);
  CHECK(losses::zlpr_soft(x, t).item() - Lstar >= -1e-15);
  // batched: the minimum for random soft targets, and a random s is never below it
  Generator g(6);
  Tensor tb = add(mul(rand({5, 9}, g, DType::f64), 0.98), 0.01);
  Tensor sb = mul(log(div(tb, rsub(tb, 1.0))), 0.5);
  std::vector<double> lb = losses::zlpr_soft(sb, tb, Reduction::none).to_vector(), mb = losses::zlpr_soft_min(tb).to_vector();
  std::vector<double> lr = losses::zlpr_soft(randn({5, 9}, g, DType::f64), tb, Reduction::none).to_vector();
  for (size_t r = 0; r < 5; ++r) {
    CHECK(lb[r] == doctest::Approx(mb[r]).epsilon(1e-13));
    CHECK(lr[r] > mb[r]);
  }
  CHECK(max_abs_diff(grad_of([&](const Tensor& v) { return losses::zlpr_soft(v, tb); }, sb), zeros({5, 9}, DType::f64)) < 1e-15);
}

TEST_CASE("zlpr_soft: symmetry L(s, t) = L(-s, 1 - t), non-negativity, probabilities σ(2s)") {
  Generator g(7);
  Tensor s = mul(randn({7, 11}, g, DType::f64), 2.0), t = rand({7, 11}, g, DType::f64);
  Tensor a = losses::zlpr_soft(s, t, Reduction::none), b = losses::zlpr_soft(neg(s), rsub(t, 1.0), Reduction::none);
  CHECK(max_abs_diff(a, b) < 1e-13);
  for (double v : a.to_vector()) CHECK(v >= 0);
  // hard loss -> 0 as positives go to +inf and negatives to -inf
  Tensor y = vec({1, 0, 1});
  double prev = kInf;
  for (double c : {1.0, 10.0, 50.0}) {
    double l = losses::zlpr(vec({c, -c, c}), y).item();
    CHECK(l < prev);
    prev = l;
  }
  CHECK(prev < 1e-20);
  // zlpr_probs: σ(2s), above 0.5 exactly when s > 0 (the decision threshold)
  Tensor x = vec({-3, -1e-9, 0, 1e-9, 2, 1e4, -1e4});
  std::vector<double> p = losses::zlpr_probs(x).to_vector(), xv = x.to_vector();
  for (size_t i = 0; i < p.size(); ++i) {
    CHECK(p[i] == doctest::Approx(1 / (1 + std::exp(-2 * xv[i]))).epsilon(1e-15));
    CHECK((p[i] > 0.5) == (xv[i] > 0));
  }
  CHECK(p[2] == 0.5);
  std::vector<double> p32 = losses::zlpr_probs(x.to(DType::f32)).to_vector();
  CHECK(p32[5] == 1.0);
  CHECK(p32[6] == 0.0);
}

TEST_CASE("zlpr_soft: the masking fix (targets below eps / above 1 - eps are exact 0 / 1; -1e12 logits inert)") {
  Tensor s = vec({0.4, -0.3, 1.2}), t = vec({0.7, 0.1, 0.5});
  double base = losses::zlpr_soft(s, t).item();
  // a masked class appended: logit -1e12 or -inf, any target (even 0.3 or 1): no change at all
  for (double ms : {-1e12, -kInf}) {
    for (double mt : {0.0, 1e-9, 0.3, 1 - 1e-9, 1.0}) {
      INFO("masked logit ", ms, " target ", mt);
      Tensor s2 = vec({0.4, -0.3, 1.2, ms}), t2 = vec({0.7, 0.1, 0.5, mt});
      for (auto* f : {&losses::zlpr_soft, &losses::zlpr_soft_composite}) {
        CHECK((*f)(s2, t2, Reduction::mean, 1e-7).item() == base);
        std::vector<double> gbase =
            grad_of([&](const Tensor& v) { return (*f)(v, t, Reduction::mean, 1e-7); }, s).to_vector();
        Tensor l = s2.detach().clone().requires_grad_();
        (*f)(l, t2, Reduction::mean, 1e-7).backward();
        std::vector<double> gv = l.grad().to_vector();
        CHECK(gv[3] == 0.0);
        for (size_t i = 0; i < 3; ++i) CHECK(gv[i] == gbase[i]);
      }
    }
  }
  // Why the fix matters: with t clipped to eps but kept in the positive sum, a logit of -1e12 meets
  // -s + log(eps) = 1e12 - 16 and the loss explodes; with the fix, t = 1e-9 is exactly t = 0.
  Tensor s3 = vec({0.4, -1e9}), tlow = vec({0.5, 1e-9}), tzero = vec({0.5, 0.0});
  CHECK(losses::zlpr_soft(s3, tlow).item() == losses::zlpr_soft(s3, tzero).item());
  CHECK(std::isfinite(losses::zlpr_soft(s3, tlow).item()));
  // ... and 1 - 1e-9 is exactly 1 (the negative side forgets the entry: a +1e9 logit stays inert there)
  Tensor s4 = vec({0.4, 1e9}), thigh = vec({0.5, 1 - 1e-9}), tone = vec({0.5, 1.0});
  CHECK(losses::zlpr_soft(s4, thigh).item() == losses::zlpr_soft(s4, tone).item());
  CHECK(losses::zlpr_soft(s4, thigh).item() == doctest::Approx(naive_soft({0.4}, {0.5})));
  // eps is a parameter: with eps = 0 a target of 1e-9 stays soft
  CHECK(losses::zlpr_soft(vec({0.4, -3.0}), vec({0.5, 1e-9}), Reduction::mean, 0.0).item() ==
        doctest::Approx(naive_soft({0.4, -3.0}, {0.5, 1e-9})).epsilon(1e-15));
  // in hard ZLPR too, a -1e12 logit is removed whatever its label
  CHECK(losses::zlpr(vec({1, -2, 0.5, 3, -1e12}), vec({1, 0, 1, 0, 1})).item() == doctest::Approx(3.735254906));
}

// ==================================================================================== fused vs composite

TEST_CASE("zlpr: fused kernels == composite reference (values and gradients)") {
  Generator g(8);
  for (bool soft : {false, true}) {
    for (DType dt : {DType::f64, DType::f32}) {
      for (Shape sh : {Shape{7}, Shape{3, 1}, Shape{4, 16}, Shape{5, 3, 37}, Shape{64, 1000}}) {
        INFO((soft ? "soft " : "hard "), std::string(dtype_name(dt)), " shape ", shape_str(sh));
        Tensor x = mul(randn(sh, g, dt), 3.0);
        Tensor t = soft ? rand(sh, g, dt) : bernoulli(sh, 0.2, g, dt);
        if (soft && x.numel() > 4) {  // exact 0/1 and near-0/1 entries exercise the masking
          Tensor tf = t.reshape({-1});
          tf.set({0}, 0.0), tf.set({1}, 1.0), tf.set({2}, 1e-9), tf.set({3}, 1 - 1e-9);
        }
        if (x.numel() > 6) x.reshape({-1}).set({5}, -1e12);
        auto fused = [&](const Tensor& v) {
          return soft ? losses::zlpr_soft(v, t, Reduction::none) : losses::zlpr(v, t, Reduction::none);
        };
        auto comp = [&](const Tensor& v) {
          return soft ? losses::zlpr_soft_composite(v, t, Reduction::none) : losses::zlpr_composite(v, t, Reduction::none);
        };
        double tol = dt == DType::f64 ? 1e-12 : 2e-5;
        Tensor a = fused(x), b = comp(x);
        REQUIRE(a.shape() == b.shape());
        CHECK(max_abs_diff(a, b) < tol * 10);
        CHECK(max_abs_diff(grad_of(fused, x), grad_of(comp, x)) < tol);
      }
    }
  }
}

TEST_CASE("zlpr: results are bit-identical on 1 and 2 threads") {
  Generator g(9);
  Tensor x = mul(randn({512, 300}, g), 3.0), t = bernoulli({512, 300}, 0.1, g, DType::f32), ts = rand({512, 300}, g);
  auto run = [&] {
    Tensor l = x.clone().requires_grad_(), l2 = x.clone().requires_grad_();
    Tensor a = losses::zlpr(l, t, Reduction::none), b = losses::zlpr_soft(l2, ts, Reduction::none);
    add(sum(a), sum(b)).backward();
    return std::vector<Tensor>{a, b, l.grad(), l2.grad()};
  };
  std::vector<Tensor> one;
  {
    ThreadsGuard tg(1);
    one = run();
  }
  std::vector<Tensor> two = run();
  for (size_t i = 0; i < one.size(); ++i) {
    INFO("result ", i);
    CHECK(bit_equal(one[i], two[i]));
  }
}

TEST_CASE("zlpr: gradcheck (f64) on contiguous and non-contiguous logits, every reduction") {
  Generator g(10);
  Shape sh{3, 6};
  Tensor t = bernoulli(sh, 0.4, g), ts = rand(sh, g, DType::f64);
  ts.set({0, 0}, 0.0), ts.set({1, 1}, 1.0);
  for (auto& [name, x] : layouts(sh, g)) {
    INFO("layout ", name);
    for (Reduction r : {Reduction::none, Reduction::mean, Reduction::sum}) {
      INFO("reduction ", losses::reduction_name(r));
      LD_GRADCHECK([&](const std::vector<Tensor>& v) { return losses::zlpr(v[0], t, r); }, {x});
      LD_GRADCHECK([&](const std::vector<Tensor>& v) { return losses::zlpr_soft(v[0], ts, r); }, {x});
      LD_GRADCHECK([&](const std::vector<Tensor>& v) { return losses::zlpr_composite(v[0], t, r); }, {x});
      LD_GRADCHECK([&](const std::vector<Tensor>& v) { return losses::zlpr_soft_composite(v[0], ts, r); }, {x});
    }
  }
  // 3-D logits, a permuted layout, and an incoming gradient that is not all ones
  Tensor x3 = rnd_permuted({2, 3, 5}, g), t3 = bernoulli({2, 3, 5}, 0.5, g), w = randn({2, 3}, g, DType::f64);
  LD_GRADCHECK([&](const std::vector<Tensor>& v) { return mul(losses::zlpr(v[0], t3, Reduction::none), w); }, {x3});
  Tensor ts3 = rand({2, 3, 5}, g, DType::f64);
  LD_GRADCHECK([&](const std::vector<Tensor>& v) { return mul(losses::zlpr_soft(v[0], ts3, Reduction::none), w); }, {x3});
  // 1-D logits (one example)
  LD_GRADCHECK([&](const std::vector<Tensor>& v) { return losses::zlpr(v[0], vec({1, 0, 0, 1})); }, {rnd({4}, g)});
}

// ==================================================================================== sparse

TEST_CASE("sparse_zlpr: equals dense ZLPR; mask_zero removes class 0; gradcheck") {
  Generator g(11);
  Tensor x = mul(randn({4, 10}, g, DType::f64), 2.0);
  // distinct positives per row: row 0 {1, 4, 7}, row 1 {0, 9, 2}, row 2 {5, 6, 3}, row 3 {8, 1, 0}
  std::vector<int64_t> idx = {1, 4, 7, 0, 9, 2, 5, 6, 3, 8, 1, 0};
  Tensor pi = from_vector(idx, {4, 3});
  Tensor dense = zeros({4, 10}, DType::f64);
  for (int64_t r = 0; r < 4; ++r)
    for (int64_t k = 0; k < 3; ++k) dense.set({r, idx[size_t(r * 3 + k)]}, 1.0);
  CHECK(max_abs_diff(losses::sparse_zlpr(x, pi, Reduction::none), losses::zlpr(x, dense, Reduction::none)) < 1e-12);
  CHECK(max_abs_diff(grad_of([&](const Tensor& v) { return losses::sparse_zlpr(v, pi); }, x),
                     grad_of([&](const Tensor& v) { return losses::zlpr(v, dense); }, x)) < 1e-12);
  // Z1 in sparse form: positives [0, 2]
  CHECK(losses::sparse_zlpr(vec({1, -2, 0.5, 3}, {1, 4}), from_vector(std::vector<int64_t>{0, 2}, {1, 2})).item() ==
        doctest::Approx(3.735254906).epsilon(1e-9));
  // mask_zero: index 0 pads the lists, class 0 is a dummy that never counts
  Tensor xm = mul(randn({3, 6}, g, DType::f64), 2.0);
  Tensor pm = from_vector(std::vector<int64_t>{2, 5, 0, 0, 1, 0, 0, 0, 0}, {3, 3});  // row 2: no positive
  Tensor dm = zeros({3, 5}, DType::f64);
  dm.set({0, 1}, 1.0), dm.set({0, 4}, 1.0), dm.set({1, 0}, 1.0);
  Tensor want = losses::zlpr(xm.narrow(1, 1, 5), dm, Reduction::none);
  CHECK(max_abs_diff(losses::sparse_zlpr(xm, pm, Reduction::none, true), want) < 1e-12);
  Tensor gm = grad_of([&](const Tensor& v) { return losses::sparse_zlpr(v, pm, Reduction::sum, true); }, xm);
  CHECK(all_finite(gm));
  for (int64_t r = 0; r < 3; ++r) CHECK(gm.at({r, 0}) == 0.0);
  // no positive slots at all (K = 0): the negative term only
  CHECK(max_abs_diff(losses::sparse_zlpr(xm, zeros({3, 0}, DType::i64), Reduction::none),
                     losses::zlpr(xm, zeros({3, 6}, DType::f64), Reduction::none)) < 1e-13);
  LD_GRADCHECK([&](const std::vector<Tensor>& v) { return losses::sparse_zlpr(v[0], pi, Reduction::sum); },
               {rnd_transposed({4, 10}, g)});
  LD_GRADCHECK([&](const std::vector<Tensor>& v) { return losses::sparse_zlpr(v[0], pm, Reduction::none, true); },
               {rnd_strided({3, 6}, g)});
  CHECK_THROWS_WITH_AS(losses::sparse_zlpr(x, from_vector(std::vector<int64_t>{10}, {1, 1}).expand({4, 1})),
                       doctest::Contains("sparse_zlpr: label index 10"), liandan::Error);
  CHECK_THROWS_WITH_AS(losses::sparse_zlpr(x, from_vector(std::vector<int64_t>{1, 2}, {2, 1})),
                       doctest::Contains("sparse_zlpr: indices [2, 1] and logits [4, 10] differ in the batch dims"),
                       liandan::Error);
}

// ==================================================================================== n x m

namespace {
// [B, n, 2] logits/targets from [B, n] soft-ZLPR logits s = s1 - s2 and targets t = t1.
Tensor two_class(const Tensor& a, const Tensor& b) { return stack({a, b}, -1); }
}  // namespace

TEST_CASE("nxm losses: m = 2 reduces exactly to soft ZLPR (Loss-1 with s1 - s2, Loss-3 with (s1 - s2)/2)") {
  Generator g(12);
  Tensor s1 = randn({4, 6}, g, DType::f64), s2 = randn({4, 6}, g, DType::f64);
  Tensor t = rand({4, 6}, g, DType::f64);
  t.set({0, 0}, 0.0), t.set({1, 2}, 1.0);  // exact hard entries too
  Tensor s = two_class(s1, s2), tt = two_class(t, rsub(t, 1.0));
  Tensor l1 = losses::nxm_loss1(s, tt, Reduction::none), l3 = losses::nxm_loss3(s, tt, Reduction::none);
  REQUIRE(l1.shape() == Shape{4});
  CHECK(max_abs_diff(l1, losses::zlpr_soft(sub(s1, s2), t, Reduction::none)) < 1e-13);
  CHECK(max_abs_diff(l3, losses::zlpr_soft(mul(sub(s1, s2), 0.5), t, Reduction::none)) < 1e-13);
  // the gradients match through the chain rule: dl/ds1 = g, dl/ds2 = -g (Loss-3: ±g/2)
  Tensor gz = grad_of([&](const Tensor& v) { return losses::zlpr_soft(v, t); }, sub(s1, s2));
  Tensor gz3 = grad_of([&](const Tensor& v) { return losses::zlpr_soft(v, t); }, mul(sub(s1, s2), 0.5));
  Tensor g1 = grad_of([&](const Tensor& v) { return losses::nxm_loss1(v, tt); }, s);
  Tensor g3 = grad_of([&](const Tensor& v) { return losses::nxm_loss3(v, tt); }, s);
  CHECK(max_abs_diff(g1.select(-1, 0), gz) < 1e-13);
  CHECK(max_abs_diff(g1.select(-1, 1), neg(gz)) < 1e-13);
  CHECK(max_abs_diff(g3.select(-1, 0), mul(gz3, 0.5)) < 1e-13);
  CHECK(max_abs_diff(g3.select(-1, 1), mul(gz3, -0.5)) < 1e-13);
  // hard labels as class indices: m = 2 Loss-1 is hard ZLPR on (s1 - s2) with y = [class == 0]
  Tensor yi = from_vector(std::vector<int64_t>{0, 1, 1, 0, 0, 1}, {1, 6});
  Tensor yb = vec({1, 0, 0, 1, 1, 0}, {1, 6});
  Tensor sa = s.narrow(0, 0, 1);
  CHECK(max_abs_diff(losses::nxm_loss1(sa, yi, Reduction::none), losses::zlpr(sub(s1, s2).narrow(0, 0, 1), yb, Reduction::none)) < 1e-13);
  // reductions
  CHECK(losses::nxm_loss1(s, tt, Reduction::sum).item() == doctest::Approx(sum(l1).item()).epsilon(1e-15));
  CHECK(losses::nxm_loss3(s, tt).item() == doctest::Approx(mean(l3).item()).epsilon(1e-15));
}

TEST_CASE("nxm_loss3: the gradient vanishes at s = log t + c (analytic soft optimum softmax(s) = t); Loss-1's does not") {
  Generator g(13);
  // 2 examples x 3 sub-problems x 4 classes, targets strictly inside (0, 1), each row a distribution
  Tensor t = softmax(randn({2, 3, 4}, g, DType::f64), -1);
  Tensor c = mul(randn({2, 3, 1}, g, DType::f64), 5.0);  // any per-sub-problem shift
  Tensor s = add(log(t), c);
  Tensor g3 = grad_of([&](const Tensor& v) { return losses::nxm_loss3(v, t); }, s);
  CHECK(max_abs_diff(g3, zeros({2, 3, 4}, DType::f64)) < 1e-14);
  // the loss there is its minimum: moving s anywhere increases it
  double l0 = losses::nxm_loss3(s, t).item();
  for (int k = 0; k < 5; ++k) CHECK(losses::nxm_loss3(add(s, mul(randn({2, 3, 4}, g, DType::f64), 0.1)), t).item() > l0);
  // Loss-1 has no such closed-form zero for soft labels
  Tensor g1 = grad_of([&](const Tensor& v) { return losses::nxm_loss1(v, t); }, s);
  CHECK(max_abs_diff(g1, zeros({2, 3, 4}, DType::f64)) > 1e-3);
}

TEST_CASE("nxm losses: the article's failure of Loss-3 on hard labels (seeds-math §4, test idea 3)") {
  // One sub-problem, 3 classes, target class 2 (index 1), logits c·(10, 5, -5): the argmax is class 1,
  // i.e. wrong, yet l3 -> 0 as c grows (it only asks s_target >> mean(s)), while l1 grows.
  Tensor y = from_vector(std::vector<int64_t>{1}, {1});
  std::vector<double> want3 = {0.173, 0.035, 0.0013}, want1 = {5.007, 10.000, 20.000};
  std::vector<double> cs = {1, 2, 4};
  double prev3 = kInf, prev1 = 0;
  for (size_t k = 0; k < 3; ++k) {
    double c = cs[k];
    Tensor s = vec({10 * c, 5 * c, -5 * c}, {1, 3});
    double l3 = losses::nxm_loss3(s, y).item(), l1 = losses::nxm_loss1(s, y).item();
    CHECK(l3 == doctest::Approx(std::log1p(std::exp(-5 * c / 3))).epsilon(1e-14));     // closed form
    CHECK(l1 == doctest::Approx(std::log(1 + std::exp(5 * c) + std::exp(-10 * c))).epsilon(1e-14));
    CHECK(std::fabs(l3 - want3[k]) < 5e-4 * (k == 2 ? 0.1 : 1));  // the spec's rounded numbers
    CHECK(std::fabs(l1 - want1[k]) < 1e-3);
    CHECK(l3 < prev3);
    CHECK(l1 > prev1);
    prev3 = l3, prev1 = l1;
  }
  // one-hot float targets give the same numbers as the class index
  CHECK(losses::nxm_loss3(vec({10, 5, -5}, {1, 3}), vec({0, 1, 0}, {1, 3})).item() ==
        doctest::Approx(std::log1p(std::exp(-5.0 / 3))).epsilon(1e-14));
}

TEST_CASE("nxm_loss1: the printed gradient formula (seeds-math §4) and closed form") {
  Generator g(14);
  int64_t n = 3, m = 4;
  Tensor s = randn({n, m}, g, DType::f64), t = softmax(mul(randn({n, m}, g, DType::f64), 2.0), -1);
  std::vector<double> sv = s.to_vector(), tv = t.to_vector();
  auto S = [&](int64_t i, int64_t j) { return sv[size_t(i * m + j)]; };
  auto T = [&](int64_t i, int64_t j) { return tv[size_t(i * m + j)]; };
  // D_j = 1 + Σ_{i, k≠j} t_ij e^{-s_ij + s_ik};  l1 = Σ_j log D_j
  std::vector<double> D(size_t(m), 1.0);
  double l = 0;
  for (int64_t j = 0; j < m; ++j) {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < m; ++k)
        if (k != j) D[size_t(j)] += T(i, j) * std::exp(-S(i, j) + S(i, k));
    l += std::log(D[size_t(j)]);
  }
  CHECK(losses::nxm_loss1(s, t).item() == doctest::Approx(l).epsilon(1e-14));
  std::vector<double> gv = grad_of([&](const Tensor& v) { return losses::nxm_loss1(v, t); }, s).to_vector();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < m; ++j) {
      double other = 0;
      for (int64_t k = 0; k < m; ++k) if (k != j) other += std::exp(S(i, k));
      double want = -T(i, j) * std::exp(-S(i, j)) * other / D[size_t(j)];
      for (int64_t h = 0; h < m; ++h)
        if (h != j) want += T(i, h) * std::exp(-S(i, h)) * std::exp(S(i, j)) / D[size_t(h)];
      CHECK(gv[size_t(i * m + j)] == doctest::Approx(want).epsilon(1e-13));
    }
  // batched [2, n, m] and the 3-D class-index form give the per-example losses
  Tensor sb = randn({2, n, m}, g, DType::f64);
  Tensor yi = from_vector(std::vector<int64_t>{0, 3, 2, 1, 1, 0}, {2, n});
  Tensor yo = zeros({2, n, m}, DType::f64);
  std::vector<int64_t> yv = {0, 3, 2, 1, 1, 0};
  for (int64_t q = 0; q < 2 * n; ++q) yo.set({q / n, q % n, yv[size_t(q)]}, 1.0);
  CHECK(max_abs_diff(losses::nxm_loss1(sb, yi, Reduction::none), losses::nxm_loss1(sb, yo, Reduction::none)) < 1e-14);
  CHECK(max_abs_diff(losses::nxm_loss3(sb, yi, Reduction::none), losses::nxm_loss3(sb, yo, Reduction::none)) < 1e-14);
  CHECK(losses::nxm_loss1(sb, yi, Reduction::none).shape() == Shape{2});
  // an invalid class masked by a -1e12 logit with target 0 is inert in Loss-1
  Tensor s5 = cat({s, full({n, 1}, -1e12, DType::f64)}, -1), t5 = cat({t, zeros({n, 1}, DType::f64)}, -1);
  CHECK(losses::nxm_loss1(s5, t5).item() == doctest::Approx(l).epsilon(1e-14));
  Tensor g5 = grad_of([&](const Tensor& v) { return losses::nxm_loss1(v, t5); }, s5);
  CHECK(all_finite(g5));
  CHECK(max_abs_diff(g5.narrow(1, 0, m), from_vector(gv, {n, m}, DType::f64)) < 1e-14);
  // hard labels: Loss-1 falls as the target logit wins, and is exact at large margins
  Tensor y1 = from_vector(std::vector<int64_t>{2}, {1});
  CHECK(losses::nxm_loss1(vec({-1e4, 0, 1e4}, {1, 3}), y1).item() == 0.0);
  CHECK(losses::nxm_loss1(vec({1e4, 0, -1e4}, {1, 3}), y1).item() == doctest::Approx(2e4).epsilon(1e-15));
}

TEST_CASE("nxm losses: gradcheck (f64), hard and soft targets, non-contiguous logits") {
  Generator g(15);
  Shape sh{2, 3, 4};
  Tensor ts = softmax(randn(sh, g, DType::f64), -1);
  ts.set({0, 0, 0}, 0.0), ts.set({0, 0, 1}, 0.0), ts.set({0, 0, 2}, 0.0), ts.set({0, 0, 3}, 1.0);
  Tensor yi = from_vector(std::vector<int64_t>{0, 3, 2, 1, 1, 0}, {2, 3});
  for (auto& [name, x] : layouts(sh, g)) {
    INFO("layout ", name);
    for (Reduction r : {Reduction::none, Reduction::mean, Reduction::sum}) {
      INFO("reduction ", losses::reduction_name(r));
      LD_GRADCHECK([&](const std::vector<Tensor>& v) { return losses::nxm_loss1(v[0], ts, r); }, {x});
      LD_GRADCHECK([&](const std::vector<Tensor>& v) { return losses::nxm_loss3(v[0], ts, r); }, {x});
      LD_GRADCHECK([&](const std::vector<Tensor>& v) { return losses::nxm_loss1(v[0], yi, r); }, {x});
      LD_GRADCHECK([&](const std::vector<Tensor>& v) { return losses::nxm_loss3(v[0], yi, r); }, {x});
    }
  }
  // m = 1 (every loss term is log 1) and a single sub-problem without batch dims
  CHECK(losses::nxm_loss1(randn({3, 1}, g, DType::f64), zeros({3}, DType::i64)).item() == 0.0);
  LD_GRADCHECK([&](const std::vector<Tensor>& v) { return losses::nxm_loss1(v[0], from_vector(std::vector<int64_t>{1}, {1})); },
               {rnd({1, 5}, g)});
}

// ==================================================================================== errors

TEST_CASE("zlpr / nxm: errors") {
  Tensor x = zeros({2, 3}, DType::f64);
  CHECK_THROWS_WITH_AS(losses::zlpr(x, zeros({2, 4}, DType::f64)),
                       "zlpr: logits [2, 3] and targets [2, 4] must have the same shape", liandan::Error);
  CHECK_THROWS_WITH_AS(losses::zlpr_soft(x, zeros({3, 2}, DType::f64)),
                       doctest::Contains("zlpr_soft: logits [2, 3] and targets [3, 2]"), liandan::Error);
  Tensor half = vec({0, 1, 0, 0.5, 0, 1}, {2, 3});
  CHECK_THROWS_WITH_AS(losses::zlpr(x, half),
                       "zlpr: hard targets must be 0 or 1 (use zlpr_soft for soft labels), got 0.5 at index [1, 0] "
                       "(targets [2, 3])",
                       liandan::Error);
  CHECK_THROWS_WITH_AS(losses::zlpr_composite(x, half), doctest::Contains("zlpr: hard targets must be 0 or 1"),
                       liandan::Error);
  CHECK_THROWS_WITH_AS(losses::zlpr(x.to(DType::f32), vec({0, 1, 0, 2, 0, 1}, {2, 3}, DType::f32)),
                       doctest::Contains("got 2 at index [1, 0]"), liandan::Error);
  CHECK_THROWS_WITH_AS(losses::zlpr_soft(x, vec({0, 1, 1.5, 0, 0, 1}, {2, 3})),
                       "zlpr_soft: soft targets must be in [0, 1], got 1.5 at index [0, 2] (targets [2, 3])",
                       liandan::Error);
  CHECK_THROWS_WITH_AS(losses::zlpr_soft(x, vec({0, 1, 0.5, 0, -0.1, 1}, {2, 3})), doctest::Contains("got -0.1 at index [1, 1]"),
                       liandan::Error);
  CHECK_THROWS_WITH_AS(losses::zlpr_soft(x, vec({0, 1, 0.5, 0, NAN, 1}, {2, 3})), doctest::Contains("soft targets must be in [0, 1], got nan"),
                       liandan::Error);
  CHECK_THROWS_WITH_AS(losses::zlpr_soft_composite(x, vec({0, 1, 1.5, 0, 0, 1}, {2, 3})),
                       doctest::Contains("zlpr_soft: soft targets must be in [0, 1]"), liandan::Error);
  CHECK_THROWS_WITH_AS(losses::zlpr(zeros({2, 3}, DType::i64), x), "zlpr: logits must be f32 or f64, got i64", liandan::Error);
  CHECK_THROWS_WITH_AS(losses::zlpr(zeros({}, DType::f64), zeros({}, DType::f64)),
                       "zlpr: logits must have at least 1 dim (the labels), got shape []", liandan::Error);
  CHECK_THROWS_WITH_AS(losses::zlpr_soft(x, zeros({2, 3}, DType::f64), Reduction::mean, 0.7),
                       doctest::Contains("zlpr_soft: eps must be in [0, 0.5)"), liandan::Error);
  // n x m
  Tensor s = zeros({2, 3, 4}, DType::f64);
  CHECK_THROWS_WITH_AS(losses::nxm_loss1(s, zeros({2, 3, 5}, DType::f64)),
                       "nxm_loss1: logits [2, 3, 4] and targets [2, 3, 5] must have the same shape", liandan::Error);
  CHECK_THROWS_WITH_AS(losses::nxm_loss3(s, zeros({2, 3, 4}, DType::f64)),
                       "nxm_loss3: the targets of each sub-problem must sum to 1, got 0 at [0, 0]", liandan::Error);
  Tensor bad = full({2, 3, 4}, 0.25, DType::f64);
  bad.set({1, 2, 3}, 1.25);
  CHECK_THROWS_WITH_AS(losses::nxm_loss1(s, bad), doctest::Contains("nxm_loss1: targets must be in [0, 1], got 1.25 at index [1, 2, 3]"),
                       liandan::Error);
  CHECK_THROWS_WITH_AS(losses::nxm_loss1(s, from_vector(std::vector<int64_t>{0, 1, 2, 3, 4, 0}, {2, 3})),
                       "nxm_loss1: class index 4 at [1, 1] is out of range for 4 classes", liandan::Error);
  CHECK_THROWS_WITH_AS(losses::nxm_loss3(s, zeros({2, 4}, DType::i64)),
                       "nxm_loss3: class-index targets must have shape [2, 3] for logits [2, 3, 4], got [2, 4]",
                       liandan::Error);
  CHECK_THROWS_WITH_AS(losses::nxm_loss1(zeros({4}, DType::f64), zeros({}, DType::i64)),
                       doctest::Contains("nxm_loss1: logits must have shape [..., n, m]"), liandan::Error);
}
