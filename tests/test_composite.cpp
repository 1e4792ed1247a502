// The composite forms (core/ops/composite.h) — what an op runs on a device without its fused kernel —
// against the fused CPU kernels: values and gradients in f64 agree to rounding.
#include <doctest/doctest.h>

#include <functional>
#include <vector>

#include "core/ops.h"
#include "core/ops/composite.h"
#include "core/random.h"

using namespace liandan;

namespace {

double max_abs_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  return max(abs(sub(a, b))).item();
}

// Runs f (fused) and g (composite) on copies of the same inputs; compares outputs and every input gradient.
void check_same(const std::vector<Tensor>& inputs, const std::function<Tensor(const std::vector<Tensor>&)>& fused,
                const std::function<Tensor(const std::vector<Tensor>&)>& comp, double tol = 1e-12) {
  auto run = [&](const std::function<Tensor(const std::vector<Tensor>&)>& f, Generator& gen) {
    std::vector<Tensor> xs;
    for (auto& x : inputs) xs.push_back(x.dtype() == DType::i64 ? x : x.detach().requires_grad_());
    Tensor y = f(xs);
    sum(mul(y, randn(y.shape(), gen, y.dtype()))).backward();
    std::vector<Tensor> out{y.detach()};
    for (auto& x : xs) out.push_back(x.dtype() == DType::i64 ? Tensor() : x.grad());
    return out;
  };
  Generator g1(99), g2(99);
  auto a = run(fused, g1), b = run(comp, g2);
  CHECK(max_abs_diff(a[0], b[0]) <= tol);
  for (size_t i = 1; i < a.size(); ++i) {
    if (!a[i].defined() && !b[i].defined()) continue;
    CAPTURE(i);
    REQUIRE(a[i].defined() == b[i].defined());
    CHECK(max_abs_diff(a[i], b[i]) <= tol);
  }
}

}  // namespace

TEST_CASE("composite norms = fused layer_norm, rms_norm, group_norm (+ SiLU)") {
  Generator gen(1);
  Tensor x = randn({3, 5, 8}, gen, DType::f64), w = randn({5, 8}, gen, DType::f64), b = randn({5, 8}, gen, DType::f64);
  Tensor w1 = randn({8}, gen, DType::f64), b1 = randn({8}, gen, DType::f64);
  check_same({x, w1, b1}, [](auto& t) { return layer_norm(t[0], {8}, t[1], t[2], 1e-5); },
             [](auto& t) { return composite::layer_norm(t[0], 1, t[1], t[2], 1e-5); });
  check_same({x, w, b}, [](auto& t) { return layer_norm(t[0], {5, 8}, t[1], t[2], 1e-5); },
             [](auto& t) { return composite::layer_norm(t[0], 2, t[1], t[2], 1e-5); });
  check_same({x, w1}, [](auto& t) { return rms_norm(t[0], {8}, t[1], 1e-6); },
             [](auto& t) { return composite::rms_norm(t[0], 1, t[1], 1e-6); });
  Tensor xi = randn({2, 6, 4, 3}, gen, DType::f64), gw = randn({6}, gen, DType::f64), gb = randn({6}, gen, DType::f64);
  check_same({xi, gw, gb}, [](auto& t) { return group_norm(t[0], 3, t[1], t[2], 1e-5); },
             [](auto& t) { return composite::group_norm(t[0], 3, t[1], t[2], 1e-5); });
  check_same({xi, gw, gb}, [](auto& t) { return group_norm_silu(t[0], 2, t[1], t[2], 1e-5); },
             [](auto& t) { return silu(composite::group_norm(t[0], 2, t[1], t[2], 1e-5)); });
}

TEST_CASE("composite rope = fused rope: both pairings, partial rotary, broadcast and learned tables") {
  Generator gen(2);
  Tensor x = randn({2, 3, 7, 10}, gen, DType::f64);
  auto [c, s] = rope_cos_sin(rope_angles_1d(arange(7), 8), DType::f64);  // P = 4 < D/2 = 5: partial
  for (RopePairing p : {RopePairing::interleaved, RopePairing::half}) {
    check_same({x, c, s}, [p](auto& t) { return rope(t[0], t[1], t[2], p); },
               [p](auto& t) { return composite::rope(t[0], t[1], t[2], p); });
  }
  auto [c5, s5] = rope_cos_sin(rope_angles_1d(arange(7), 10), DType::f64);  // full rotary
  check_same({x, c5, s5}, [](auto& t) { return rope(t[0], t[1], t[2]); },
             [](auto& t) { return composite::rope(t[0], t[1], t[2], RopePairing::interleaved); });
}

TEST_CASE("composite attention = fused attention: causal, KV-cache offset, padding, a row that sees nothing") {
  Generator gen(3);
  Tensor q = randn({2, 3, 5, 4}, gen, DType::f64), k = randn({2, 3, 7, 4}, gen, DType::f64),
         v = randn({2, 3, 7, 6}, gen, DType::f64);
  Tensor valid = from_vector(std::vector<double>{1, 1, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0}, {2, 7});  // batch 1 sees none
  Tensor valid2 = from_vector(std::vector<double>{1, 1, 0, 1, 1, 1, 0, 1, 0, 1, 1, 0, 1, 1}, {2, 7});
  for (bool causal : {false, true}) {
    for (int mask = 0; mask < 3; ++mask) {
      CAPTURE(causal);
      CAPTURE(mask);
      AttentionOptions o;
      o.causal = causal;
      if (mask == 1) o.key_valid = valid;
      if (mask == 2) o.key_valid = valid2;
      check_same({q, k, v}, [o](auto& t) { return scaled_dot_product_attention(t[0], t[1], t[2], o); },
                 [o](auto& t) { return composite::attention(t[0], t[1], t[2], o); });
    }
  }
  AttentionOptions o;
  o.key_valid = valid;
  CHECK(max(abs(composite::attention(q, k, v, o).select(0, 1))).item() == 0.0);
}

TEST_CASE("composite causal linear attention = the fused running-sum kernel") {
  Generator gen(4);
  auto feat = [&](Shape s) { return add(elu(randn(s, gen, DType::f64)), 1.0); };
  Tensor rq = randn({2, 9, 4}, gen, DType::f64), rk = randn({2, 9, 4}, gen, DType::f64);
  Tensor fq = feat({2, 9, 4}), fk = feat({2, 9, 4}), v = randn({2, 9, 3}, gen, DType::f64);
  check_same({rq, rk, fq, fk, v}, [](auto& t) { return causal_linear_attention_core(t[0], t[1], t[2], t[3], t[4]); },
             [](auto& t) { return composite::causal_linear_attention(t[0], t[1], t[2], t[3], t[4]); });
}

TEST_CASE("composite one_hot, index_select, gather and scatter_add = the index kernels") {
  Generator gen(5);
  Tensor oh = composite::one_hot(from_vector(std::vector<int64_t>{2, 0, 3}, {3}), 4, DType::f64);
  CHECK(oh.to_vector() == std::vector<double>{0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1});
  Tensor x = randn({4, 5, 3}, gen, DType::f64);
  Tensor idx = from_vector(std::vector<int64_t>{4, 0, 0, 2}, {4});
  for (int64_t d : {0, 1}) {
    Tensor id = d == 0 ? from_vector(std::vector<int64_t>{3, 0, 3}, {3}) : idx;
    check_same({x}, [&](auto& t) { return index_select(t[0], d, id); },
               [&](auto& t) { return composite::index_select(t[0], d, id); });
  }
  Tensor gi = from_vector(std::vector<int64_t>{4, 1, 0, 2, 2, 3, 1, 1, 0, 4, 4, 4, 3, 3, 2, 0, 1, 2, 0, 0, 4, 1, 2, 3},
                          {4, 2, 3});
  check_same({x}, [&](auto& t) { return gather(t[0], 1, gi); }, [&](auto& t) { return composite::gather(t[0], 1, gi); });
  Tensor gi0 = from_vector(std::vector<int64_t>{3, 1, 0, 2, 2, 3, 1, 1, 0, 0, 3, 2, 3, 3, 2}, {1, 5, 3});
  check_same({x}, [&](auto& t) { return gather(t[0], 0, gi0); }, [&](auto& t) { return composite::gather(t[0], 0, gi0); });
  // scatter_add: repeated indices accumulate; src larger than index (only the addressed part counts).
  Tensor src = randn({4, 3, 3}, gen, DType::f64);
  check_same({x, src}, [&](auto& t) { return scatter_add(t[0], 1, gi, t[1]); },
             [&](auto& t) { return composite::scatter_add(t[0], 1, gi, t[1]); });
  Tensor src0 = randn({2, 5, 3}, gen, DType::f64);
  check_same({x, src0}, [&](auto& t) { return scatter_add(t[0], 0, gi0, t[1]); },
             [&](auto& t) { return composite::scatter_add(t[0], 0, gi0, t[1]); });
}

TEST_CASE("composite conv2d (stride, padding, groups, bias), avg_pool2d and nearest upsampling = the CPU kernels") {
  Generator gen(6);
  Tensor x = randn({2, 4, 9, 8}, gen, DType::f64);
  struct Case { int64_t O, k, stride, padding, groups; bool bias; };
  for (Case c : {Case{6, 3, 1, 1, 1, true}, Case{5, 3, 2, 0, 1, false}, Case{4, 1, 1, 0, 1, true},
                 Case{6, 3, 2, 1, 2, true}, Case{4, 5, 1, 2, 4, false}}) {
    CAPTURE(c.k);
    CAPTURE(c.stride);
    CAPTURE(c.groups);
    Tensor w = randn({c.O, 4 / c.groups, c.k, c.k}, gen, DType::f64), b = c.bias ? randn({c.O}, gen, DType::f64) : Tensor();
    std::vector<Tensor> in = {x, w};
    if (c.bias) in.push_back(b);
    check_same(in, [&](auto& t) { return conv2d(t[0], t[1], c.bias ? t[2] : Tensor(), c.stride, c.padding, c.groups); },
               [&](auto& t) { return composite::conv2d(t[0], t[1], c.bias ? t[2] : Tensor(), c.stride, c.padding, c.groups); });
  }
  check_same({x}, [](auto& t) { return avg_pool2d(t[0], 2); }, [](auto& t) { return composite::avg_pool2d(t[0], 2, 2, 0); });
  check_same({x}, [](auto& t) { return avg_pool2d(t[0], 3, 2, 1); },
             [](auto& t) { return composite::avg_pool2d(t[0], 3, 2, 1); });
  check_same({x}, [](auto& t) { return upsample_nearest2d(t[0], 2); },
             [](auto& t) { return composite::upsample_nearest2d(t[0], 2); });
}
