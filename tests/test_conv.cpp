// conv2d, unfold, avg_pool2d, upsample_nearest2d: naive direct-loop references, hand-computed values,
// gradchecks on non-contiguous inputs, thread-count determinism and error messages.
#include <doctest/doctest.h>

#include <tuple>

#include "core/gradcheck.h"
#include "core/ops.h"
#include "core/threads.h"
#include "op_test_helpers.h"

using namespace liandan;
using namespace liandan::testing;

namespace {

struct ConvCfg {
  int64_t N, C, H, W, O, kh, kw, stride, pad, groups;
  bool bias;
  std::string str() const {
    return "x[" + std::to_string(N) + "," + std::to_string(C) + "," + std::to_string(H) + "," + std::to_string(W) +
           "] O=" + std::to_string(O) + " k=" + std::to_string(kh) + "x" + std::to_string(kw) +
           " s=" + std::to_string(stride) + " p=" + std::to_string(pad) + " g=" + std::to_string(groups) +
           (bias ? " bias" : "");
  }
};

// Direct convolution, 7 nested loops (n, o, oy, ox, c, i, j), in f64.
Tensor conv2d_ref(const Tensor& x, const Tensor& w, const Tensor& b, int64_t s, int64_t p, int64_t groups) {
  int64_t N = x.shape()[0], C = x.shape()[1], H = x.shape()[2], W = x.shape()[3];
  int64_t O = w.shape()[0], cg = w.shape()[1], kh = w.shape()[2], kw = w.shape()[3];
  int64_t Ho = (H + 2 * p - kh) / s + 1, Wo = (W + 2 * p - kw) / s + 1, og = O / groups;
  REQUIRE(cg * groups == C);
  std::vector<double> xv = x.to_vector(), wv = w.to_vector(), bv = b.defined() ? b.to_vector() : std::vector<double>();
  std::vector<double> out(size_t(N * O * Ho * Wo));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t oy = 0; oy < Ho; ++oy)
        for (int64_t ox = 0; ox < Wo; ++ox) {
          double acc = b.defined() ? bv[size_t(o)] : 0.0;
          int64_t g = o / og;
          for (int64_t c = 0; c < cg; ++c)
            for (int64_t i = 0; i < kh; ++i)
              for (int64_t j = 0; j < kw; ++j) {
                int64_t iy = oy * s - p + i, ix = ox * s - p + j;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                acc += xv[size_t(((n * C + g * cg + c) * H + iy) * W + ix)] * wv[size_t(((o * cg + c) * kh + i) * kw + j)];
              }
          out[size_t(((n * O + o) * Ho + oy) * Wo + ox)] = acc;
        }
  return from_vector(out, {N, O, Ho, Wo}, DType::f64);
}

Tensor f64(std::vector<double> v, const Shape& s) { return from_vector(v, s, DType::f64); }
Tensor iota(const Shape& s) { return arange(0.0, double(shape_numel(s)), 1.0, DType::f64).reshape(s); }

}  // namespace

// ------------------------------------------------------------------------------- conv2d

TEST_CASE("conv2d equals a naive direct convolution (f64) for many configurations") {
  Generator gen(1);
  std::vector<ConvCfg> cfgs = {
      {2, 3, 5, 6, 4, 3, 3, 1, 0, 1, true},  {2, 3, 5, 6, 4, 3, 3, 1, 1, 1, false}, {1, 4, 7, 6, 6, 3, 3, 2, 1, 2, true},
      {2, 4, 6, 5, 4, 3, 3, 1, 1, 4, true},  {2, 4, 6, 5, 8, 3, 3, 2, 0, 4, true},  {1, 2, 6, 7, 3, 2, 3, 1, 0, 1, true},
      {1, 2, 6, 7, 3, 3, 1, 2, 1, 1, true},  {2, 3, 4, 4, 5, 1, 1, 1, 0, 1, true},  {1, 2, 5, 5, 2, 5, 5, 1, 0, 1, true},
      {1, 1, 3, 3, 1, 3, 3, 2, 2, 1, false}, {3, 6, 8, 8, 6, 3, 3, 2, 1, 3, true},  {2, 4, 9, 7, 6, 4, 2, 3, 1, 2, false},
  };
  for (auto& c : cfgs) {
    CAPTURE(c.str());
    Tensor x = randn({c.N, c.C, c.H, c.W}, gen, DType::f64);
    Tensor w = randn({c.O, c.C / c.groups, c.kh, c.kw}, gen, DType::f64);
    Tensor b = c.bias ? randn({c.O}, gen, DType::f64) : Tensor();
    Tensor y = conv2d(x, w, b, c.stride, c.pad, c.groups);
    Tensor r = conv2d_ref(x, w, b, c.stride, c.pad, c.groups);
    REQUIRE(y.shape() == r.shape());
    CHECK(max_abs_diff(y, r) < 1e-12);
    // non-contiguous operands give the same result
    Tensor xn = randn({c.N, c.H, c.W, c.C}, gen, DType::f64).permute({0, 3, 1, 2});
    Tensor wn = randn({c.kw, c.kh, c.C / c.groups, c.O}, gen, DType::f64).permute({3, 2, 1, 0});
    CHECK(max_abs_diff(conv2d(xn, wn, b, c.stride, c.pad, c.groups), conv2d_ref(xn, wn, b, c.stride, c.pad, c.groups)) <
          1e-12);
    // f32 path agrees
    Tensor y32 = conv2d(x.to(DType::f32), w.to(DType::f32), c.bias ? b.to(DType::f32) : Tensor(), c.stride, c.pad,
                        c.groups);
    CHECK(y32.dtype() == DType::f32);
    CHECK(max_abs_diff(y32.to(DType::f64), r) < 1e-4);
  }
}

TEST_CASE("conv2d: hand-computed 1-channel case") {
  Tensor x = iota({1, 1, 3, 3});                        // 0..8
  Tensor w = f64({1, 0, 0, -1}, {1, 1, 2, 2});         // x[i][j] - x[i+1][j+1]
  Tensor y = conv2d(x, w, f64({0.5}, {1}));
  CHECK(y.shape() == Shape{1, 1, 2, 2});
  CHECK(y.to_vector() == std::vector<double>{-3.5, -3.5, -3.5, -3.5});
  Tensor yp = conv2d(x, ones({1, 1, 1, 1}, DType::f64), Tensor(), 2, 1);  // picks x[-1,-1], x[-1,1], ... with zeros
  CHECK(yp.shape() == Shape{1, 1, 3, 3});
  CHECK(yp.to_vector() == std::vector<double>{0, 0, 0, 0, 4, 0, 0, 0, 0});
}

TEST_CASE("conv2d gradcheck: stride 1/2, padding 0/1, groups 1/2/C, bias or not, non-square kernels") {
  Generator gen(2);
  std::vector<ConvCfg> cfgs = {
      {2, 2, 4, 5, 3, 3, 3, 1, 0, 1, true}, {1, 2, 5, 5, 2, 3, 3, 2, 1, 1, false}, {2, 4, 4, 4, 4, 3, 3, 1, 1, 2, true},
      {1, 4, 5, 4, 4, 3, 3, 2, 1, 4, true}, {1, 3, 4, 5, 6, 2, 2, 1, 1, 3, false}, {2, 2, 5, 4, 2, 2, 3, 1, 0, 1, true},
      {1, 2, 6, 5, 3, 3, 1, 2, 0, 1, true},
  };
  for (auto& c : cfgs) {
    CAPTURE(c.str());
    Tensor x = rnd({c.N, c.C, c.H, c.W}, gen), w = rnd({c.O, c.C / c.groups, c.kh, c.kw}, gen);
    ConvCfg cc = c;
    if (c.bias) {
      Tensor b = rnd({c.O}, gen);
      LD_GRADCHECK([cc](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], cc.stride, cc.pad, cc.groups); },
                   {x, w, b});
    } else {
      LD_GRADCHECK([cc](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], Tensor(), cc.stride, cc.pad, cc.groups); },
                   {x, w});
    }
  }
}

TEST_CASE("conv2d gradcheck: non-contiguous x, weight and bias; only some inputs requiring grad") {
  Generator gen(3);
  Tensor x = rnd_permuted({2, 4, 4, 5}, gen);  // [W, H, C, N] layout
  Tensor xt = rnd_transposed({2, 4, 5, 4}, gen);
  Tensor w = rnd_permuted({4, 2, 3, 2}, gen), b = rnd_strided({4}, gen);
  CHECK(!x.is_contiguous());
  CHECK(!w.is_contiguous());
  CHECK(!b.is_contiguous());
  auto f = [](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], 1, 1, 2); };
  LD_GRADCHECK(f, {x, w, b});
  LD_GRADCHECK([](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], 2, 0, 2); }, {xt, w, b});
  Tensor xs = leaf(randn({1, 4, 9, 5}, gen, DType::f64).slice(2, 0, 9, 2));  // [1, 4, 5, 5], row step 2
  LD_GRADCHECK(f, {xs, w, b});
  Tensor xc = randn({2, 4, 4, 5}, gen, DType::f64), wc = randn({4, 2, 3, 2}, gen, DType::f64);
  LD_GRADCHECK(f, {xc, w, b});   // weight and bias only
  LD_GRADCHECK(f, {x, wc, b});   // input and bias only
  LD_GRADCHECK([](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], Tensor(), 1, 0, 1); },
               {rnd({1, 2, 3, 3}, gen), rnd({3, 2, 2, 2}, gen)});
}

TEST_CASE("conv2d f32 backward agrees with f64") {
  Generator gen(4);
  Tensor x = randn({2, 4, 6, 6}, gen, DType::f64), w = randn({6, 2, 3, 3}, gen, DType::f64), b = randn({6}, gen, DType::f64);
  Tensor g = randn({2, 6, 3, 3}, gen, DType::f64);
  Tensor x64 = leaf(x.clone()), w64 = leaf(w.clone()), b64 = leaf(b.clone());
  Tensor x32 = leaf(x.to(DType::f32)), w32 = leaf(w.to(DType::f32)), b32 = leaf(b.to(DType::f32));
  conv2d(x64, w64, b64, 2, 1, 2).backward(g);
  conv2d(x32, w32, b32, 2, 1, 2).backward(g.to(DType::f32));
  CHECK(max_abs_diff(x32.grad().to(DType::f64), x64.grad()) < 1e-4);
  CHECK(max_abs_diff(w32.grad().to(DType::f64), w64.grad()) < 1e-4);
  CHECK(max_abs_diff(b32.grad().to(DType::f64), b64.grad()) < 1e-4);
}

// conv2d's output and its three gradients (upstream g) on 1 and on 2 threads are bit-identical.
void check_same_on_1_and_2_threads(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& g, int64_t padding,
                                   int64_t groups) {
  auto run = [&](int threads) {
    ThreadsGuard tg(threads);
    REQUIRE(get_num_threads() == threads);
    Tensor xl = leaf(x.clone()), wl = leaf(w.clone()), bl = leaf(b.clone());
    Tensor y = conv2d(xl, wl, bl, 1, padding, groups);
    y.backward(g);
    return std::vector<std::vector<double>>{y.to_vector(), xl.grad().to_vector(), wl.grad().to_vector(),
                                            bl.grad().to_vector()};
  };
  auto r1 = run(1), r2 = run(2);
  for (size_t k = 0; k < r1.size(); ++k) {
    CAPTURE(k);
    CHECK(r1[k] == r2[k]);
  }
}

TEST_CASE("conv2d forward and backward are bit-identical on 1 and 2 threads") {
  Generator gen(5);
  for (auto cfg : {std::pair<int64_t, int64_t>{4, 1}, {4, 2}, {1, 1}, {3, 8}}) {
    int64_t N = cfg.first, groups = cfg.second;
    CAPTURE(N);
    CAPTURE(groups);
    Tensor x = randn({N, 8, 16, 16}, gen, DType::f32), w = randn({16, 8 / groups, 3, 3}, gen, DType::f32);
    Tensor b = randn({16}, gen, DType::f32), g = randn({N, 16, 16, 16}, gen, DType::f32);
    check_same_on_1_and_2_threads(x, w, b, g, 1, groups);
  }
  CHECK(get_num_threads() == 2);
}

// The fast paths (stride 1, groups 1): 3x3 convolutions run a direct kernel of register tiles (one or
// two vectors of output channels, one or two rows of pixels; the backward's dx is the same pass with C
// and O swapped, dW its own kernel); 1x1 ones are GEMMs. These shapes cover odd sizes (ragged pixel
// blocks, odd row counts for two-row tiles), padding 0/1/2, channel counts that are not multiples of the
// vector width, a single output channel, and inputs with enough channels to be reduced in chunks.
TEST_CASE("conv2d fast paths equal the naive convolution (f64 and f32)") {
  Generator gen(10);
  std::vector<ConvCfg> cfgs = {
      {2, 16, 7, 7, 32, 3, 3, 1, 1, 1, true},  {1, 8, 5, 9, 20, 3, 3, 1, 1, 1, true},  {3, 24, 9, 5, 16, 3, 3, 1, 0, 1, false},
      {1, 16, 4, 6, 40, 3, 3, 1, 2, 1, true},  {2, 40, 6, 6, 24, 3, 3, 1, 1, 1, true},  {1, 9, 1, 1, 17, 3, 3, 1, 1, 1, true},
      {2, 3, 8, 7, 5, 3, 3, 1, 1, 1, true},    {1, 40, 6, 5, 1, 3, 3, 1, 1, 1, true},   {2, 1, 9, 8, 33, 3, 3, 1, 1, 1, false},
      {2, 36, 5, 4, 20, 1, 1, 1, 0, 1, true},  {1, 5, 3, 7, 3, 1, 1, 1, 0, 1, false},
  };
  for (auto& c : cfgs) {
    CAPTURE(c.str());
    Tensor x = randn({c.N, c.C, c.H, c.W}, gen, DType::f64), w = randn({c.O, c.C, c.kh, c.kw}, gen, DType::f64);
    Tensor b = c.bias ? randn({c.O}, gen, DType::f64) : Tensor();
    Tensor r = conv2d_ref(x, w, b, 1, c.pad, 1);
    CHECK(max_abs_diff(conv2d(x, w, b, 1, c.pad), r) < 1e-11);
    Tensor y32 = conv2d(x.to(DType::f32), w.to(DType::f32), c.bias ? b.to(DType::f32) : Tensor(), 1, c.pad);
    CHECK(max_abs_diff(y32.to(DType::f64), r) < 1e-4 * std::sqrt(double(c.C * c.kh * c.kw)));
  }
}

TEST_CASE("conv2d fast paths are bit-identical on 1 and 2 threads (forward, dx, dW, db; 3x3 and 1x1)") {
  Generator gen(12);
  // large enough that every pass (forward and dx tasks, dW tiles, the 1x1 GEMMs) splits over threads
  for (auto [C, O, K] : {std::tuple<int64_t, int64_t, int64_t>{16, 32, 3}, {160, 24, 1}, {8, 20, 1}}) {
    CAPTURE(C);
    CAPTURE(K);
    Tensor x = randn({8, C, 12, 12}, gen), w = randn({O, C, K, K}, gen), b = randn({O}, gen), g = randn({8, O, 12, 12}, gen);
    check_same_on_1_and_2_threads(x, w, b, g, K / 2, 1);
  }
}

TEST_CASE("conv2d fast paths gradcheck: direct tiles (one and two rows), 1x1, odd sizes") {
  Generator gen(11);
  std::vector<ConvCfg> cfgs = {
      {1, 16, 3, 5, 16, 3, 3, 1, 1, 1, true},  // one vector of channels (f64: two), two-row tiles
      {2, 8, 4, 3, 20, 3, 3, 1, 0, 1, true},   // two vectors, a ragged last one
      {1, 2, 5, 4, 3, 3, 3, 1, 2, 1, false},   // direct tiles both ways, padding 2
      {2, 3, 3, 4, 5, 1, 1, 1, 0, 1, true},    // 1x1 GEMM
  };
  for (auto& c : cfgs) {
    CAPTURE(c.str());
    Tensor x = rnd({c.N, c.C, c.H, c.W}, gen), w = rnd({c.O, c.C, c.kh, c.kw}, gen);
    int64_t pad = c.pad;
    if (c.bias)
      LD_GRADCHECK([pad](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], 1, pad); },
                   {x, w, rnd({c.O}, gen)});
    else
      LD_GRADCHECK([pad](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], Tensor(), 1, pad); }, {x, w});
  }
}

// ------------------------------------------------------------------------------- avg_pool2d

TEST_CASE("avg_pool2d: hand-computed values (stride, padding counted in the divisor)") {
  Tensor x = iota({1, 1, 4, 4});  // 0..15
  Tensor a = avg_pool2d(x, 2);    // stride defaults to the kernel
  CHECK(a.shape() == Shape{1, 1, 2, 2});
  CHECK(a.to_vector() == std::vector<double>{2.5, 4.5, 10.5, 12.5});
  Tensor b = avg_pool2d(x, 2, 1);
  CHECK(b.shape() == Shape{1, 1, 3, 3});
  CHECK(b.to_vector() == std::vector<double>{2.5, 3.5, 4.5, 6.5, 7.5, 8.5, 10.5, 11.5, 12.5});
  Tensor c = avg_pool2d(x, 3, 1, 1);
  CHECK(c.shape() == Shape{1, 1, 4, 4});
  CHECK(c.at({0, 0, 0, 0}) == doctest::Approx(10.0 / 9));
  CHECK(c.at({0, 0, 0, 1}) == doctest::Approx(18.0 / 9));
  CHECK(c.at({0, 0, 1, 1}) == doctest::Approx(5.0));
  CHECK(c.at({0, 0, 3, 3}) == doctest::Approx(50.0 / 9));
  Tensor d = avg_pool2d(x, 3, 2, 1);
  CHECK(d.shape() == Shape{1, 1, 2, 2});
  CHECK(d.at({0, 0, 0, 0}) == doctest::Approx(10.0 / 9));
  CHECK(d.at({0, 0, 0, 1}) == doctest::Approx(24.0 / 9));
  CHECK(d.at({0, 0, 1, 1}) == doctest::Approx(10.0));
  // odd size, floor of the output size: 5x5 with k=2 s=2 -> 2x2, the last row/column unused
  Tensor e = avg_pool2d(iota({1, 1, 5, 5}), 2);
  CHECK(e.to_vector() == std::vector<double>{3, 5, 13, 15});
}

TEST_CASE("avg_pool2d equals a depthwise conv2d with a constant kernel") {
  Generator gen(6);
  struct P { int64_t k, s, p; };
  for (P q : {P{2, 2, 0}, P{3, 1, 1}, P{3, 2, 1}, P{2, 1, 1}, P{4, 3, 2}, P{1, 2, 0}}) {
    CAPTURE(q.k);
    CAPTURE(q.s);
    CAPTURE(q.p);
    Tensor x = randn({2, 3, 7, 6}, gen, DType::f64).permute({0, 1, 3, 2}).contiguous().permute({0, 1, 3, 2});
    Tensor w = full({3, 1, q.k, q.k}, 1.0 / double(q.k * q.k), DType::f64);
    CHECK(max_abs_diff(avg_pool2d(x, q.k, q.s, q.p), conv2d_ref(x, w, Tensor(), q.s, q.p, 3)) < 1e-12);
  }
}

TEST_CASE("avg_pool2d gradcheck: stride, padding, non-contiguous input") {
  Generator gen(7);
  struct P { int64_t k, s, p; };
  for (P q : {P{2, 0, 0}, P{2, 1, 0}, P{3, 2, 1}, P{3, 1, 1}, P{2, 2, 1}}) {
    for (auto& [name, x] : layouts({2, 2, 5, 4}, gen)) {
      CAPTURE(name);
      CAPTURE(q.k);
      CAPTURE(q.s);
      CAPTURE(q.p);
      LD_GRADCHECK([q](const std::vector<Tensor>& in) { return avg_pool2d(in[0], q.k, q.s, q.p); }, {x});
    }
  }
  // backward of a 2x2/2 pool spreads g / 4 over each window
  Tensor x = rnd({1, 1, 4, 4}, gen);
  avg_pool2d(x, 2).backward(f64({4, 8, 12, 16}, {1, 1, 2, 2}));
  CHECK(x.grad().to_vector() == std::vector<double>{1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4});
}

// ------------------------------------------------------------------------------- upsample_nearest2d

TEST_CASE("upsample_nearest2d: values, scale 1, backward sums each block") {
  Generator gen(8);
  Tensor x = randn({2, 3, 3, 2}, gen, DType::f64);
  for (int64_t s : {1, 2, 3}) {
    CAPTURE(s);
    Tensor y = upsample_nearest2d(x, s);
    REQUIRE(y.shape() == Shape{2, 3, 3 * s, 2 * s});
    bool ok = true;
    for (int64_t n = 0; n < 2; ++n)
      for (int64_t c = 0; c < 3; ++c)
        for (int64_t i = 0; i < 3 * s; ++i)
          for (int64_t j = 0; j < 2 * s; ++j) ok = ok && y.at({n, c, i, j}) == x.at({n, c, i / s, j / s});
    CHECK(ok);
  }
  Tensor t = iota({1, 1, 2, 2});
  CHECK(upsample_nearest2d(t, 2).to_vector() ==
        std::vector<double>{0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 3, 3, 2, 2, 3, 3});
  CHECK(upsample_nearest2d(x.transpose(2, 3), 2).at({1, 2, 3, 5}) == x.at({1, 2, 2, 1}));
  Tensor xl = rnd({1, 2, 2, 3}, gen);
  upsample_nearest2d(xl, 3).backward(ones({1, 2, 6, 9}, DType::f64));
  for (double v : xl.grad().to_vector()) CHECK(v == 9.0);
}

TEST_CASE("upsample_nearest2d gradcheck on all layouts") {
  Generator gen(9);
  for (int64_t s : {1, 2, 3}) {
    for (auto& [name, x] : layouts({2, 2, 3, 2}, gen)) {
      CAPTURE(name);
      CAPTURE(s);
      LD_GRADCHECK([s](const std::vector<Tensor>& in) { return upsample_nearest2d(in[0], s); }, {x});
    }
  }
}

// ------------------------------------------------------------------------------- errors

// ------------------------------------------------------------------------------- unfold (im2col)

TEST_CASE("unfold equals its definition (f64, every layout); half columns are the f32 columns rounded") {
  Generator gen(31);
  for (auto [kh, kw, s, p] : {std::tuple{3, 3, 1, 1}, {3, 2, 2, 0}, {1, 1, 1, 0}, {2, 2, 2, 1}, {5, 5, 1, 2}}) {
    INFO("kernel ", kh, "x", kw, " stride ", s, " padding ", p);
    Tensor x = rnd({2, 3, 6, 5}, gen);
    int64_t Ho = (6 + 2 * p - kh) / s + 1, Wo = (5 + 2 * p - kw) / s + 1;
    Tensor col = unfold(x, kh, kw, s, p);
    REQUIRE(col.shape() == Shape{2, 3 * kh * kw, Ho * Wo});
    std::vector<double> xv = x.to_vector(), cv = col.to_vector();
    bool all = true;
    for (int64_t n = 0; n < 2; ++n)
      for (int64_t c = 0; c < 3; ++c)
        for (int64_t i = 0; i < kh; ++i)
          for (int64_t j = 0; j < kw; ++j)
            for (int64_t oy = 0; oy < Ho; ++oy)
              for (int64_t ox = 0; ox < Wo; ++ox) {
                int64_t iy = oy * s - p + i, ix = ox * s - p + j;
                double want = iy < 0 || iy >= 6 || ix < 0 || ix >= 5 ? 0.0 : xv[size_t(((n * 3 + c) * 6 + iy) * 5 + ix)];
                all &= cv[size_t(((n * 3 * kh * kw + (c * kh + i) * kw + j) * Ho + oy) * Wo + ox)] == want;
              }
    CHECK(all);
    // the conv2d it makes: the weight times the columns
    Tensor w = rnd({4, 3, kh, kw}, gen);
    CHECK(max_abs_diff(matmul(w.reshape({4, -1}), col).reshape({2, 4, Ho, Wo}), conv2d_ref(x, w, Tensor(), s, p, 1)) <
          1e-12);
    Tensor x32 = x.to(DType::f32);
    for (DType h : {DType::bf16, DType::f16})
      CHECK(unfold(x32, kh, kw, s, p, h).to_vector() == unfold(x32, kh, kw, s, p).to(h).to_vector());
  }
}

TEST_CASE("unfold gradcheck (its backward is col2im): stride, padding, non-square kernels, a non-contiguous input") {
  Generator gen(32);
  for (auto [kh, kw, s, p] : {std::tuple{3, 3, 1, 1}, {3, 2, 2, 0}, {2, 2, 2, 1}, {1, 1, 1, 0}}) {
    INFO("kernel ", kh, "x", kw, " stride ", s, " padding ", p);
    LD_GRADCHECK([=](const std::vector<Tensor>& in) { return unfold(in[0], kh, kw, s, p); }, {rnd({2, 2, 5, 4}, gen)});
    LD_GRADCHECK([=](const std::vector<Tensor>& in) { return unfold(in[0].transpose(1, 3), kh, kw, s, p); },
                 {rnd({2, 4, 5, 2}, gen)});
  }
  // half columns: the gradient comes back through the rounding as the f32 gradient of the same values
  Tensor x = rnd({1, 2, 4, 4}, gen).detach().to(DType::f32).requires_grad_(), g = rnd({1, 18, 16}, gen).detach().to(DType::f32);
  sum(mul(unfold(x, 3, 3, 1, 1, DType::bf16).to(DType::f32), g)).backward();
  Tensor x2 = x.detach().requires_grad_();
  unfold(x2, 3, 3, 1, 1).backward(g.to(DType::bf16).to(DType::f32));
  CHECK(x.grad().to_vector() == x2.grad().to_vector());
}

TEST_CASE("conv / pool errors name the op and the shapes") {
  Tensor x = zeros({1, 3, 5, 5}, DType::f64);
  Tensor w = zeros({4, 2, 3, 3}, DType::f64);
  CHECK_THROWS_WITH_AS(conv2d(x, w, Tensor()), doctest::Contains("conv2d"), liandan::Error);
  CHECK_THROWS_WITH_AS(conv2d(x, w, Tensor()), doctest::Contains("[1, 3, 5, 5]"), liandan::Error);
  CHECK_THROWS_WITH_AS(conv2d(x, w, Tensor()), doctest::Contains("[4, 2, 3, 3]"), liandan::Error);
  Tensor x4 = zeros({1, 4, 5, 5}, DType::f64);
  CHECK_THROWS_WITH_AS(conv2d(x4, zeros({3, 2, 3, 3}, DType::f64), Tensor(), 1, 0, 2), doctest::Contains("groups=2"),
                       liandan::Error);
  CHECK_THROWS_WITH_AS(conv2d(x4, zeros({4, 4, 3, 3}, DType::f64), Tensor(), 1, 0, 3), doctest::Contains("conv2d"),
                       liandan::Error);
  CHECK_THROWS_WITH_AS(conv2d(x4, zeros({4, 4, 3, 3}, DType::f64), zeros({3}, DType::f64)), doctest::Contains("bias"),
                       liandan::Error);
  CHECK_THROWS_WITH_AS(conv2d(x4, zeros({4, 4, 3, 3}, DType::f32), Tensor()), doctest::Contains("dtype"),
                       liandan::Error);
  CHECK_THROWS_WITH_AS(conv2d(zeros({4, 5, 5}, DType::f64), w, Tensor()), doctest::Contains("[4, 5, 5]"), liandan::Error);
  CHECK_THROWS_WITH_AS(conv2d(x4, zeros({4, 4, 3}, DType::f64), Tensor()), doctest::Contains("weight"), liandan::Error);
  CHECK_THROWS_WITH_AS(conv2d(x4, zeros({4, 4, 7, 7}, DType::f64), Tensor()), doctest::Contains("larger"),
                       liandan::Error);
  CHECK_THROWS_WITH_AS(conv2d(x4, zeros({4, 4, 3, 3}, DType::f64), Tensor(), 0), doctest::Contains("stride"),
                       liandan::Error);

  CHECK_THROWS_WITH_AS(avg_pool2d(zeros({3, 4, 4}, DType::f64), 2), doctest::Contains("avg_pool2d"), liandan::Error);
  CHECK_THROWS_WITH_AS(avg_pool2d(x, 2, 1, 2), doctest::Contains("padding"), liandan::Error);
  CHECK_THROWS_WITH_AS(avg_pool2d(x, 8), doctest::Contains("avg_pool2d"), liandan::Error);
  CHECK_THROWS_WITH_AS(upsample_nearest2d(x, 0), doctest::Contains("upsample_nearest2d"), liandan::Error);
  CHECK_THROWS_WITH_AS(upsample_nearest2d(zeros({2, 2}, DType::f64), 2), doctest::Contains("[2, 2]"), liandan::Error);

  CHECK_THROWS_WITH_AS(unfold(zeros({3, 4, 4}, DType::f64), 2, 2), doctest::Contains("unfold: expected input [N, C, H, W], got [3, 4, 4]"),
                       liandan::Error);
  CHECK_THROWS_WITH_AS(unfold(x, 7, 3), doctest::Contains("unfold: kernel 7x3 larger than padded input [1, 3, 5, 5]"),
                       liandan::Error);
  CHECK_THROWS_WITH_AS(unfold(x, 3, 3, 0), doctest::Contains("unfold: bad kernel 3x3, stride 0"), liandan::Error);
  CHECK_THROWS_WITH_AS(unfold(zeros({1, 1, 2, 2}, DType::i64), 1, 1), doctest::Contains("unfold: expected floating"),
                       liandan::Error);
}
