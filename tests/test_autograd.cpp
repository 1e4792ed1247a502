// The autograd engine: backward, accumulation, no-grad mode, detach, freed graphs, in-place
// detection, memory returning to baseline, and gradcheck itself.
#include <doctest/doctest.h>

#include <cmath>

#include "core/allocator.h"
#include "core/gradcheck.h"
#include "core/ops.h"

using namespace liandan;

static Tensor f64(std::vector<double> v, Shape s, bool rg = true) {
  return from_vector(v, s, TensorOptions(DType::f64, rg));
}

TEST_CASE("backward from a scalar and with an explicit gradient") {
  Tensor x = f64({1, 2, 3}, {3});
  Tensor y = sum(mul(x, x));
  y.backward();
  CHECK(x.grad().to_vector() == std::vector<double>{2, 4, 6});

  Tensor z = f64({1, 2}, {2});
  Tensor w = mul(z, 3.0);
  CHECK_THROWS_WITH_AS(w.backward(), doctest::Contains("scalar"), Error);
  w.backward(f64({1, 10}, {2}, false));
  CHECK(z.grad().to_vector() == std::vector<double>{3, 30});
  CHECK_THROWS_WITH_AS(mul(z, 2.0).backward(zeros({3}, DType::f64)), doctest::Contains("[3]"), Error);
}

TEST_CASE("gradients accumulate across backward calls and over graph paths") {
  Tensor x = f64({2}, {1});
  sum(mul(x, 5.0)).backward();
  sum(mul(x, 5.0)).backward();
  CHECK(x.grad().item() == 10.0);
  // diamond: y = x*x + x -> dy/dx = 2x + 1
  Tensor a = f64({3}, {1});
  Tensor y = add(mul(a, a), a);
  sum(y).backward();
  CHECK(a.grad().item() == 7.0);
}

TEST_CASE("no-grad mode and detach build no graph") {
  Tensor x = f64({1, 2}, {2});
  {
    NoGradGuard ng;
    Tensor y = mul(x, 2.0);
    CHECK(!y.requires_grad());
    CHECK(y.grad_fn() == nullptr);
  }
  CHECK(grad_mode_enabled());
  Tensor d = x.detach();
  CHECK(!d.requires_grad());
  CHECK(d.impl()->storage == x.impl()->storage);
  Tensor y = mul(d, 2.0);
  CHECK(!y.requires_grad());
  Tensor k = add(mul(x, d), 0.0);  // gradient flows to x only, d is a constant
  sum(k).backward();
  CHECK(x.grad().to_vector() == std::vector<double>{1, 2});
}

TEST_CASE("a graph cannot be backpropagated twice") {
  Tensor x = f64({1}, {1});
  Tensor y = sum(exp(x));
  y.backward();
  CHECK_THROWS_WITH_AS(y.backward(), doctest::Contains("second time"), Error);
}

TEST_CASE("in-place modification of a saved tensor is detected") {
  Tensor x = f64({1, 2}, {2});
  Tensor w = f64({3, 4}, {2}, false);
  Tensor y = sum(mul(x, w));  // saves w
  w.add_(ones({2}, DType::f64));
  CHECK_THROWS_WITH_AS(y.backward(), doctest::Contains("modified in place"), Error);
  // in-place on a leaf that requires grad is refused in grad mode, allowed under NoGradGuard
  CHECK_THROWS_WITH_AS(x.add_(ones({2}, DType::f64)), doctest::Contains("NoGradGuard"), Error);
  {
    NoGradGuard ng;
    x.add_(ones({2}, DType::f64));
  }
  CHECK(x.at({0}) == 2.0);
}

TEST_CASE("long chains do not overflow the stack") {
  Tensor x = f64({1}, {1});
  Tensor y = x;
  for (int i = 0; i < 20000; ++i) y = add(y, 1e-3);
  sum(y).backward();
  CHECK(x.grad().item() == 1.0);
}

TEST_CASE("saved tensors are freed by backward and memory returns to baseline each step") {
  Generator gen(0);
  Tensor w1 = randn({64, 256}, gen).requires_grad_();
  Tensor w2 = randn({256, 10}, gen).requires_grad_();
  auto step = [&] {
    Tensor x = randn({128, 64}, gen);
    Tensor loss = mean(square(matmul(gelu(matmul(x, w1)), w2)));
    size_t before = cpu_allocator_stats().current;
    loss.backward();
    size_t after = cpu_allocator_stats().current;
    w1.set_grad(Tensor());
    w2.set_grad(Tensor());
    return std::pair<size_t, size_t>{before, after};
  };
  step();  // first step creates the grads
  size_t baseline = cpu_allocator_stats().current;
  for (int i = 0; i < 5; ++i) {
    auto [before, after] = step();
    // backward frees the activations saved in the graph (the [128,256] hidden layers)
    CHECK(after < before);
    CHECK(cpu_allocator_stats().current == baseline);
  }
}

TEST_CASE("gradcheck accepts correct gradients and rejects a wrong one") {
  Generator gen(1);
  Tensor x = randn({3, 2}, gen, DType::f64).requires_grad_();
  auto ok = gradcheck([](const std::vector<Tensor>& in) { return exp(in[0]); }, {x});
  CHECK(ok.ok);
  // An op whose backward is off by a factor 2 must be caught.
  auto wrong = [](const std::vector<Tensor>& in) {
    Tensor y;
    {
      NoGradGuard ng;
      y = mul(in[0], in[0]);
    }
    Tensor xin = in[0];
    record("bad_square", y, {xin}, [xin](const Tensor& g) { return std::vector<Tensor>{mul(g, xin)}; });
    return y;
  };
  auto bad = gradcheck(wrong, {x});
  CHECK(!bad.ok);
  CHECK(bad.message.find("analytic") != std::string::npos);
}
