// Metrics (losses/metrics.cpp): multi-label and n×m on hand-counted cases (exact match, micro/macro
// F1 with the threshold at 0 on ZLPR scores, per-task and whole-example accuracy), FID and sliced W1 on closed forms.
#include <doctest/doctest.h>

#include <cmath>
#include <numbers>

#include <vector>

#include "losses/losses.h"
#include "losses/metrics.h"

using namespace liandan;

namespace {
Tensor mat(const std::vector<double>& v, const Shape& s, DType dt = DType::f64) { return from_vector(v, s, dt); }
}  // namespace

TEST_CASE("multilabel metrics: exact match and F1 on a hand-counted case") {
  // 4 examples x 3 labels; predicted = score > 0 (a score of exactly 0 is not predicted)
  Tensor s = mat({2.0, -1.0, 0.5,     // pred 1 0 1
                  -0.3, 0.0, 4.0,     // pred 0 0 1
                  1.0, 1.0, -2.0,     // pred 1 1 0
                  -1.0, -1.0, -1.0},  // pred 0 0 0
                 {4, 3});
  Tensor y = mat({1, 0, 1,    // exact
                  0, 1, 1,    // FN on label 1
                  1, 0, 0,    // FP on label 1
                  0, 0, 0},   // exact (empty sets)
                 {4, 3});
  CHECK(metrics::multilabel_exact_match(s, y) == 0.5);
  // label 0: TP 2; label 1: FP 1, FN 1; label 2: TP 2
  metrics::F1 f = metrics::multilabel_f1(s, y);
  CHECK(f.tp == 4);
  CHECK(f.fp == 1);
  CHECK(f.fn == 1);
  CHECK(f.micro == doctest::Approx(8.0 / 10.0));
  CHECK(f.precision == doctest::Approx(0.8));
  CHECK(f.recall == doctest::Approx(0.8));
  REQUIRE(f.per_label.size() == 3);
  CHECK(f.per_label[0] == 1.0);
  CHECK(f.per_label[1] == 0.0);
  CHECK(f.per_label[2] == 1.0);
  CHECK(f.macro == doctest::Approx(2.0 / 3.0));
  // another threshold moves the decisions: at -0.5, example 1 label 0 (score -0.3) is predicted
  metrics::F1 f2 = metrics::multilabel_f1(s, y, -0.5);
  CHECK(f2.fp == 2);   // label 0 of example 1 and label 1 of example 2
  CHECK(f2.tp == 5);   // label 1 of example 1 (score 0) is now predicted too
  CHECK(metrics::multilabel_exact_match(s, y, -0.5) == 0.5);  // examples 0 and 3 still match
  // soft targets count as positive above 0.5; f32 scores; the threshold 0 matches σ(2s) > 0.5
  Tensor ys = mat({0.9, 0.1, 0.6, 0.2, 0.8, 0.7, 0.95, 0.3, 0.0, 0.4, 0.1, 0.2}, {4, 3});
  CHECK(metrics::multilabel_exact_match(s.to(DType::f32), ys) == 0.5);
  Tensor p = losses::zlpr_probs(s);
  CHECK(metrics::multilabel_exact_match(p, y, 0.5) == metrics::multilabel_exact_match(s, y));
  // a label never true and never predicted: F1 0/0 -> zero_division
  Tensor s3 = mat({1, -1, -1, 1}, {2, 2}), y3 = mat({1, 0, 1, 0}, {2, 2});
  metrics::F1 f3 = metrics::multilabel_f1(s3, y3);
  CHECK(f3.per_label[1] == 0.0);  // label 1: FP 1 -> F1 0
  metrics::F1 f4 = metrics::multilabel_f1(mat({1, -1}, {1, 2}), mat({1, 0}, {1, 2}), 0.0, 1.0);
  CHECK(f4.per_label[1] == 1.0);  // never true, never predicted: zero_division = 1
  CHECK(f4.macro == 1.0);
  CHECK(metrics::multilabel_f1(mat({1, -1}, {1, 2}), mat({1, 0}, {1, 2})).macro == 0.5);
  // batch dims: [2, 2, 3] is 4 examples
  CHECK(metrics::multilabel_exact_match(s.reshape({2, 2, 3}), y.reshape({2, 2, 3})) == 0.5);
}

TEST_CASE("nxm_accuracy: per task, mean and whole example") {
  // 3 examples x 2 tasks x 3 classes
  Tensor l = mat({0.1, 0.9, 0.0,   1.0, 0.0, 0.0,     // argmax 1, 0
                  2.0, 1.0, 0.0,   0.0, 0.0, 3.0,     // argmax 0, 2
                  0.0, 0.0, 1.0,   0.5, 0.5, 0.1},    // argmax 2, 0 (first of a tie)
                 {3, 2, 3});
  Tensor y = from_vector(std::vector<int64_t>{1, 0, 0, 1, 2, 0}, {3, 2});
  metrics::NxmAccuracy a = metrics::nxm_accuracy(l, y);
  REQUIRE(a.per_task.size() == 2);
  CHECK(a.per_task[0] == 1.0);
  CHECK(a.per_task[1] == doctest::Approx(2.0 / 3.0));
  CHECK(a.mean_task == doctest::Approx(5.0 / 6.0));
  CHECK(a.whole_example == doctest::Approx(2.0 / 3.0));
  // distribution targets: their argmax
  Tensor yd = mat({0.1, 0.8, 0.1, 0.6, 0.2, 0.2, 0.7, 0.2, 0.1, 0.2, 0.7, 0.1, 0.0, 0.0, 1.0, 0.9, 0.05, 0.05}, {3, 2, 3});
  metrics::NxmAccuracy b = metrics::nxm_accuracy(l, yd);
  CHECK(b.per_task == a.per_task);
  CHECK(b.whole_example == a.whole_example);
  // all wrong
  metrics::NxmAccuracy c = metrics::nxm_accuracy(l, from_vector(std::vector<int64_t>{0, 1, 1, 0, 0, 2}, {3, 2}));
  CHECK(c.whole_example == 0.0);
  CHECK(c.mean_task == 0.0);
}

TEST_CASE("metrics: errors") {
  CHECK_THROWS_WITH_AS(metrics::multilabel_f1(zeros({2, 3}), zeros({2, 4})),
                       "multilabel_f1: scores [2, 3] and targets [2, 4] must have the same shape", liandan::Error);
  CHECK_THROWS_WITH_AS(metrics::multilabel_exact_match(zeros({0, 3}), zeros({0, 3})),
                       doctest::Contains("multilabel_exact_match: no examples"), liandan::Error);
  CHECK_THROWS_WITH_AS(metrics::nxm_accuracy(zeros({2, 3, 4}), zeros({2, 4}, DType::i64)),
                       "nxm_accuracy: class-index targets must have shape [2, 3] for logits [2, 3, 4], got [2, 4]",
                       liandan::Error);
  CHECK_THROWS_WITH_AS(metrics::nxm_accuracy(zeros({1, 2, 4}), from_vector(std::vector<int64_t>{0, 4}, {1, 2})),
                       "nxm_accuracy: class index 4 is out of range for 4 classes", liandan::Error);
  CHECK_THROWS_WITH_AS(metrics::nxm_accuracy(zeros({4}), zeros({4})), doctest::Contains("nxm_accuracy: logits must have shape [..., n, m]"),
                       liandan::Error);
}

TEST_CASE("frechet_distance: closed forms for diagonal and rotated Gaussians; from features") {
  // Diagonal covariances: FID = ‖μ1 − μ2‖² + Σ (σ1_i − σ2_i)².
  Tensor m1 = from_vector(std::vector<double>{0, 1, 2}, {3}, DType::f64), m2 = from_vector(std::vector<double>{1, 1, 0}, {3}, DType::f64);
  Tensor c1 = zeros({3, 3}, DType::f64), c2 = zeros({3, 3}, DType::f64);
  double s1[] = {1, 4, 9}, s2[] = {4, 4, 1};
  for (int i = 0; i < 3; ++i) {
    c1.set({i, i}, s1[i]);
    c2.set({i, i}, s2[i]);
  }
  double expected = 1 + 0 + 4 + (1 - 2) * (1 - 2) + 0 + (3 - 1) * (3 - 1);
  CHECK(metrics::frechet_distance(m1, c1, m2, c2) == doctest::Approx(expected).epsilon(1e-12));
  CHECK(metrics::frechet_distance(m1, c1, m1, c1) == doctest::Approx(0.0).epsilon(1e-12));
  // Rotating both Gaussians by the same orthogonal matrix leaves the distance unchanged.
  double c = std::cos(0.7), s = std::sin(0.7);
  Tensor R = from_vector(std::vector<double>{c, -s, 0, s, c, 0, 0, 0, 1}, {3, 3}, DType::f64);
  auto rot = [&](const Tensor& C) { return matmul(matmul(R, C), R.t()); };
  CHECK(metrics::frechet_distance(matmul(R, m1.unsqueeze(1)).squeeze(1), rot(c1), matmul(R, m2.unsqueeze(1)).squeeze(1),
                                  rot(c2)) == doctest::Approx(expected).epsilon(1e-10));
  // From features: two samples of the same Gaussian are close; a shifted one is at ≈ ‖shift‖².
  Generator g(4);
  Tensor a = randn({4000, 4}, g, DType::f64), b = randn({4000, 4}, g, DType::f64);
  CHECK(metrics::frechet_distance(a, b) < 0.02);
  CHECK(metrics::frechet_distance(a, b + 2.0) == doctest::Approx(16.0).epsilon(0.02));
  CHECK_THROWS_WITH_AS(metrics::frechet_distance(a, zeros({10, 3}, DType::f64)),
                       "frechet_distance: features must be [N, d] with the same d, got [4000, 4] and [10, 3]", Error);
}

TEST_CASE("sliced_wasserstein: zero for equal sets, |shift| projected for a shifted set") {
  Generator g(5);
  Tensor a = randn({500, 2}, g, DType::f64);
  CHECK(metrics::sliced_wasserstein(a, a, 16, g) == 0.0);
  // Shifting by v moves every projection by u·v: SW1 = E_u |u·v| = ‖v‖·E|cos θ| = ‖v‖·2/π in 2-D.
  Tensor v = from_vector(std::vector<double>{3, 4}, {1, 2}, DType::f64);
  double sw = metrics::sliced_wasserstein(a, a + v, 4000, g);
  CHECK(sw == doctest::Approx(5.0 * 2 / std::numbers::pi).epsilon(0.03));
}
