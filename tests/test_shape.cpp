// Views (storage sharing, metadata, backward) and the copying shape ops cat, stack, split, pad:
// hand-computed values, gradchecks on non-contiguous inputs and error messages.
#include <doctest/doctest.h>

#include "core/gradcheck.h"
#include "core/ops.h"
#include "core/threads.h"
#include "op_test_helpers.h"

using namespace liandan;
using namespace liandan::testing;

namespace {

Tensor f64(std::vector<double> v, const Shape& s) { return from_vector(v, s, DType::f64); }
Tensor iota(const Shape& s) { return arange(0.0, double(shape_numel(s)), 1.0, DType::f64).reshape(s); }

// gradcheck of a one-input function over every layout of `s`.
void gradcheck_layouts(const Shape& s, Generator& gen, const std::function<Tensor(const Tensor&)>& f) {
  for (auto& [name, x] : layouts(s, gen)) {
    CAPTURE(name);
    LD_GRADCHECK([&f](const std::vector<Tensor>& in) { return f(in[0]); }, {x});
  }
}

}  // namespace

// ------------------------------------------------------------------------------- views: storage

TEST_CASE("views share storage: writes through a view are visible in the base") {
  Tensor base = iota({2, 3, 4});
  struct Case {
    const char* name;
    Tensor v;
    Shape vi, bi;  // index written in the view, the same element in the base
  };
  std::vector<Case> cases = {
      {"view", base.view({6, 4}), {4, 1}, {1, 1, 1}},
      {"view -1", base.view({-1}), {23}, {1, 2, 3}},
      {"reshape", base.reshape({4, 6}), {2, 5}, {1, 1, 1}},
      {"permute", base.permute({2, 0, 1}), {3, 1, 2}, {1, 2, 3}},
      {"transpose", base.transpose(0, 2), {1, 2, 0}, {0, 2, 1}},
      {"narrow", base.narrow(1, 1, 2), {1, 1, 3}, {1, 2, 3}},
      {"narrow negative start", base.narrow(-1, -2, 2), {0, 0, 0}, {0, 0, 2}},
      {"slice step 2", base.slice(2, 1, 4, 2), {1, 2, 1}, {1, 2, 3}},
      {"slice step 3", base.slice(1, 0, 3, 3), {1, 0, 2}, {1, 0, 2}},
      {"select dim 0", base.select(0, 1), {2, 3}, {1, 2, 3}},
      {"select last dim", base.select(2, 3), {1, 1}, {1, 1, 3}},
      {"select middle dim, negative index", base.select(1, -1), {0, 2}, {0, 2, 2}},
      {"unsqueeze", base.unsqueeze(1), {1, 0, 2, 3}, {1, 2, 3}},
      {"squeeze", base.unsqueeze(0).unsqueeze(3).squeeze(), {1, 2, 3}, {1, 2, 3}},
      {"squeeze(dim) of a non-contiguous view", base.transpose(0, 2).unsqueeze(1).squeeze(1), {3, 0, 1}, {1, 0, 3}},
      {"flatten", base.flatten(1), {1, 7}, {1, 1, 3}},
      {"expand", base.narrow(2, 0, 1).expand({2, 3, 5}), {1, 2, 4}, {1, 2, 0}},
      {"chain", base.permute({1, 2, 0}).slice(1, 0, 4, 2).select(2, 1).t(), {1, 2}, {1, 2, 2}},
  };
  double v = 1000;
  for (auto& c : cases) {
    std::string name = c.name;
    CAPTURE(name);
    CHECK(same_storage(c.v, base));
    double before = c.v.at(c.vi);
    CHECK(before == base.at(c.bi));  // the view reads the base element
    c.v.set(c.vi, ++v);
    CHECK(base.at(c.bi) == v);  // and writes it
  }
  // 2-D t() and contiguous() of a contiguous tensor: same storage (contiguous returns the tensor itself)
  Tensor m = iota({3, 4});
  Tensor mt = m.t();
  mt.set({3, 2}, -5);
  CHECK(m.at({2, 3}) == -5);
  Tensor c = m.contiguous();
  CHECK(same_storage(c, m));
  CHECK(c.same(m));
  c.set({0, 0}, 42);
  CHECK(m.at({0, 0}) == 42);
  CHECK(m.to(DType::f64).same(m));
  // copies do not share storage
  Tensor cc = mt.contiguous();
  CHECK(cc.is_contiguous());
  CHECK(!same_storage(cc, m));
  CHECK(cc.to_vector() == mt.to_vector());
  Tensor cl = m.clone();
  CHECK(!same_storage(cl, m));
  cl.set({1, 1}, 7777);
  CHECK(m.at({1, 1}) != 7777);
  CHECK(!same_storage(m.to(DType::f32), m));
  CHECK(!same_storage(mt.reshape({12}), m));  // reshape of a non-contiguous tensor copies
}

TEST_CASE("view metadata: shapes, strides and offsets") {
  Tensor x = iota({2, 3, 4});
  CHECK(x.strides() == Shape{12, 4, 1});
  Tensor p = x.permute({2, 0, 1});
  CHECK(p.shape() == Shape{4, 2, 3});
  CHECK(p.strides() == Shape{1, 12, 4});
  CHECK(!p.is_contiguous());
  Tensor s = x.slice(2, 1, 4, 2);
  CHECK(s.shape() == Shape{2, 3, 2});
  CHECK(s.strides() == Shape{12, 4, 2});
  CHECK(s.offset() == 1);
  CHECK(x.slice(1, -2, 3).shape() == Shape{2, 2, 4});
  CHECK(x.slice(2, 0, 100, 3).shape() == Shape{2, 3, 2});  // end clamps: elements 0 and 3
  CHECK(x.slice(2, 3, 1).shape() == Shape{2, 3, 0});        // empty
  Tensor sel = x.select(2, 1);
  CHECK(sel.shape() == Shape{2, 3});
  CHECK(sel.strides() == Shape{12, 4});
  CHECK(sel.offset() == 1);
  CHECK(sel.to_vector() == std::vector<double>{1, 5, 9, 13, 17, 21});
  Tensor e = x.narrow(2, 0, 1).expand({5, 2, 3, 3});
  CHECK(e.shape() == Shape{5, 2, 3, 3});
  CHECK(e.strides() == Shape{0, 12, 4, 0});
  CHECK(x.expand({-1, 3, -1}).shape() == Shape{2, 3, 4});
  CHECK(x.unsqueeze(-1).shape() == Shape{2, 3, 4, 1});
  CHECK(x.unsqueeze(0).squeeze(0).shape() == Shape{2, 3, 4});
  CHECK(x.squeeze(1).shape() == Shape{2, 3, 4});  // size 3: no-op
  CHECK(x.flatten().shape() == Shape{24});
  CHECK(x.flatten(0, 1).shape() == Shape{6, 4});
  CHECK(x.flatten(-2).shape() == Shape{2, 12});
  CHECK(x.t().shape() == Shape{2, 4, 3});
  CHECK(x.view({4, -1}).shape() == Shape{4, 6});
  CHECK(x.narrow(0, 1, 1).to_vector() == x.select(0, 1).to_vector());
}

// ------------------------------------------------------------------------------- views: backward

TEST_CASE("view / reshape backward") {
  Generator gen(1);
  LD_GRADCHECK([](const std::vector<Tensor>& in) { return in[0].view({2, -1, 2}); }, {rnd({3, 4}, gen)});
  LD_GRADCHECK([](const std::vector<Tensor>& in) { return in[0].view({12}) * in[0].view({12}); }, {rnd({3, 4}, gen)});
  gradcheck_layouts({2, 3, 4}, gen, [](const Tensor& x) { return x.reshape({4, 6}); });
  gradcheck_layouts({2, 3, 4}, gen, [](const Tensor& x) { return x.reshape({-1}); });
}

TEST_CASE("permute / transpose backward") {
  Generator gen(2);
  gradcheck_layouts({2, 3, 4}, gen, [](const Tensor& x) { return x.permute({1, 2, 0}); });
  gradcheck_layouts({2, 3, 4}, gen, [](const Tensor& x) { return x.permute({2, 0, 1}) * 2.0; });
  gradcheck_layouts({2, 3, 4}, gen, [](const Tensor& x) { return x.transpose(0, 2); });
  gradcheck_layouts({3, 5}, gen, [](const Tensor& x) { return x.t(); });
}

TEST_CASE("narrow / slice with step / select backward") {
  Generator gen(3);
  gradcheck_layouts({4, 5}, gen, [](const Tensor& x) { return x.narrow(1, 1, 3); });
  gradcheck_layouts({4, 5}, gen, [](const Tensor& x) { return x.narrow(0, -2, 2); });
  gradcheck_layouts({3, 4, 5}, gen, [](const Tensor& x) { return x.slice(2, 0, 5, 2); });
  gradcheck_layouts({3, 4, 5}, gen, [](const Tensor& x) { return x.slice(1, 1, 4, 2); });
  gradcheck_layouts({3, 7}, gen, [](const Tensor& x) { return x.slice(1, -6, 7, 3); });
  gradcheck_layouts({3, 4, 5}, gen, [](const Tensor& x) { return x.select(0, 2); });
  gradcheck_layouts({3, 4, 5}, gen, [](const Tensor& x) { return x.select(1, -1); });
  gradcheck_layouts({3, 4, 5}, gen, [](const Tensor& x) { return x.select(2, 3); });
  // overlapping views of one input: gradients accumulate
  gradcheck_layouts({4, 3}, gen, [](const Tensor& x) { return x.narrow(0, 0, 3) * x.narrow(0, 1, 3) + x.select(1, 2).narrow(0, 1, 3).unsqueeze(1); });
  gradcheck_layouts({6, 3}, gen, [](const Tensor& x) { return x.slice(0, 0, 6, 2) - x.slice(0, 1, 6, 2) * 3.0; });
}

TEST_CASE("expand / squeeze / unsqueeze / flatten backward") {
  Generator gen(4);
  gradcheck_layouts({3, 1}, gen, [](const Tensor& x) { return x.expand({2, 3, 4}); });
  gradcheck_layouts({4}, gen, [](const Tensor& x) { return x.expand({3, 2, 4}); });
  gradcheck_layouts({2, 1, 3}, gen, [](const Tensor& x) { return x.expand({-1, 5, -1}); });
  gradcheck_layouts({3, 4}, gen, [](const Tensor& x) { return x.unsqueeze(1).expand({3, 2, 4}); });
  gradcheck_layouts({3, 4}, gen, [](const Tensor& x) { return x.unsqueeze(0); });
  gradcheck_layouts({3, 4}, gen, [](const Tensor& x) { return x.unsqueeze(-1); });
  gradcheck_layouts({3, 1, 4}, gen, [](const Tensor& x) { return x.squeeze(1); });
  gradcheck_layouts({3, 1, 4}, gen, [](const Tensor& x) { return x.squeeze(); });
  gradcheck_layouts({3, 4}, gen, [](const Tensor& x) { return x.unsqueeze(2).unsqueeze(0).squeeze(); });
  gradcheck_layouts({2, 3, 4}, gen, [](const Tensor& x) { return x.flatten(); });
  gradcheck_layouts({2, 3, 4}, gen, [](const Tensor& x) { return x.flatten(1); });
  gradcheck_layouts({2, 3, 4}, gen, [](const Tensor& x) { return x.flatten(0, 1); });
}

TEST_CASE("contiguous / clone backward") {
  Generator gen(5);
  gradcheck_layouts({3, 4, 2}, gen, [](const Tensor& x) { return x.contiguous(); });
  gradcheck_layouts({3, 4, 2}, gen, [](const Tensor& x) { return x.clone() * x; });
  // clone of a leaf is a distinct node: its gradient reaches the leaf
  Generator g2(6);
  Tensor x = rnd({2, 3}, g2);
  Tensor c = x.clone();
  CHECK(c.grad_fn() != nullptr);
  (c * 3.0).sum().backward();
  for (double v : x.grad().to_vector()) CHECK(v == 3.0);
}

TEST_CASE("to(DType) f32 <-> f64: values, dtypes and backward") {
  // Dyadic values and step: every perturbed value is exact in f32, so the finite differences are exact.
  std::vector<double> vals = {0.5, -1.25, 2.0, 0.125, -3.5, 1.0};
  Tensor x = leaf(f64(vals, {2, 3}));
  GradcheckOptions opt;
  opt.eps = 1.0 / 1024;
  LD_GRADCHECK([](const std::vector<Tensor>& in) { return in[0].to(DType::f32).to(DType::f64); }, {x}, opt);
  LD_GRADCHECK([](const std::vector<Tensor>& in) { return square(in[0].to(DType::f32)).to(DType::f64); }, {x}, opt);
  Tensor xt = leaf(f64(vals, {3, 2}).t());
  LD_GRADCHECK([](const std::vector<Tensor>& in) { return (in[0].to(DType::f32) * 2.0).to(DType::f64); }, {xt}, opt);

  Generator gen(7);
  Tensor a = rnd({3, 4}, gen);
  Tensor a32 = a.to(DType::f32);
  CHECK(a32.dtype() == DType::f32);
  CHECK(max_abs_diff(a32.to(DType::f64), a) < 1e-6);
  Tensor w = randn({3, 4}, gen, DType::f32);
  (a32 * w).sum().backward();
  REQUIRE(a.grad().defined());
  CHECK(a.grad().dtype() == DType::f64);
  CHECK(max_abs_diff(a.grad(), w.to(DType::f64)) == 0.0);

  Tensor b = leaf(randn({4}, gen, DType::f32));
  Tensor wb = randn({4}, gen, DType::f64);
  (b.to(DType::f64) * wb).sum().backward();
  CHECK(b.grad().dtype() == DType::f32);
  CHECK(max_abs_diff(b.grad().to(DType::f64), wb.to(DType::f32).to(DType::f64)) == 0.0);
}

// ------------------------------------------------------------------------------- cat / stack

TEST_CASE("cat: hand-computed values along several dims") {
  Tensor a = f64({1, 2}, {2, 1}), b = f64({3, 4, 5, 6}, {2, 2}), c = f64({7, 8, 9, 10, 11, 12}, {2, 3});
  Tensor r = cat({a, b, c}, 1);
  CHECK(r.shape() == Shape{2, 6});
  CHECK(r.to_vector() == std::vector<double>{1, 3, 4, 7, 8, 9, 2, 5, 6, 10, 11, 12});
  CHECK(cat({a, b, c}, -1).to_vector() == r.to_vector());
  Tensor r0 = cat({b.t(), c.t(), a.t()}, 0);  // non-contiguous inputs
  CHECK(r0.shape() == Shape{6, 2});
  CHECK(r0.to_vector() == std::vector<double>{3, 5, 4, 6, 7, 10, 8, 11, 9, 12, 1, 2});
  Tensor single = cat({b}, 0);
  CHECK(!same_storage(single, b));
  CHECK(single.to_vector() == b.to_vector());
  Tensor f = cat({ones({1, 2}), zeros({2, 2})}, 0);
  CHECK(f.dtype() == DType::f32);
  CHECK(f.to_vector() == std::vector<double>{1, 1, 0, 0, 0, 0});
  // empty piece
  CHECK(cat({a, zeros({2, 0}, DType::f64), a}, 1).to_vector() == std::vector<double>{1, 1, 2, 2});
}

TEST_CASE("cat gradcheck: 3 inputs, dims 0, 1, 2, -1, non-contiguous inputs") {
  Generator gen(10);
  Shape base{2, 3, 4};
  for (int64_t d : {0, 1, 2, -1}) {
    CAPTURE(d);
    int64_t dd = d < 0 ? d + 3 : d;
    Shape s1 = base, s2 = base, s3 = base;
    s1[size_t(dd)] = 1;
    s2[size_t(dd)] = 3;
    s3[size_t(dd)] = 2;
    Tensor x1 = rnd(s1, gen), x2 = rnd_permuted(s2, gen), x3 = rnd_strided(s3, gen);
    LD_GRADCHECK([d](const std::vector<Tensor>& in) { return cat({in[0], in[1], in[2]}, d); }, {x1, x2, x3});
    // the same tensor twice, and one input that does not require grad
    Tensor c = randn(s2, gen, DType::f64);
    LD_GRADCHECK([d](const std::vector<Tensor>& in) { return cat({in[0], in[1], in[0] * in[0]}, d); }, {x3, c});
    LD_GRADCHECK([d](const std::vector<Tensor>& in) { return cat({in[1], in[0], in[2]}, d); }, {rnd_transposed(s1, gen), c, x3});
  }
}

TEST_CASE("stack: values and gradcheck along dims 0, 1, last and -1") {
  Generator gen(11);
  Tensor a = f64({1, 2, 3, 4, 5, 6}, {2, 3}), b = a * 10.0, c = a * 100.0;
  for (int64_t d : {0, 1, 2, -1}) {
    CAPTURE(d);
    Tensor s = stack({a, b.t().t(), c}, d);
    int64_t dd = d < 0 ? d + 3 : d;
    Shape want{2, 3};
    want.insert(want.begin() + dd, 3);
    CHECK(s.shape() == want);
    CHECK(s.select(dd, 0).to_vector() == a.to_vector());
    CHECK(s.select(dd, 1).to_vector() == b.to_vector());
    CHECK(s.select(dd, 2).to_vector() == c.to_vector());
    Tensor x1 = rnd({3, 4}, gen), x2 = rnd_transposed({3, 4}, gen), x3 = rnd_strided({3, 4}, gen);
    LD_GRADCHECK([d](const std::vector<Tensor>& in) { return stack({in[0], in[1], in[2]}, d); }, {x1, x2, x3});
  }
}

// ------------------------------------------------------------------------------- split

TEST_CASE("split: pieces are views with the right values") {
  Tensor x = iota({5, 3});
  auto p = split(x, 2, 0);
  REQUIRE(p.size() == 3);
  CHECK(p[0].shape() == Shape{2, 3});
  CHECK(p[1].shape() == Shape{2, 3});
  CHECK(p[2].shape() == Shape{1, 3});
  CHECK(p[2].to_vector() == std::vector<double>{12, 13, 14});
  auto q = split(x, std::vector<int64_t>{1, 0, 2}, 1);
  REQUIRE(q.size() == 3);
  CHECK(q[0].to_vector() == std::vector<double>{0, 3, 6, 9, 12});
  CHECK(q[1].shape() == Shape{5, 0});
  CHECK(q[2].shape() == Shape{5, 2});
  CHECK(q[2].to_vector() == std::vector<double>{1, 2, 4, 5, 7, 8, 10, 11, 13, 14});
  for (auto& t : q) CHECK(same_storage(t, x));
  q[2].set({4, 1}, -1);
  CHECK(x.at({4, 2}) == -1);
  CHECK(split(x, 5, 0).size() == 1);
  CHECK(split(x, 7, -1).size() == 1);
  CHECK(split(x, 1, -1).size() == 3);
  // an empty dim splits into one empty piece (as torch)
  auto e = split(zeros({0, 3}), 2, 0);
  REQUIRE(e.size() == 1);
  CHECK(e[0].shape() == Shape{0, 3});
}

TEST_CASE("split gradcheck: sizes and split_size, each piece used differently") {
  Generator gen(12);
  for (auto& [name, x] : layouts({5, 4, 3}, gen)) {
    CAPTURE(name);
    LD_GRADCHECK([](const std::vector<Tensor>& in) {
      auto p = split(in[0], std::vector<int64_t>{2, 1, 2}, 0);
      return cat({p[2] * 3.0, square(p[0]), p[1]}, 0);
    }, {x});
    LD_GRADCHECK([](const std::vector<Tensor>& in) {
      auto p = split(in[0], 3, 1);  // pieces of 3 and 1
      return cat({p[1] * -2.0, exp(p[0])}, 1);
    }, {x});
    LD_GRADCHECK([](const std::vector<Tensor>& in) {
      auto p = split(in[0], 1, -1);
      return p[0] * p[1] + p[2];
    }, {x});
  }
  // a piece left unused gets a zero gradient
  Tensor y = rnd({4, 2}, gen);
  split(y, 3, 0)[1].sum().backward();
  CHECK(y.grad().to_vector() == std::vector<double>{0, 0, 0, 0, 0, 0, 1, 1});
}

TEST_CASE("split and unbind: one autograd node for all pieces; a piece can be the root of backward") {
  Generator gen(13);
  Tensor y = rnd({4, 3}, gen);
  auto p = split(y, 2, 0);
  CHECK(p[0].grad_fn() == p[1].grad_fn());
  CHECK(p[0].grad_fn()->n_outputs == 2);
  // backward from piece 1 itself (not through an op): the gradient lands in rows 2..3 only
  p[1].backward(full({2, 3}, 2.0, DType::f64));
  CHECK(y.grad().to_vector() == std::vector<double>{0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2});
  // a single piece is a one-output node of the same kind
  Tensor w = rnd({3}, gen);
  split(w, 5, 0)[0].sum().backward();
  CHECK(w.grad().to_vector() == std::vector<double>{1, 1, 1});
  // pieces of pieces: the inner node's outputs feed the outer node's two outputs
  Tensor z = rnd({6}, gen);
  auto outer = split(z, 3, 0);
  auto inner = split(outer[1], 1, 0);
  (inner[2] * 5.0 + outer[0].sum() + inner[0] * 2.0).sum().backward();
  CHECK(z.grad().to_vector() == std::vector<double>{1, 1, 1, 2, 0, 5});
}

TEST_CASE("unbind: views along dim, gradcheck with pieces unused or used twice") {
  Generator gen(14);
  Tensor x = iota({2, 3, 4});
  auto u = unbind(x, 1);
  REQUIRE(u.size() == 3);
  CHECK(u[1].shape() == Shape{2, 4});
  CHECK(u[1].to_vector() == std::vector<double>{4, 5, 6, 7, 16, 17, 18, 19});
  for (auto& t : u) CHECK(same_storage(t, x));
  CHECK(unbind(x, -1).size() == 4);
  CHECK(unbind(zeros({0, 2}), 0).empty());
  for (auto& [name, t] : layouts({3, 2, 4}, gen)) {
    CAPTURE(name);
    LD_GRADCHECK([](const std::vector<Tensor>& in) {
      auto q = unbind(in[0], 0);
      return q[0] * q[2] + q[2];  // q[1] unused: zeros; q[2] used twice: summed
    }, {t});
    LD_GRADCHECK([](const std::vector<Tensor>& in) {
      auto q = unbind(in[0], 2);
      return stack({exp(q[3]), q[1] * -1.5}, 0);
    }, {t});
  }
  std::string e = error_of([] { unbind(zeros({2}), 1); });
  CHECK(e.find("unbind") != std::string::npos);
}

// ------------------------------------------------------------------------------- pad

TEST_CASE("pad: hand-computed values for 1, 2 and 3 padded dims") {
  Tensor x = f64({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor a = pad(x, {1, 2});
  CHECK(a.shape() == Shape{2, 6});
  CHECK(a.to_vector() == std::vector<double>{0, 1, 2, 3, 0, 0, 0, 4, 5, 6, 0, 0});
  Tensor b = pad(x, {0, 1, 2, 0}, -1.0);
  CHECK(b.shape() == Shape{4, 4});
  CHECK(b.to_vector() == std::vector<double>{-1, -1, -1, -1, -1, -1, -1, -1, 1, 2, 3, -1, 4, 5, 6, -1});
  Tensor y = iota({2, 2, 2}) + 1.0;
  Tensor c = pad(y, {1, 0, 0, 1, 1, 1}, 9.0);
  REQUIRE(c.shape() == Shape{4, 3, 3});
  CHECK(c.select(0, 0).to_vector() == std::vector<double>(9, 9.0));
  CHECK(c.select(0, 3).to_vector() == std::vector<double>(9, 9.0));
  CHECK(c.select(0, 1).to_vector() == std::vector<double>{9, 1, 2, 9, 3, 4, 9, 9, 9});
  CHECK(c.select(0, 2).to_vector() == std::vector<double>{9, 5, 6, 9, 7, 8, 9, 9, 9});
  CHECK(pad(x.t(), {1, 0}).to_vector() == std::vector<double>{0, 1, 4, 0, 2, 5, 0, 3, 6});
  Tensor same = pad(x, {});
  CHECK(!same_storage(same, x));
  CHECK(same.to_vector() == x.to_vector());
  CHECK(pad(x, {0, 0, 0, 0}).to_vector() == x.to_vector());
}

TEST_CASE("pad gradcheck: several dims, non-contiguous inputs") {
  Generator gen(13);
  for (auto& [name, x] : layouts({2, 3, 4}, gen)) {
    CAPTURE(name);
    LD_GRADCHECK([](const std::vector<Tensor>& in) { return pad(in[0], {1, 2}); }, {x});
    LD_GRADCHECK([](const std::vector<Tensor>& in) { return pad(in[0], {0, 1, 2, 0}, 0.5); }, {x});
    LD_GRADCHECK([](const std::vector<Tensor>& in) { return pad(in[0], {1, 1, 1, 1, 1, 1}, -2.0) * 2.0; }, {x});
  }
}

// ------------------------------------------------------------------------------- errors

TEST_CASE("shape errors name the op and the shapes") {
  Tensor x = zeros({3, 4}, DType::f64);
  CHECK_THROWS_WITH_AS(x.t().view({12}), doctest::Contains("view"), liandan::Error);
  CHECK_THROWS_WITH_AS(x.t().view({12}), doctest::Contains("[4, 3]"), liandan::Error);
  CHECK_THROWS_WITH_AS(x.slice(1, 0, 4, 2).view({-1}), doctest::Contains("not contiguous"), liandan::Error);
  CHECK_THROWS_WITH_AS(x.view({5, -1}), doctest::Contains("view"), liandan::Error);
  CHECK_THROWS_WITH_AS(x.view({-1, -1}), doctest::Contains("-1"), liandan::Error);
  CHECK_THROWS_WITH_AS(x.reshape({7}), doctest::Contains("[3, 4]"), liandan::Error);

  CHECK_THROWS_WITH_AS(x.narrow(1, 2, 3), doctest::Contains("narrow"), liandan::Error);
  CHECK_THROWS_WITH_AS(x.narrow(1, 2, 3), doctest::Contains("size 4"), liandan::Error);
  CHECK_THROWS_WITH_AS(x.narrow(0, -5, 1), doctest::Contains("narrow"), liandan::Error);
  CHECK_THROWS_WITH_AS(x.narrow(2, 0, 1), doctest::Contains("narrow"), liandan::Error);
  CHECK_THROWS_WITH_AS(x.select(0, 3), doctest::Contains("select"), liandan::Error);
  CHECK_THROWS_WITH_AS(x.select(1, -5), doctest::Contains("select"), liandan::Error);
  CHECK_THROWS_WITH_AS(scalar_tensor(1.0).select(0, 0), doctest::Contains("select"), liandan::Error);
  CHECK_THROWS_WITH_AS(x.slice(0, 0, 2, 0), doctest::Contains("slice"), liandan::Error);
  CHECK_THROWS_WITH_AS(x.permute({0, 0}), doctest::Contains("permute"), liandan::Error);
  CHECK_THROWS_WITH_AS(x.permute({0}), doctest::Contains("permute"), liandan::Error);
  CHECK_THROWS_WITH_AS(x.expand({3, 5}), doctest::Contains("expand"), liandan::Error);
  CHECK_THROWS_WITH_AS(x.expand({4}), doctest::Contains("expand"), liandan::Error);
  CHECK_THROWS_WITH_AS(zeros({3, 1}).expand({3, -2}), doctest::Contains("expand"), liandan::Error);
  CHECK_THROWS_WITH_AS(zeros({3}).expand({-1, 3}), doctest::Contains("expand"), liandan::Error);
  CHECK_THROWS_WITH_AS(x.unsqueeze(3), doctest::Contains("unsqueeze"), liandan::Error);
  CHECK_THROWS_WITH_AS(x.flatten(1, 0), doctest::Contains("flatten"), liandan::Error);

  Tensor y = zeros({2, 4}, DType::f64);
  CHECK_THROWS_WITH_AS(cat({x, y}, 1), doctest::Contains("cat"), liandan::Error);
  CHECK_THROWS_WITH_AS(cat({x, y}, 1), doctest::Contains("[2, 4]"), liandan::Error);
  CHECK_THROWS_WITH_AS(cat({x, y}, 1), doctest::Contains("[3, 4]"), liandan::Error);
  CHECK_THROWS_WITH_AS(cat({x, zeros({3, 4, 1}, DType::f64)}, 0), doctest::Contains("cat"), liandan::Error);
  CHECK_THROWS_WITH_AS(cat({x, zeros({3, 4}, DType::f32)}, 0), doctest::Contains("dtype"), liandan::Error);
  CHECK_THROWS_WITH_AS(cat({}, 0), doctest::Contains("cat"), liandan::Error);
  CHECK_THROWS_WITH_AS(cat({x, y}, 2), doctest::Contains("cat"), liandan::Error);
  CHECK_THROWS_WITH_AS(cat({scalar_tensor(1.0), scalar_tensor(2.0)}, 0), doctest::Contains("cat"), liandan::Error);
  CHECK_THROWS_WITH_AS(stack({x, y}, 0), doctest::Contains("stack"), liandan::Error);
  CHECK_THROWS_WITH_AS(stack({x, y}, 0), doctest::Contains("[2, 4]"), liandan::Error);
  CHECK_THROWS_WITH_AS(stack({x}, 3), doctest::Contains("stack"), liandan::Error);
  CHECK_THROWS_WITH_AS(split(x, std::vector<int64_t>{1, 1}, 0), doctest::Contains("split"), liandan::Error);
  CHECK_THROWS_WITH_AS(split(x, std::vector<int64_t>{1, 1}, 0), doctest::Contains("[3, 4]"), liandan::Error);
  CHECK_THROWS_WITH_AS(split(x, 0, 0), doctest::Contains("split"), liandan::Error);
  CHECK_THROWS_WITH_AS(pad(x, {1}), doctest::Contains("pad"), liandan::Error);
  CHECK_THROWS_WITH_AS(pad(x, {1, 1, 1, 1, 1, 1}), doctest::Contains("[3, 4]"), liandan::Error);
  CHECK_THROWS_WITH_AS(pad(x, {-1, 0}), doctest::Contains("pad"), liandan::Error);
}
