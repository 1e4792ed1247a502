// nn::MultiheadAttention against the core ops written out by hand (projections, rope, explicit softmax),
// the KV cache against full recomputation, linear attention's causal/non-causal behaviour, gradcheck.
#include <doctest/doctest.h>

#include <cmath>

#include "core/autograd.h"
#include "core/gradcheck.h"
#include "core/ops.h"
#include "nn/attention.h"
#include "op_test_helpers.h"

using namespace liandan;
using liandan::testing::max_abs_diff;

namespace {

nn::AttentionConfig cfg(nn::AttentionKind kind, nn::PositionEncoding pos, bool causal) {
  nn::AttentionConfig c;
  c.kind = kind;
  c.position = pos;
  c.causal = causal;
  return c;
}

// Naive reference: projections by matmul, rope op, explicit [T, T] softmax with an explicit causal mask.
Tensor naive_mha(nn::MultiheadAttention& m, const Tensor& x, bool causal) {
  const int64_t B = x.size(0), T = x.size(1), H = m.n_heads, D = m.head_dim;
  auto proj = [&](nn::Linear& l) {
    return (matmul(x, l.weight.t()) + l.bias).view({B, T, H, D}).permute({0, 2, 1, 3});
  };
  Tensor q = proj(*m.q_proj), k = proj(*m.k_proj), v = proj(*m.v_proj);
  auto [c, s] = rope_cos_sin(rope_angles_1d(arange(double(0), double(T), 1.0, DType::f64), D, m.config.rope_base),
                             x.dtype());
  q = rope(q, c, s);
  k = rope(k, c, s);
  Tensor scores = matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(double(D)));
  if (causal) {
    std::vector<double> mk(size_t(T * T), 0.0);
    for (int64_t i = 0; i < T; ++i)
      for (int64_t j = i + 1; j < T; ++j) mk[size_t(i * T + j)] = 1.0;
    scores = masked_fill(scores, from_vector(mk, {T, T}, x.dtype()), -INFINITY);
  }
  Tensor o = matmul(softmax(scores, -1), v).permute({0, 2, 1, 3}).reshape({B, T, H * D});
  return matmul(o, m.o_proj->weight.t()) + m.o_proj->bias;
}

}  // namespace

TEST_CASE("MultiheadAttention with rope1d equals rope ops + naive softmax (causal and not)") {
  for (bool causal : {false, true}) {
    Generator g(3);
    nn::MultiheadAttention m(16, 4, cfg(nn::AttentionKind::softmax, nn::PositionEncoding::rope1d, causal), g);
    m.to(DType::f64);
    Tensor x = randn({2, 7, 16}, g, DType::f64);
    Tensor y = m.forward(x), ref = naive_mha(m, x, causal);
    REQUIRE(y.shape() == Shape{2, 7, 16});
    CHECK(max_abs_diff(y, ref) < 1e-12);
    // The inspection logits agree with the reference scores' definition too.
    CHECK(m.attention_logits(x).shape() == Shape{2, 4, 7, 7});
  }
}

TEST_CASE("MultiheadAttention: the KV cache step by step equals the full causal forward") {
  for (auto kind : {nn::AttentionKind::softmax, nn::AttentionKind::linear})
    for (auto pos : {nn::PositionEncoding::rope1d, nn::PositionEncoding::none}) {
      CAPTURE(int(kind));
      CAPTURE(int(pos));
      Generator g(5);
      nn::MultiheadAttention m(16, 2, cfg(kind, pos, true), g);
      m.to(DType::f64);
      Tensor x = randn({2, 6, 16}, g, DType::f64);
      Tensor full = m.forward(x);
      nn::KVCache cache;
      nn::AttentionInputs in;
      in.cache = &cache;
      // A 2-token chunk, then one token at a time.
      std::vector<Tensor> parts = {m.forward(x.narrow(1, 0, 2), in)};
      for (int64_t t = 2; t < 6; ++t) parts.push_back(m.forward(x.narrow(1, t, 1), in));
      CHECK(cache.length() == 6);
      CHECK(max_abs_diff(cat(parts, 1), full) < 1e-10);
    }
}

TEST_CASE("linear attention module: causal rows ignore the future, non-causal rows do not") {
  Generator g(7);
  nn::MultiheadAttention causal(16, 2, cfg(nn::AttentionKind::linear, nn::PositionEncoding::rope1d, true), g);
  nn::MultiheadAttention full(16, 2, cfg(nn::AttentionKind::linear, nn::PositionEncoding::rope1d, false), g);
  full.load_state_dict(causal.state_dict());
  causal.to(DType::f64);
  full.to(DType::f64);
  Tensor x = randn({1, 6, 16}, g, DType::f64), x2 = x.clone();
  x2.narrow(1, 4, 1).copy_(randn({1, 1, 16}, g, DType::f64));
  Tensor yc = causal.forward(x), yc2 = causal.forward(x2), yf = full.forward(x), yf2 = full.forward(x2);
  CHECK(max_abs_diff(yc.narrow(1, 0, 4), yc2.narrow(1, 0, 4)) < 1e-12);  // rows before the change
  CHECK(max_abs_diff(yf.narrow(1, 0, 4), yf2.narrow(1, 0, 4)) > 1e-6);   // non-causal sees it
  // The last row sees every key in both modes.
  CHECK(max_abs_diff(yc.narrow(1, 5, 1), yf.narrow(1, 5, 1)) < 1e-12);
  // Row 0 of the causal form attends only to itself: out_0 = o_proj(v_0) (the weights normalise to 1).
  Tensor v0 = causal.v_proj->forward(x.narrow(1, 0, 1));
  CHECK(max_abs_diff(yc.narrow(1, 0, 1), causal.o_proj->forward(v0)) < 1e-12);
  // The explicit masked path (taken with key_valid) equals the fused kernels.
  nn::AttentionInputs in;
  in.key_valid = ones({1, 6}, DType::f64);
  CHECK(max_abs_diff(causal.forward(x, in), yc) < 1e-12);
  CHECK(max_abs_diff(full.forward(x, in), yf) < 1e-12);
}

TEST_CASE("MultiheadAttention: padded keys are ignored (softmax and linear)") {
  for (auto kind : {nn::AttentionKind::softmax, nn::AttentionKind::linear}) {
    Generator g(9);
    nn::MultiheadAttention m(8, 2, cfg(kind, nn::PositionEncoding::rope1d, false), g);
    m.to(DType::f64);
    Tensor x = randn({1, 5, 8}, g, DType::f64);
    nn::AttentionInputs in;
    in.key_valid = from_vector(std::vector<double>{1, 1, 1, 0, 0}, {1, 5}, DType::f64);
    Tensor y = m.forward(x, in), y3 = m.forward(x.narrow(1, 0, 3));
    CHECK(max_abs_diff(y.narrow(1, 0, 3), y3) < 1e-12);
  }
}

TEST_CASE("MultiheadAttention: rope2d rows of one axis are 1-D RoPE; gradcheck of every kind") {
  for (auto kind : {nn::AttentionKind::softmax, nn::AttentionKind::linear})
    for (auto pos : {nn::PositionEncoding::rope1d, nn::PositionEncoding::rope2d}) {
      CAPTURE(int(kind));
      CAPTURE(int(pos));
      Generator g(11);
      nn::MultiheadAttention m(8, 2, cfg(kind, pos, pos == nn::PositionEncoding::rope1d), g);
      m.to(DType::f64);
      Tensor x = randn({1, 4, 8}, g, TensorOptions(DType::f64, true));
      nn::AttentionInputs in;
      in.pos_x = from_vector(std::vector<double>{0, 1, 0, 1}, {4}, DType::f64);
      in.pos_y = from_vector(std::vector<double>{0, 0, 1, 1}, {4}, DType::f64);
      std::vector<Tensor> inputs = m.parameters();
      inputs.push_back(x);
      auto r = gradcheck([&](const std::vector<Tensor>& v) { return m.forward(v.back(), in); }, inputs);
      INFO(r.message);
      CHECK(r.ok);
    }
}

TEST_CASE("sinusoidal_position_encoding values") {
  Tensor pe = nn::sinusoidal_position_encoding(5, 6, 2, 10000.0, DType::f64);
  REQUIRE(pe.shape() == Shape{5, 6});
  auto v = pe.to_vector();
  // t = 1 (offset 2 + row... row 1 is position 3), i = 1: w = 10000^(-2/6)
  double w = std::pow(10000.0, -2.0 / 6.0);
  CHECK(v[size_t(1 * 6 + 2)] == doctest::Approx(std::sin(3 * w)).epsilon(1e-14));
  CHECK(v[size_t(1 * 6 + 3)] == doctest::Approx(std::cos(3 * w)).epsilon(1e-14));
  CHECK(v[0] == doctest::Approx(std::sin(2.0)));
}
