// layer_norm, rms_norm, group_norm: closed forms, references built from primitive ops, gradchecks
// (contiguous and non-contiguous inputs), f32 paths, thread-count determinism and error messages.
#include <doctest/doctest.h>

#include "core/gradcheck.h"
#include "core/ops.h"
#include "core/threads.h"
#include "op_test_helpers.h"

using namespace liandan;
using namespace liandan::testing;

namespace {

// (x - mean) / sqrt(var + eps) * w + b over the last k dims, from reductions and broadcasting.
Tensor layer_norm_ref(const Tensor& x, int64_t k, const Tensor& w, const Tensor& b, double eps) {
  Shape dims;
  for (int64_t d = x.dim() - k; d < x.dim(); ++d) dims.push_back(d);
  Tensor m = mean(x, dims, true), v = var(x, dims, 0, true);
  Tensor y = (x - m) * rsqrt(v + eps);
  if (w.defined()) y = y * w;
  if (b.defined()) y = y + b;
  return y;
}

Tensor rms_norm_ref(const Tensor& x, int64_t k, const Tensor& w, double eps) {
  Shape dims;
  for (int64_t d = x.dim() - k; d < x.dim(); ++d) dims.push_back(d);
  Tensor y = x * rsqrt(mean(square(x), dims, true) + eps);
  return w.defined() ? y * w : y;
}

// group_norm as layer_norm over [N, G, C/G * S] followed by the per-channel affine.
Tensor group_norm_ref(const Tensor& x, int64_t G, const Tensor& w, const Tensor& b, double eps) {
  int64_t N = x.shape()[0], C = x.shape()[1];
  Tensor y = layer_norm(x.reshape({N, G, -1}), {x.numel() / (N * G)}, Tensor(), Tensor(), eps).reshape(x.shape());
  Shape cs(size_t(x.dim()), 1);
  cs[1] = C;
  if (w.defined()) y = y * w.reshape(cs);
  if (b.defined()) y = y + b.reshape(cs);
  return y;
}

}  // namespace

// ------------------------------------------------------------------------------- layer_norm

TEST_CASE("layer_norm: rows have mean 0 and variance 1 (f64, no affine)") {
  Generator gen(7);
  for (Shape s : {Shape{5, 7}, Shape{3, 4, 6}, Shape{1, 33}}) {
    for (auto& [name, x] : layouts(s, gen)) {
      CAPTURE(name);
      Tensor xs = x * 3.0 + 1.5;  // not already normalized
      Tensor y = layer_norm(xs, {s.back()}, Tensor(), Tensor(), 0.0);
      REQUIRE(y.shape() == s);
      Tensor rows = y.reshape({-1, s.back()});
      for (int64_t r = 0; r < rows.size(0); ++r) {
        double m = 0, v = 0;
        for (int64_t i = 0; i < s.back(); ++i) m += rows.at({r, i});
        m /= double(s.back());
        for (int64_t i = 0; i < s.back(); ++i) v += (rows.at({r, i}) - m) * (rows.at({r, i}) - m);
        v /= double(s.back());
        CHECK(std::fabs(m) < 1e-12);
        CHECK(std::fabs(v - 1.0) < 1e-10);
      }
    }
  }
}

TEST_CASE("layer_norm over two trailing dims normalizes each [A, B] block") {
  Generator gen(8);
  Tensor x = randn({3, 4, 5}, gen, DType::f64) * 2.0 - 0.7;
  Tensor y = layer_norm(x, {4, 5}, Tensor(), Tensor(), 0.0);
  for (int64_t n = 0; n < 3; ++n) {
    Tensor blk = y.select(0, n);
    CHECK(std::fabs(mean(blk).item()) < 1e-12);
    CHECK(std::fabs(var(blk, {}, 0).item() - 1.0) < 1e-10);
  }
}

TEST_CASE("layer_norm matches (x - mean) * rsqrt(var + eps) * w + b") {
  Generator gen(9);
  for (int64_t k : {1, 2}) {
    CAPTURE(k);
    Tensor x = randn({4, 3, 6}, gen, DType::f64);
    Shape ns(x.shape().end() - k, x.shape().end());
    Tensor w = randn(ns, gen, DType::f64), b = randn(ns, gen, DType::f64);
    CHECK(max_abs_diff(layer_norm(x, ns, w, b), layer_norm_ref(x, k, w, b, 1e-5)) < 1e-12);
    CHECK(max_abs_diff(layer_norm(x, ns, w, Tensor()), layer_norm_ref(x, k, w, Tensor(), 1e-5)) < 1e-12);
    CHECK(max_abs_diff(layer_norm(x, ns, Tensor(), b), layer_norm_ref(x, k, Tensor(), b, 1e-5)) < 1e-12);
    CHECK(max_abs_diff(layer_norm(x, ns, Tensor(), Tensor(), 0.1), layer_norm_ref(x, k, Tensor(), Tensor(), 0.1)) < 1e-12);
  }
}

TEST_CASE("layer_norm of a constant row is the bias (eps keeps it finite)") {
  Tensor x = full({2, 5}, 3.25, DType::f64);
  Tensor b = from_vector(std::vector<double>{1, 2, 3, 4, 5}, {5}, DType::f64);
  Tensor w = full({5}, 7.0, DType::f64);
  Tensor y = layer_norm(x, {5}, w, b);
  for (int64_t r = 0; r < 2; ++r)
    for (int64_t i = 0; i < 5; ++i) CHECK(y.at({r, i}) == doctest::Approx(double(i + 1)).epsilon(1e-12));
}

TEST_CASE("layer_norm gradcheck: without affine, one and two normalized dims, all layouts") {
  Generator gen(10);
  for (Shape s : {Shape{3, 5}, Shape{2, 3, 4}}) {
    for (int64_t k : {int64_t(1), int64_t(2)}) {
      Shape ns(s.end() - k, s.end());
      for (auto& [name, x] : layouts(s, gen)) {
        CAPTURE(name);
        CAPTURE(k);
        LD_GRADCHECK([ns](const std::vector<Tensor>& in) { return layer_norm(in[0], ns, Tensor(), Tensor()); }, {x});
      }
    }
  }
}

TEST_CASE("layer_norm gradcheck: with weight and bias, weight only, bias only") {
  Generator gen(11);
  for (Shape s : {Shape{4, 6}, Shape{2, 3, 4}}) {
    for (int64_t k : {int64_t(1), int64_t(2)}) {
      Shape ns(s.end() - k, s.end());
      for (auto& [name, x] : layouts(s, gen)) {
        CAPTURE(name);
        CAPTURE(k);
        Tensor w = rnd(ns, gen), b = rnd(ns, gen);
        LD_GRADCHECK([ns](const std::vector<Tensor>& in) { return layer_norm(in[0], ns, in[1], in[2]); }, {x, w, b});
        LD_GRADCHECK([ns](const std::vector<Tensor>& in) { return layer_norm(in[0], ns, in[1], Tensor()); }, {x, w});
        LD_GRADCHECK([ns](const std::vector<Tensor>& in) { return layer_norm(in[0], ns, Tensor(), in[1]); }, {x, b});
      }
    }
  }
}

TEST_CASE("layer_norm gradcheck: non-contiguous weight/bias, and only the affine requiring grad") {
  Generator gen(12);
  Tensor x = randn({3, 4, 5}, gen, DType::f64);  // no grad: only the affine path runs backward
  Tensor w = rnd_transposed({4, 5}, gen), b = rnd_strided({4, 5}, gen);
  CHECK(!w.is_contiguous());
  CHECK(!b.is_contiguous());
  LD_GRADCHECK([](const std::vector<Tensor>& in) { return layer_norm(in[0], {4, 5}, in[1], in[2]); }, {x, w, b});
  Tensor w1 = rnd_strided({5}, gen);
  LD_GRADCHECK([](const std::vector<Tensor>& in) { return layer_norm(in[0], {5}, in[1], Tensor()); }, {x, w1});
}

TEST_CASE("layer_norm f32 agrees with f64 in forward and backward") {
  Generator gen(13);
  Tensor x64 = randn({6, 40}, gen, DType::f64), w64 = randn({40}, gen, DType::f64), b64 = randn({40}, gen, DType::f64);
  Tensor g64 = randn({6, 40}, gen, DType::f64);
  Tensor x32 = leaf(x64.to(DType::f32)), w32 = leaf(w64.to(DType::f32)), b32 = leaf(b64.to(DType::f32));
  x64 = leaf(x64.clone()), w64 = leaf(w64.clone()), b64 = leaf(b64.clone());
  Tensor y64 = layer_norm(x64, {40}, w64, b64), y32 = layer_norm(x32, {40}, w32, b32);
  CHECK(y32.dtype() == DType::f32);
  CHECK(max_abs_diff(y32.to(DType::f64), y64) < 1e-5);
  y64.backward(g64);
  y32.backward(g64.to(DType::f32));
  CHECK(x32.grad().dtype() == DType::f32);
  CHECK(max_abs_diff(x32.grad().to(DType::f64), x64.grad()) < 1e-4);
  CHECK(max_abs_diff(w32.grad().to(DType::f64), w64.grad()) < 1e-4);
  CHECK(max_abs_diff(b32.grad().to(DType::f64), b64.grad()) < 1e-4);
}

TEST_CASE("layer_norm: weight and bias gradients are the column sums of g * xhat and g") {
  Generator gen(14);
  Tensor x = randn({5, 4}, gen, DType::f64), w = rnd({4}, gen), b = rnd({4}, gen);
  Tensor g = randn({5, 4}, gen, DType::f64);
  layer_norm(x, {4}, w, b).backward(g);
  CHECK(!x.grad().defined());
  Tensor xhat = layer_norm(x, {4}, Tensor(), Tensor());
  CHECK(max_abs_diff(w.grad(), sum(g * xhat, {0})) < 1e-12);
  CHECK(max_abs_diff(b.grad(), sum(g, {0})) < 1e-12);
}

// ------------------------------------------------------------------------------- rms_norm

TEST_CASE("rms_norm: rows have mean square 1 and match x * rsqrt(mean(x^2) + eps) * w") {
  Generator gen(20);
  for (Shape s : {Shape{4, 9}, Shape{2, 3, 5}}) {
    for (auto& [name, x] : layouts(s, gen)) {
      CAPTURE(name);
      Tensor y = rms_norm(x * 2.5 + 0.3, {s.back()}, Tensor(), 0.0);
      Tensor ms = mean(square(y), {-1});
      for (double v : ms.to_vector()) CHECK(std::fabs(v - 1.0) < 1e-12);
      // rms_norm does not center: the mean of a row is generally not 0
      Tensor w = randn({s.back()}, gen, DType::f64);
      CHECK(max_abs_diff(rms_norm(x, {s.back()}, w), rms_norm_ref(x, 1, w, 1e-6)) < 1e-12);
      CHECK(max_abs_diff(rms_norm(x, {s.back()}, Tensor(), 0.5), rms_norm_ref(x, 1, Tensor(), 0.5)) < 1e-12);
    }
  }
  Tensor x = randn({2, 3, 4}, gen, DType::f64), w = randn({3, 4}, gen, DType::f64);
  CHECK(max_abs_diff(rms_norm(x, {3, 4}, w), rms_norm_ref(x, 2, w, 1e-6)) < 1e-12);
  // positive shift: rms_norm keeps it (unlike layer_norm)
  Tensor c = full({1, 4}, 2.0, DType::f64);
  for (double v : rms_norm(c, {4}, Tensor(), 0.0).to_vector()) CHECK(v == doctest::Approx(1.0));
}

TEST_CASE("rms_norm gradcheck: with and without weight, one and two dims, all layouts") {
  Generator gen(21);
  for (Shape s : {Shape{3, 5}, Shape{2, 3, 4}}) {
    for (int64_t k : {int64_t(1), int64_t(2)}) {
      Shape ns(s.end() - k, s.end());
      for (auto& [name, x] : layouts(s, gen)) {
        CAPTURE(name);
        CAPTURE(k);
        LD_GRADCHECK([ns](const std::vector<Tensor>& in) { return rms_norm(in[0], ns, Tensor()); }, {x});
        Tensor w = k == 2 ? rnd_transposed(ns, gen) : rnd_strided(ns, gen);
        LD_GRADCHECK([ns](const std::vector<Tensor>& in) { return rms_norm(in[0], ns, in[1]); }, {x, w});
      }
    }
  }
}

TEST_CASE("rms_norm f32 agrees with f64") {
  Generator gen(22);
  Tensor x = randn({5, 17}, gen, DType::f64), w = randn({17}, gen, DType::f64);
  CHECK(max_abs_diff(rms_norm(x.to(DType::f32), {17}, w.to(DType::f32)).to(DType::f64), rms_norm(x, {17}, w)) < 1e-5);
}

// ------------------------------------------------------------------------------- group_norm

TEST_CASE("group_norm equals layer_norm over the reshaped groups") {
  Generator gen(30);
  struct Cfg { Shape s; int64_t G; };
  for (Cfg c : {Cfg{{2, 6, 3, 2}, 1}, Cfg{{2, 6, 3, 2}, 2}, Cfg{{2, 6, 3, 2}, 3}, Cfg{{2, 6, 3, 2}, 6},
                Cfg{{3, 4, 1, 1}, 2}, Cfg{{3, 4, 1, 1}, 1}, Cfg{{2, 8, 5}, 4}, Cfg{{4, 6}, 3}, Cfg{{1, 3, 2, 2, 2}, 3}}) {
    CAPTURE(shape_str(c.s));
    CAPTURE(c.G);
    Tensor x = randn(c.s, gen, DType::f64) * 2.0 + 0.5;
    int64_t C = c.s[1];
    Tensor w = randn({C}, gen, DType::f64), b = randn({C}, gen, DType::f64);
    CHECK(max_abs_diff(group_norm(x, c.G, w, b), group_norm_ref(x, c.G, w, b, 1e-5)) < 1e-12);
    CHECK(max_abs_diff(group_norm(x, c.G, Tensor(), Tensor()), group_norm_ref(x, c.G, Tensor(), Tensor(), 1e-5)) < 1e-12);
    CHECK(max_abs_diff(group_norm(x, c.G, w, Tensor()), group_norm_ref(x, c.G, w, Tensor(), 1e-5)) < 1e-12);
    CHECK(max_abs_diff(group_norm(x, c.G, Tensor(), b), group_norm_ref(x, c.G, Tensor(), b, 1e-5)) < 1e-12);
  }
}

TEST_CASE("group_norm: each (sample, group) has mean 0 and variance 1; non-contiguous input") {
  Generator gen(31);
  Tensor x = rnd_permuted({2, 4, 3, 3}, gen);  // laid out [W, H, C, N]
  CHECK(!x.is_contiguous());
  Tensor y = group_norm(x, 2, Tensor(), Tensor(), 0.0);
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t g = 0; g < 2; ++g) {
      Tensor blk = y.select(0, n).narrow(0, 2 * g, 2);
      CHECK(std::fabs(mean(blk).item()) < 1e-12);
      CHECK(std::fabs(var(blk, {}, 0).item() - 1.0) < 1e-10);
    }
}

TEST_CASE("group_norm gradcheck: group counts 1, 2, C, spatial sizes incl. 1x1, all layouts") {
  Generator gen(32);
  struct Cfg { Shape s; int64_t G; };
  for (Cfg c : {Cfg{{2, 4, 3, 2}, 1}, Cfg{{2, 4, 3, 2}, 2}, Cfg{{2, 4, 3, 2}, 4}, Cfg{{3, 4, 1, 1}, 2},
                Cfg{{2, 6, 1, 1}, 3}, Cfg{{2, 6, 5}, 3}}) {
    for (auto& [name, x] : layouts(c.s, gen)) {
      CAPTURE(shape_str(c.s));
      CAPTURE(c.G);
      CAPTURE(name);
      int64_t C = c.s[1], G = c.G;
      Tensor w = rnd({C}, gen), b = rnd({C}, gen);
      LD_GRADCHECK([G](const std::vector<Tensor>& in) { return group_norm(in[0], G, in[1], in[2]); }, {x, w, b});
      LD_GRADCHECK([G](const std::vector<Tensor>& in) { return group_norm(in[0], G, Tensor(), Tensor()); }, {x});
    }
  }
}

TEST_CASE("group_norm gradcheck: weight only, bias only, non-contiguous affine") {
  Generator gen(33);
  Tensor x = rnd_transposed({2, 6, 2, 3}, gen);
  Tensor w = rnd_strided({6}, gen), b = rnd_strided({6}, gen);
  LD_GRADCHECK([](const std::vector<Tensor>& in) { return group_norm(in[0], 3, in[1], Tensor()); }, {x, w});
  LD_GRADCHECK([](const std::vector<Tensor>& in) { return group_norm(in[0], 2, Tensor(), in[1]); }, {x, b});
  Tensor xc = randn({2, 6, 2, 3}, gen, DType::f64);  // only the affine requires grad
  LD_GRADCHECK([](const std::vector<Tensor>& in) { return group_norm(in[0], 6, in[1], in[2]); }, {xc, w, b});
}

TEST_CASE("group_norm f32 agrees with f64 in forward and backward") {
  Generator gen(34);
  Tensor x64 = randn({3, 8, 4, 4}, gen, DType::f64), w64 = randn({8}, gen, DType::f64), b64 = randn({8}, gen, DType::f64);
  Tensor g = randn({3, 8, 4, 4}, gen, DType::f64);
  Tensor x32 = leaf(x64.to(DType::f32)), w32 = leaf(w64.to(DType::f32)), b32 = leaf(b64.to(DType::f32));
  x64 = leaf(x64.clone()), w64 = leaf(w64.clone()), b64 = leaf(b64.clone());
  Tensor y64 = group_norm(x64, 4, w64, b64), y32 = group_norm(x32, 4, w32, b32);
  CHECK(max_abs_diff(y32.to(DType::f64), y64) < 1e-5);
  y64.backward(g);
  y32.backward(g.to(DType::f32));
  CHECK(max_abs_diff(x32.grad().to(DType::f64), x64.grad()) < 1e-4);
  CHECK(max_abs_diff(w32.grad().to(DType::f64), w64.grad()) < 1e-4);
  CHECK(max_abs_diff(b32.grad().to(DType::f64), b64.grad()) < 1e-4);
}

// ------------------------------------------------------------------------------- determinism

namespace {
struct NormRun {
  std::vector<double> y, dx, dw, db;
};

template <class F>
NormRun run_norm(int threads, const Tensor& x0, const Tensor& w0, const Tensor& b0, const Tensor& g, F f) {
  ThreadsGuard tg(threads);
  REQUIRE(get_num_threads() == threads);
  Tensor x = leaf(x0.clone()), w = leaf(w0.clone()), b = leaf(b0.clone());
  Tensor y = f(x, w, b);
  y.backward(g);
  return {y.to_vector(), x.grad().to_vector(), w.grad().to_vector(), b.grad().to_vector()};
}
}  // namespace

TEST_CASE("layer_norm forward and backward (incl. weight grads) are bit-identical on 1 and 2 threads") {
  Generator gen(40);
  // 256 rows of 512: the row loops and the 2 column blocks of the affine backward both split.
  Tensor x = randn({256, 512}, gen, DType::f32), w = randn({512}, gen, DType::f32), b = randn({512}, gen, DType::f32);
  Tensor g = randn({256, 512}, gen, DType::f32);
  auto f = [](const Tensor& x, const Tensor& w, const Tensor& b) { return layer_norm(x, {512}, w, b); };
  NormRun r1 = run_norm(1, x, w, b, g, f), r2 = run_norm(2, x, w, b, g, f);
  CHECK(get_num_threads() == 2);
  CHECK(r1.y == r2.y);
  CHECK(r1.dx == r2.dx);
  CHECK(r1.dw == r2.dw);
  CHECK(r1.db == r2.db);
  auto fr = [](const Tensor& x, const Tensor& w, const Tensor& b) { return rms_norm(x, {512}, w) + b; };
  NormRun q1 = run_norm(1, x, w, b, g, fr), q2 = run_norm(2, x, w, b, g, fr);
  CHECK(q1.y == q2.y);
  CHECK(q1.dx == q2.dx);
  CHECK(q1.dw == q2.dw);
}

TEST_CASE("group_norm forward and backward are bit-identical on 1 and 2 threads") {
  Generator gen(41);
  Tensor x = randn({8, 32, 16, 16}, gen, DType::f32), w = randn({32}, gen, DType::f32), b = randn({32}, gen, DType::f32);
  Tensor g = randn({8, 32, 16, 16}, gen, DType::f32);
  for (int64_t G : {1, 4, 32}) {
    CAPTURE(G);
    auto f = [G](const Tensor& x, const Tensor& w, const Tensor& b) { return group_norm(x, G, w, b); };
    NormRun r1 = run_norm(1, x, w, b, g, f), r2 = run_norm(2, x, w, b, g, f);
    CHECK(r1.y == r2.y);
    CHECK(r1.dx == r2.dx);
    CHECK(r1.dw == r2.dw);
    CHECK(r1.db == r2.db);
  }
  CHECK(get_num_threads() == 2);
}

TEST_CASE("norms of an empty batch return an empty result (no division by zero)") {
  Tensor x = leaf(zeros({0, 4, 2, 2}, DType::f64));
  Tensor w = leaf(ones({4}, DType::f64)), b = leaf(zeros({4}, DType::f64));
  Tensor y = group_norm(x, 2, w, b);
  CHECK(y.shape() == Shape{0, 4, 2, 2});
  y.sum().backward();
  CHECK(x.grad().shape() == Shape{0, 4, 2, 2});
  CHECK(w.grad().to_vector() == std::vector<double>{0, 0, 0, 0});
  CHECK(b.grad().to_vector() == std::vector<double>{0, 0, 0, 0});
  CHECK(layer_norm(zeros({0, 5}, DType::f64), {5}, Tensor(), Tensor()).shape() == Shape{0, 5});
  CHECK(rms_norm(zeros({2, 0, 3}, DType::f64), {3}, Tensor()).shape() == Shape{2, 0, 3});
}

// ------------------------------------------------------------------------------- errors

TEST_CASE("norm errors name the op and the shapes") {
  Tensor x = zeros({2, 6, 4, 4}, DType::f64);
  CHECK_THROWS_WITH_AS(group_norm(x, 4, Tensor(), Tensor()), doctest::Contains("group_norm"), liandan::Error);
  CHECK_THROWS_WITH_AS(group_norm(x, 4, Tensor(), Tensor()), doctest::Contains("6 channels"), liandan::Error);
  CHECK_THROWS_WITH_AS(group_norm(x, 0, Tensor(), Tensor()), doctest::Contains("group_norm"), liandan::Error);
  CHECK_THROWS_WITH_AS(group_norm(zeros({6}, DType::f64), 2, Tensor(), Tensor()), doctest::Contains("group_norm"),
                       liandan::Error);
  CHECK_THROWS_WITH_AS(group_norm(x, 3, zeros({4}, DType::f64), Tensor()), doctest::Contains("[4]"), liandan::Error);

  Tensor y = zeros({3, 4, 5}, DType::f64);
  CHECK_THROWS_WITH_AS(layer_norm(y, {4}, Tensor(), Tensor()), doctest::Contains("layer_norm"), liandan::Error);
  CHECK_THROWS_WITH_AS(layer_norm(y, {4}, Tensor(), Tensor()), doctest::Contains("[3, 4, 5]"), liandan::Error);
  CHECK_THROWS_WITH_AS(layer_norm(y, {3, 4, 5, 1}, Tensor(), Tensor()), doctest::Contains("layer_norm"), liandan::Error);
  CHECK_THROWS_WITH_AS(layer_norm(y, {}, Tensor(), Tensor()), doctest::Contains("layer_norm"), liandan::Error);
  CHECK_THROWS_WITH_AS(layer_norm(y, {5}, zeros({4}, DType::f64), Tensor()), doctest::Contains("weight"),
                       liandan::Error);
  CHECK_THROWS_WITH_AS(layer_norm(y, {5}, Tensor(), zeros({5}, DType::f32)), doctest::Contains("bias"), liandan::Error);
  CHECK_THROWS_WITH_AS(rms_norm(y, {4, 4}, Tensor()), doctest::Contains("rms_norm"), liandan::Error);
  CHECK_THROWS_WITH_AS(rms_norm(y, {5}, zeros({5, 1}, DType::f64)), doctest::Contains("[5, 1]"), liandan::Error);
}

// ------------------------------------------------------------------------------- group_norm_silu (fused)

TEST_CASE("group_norm_silu equals silu(group_norm(x)) in forward and backward (f64), with and without affine") {
  Generator gen(50);
  struct Cfg { Shape s; int64_t G; };
  for (Cfg c : {Cfg{{2, 6, 3, 2}, 3}, Cfg{{3, 4, 1, 1}, 2}, Cfg{{2, 8, 5}, 1}, Cfg{{2, 4, 7, 7}, 4}}) {
    for (int affine = 0; affine < 2; ++affine) {
      CAPTURE(shape_str(c.s));
      CAPTURE(affine);
      int64_t C = c.s[1];
      Tensor x0 = randn(c.s, gen, DType::f64) * 1.5 + 0.3, g = randn(c.s, gen, DType::f64);
      Tensor w0 = affine ? randn({C}, gen, DType::f64) : Tensor(), b0 = affine ? randn({C}, gen, DType::f64) : Tensor();
      auto run = [&](bool fused) {
        Tensor x = leaf(x0.clone()), w = affine ? leaf(w0.clone()) : Tensor(), b = affine ? leaf(b0.clone()) : Tensor();
        Tensor y = fused ? group_norm_silu(x, c.G, w, b) : silu(group_norm(x, c.G, w, b));
        y.backward(g);
        std::vector<Tensor> r = {y, x.grad()};
        if (affine) r.insert(r.end(), {w.grad(), b.grad()});
        return r;
      };
      auto f = run(true), ref = run(false);
      for (size_t k = 0; k < f.size(); ++k) {
        CAPTURE(k);
        CHECK(max_abs_diff(f[k], ref[k]) < 1e-12);
      }
    }
  }
}

TEST_CASE("group_norm_silu gradcheck and f32 agreement; bit-identical on 1 and 2 threads") {
  Generator gen(51);
  for (auto& [name, x] : layouts({2, 6, 3, 2}, gen)) {
    CAPTURE(name);
    Tensor w = rnd({6}, gen), b = rnd({6}, gen);
    LD_GRADCHECK([](const std::vector<Tensor>& in) { return group_norm_silu(in[0], 3, in[1], in[2]); }, {x, w, b});
    LD_GRADCHECK([](const std::vector<Tensor>& in) { return group_norm_silu(in[0], 2, Tensor(), Tensor()); }, {x});
  }
  Tensor x64 = randn({3, 8, 4, 4}, gen, DType::f64), w64 = randn({8}, gen, DType::f64), b64 = randn({8}, gen, DType::f64);
  CHECK(max_abs_diff(group_norm_silu(x64.to(DType::f32), 4, w64.to(DType::f32), b64.to(DType::f32)).to(DType::f64),
                     group_norm_silu(x64, 4, w64, b64)) < 1e-5);
  Tensor x = randn({8, 32, 16, 16}, gen, DType::f32), w = randn({32}, gen, DType::f32), b = randn({32}, gen, DType::f32);
  Tensor g = randn({8, 32, 16, 16}, gen, DType::f32);
  auto f = [](const Tensor& x, const Tensor& w, const Tensor& b) { return group_norm_silu(x, 8, w, b); };
  NormRun r1 = run_norm(1, x, w, b, g, f), r2 = run_norm(2, x, w, b, g, f);
  CHECK(r1.y == r2.y);
  CHECK(r1.dx == r2.dx);
  CHECK(r1.dw == r2.dw);
  CHECK(r1.db == r2.db);
  CHECK_THROWS_WITH_AS(group_norm_silu(zeros({2, 6, 4}), 4, Tensor(), Tensor()), doctest::Contains("group_norm_silu"),
                       liandan::Error);
}
