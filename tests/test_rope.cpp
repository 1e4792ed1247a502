// RoPE 1D and 2D: the article's defining properties, the reference vectors of algorithms.md §1.6,
// both pairings, partial rotary, broadcasting over batch/heads, gradients (x and learned tables).
#include <doctest/doctest.h>

#include <cmath>
#include <complex>

#include "core/gradcheck.h"
#include "core/ops.h"
#include "core/ops/rope.h"

using namespace liandan;

namespace {

Tensor vec(std::vector<double> v) { return from_vector(v, {int64_t(v.size())}, DType::f64); }

// Rotates a single vector x (length d) to position m (1-D RoPE, f64).
Tensor rot1(const Tensor& x, double m, RopePairing p = RopePairing::interleaved, double base = 10000.0) {
  auto [c, s] = rope_cos_sin(rope_angles_1d(vec({m}), x.size(-1), base), DType::f64);
  return rope(x.reshape({1, -1}), c, s, p).reshape({-1});
}

double dot(const Tensor& a, const Tensor& b) { return sum(mul(a, b)).item(); }

}  // namespace

TEST_CASE("reference vectors (algorithms.md 1.6 O1, O2)") {
  Tensor x = vec({1, 2, 3, 4});
  std::vector<double> inter = {-1.142639664, 1.922075597, 2.959850668, 4.029799502};
  std::vector<double> half = {-1.984110649, 1.959900667, 2.462377902, 4.019799668};
  std::vector<double> yi = rot1(x, 1).to_vector(), yh = rot1(x, 1, RopePairing::half).to_vector();
  for (int i = 0; i < 4; ++i) {
    CHECK(yi[size_t(i)] == doctest::Approx(inter[size_t(i)]).epsilon(1e-9));
    CHECK(yh[size_t(i)] == doctest::Approx(half[size_t(i)]).epsilon(1e-9));
  }
  Tensor q = vec({0.5, -1, 2, 0.25}), k = vec({1.5, 0.5, -0.5, 1});
  CHECK(dot(rot1(q, 5), rot1(k, 3)) == doctest::Approx(0.779880949532).epsilon(1e-11));
  CHECK(dot(rot1(q, 2), rot1(k, 0)) == doctest::Approx(0.779880949532).epsilon(1e-11));
}

TEST_CASE("relativity: <R_m q, R_n k> depends only on m - n") {
  Generator gen(3);
  for (int trial = 0; trial < 20; ++trial) {
    Tensor q = randn({64}, gen, DType::f64), k = randn({64}, gen, DType::f64);
    Tensor r = rand({3}, gen, DType::f64);
    double m = std::floor(r.at({0}) * 4096), n = std::floor(r.at({1}) * 4096), c = std::floor(r.at({2}) * 4096) - 2048;
    for (auto p : {RopePairing::interleaved, RopePairing::half}) {
      double a = dot(rot1(q, m, p), rot1(k, n, p)), b = dot(rot1(q, m + c, p), rot1(k, n + c, p));
      CHECK(a == doctest::Approx(b).epsilon(1e-9));
      // the closed form of the article: Re sum_i q_i conj(k_i) e^{i (m-n) theta_i} (interleaved pairs)
      if (p == RopePairing::interleaved) {
        std::complex<double> acc = 0;
        for (int i = 0; i < 32; ++i) {
          std::complex<double> qi(q.at({2 * i}), q.at({2 * i + 1})), ki(k.at({2 * i}), k.at({2 * i + 1}));
          double th = std::pow(10000.0, -2.0 * i / 64);
          acc += qi * std::conj(ki) * std::exp(std::complex<double>(0, (m - n) * th));
        }
        CHECK(a == doctest::Approx(acc.real()).epsilon(1e-9));
      }
    }
  }
  // f32 at positions up to 4096: tolerance 1e-4 relative to |q||k| (seeds-math 1, test idea 1)
  Generator g2(4);
  Tensor q = randn({64}, g2), k = randn({64}, g2);
  auto rot32 = [](const Tensor& x, double m) {
    auto [c, s] = rope_cos_sin(rope_angles_1d(vec({m}), 64), DType::f32);
    return rope(x.reshape({1, -1}), c, s).reshape({-1});
  };
  double scale = std::sqrt(dot(q, q) * dot(k, k));
  CHECK(std::fabs(dot(rot32(q, 4000), rot32(k, 3990)) - dot(rot32(q, 10), rot32(k, 0))) < 1e-4 * scale);
}

TEST_CASE("algebra: R_0 = I, norms kept, R_m R_n = R_{m+n}, R_{-m} inverts R_m") {
  Generator gen(5);
  Tensor x = randn({16}, gen, DType::f64);
  CHECK(rot1(x, 0).to_vector() == x.to_vector());
  for (double m : {1.0, 7.0, 1000.0}) {
    CHECK(dot(rot1(x, m), rot1(x, m)) == doctest::Approx(dot(x, x)).epsilon(1e-12));
    Tensor a = rot1(rot1(x, m), 13), b = rot1(x, m + 13);
    for (int i = 0; i < 16; ++i) CHECK(a.at({i}) == doctest::Approx(b.at({i})).epsilon(1e-10));
    Tensor back = rot1(rot1(x, m), -m);
    for (int i = 0; i < 16; ++i) CHECK(back.at({i}) == doctest::Approx(x.at({i})).epsilon(1e-10));
  }
}

TEST_CASE("half pairing equals interleaved after the permutation of the head dims") {
  Generator gen(6);
  Tensor x = randn({8}, gen, DType::f64);
  // interleaved position 2i <-> half position i, 2i+1 <-> i + d/2
  std::vector<int64_t> perm;
  for (int i = 0; i < 4; ++i) perm.push_back(2 * i);
  for (int i = 0; i < 4; ++i) perm.push_back(2 * i + 1);
  Tensor idx = from_vector(perm, {8});
  Tensor a = index_select(rot1(x, 3.0), 0, idx);
  Tensor b = rot1(index_select(x, 0, idx), 3.0, RopePairing::half);
  for (int i = 0; i < 8; ++i) CHECK(a.at({i}) == doctest::Approx(b.at({i})).epsilon(1e-12));
}

TEST_CASE("large positions are exact (angle built from m, not accumulated)") {
  Generator gen(7);
  Tensor x = randn({64}, gen, DType::f64);
  auto [c32, s32] = rope_cos_sin(rope_angles_1d(vec({8191}), 64), DType::f32);
  Tensor y32 = rope(x.to(DType::f32).reshape({1, -1}), c32, s32).reshape({-1});
  Tensor y64 = rot1(x, 8191);
  for (int i = 0; i < 64; ++i) CHECK(std::fabs(y32.at({i}) - y64.at({i})) < 1e-3);
}

TEST_CASE("batched [B, H, T, D] with a [T, P] table, partial rotary, and a position offset") {
  Generator gen(8);
  int64_t B = 2, H = 3, T = 5, D = 10, P = 4;  // rotate 8 of 10 dims
  Tensor x = randn({B, H, T, D}, gen, DType::f64);
  Tensor pos = arange(7.0, 7.0 + double(T), 1.0, DType::f64);  // offset 7, as in cached generation
  auto [c, s] = rope_cos_sin(rope_angles_1d(pos, 2 * P), DType::f64);
  Tensor y = rope(x, c, s);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        Tensor xr = x.select(0, b).select(0, h).select(0, t);
        Tensor ref = rot1(xr.narrow(0, 0, 2 * P).contiguous(), 7.0 + double(t));
        for (int64_t i = 0; i < 2 * P; ++i) CHECK(y.at({b, h, t, i}) == doctest::Approx(ref.at({i})).epsilon(1e-12));
        for (int64_t i = 2 * P; i < D; ++i) CHECK(y.at({b, h, t, i}) == x.at({b, h, t, i}));
      }
  CHECK_THROWS_WITH_AS(rope(x, c.narrow(0, 0, 4), s.narrow(0, 0, 4)), doctest::Contains("broadcast"), Error);
  auto [cw, sw] = rope_cos_sin(rope_angles_1d(pos, 12), DType::f64);
  CHECK_THROWS_WITH_AS(rope(x, cw, sw), doctest::Contains("rotate 12 dims"), Error);
  CHECK_THROWS_WITH_AS(rope(x.to(DType::f32), c, s), doctest::Contains("dtype"), Error);
}

TEST_CASE("gradcheck: x (non-contiguous, both pairings) and learned angles") {
  Generator gen(9);
  Tensor x = randn({2, 4, 3, 6}, gen, DType::f64).permute({0, 2, 1, 3}).requires_grad_();  // [2,3,4,6] view
  auto [c, s] = rope_cos_sin(rope_angles_1d(arange(4, DType::f64), 6), DType::f64);
  for (auto p : {RopePairing::interleaved, RopePairing::half}) {
    auto r = gradcheck([&](const std::vector<Tensor>& in) { return rope(in[0], c, s, p); }, {x});
    INFO(r.message);
    CHECK(r.ok);
  }
  // learned frequencies: angles = pos * freq with freq requiring grad (RoPE-Mixed style)
  Tensor freq = rope_frequencies(4).requires_grad_();
  Tensor xs = randn({5, 4}, gen, DType::f64).requires_grad_();
  auto r = gradcheck([](const std::vector<Tensor>& in) {
    Tensor ang = mul(arange(5, DType::f64).reshape({5, 1}), in[1].reshape({1, -1}));
    return rope(in[0], cos(ang), sin(ang), RopePairing::half);
  }, {xs, freq});
  INFO(r.message);
  CHECK(r.ok);
}

TEST_CASE("2D RoPE: relativity in (dx, dy), reduction to 1D per half, identity at the origin") {
  Generator gen(10);
  int64_t d = 16;
  auto rot2 = [&](const Tensor& x, double px, double py) {
    auto [c, s] = rope_cos_sin(rope_angles_2d(vec({px}), vec({py}), d), DType::f64);
    return rope(x.reshape({1, -1}), c, s).reshape({-1});
  };
  Tensor q = randn({d}, gen, DType::f64), k = randn({d}, gen, DType::f64);
  for (int trial = 0; trial < 10; ++trial) {
    Tensor r = rand({6}, gen, DType::f64);
    double x1 = std::floor(r.at({0}) * 64), y1 = std::floor(r.at({1}) * 64), x2 = std::floor(r.at({2}) * 64),
           y2 = std::floor(r.at({3}) * 64), cx = std::floor(r.at({4}) * 64), cy = std::floor(r.at({5}) * 64);
    CHECK(dot(rot2(q, x1, y1), rot2(k, x2, y2)) ==
          doctest::Approx(dot(rot2(q, x1 + cx, y1 + cy), rot2(k, x2 + cx, y2 + cy))).epsilon(1e-10));
  }
  CHECK(rot2(q, 0, 0).to_vector() == q.to_vector());
  CHECK(dot(rot2(q, 5, 9), rot2(q, 5, 9)) == doctest::Approx(dot(q, q)).epsilon(1e-12));
  // y = 0: the second half is untouched and the first half is the (d/2)-dim 1-D RoPE at x
  Tensor a = rot2(q, 6, 0);
  Tensor first = rot1(q.narrow(0, 0, d / 2).contiguous(), 6);
  for (int64_t i = 0; i < d / 2; ++i) CHECK(a.at({i}) == doctest::Approx(first.at({i})).epsilon(1e-12));
  for (int64_t i = d / 2; i < d; ++i) CHECK(a.at({i}) == q.at({i}));
  // x and y are not interchangeable (reversibility: (x, y) is recoverable): swapping changes the result
  CHECK(std::fabs(rot2(q, 3, 1).at({0}) - rot2(q, 1, 3).at({0})) > 1e-6);
  // recover (x, y) from the rotation of a unit pair: the angle of pair 0 is x * f_0 = x, of pair d/4 is y
  Tensor e = zeros({d}, DType::f64);
  e.set({0}, 1.0);
  e.set({d / 2}, 1.0);
  Tensor re = rot2(e, 2, 3);
  CHECK(std::atan2(re.at({1}), re.at({0})) == doctest::Approx(2.0));
  CHECK(std::atan2(re.at({d / 2 + 1}), re.at({d / 2})) == doctest::Approx(3.0));
}

TEST_CASE("long-range decay indicator of theta_i (seeds-math 1, d = 128)") {
  // (1/64) sum_{j=1}^{64} |S_j|, S_j = sum_{i<j} e^{i dist theta_i}
  Tensor th = rope_frequencies(128);
  std::vector<std::pair<double, double>> table = {{0, 32.5},     {1, 31.538},  {2, 28.956},  {4, 22.604},
                                                  {8, 19.817},   {16, 15.775}, {32, 13.384}, {64, 10.090},
                                                  {128, 9.273},  {256, 6.543}};
  for (auto [dist, want] : table) {
    std::complex<double> S = 0;
    double total = 0;
    for (int j = 0; j < 64; ++j) {
      S += std::exp(std::complex<double>(0, dist * th.at({j})));
      total += std::abs(S);
    }
    CHECK(total / 64 == doctest::Approx(want).epsilon(2e-4));
  }
}
