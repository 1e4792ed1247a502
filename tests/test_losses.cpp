// The cross-entropy family and regression losses (losses/cross_entropy.cpp) against PyTorch's
// semantics. Expected values were computed once with Debian's PyTorch 1.13 in float64, e.g.
//   /usr/bin/python3 -c "import torch, torch.nn.functional as F; torch.set_default_dtype(torch.float64);
//     x = torch.tensor([[1.0, 2.0, 0.5], [0.3, -1.2, 2.2], [-0.5, 0.0, 0.5], [1.5, 1.5, -2.0]]);
//     print(F.cross_entropy(x, torch.tensor([2, 0, -100, 1]), weight=torch.tensor([0.2, 1.0, 3.0]),
//                           label_smoothing=0.1))"
// (the other values: same x, the targets, weights and options named next to each check), and are
// hard-coded below; the simpler ones are also re-derived from the formula in the test.
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

Tensor mat(const std::vector<double>& v, const Shape& s) { return from_vector(v, s, DType::f64); }
Tensor idx(const std::vector<int64_t>& v, const Shape& s) { return from_vector(v, s); }

// The 4 x 3 logits, targets (one ignored) and class weights of the torch reference values.
const Tensor& X() {
  static Tensor x = mat({1.0, 2.0, 0.5, 0.3, -1.2, 2.2, -0.5, 0.0, 0.5, 1.5, 1.5, -2.0}, {4, 3});
  return x;
}
Tensor Y() { return idx({2, 0, -100, 1}, {4}); }
Tensor Yall() { return idx({2, 0, 1, 1}, {4}); }
Tensor W() { return mat({0.2, 1.0, 3.0}, {3}); }

void check_vec(const Tensor& got, const std::vector<double>& want, double eps = 1e-13) {
  std::vector<double> g = got.to_vector();
  REQUIRE(g.size() == want.size());
  for (size_t i = 0; i < g.size(); ++i) {
    INFO("element ", i);
    CHECK(g[i] == doctest::Approx(want[i]).epsilon(eps));
  }
}

double lse(const std::vector<double>& v) {
  double m = -INFINITY, s = 0;
  for (double x : v) m = std::max(m, x);
  for (double x : v) s += std::exp(x - m);
  return m + std::log(s);
}

}  // namespace

TEST_CASE("cross_entropy (class indices): values against torch, every option") {
  using O = losses::CrossEntropyOptions;
  // plain: -log softmax(x)[y]; row 0: lse(1, 2, 0.5) - 0.5
  check_vec(losses::cross_entropy(X(), Yall(), O{.reduction = Reduction::none}),
            {1.96436878410794, 2.06800446221998, 1.18026967064173, 0.708133021539818});
  CHECK(lse({1.0, 2.0, 0.5}) - 0.5 == doctest::Approx(1.96436878410794).epsilon(1e-13));
  check_vec(losses::cross_entropy(X(), Yall()), {1.48019398462737});
  check_vec(losses::cross_entropy(X(), Yall(), O{.reduction = Reduction::sum}), {4 * 1.48019398462737});
  // ignore_index: the ignored element is 0 and the mean divides by the 3 others
  check_vec(losses::cross_entropy(X(), Y(), O{.reduction = Reduction::none}),
            {1.96436878410794, 2.06800446221998, 0, 0.708133021539818});
  check_vec(losses::cross_entropy(X(), Y()), {1.58016875595591});
  check_vec(losses::cross_entropy(X(), idx({2, 7, 7, 1}, {4}), O{.ignore_index = 7}), {1.33625090282388});
  // weights: mean = Σ w[y]·l / Σ w[y]
  check_vec(losses::cross_entropy(X(), Yall(), O{.weight = W()}), {1.57598268018257});
  check_vec(losses::cross_entropy(X(), Y(), O{.weight = W()}), {1.67020006340658});
  // label smoothing, alone and with weights and ignore_index (torch divides the smoothing term by
  // the same total weight as the NLL term)
  check_vec(losses::cross_entropy(X(), Yall(), O{.label_smoothing = 0.1}), {1.48936065129404});
  check_vec(losses::cross_entropy(X(), Y(), O{.label_smoothing = 0.1}), {1.59239097817813});
  check_vec(losses::cross_entropy(X(), Y(), O{.weight = W(), .label_smoothing = 0.1}), {1.6984985199631});
  check_vec(losses::cross_entropy(X(), Y(), O{.weight = W(), .label_smoothing = 0.1, .reduction = Reduction::sum}),
            {7.13369378384503});
  check_vec(losses::cross_entropy(X(), Y(), O{.weight = W(), .label_smoothing = 0.1, .reduction = Reduction::none}),
            {5.52547401353323, 0.521761427910392, 0, 1.08645834240141});
  // by hand, row 0 of the last: 0.9·3·(-lp[2]) + (0.1/3)·Σ_c w[c]·(-lp[c])
  double l0 = lse({1.0, 2.0, 0.5});
  CHECK(0.9 * 3 * (l0 - 0.5) + 0.1 / 3 * (0.2 * (l0 - 1) + 1.0 * (l0 - 2) + 3.0 * (l0 - 0.5)) ==
        doctest::Approx(5.52547401353323).epsilon(1e-13));
  // every target ignored: the mean is 0/0 = NaN (torch too); sum is 0
  CHECK(std::isnan(losses::cross_entropy(X(), idx({-100, -100, -100, -100}, {4})).item()));
  CHECK(losses::cross_entropy(X(), idx({-100, -100, -100, -100}, {4}), O{.reduction = Reduction::sum}).item() == 0.0);
  // 1-D logits and a 0-d target
  check_vec(losses::cross_entropy(mat({0.5, -0.5, 2.0}, {3}), idx({1}, {})), {2.76636789980713});
  // nll_loss on log_softmax is the same as cross_entropy
  check_vec(losses::nll_loss(log_softmax(X(), 1), Y(), {.weight = W()}), {1.67020006340658});
  check_vec(losses::nll_loss(mat({-1, -2, -3}, {1, 3}), idx({1}, {1}), {.reduction = Reduction::none}), {2});
  // f32 logits
  CHECK(losses::cross_entropy(X().to(DType::f32), Y(), O{.weight = W().to(DType::f32), .label_smoothing = 0.1}).item() ==
        doctest::Approx(1.6984985199631).epsilon(1e-6));
}

TEST_CASE("cross_entropy: spatial [N, C, d] logits and probability targets, against torch") {
  using O = losses::CrossEntropyOptions;
  // x [2, 3, 2] (class dim 1), targets [2, 2] with one ignored
  Tensor xs = mat({0.1, 1.0, 0.2, -1.0, 0.3, 0.5, 2.0, 0.0, -1.0, 0.0, 0.5, 0.25}, {2, 3, 2});
  Tensor ys = idx({0, 2, 1, -100}, {2, 2});
  Tensor none = losses::cross_entropy(xs, ys, O{.label_smoothing = 0.05, .reduction = Reduction::none});
  CHECK(none.shape() == Shape{2, 2});
  check_vec(none, {1.19694284822924, 1.07162358630866, 3.16631129665716, 0});
  check_vec(losses::cross_entropy(xs, ys, O{.weight = W(), .label_smoothing = 0.05}), {1.57756750836933});
  // probability targets: l_n = -Σ_c w[c]·t'[n, c]·lp[n, c]; mean divides by N (never by weights)
  Tensor t = mat({0.2, 0.3, 0.5, 1.0, 0.0, 0.0, 0.1, 0.1, 0.8, 0.0, 0.5, 0.5}, {4, 3});
  check_vec(losses::cross_entropy(X(), t), {1.69269398462737});
  check_vec(losses::cross_entropy(X(), t, O{.weight = W(), .label_smoothing = 0.2}), {2.87117132935555});
  check_vec(losses::cross_entropy(X(), t, O{.weight = W(), .label_smoothing = 0.2, .reduction = Reduction::none}),
            {2.95890744309045, 0.629921963376789, 1.66456583046009, 6.23129008049486});
  // one-hot probabilities == class indices
  Tensor onehot = mat({0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 1, 0}, {4, 3});
  CHECK(losses::cross_entropy(X(), onehot).item() == doctest::Approx(1.48019398462737).epsilon(1e-13));
  // spatial probability targets: the class dim is 1 for the targets too
  Tensor ts = softmax(mat({0.3, -0.2, 1.0, 0.0, 0.1, 0.4, -1.0, 2.0, 0.2, 0.2, 0.0, 0.5}, {2, 3, 2}), 1);
  Tensor lp = log_softmax(xs, 1);
  Tensor want = neg(sum(mul(lp, ts), {1}));
  CHECK(max_abs_diff(losses::cross_entropy(xs, ts, O{.reduction = Reduction::none}), want) < 1e-14);
}

TEST_CASE("binary_cross_entropy_with_logits: torch values, exact softplus, pos_weight, weight, gradient at 0") {
  Tensor x = mat({-30.0, 0.0, 2.0, 1.5, -0.7, 40.0}, {2, 3});
  Tensor t = mat({0.0, 1.0, 0.3, 1.0, 0.0, 1.0}, {2, 3});
  Tensor pw = mat({2.0, 0.5, 1.0}, {3}), w = mat({1.0, 0.5}, {2, 1});
  using B = losses::BceOptions;
  // torch: 9.348e-14 for the first element (9.237e-14 with pos_weight): its (1-t)·x + ... form cancels
  // (-30 + 30.0000000000000936); the exact value is log1p(e^-30) = 9.3576e-14, which liandan returns.
  std::vector<double> l = losses::binary_cross_entropy_with_logits(x, t, B{.reduction = Reduction::none}).to_vector();
  CHECK(l[0] == doctest::Approx(std::log1p(std::exp(-30.0))).epsilon(1e-15));
  std::vector<double> want = {0, 0.693147180559945, 1.52692801104297, 0.201413277982752, 0.403186048885458, 0};
  for (size_t i = 1; i < 6; ++i) CHECK(l[i] == doctest::Approx(want[i]).epsilon(1e-13));
  CHECK(l[5] == doctest::Approx(std::log1p(std::exp(-40.0))).epsilon(1e-15));
  std::vector<double> lw =
      losses::binary_cross_entropy_with_logits(x, t, B{.weight = w, .pos_weight = pw, .reduction = Reduction::none}).to_vector();
  std::vector<double> want_w = {0, 0.346573590279973, 1.52692801104297, 0.201413277982752, 0.201593024442729, 0};
  for (size_t i = 1; i < 6; ++i) CHECK(lw[i] == doctest::Approx(want_w[i]).epsilon(1e-13));
  CHECK(lw[0] == doctest::Approx(std::log1p(std::exp(-30.0))).epsilon(1e-15));
  CHECK(losses::binary_cross_entropy_with_logits(x, t, B{.weight = w, .pos_weight = pw}).item() ==
        doctest::Approx(0.379417983958086).epsilon(1e-12));
  // gradient (torch's x.grad of the sum): w·[(1-t) - (1 + (pw-1)t)·σ(-x)]; at x = 0, t = 1, pw = 0.5:
  // -(0.5)·0.5 = -0.25 (a composite of abs/relu would give 0 there)
  Tensor xl = x.clone().requires_grad_();
  losses::binary_cross_entropy_with_logits(xl, t, B{.weight = w, .pos_weight = pw, .reduction = Reduction::sum}).backward();
  check_vec(xl.grad(), {9.3576229688393e-14, -0.25, 0.580797077977882, -0.182425523806356, 0.165906113915917, 0}, 1e-12);
  // f32 is exact at the extremes too
  Tensor x32 = mat({-100, 100, 0}, {3}).to(DType::f32), t32 = mat({1, 0, 0.5}, {3}).to(DType::f32);
  check_vec(losses::binary_cross_entropy_with_logits(x32, t32, B{.reduction = Reduction::none}), {100, 100, std::log(2.0)}, 1e-7);
}

TEST_CASE("regression losses: mse, l1, smooth_l1, huber against torch") {
  Tensor a = mat({0.0, 0.5, -2.0, 3.0, 1.0}, {5}), b = mat({0.2, -0.5, 1.0, 3.0, 0.0}, {5});
  CHECK(losses::mse_loss(a, b).item() == doctest::Approx(2.208).epsilon(1e-14));
  CHECK(losses::l1_loss(a, b, Reduction::sum).item() == doctest::Approx(5.2).epsilon(1e-14));
  CHECK(losses::l1_loss(a, b).item() == doctest::Approx(5.2 / 5).epsilon(1e-14));
  check_vec(losses::smooth_l1_loss(a, b, Reduction::none, 0.5), {0.04, 0.75, 2.75, 0, 0.75});
  check_vec(losses::huber_loss(a, b, Reduction::none, 2.0), {0.02, 0.5, 4, 0, 0.5});
  CHECK(losses::huber_loss(a, b, Reduction::mean, 2.0).item() == doctest::Approx(1.004).epsilon(1e-14));
  // beta = 0 is l1; smooth_l1 with beta = delta equals huber / delta
  CHECK(max_abs_diff(losses::smooth_l1_loss(a, b, Reduction::none, 0.0), losses::l1_loss(a, b, Reduction::none)) == 0);
  CHECK(max_abs_diff(losses::smooth_l1_loss(a, b, Reduction::none, 2.0),
                     mul(losses::huber_loss(a, b, Reduction::none, 2.0), 0.5)) < 1e-15);
  // gradients: mse 2(a-b)/N, smooth_l1 d/beta inside and sign(d) outside
  Tensor al = a.clone().requires_grad_();
  losses::smooth_l1_loss(al, b, Reduction::sum, 0.5).backward();
  check_vec(al.grad(), {-0.4, 1, -1, 0, 1});
  Tensor am = a.clone().requires_grad_();
  losses::mse_loss(am, b).backward();
  check_vec(am.grad(), {-0.08, 0.4, -1.2, 0, 0.4});
}

TEST_CASE("losses: gradcheck (f64) for every loss, contiguous and non-contiguous inputs") {
  Generator g(21);
  using O = losses::CrossEntropyOptions;
  Tensor y = idx({2, 0, -100, 1}, {4}), w = mat({0.5, 1.0, 2.0}, {3});
  Tensor tp = softmax(randn({4, 3}, g, DType::f64), 1);
  Tensor ys = idx({0, 2, 1, -100, 1, 1}, {2, 3}), tb = rand({4, 3}, g, DType::f64);
  Tensor reg_t = randn({4, 3}, g, DType::f64);
  for (auto& [name, x] : layouts({4, 3}, g)) {
    INFO("layout ", name);
    for (Reduction r : {Reduction::none, Reduction::mean, Reduction::sum}) {
      INFO("reduction ", losses::reduction_name(r));
      LD_GRADCHECK([&](const std::vector<Tensor>& v) {
        return losses::cross_entropy(v[0], y, O{.weight = w, .label_smoothing = 0.1, .reduction = r});
      }, {x});
      LD_GRADCHECK([&](const std::vector<Tensor>& v) { return losses::cross_entropy(v[0], tp, O{.weight = w, .label_smoothing = 0.2, .reduction = r}); },
                   {x});
      LD_GRADCHECK([&](const std::vector<Tensor>& v) { return losses::nll_loss(v[0], y, {.weight = w, .reduction = r}); }, {x});
      LD_GRADCHECK([&](const std::vector<Tensor>& v) {
        return losses::binary_cross_entropy_with_logits(v[0], tb, {.weight = w, .pos_weight = add(w, 0.5), .reduction = r});
      }, {x});
      LD_GRADCHECK([&](const std::vector<Tensor>& v) { return losses::mse_loss(v[0], reg_t, r); }, {x});
      LD_GRADCHECK([&](const std::vector<Tensor>& v) { return losses::l1_loss(v[0], reg_t, r); }, {x});
      LD_GRADCHECK([&](const std::vector<Tensor>& v) { return losses::smooth_l1_loss(v[0], reg_t, r, 0.7); }, {x});
      LD_GRADCHECK([&](const std::vector<Tensor>& v) { return losses::huber_loss(v[0], reg_t, r, 0.7); }, {x});
    }
  }
  // spatial logits [N, C, d] in a permuted layout
  Tensor xs = rnd_permuted({2, 3, 3}, g);
  LD_GRADCHECK([&](const std::vector<Tensor>& v) {
    return losses::cross_entropy(v[0], ys, O{.weight = w, .label_smoothing = 0.05, .reduction = Reduction::none});
  }, {xs});
  LD_GRADCHECK([&](const std::vector<Tensor>& v) { return losses::cross_entropy(v[0], softmax(mat({0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8}, {2, 3, 3}), 1)); },
               {xs});
  // BCE at x = 0 exactly and at large |x|
  Tensor xe = leaf(mat({0.0, -25.0, 25.0, 0.0}, {4}));
  LD_GRADCHECK([&](const std::vector<Tensor>& v) {
    return losses::binary_cross_entropy_with_logits(v[0], mat({1, 0.5, 0.5, 0}, {4}), {.pos_weight = mat({3}, {1})});
  }, {xe});
}

TEST_CASE("losses: errors name the op and the shapes") {
  using O = losses::CrossEntropyOptions;
  CHECK_THROWS_WITH_AS(losses::cross_entropy(X(), idx({2, 0, 3, 1}, {4})),
                       "cross_entropy: target 3 at position 2 is out of range for 3 classes (input [4, 3], ignore_index -100)",
                       liandan::Error);
  CHECK_THROWS_WITH_AS(losses::cross_entropy(X(), idx({2, 0, -1, 1}, {4})), doctest::Contains("target -1 at position 2 is out of range"),
                       liandan::Error);
  CHECK_THROWS_WITH_AS(losses::cross_entropy(X(), idx({2, 0, 1}, {3})),
                       "cross_entropy: target shape [3] does not match input [4, 3] (expected target shape [4])",
                       liandan::Error);
  CHECK_THROWS_WITH_AS(losses::cross_entropy(X(), zeros({4, 2}, DType::f64)),
                       doctest::Contains("cross_entropy: probability targets must have the input's shape [4, 3], got [4, 2]"),
                       liandan::Error);
  CHECK_THROWS_WITH_AS(losses::cross_entropy(X(), Y(), O{.weight = mat({1, 2}, {2})}),
                       "cross_entropy: weight must have shape [3] (one per class), got [2]", liandan::Error);
  CHECK_THROWS_WITH_AS(losses::cross_entropy(X(), Y(), O{.label_smoothing = 1.5}),
                       "cross_entropy: label_smoothing must be in [0, 1], got 1.5", liandan::Error);
  CHECK_THROWS_WITH_AS(losses::cross_entropy(X().to(DType::i64), Y()), doctest::Contains("cross_entropy: input must be f32 or f64, got i64"),
                       liandan::Error);
  CHECK_THROWS_WITH_AS(losses::nll_loss(X(), idx({0, 5, 0, 0}, {4})), doctest::Contains("nll_loss: target 5 at position 1"),
                       liandan::Error);
  CHECK_THROWS_WITH_AS(losses::binary_cross_entropy_with_logits(X(), zeros({3, 4}, DType::f64)),
                       "binary_cross_entropy_with_logits: target shape [3, 4] must match input shape [4, 3]", liandan::Error);
  CHECK_THROWS_WITH_AS(losses::binary_cross_entropy_with_logits(X(), zeros({4, 3}, DType::f64), {.pos_weight = mat({1, 2}, {2})}),
                       doctest::Contains("cannot broadcast shapes [2] and [4, 3]"), liandan::Error);
  CHECK_THROWS_WITH_AS(losses::mse_loss(X(), zeros({4}, DType::f64)), "mse_loss: input shape [4, 3] and target shape [4] differ",
                       liandan::Error);
  CHECK_THROWS_WITH_AS(losses::huber_loss(X(), X(), Reduction::mean, 0.0), "huber_loss: delta must be > 0, got 0", liandan::Error);
  CHECK_THROWS_WITH_AS(losses::smooth_l1_loss(X(), X(), Reduction::mean, -1.0), "smooth_l1_loss: beta must be >= 0, got -1",
                       liandan::Error);
}
