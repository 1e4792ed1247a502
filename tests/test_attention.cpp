// Fused softmax attention and linear attention (with RoPE) against explicit O(n^2) references.
#include <doctest/doctest.h>

#include <cmath>

#include "core/gradcheck.h"
#include "core/ops.h"
#include "core/threads.h"

using namespace liandan;

namespace {

// softmax(scale q k^T + mask) v with explicit matrices; mask[i][j] = 0 means "not visible".
Tensor naive_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& visible) {
  double scale = 1.0 / std::sqrt(double(q.size(-1)));
  Tensor s = mul(matmul(q, k.transpose(-1, -2)), scale);
  s = where(visible, s, full({}, -1e300, s.dtype()));
  // rows with no visible key are defined as zero output
  Tensor any = gt(sum(visible, {-1}, true), 0.0);
  return mul(matmul(softmax(s, -1), v), any);
}

// visible[b, 0, i, j] for causal (with the KV-cache offset) and key padding.
Tensor visibility(int64_t B, int64_t Tq, int64_t Tk, bool causal, const Tensor& key_valid) {
  Tensor m = ones({B, 1, Tq, Tk}, DType::f64);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < Tq; ++i)
      for (int64_t j = 0; j < Tk; ++j) {
        bool vis = !causal || j <= Tk - Tq + i;
        if (key_valid.defined()) vis = vis && key_valid.at({b, j}) != 0;
        m.set({b, 0, i, j}, vis ? 1.0 : 0.0);
      }
  return m;
}

// Explicit RoPE: rotation matrix R_m (interleaved pairs) applied to each row of x [.., T, D].
Tensor explicit_rope(const Tensor& x, double base = 10000.0) {
  int64_t T = x.size(-2), D = x.size(-1);
  Tensor R = zeros({T, D, D}, DType::f64);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < D / 2; ++i) {
      double a = double(t) * std::pow(base, -2.0 * double(i) / double(D));
      R.set({t, 2 * i, 2 * i}, std::cos(a));
      R.set({t, 2 * i, 2 * i + 1}, -std::sin(a));
      R.set({t, 2 * i + 1, 2 * i}, std::sin(a));
      R.set({t, 2 * i + 1, 2 * i + 1}, std::cos(a));
    }
  return matmul(R, x.unsqueeze(-1)).squeeze(-1);  // [.., T, D, 1] -> [.., T, D]
}

void check_close(const Tensor& a, const Tensor& b, double tol) {
  REQUIRE(a.shape() == b.shape());
  std::vector<double> x = a.to_vector(), y = b.to_vector();
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::fabs(x[i] - y[i]));
  INFO("max abs difference " << worst);
  CHECK(worst <= tol);
}

}  // namespace

TEST_CASE("softmax attention equals the explicit formula: plain, causal, KV-cache offset, padding") {
  Generator gen(1);
  int64_t B = 2, H = 3, D = 8;
  Tensor kv_valid = from_vector(std::vector<double>{1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 1, 1}, {2, 6}, DType::f64);
  for (auto [Tq, Tk, causal, pad] : {std::tuple{5, 5, false, false}, std::tuple{5, 5, true, false},
                                      std::tuple{2, 6, true, false}, std::tuple{4, 6, false, true},
                                      std::tuple{6, 6, true, true}}) {
    CAPTURE(Tq);
    CAPTURE(causal);
    CAPTURE(pad);
    Tensor q = randn({B, H, Tq, D}, gen, DType::f64), k = randn({B, H, Tk, D}, gen, DType::f64),
           v = randn({B, H, Tk, 5}, gen, DType::f64);
    AttentionOptions opt;
    opt.causal = causal;
    if (pad) opt.key_valid = kv_valid;
    Tensor ref = naive_attention(q, k, v, visibility(B, Tq, Tk, causal, opt.key_valid));
    check_close(scaled_dot_product_attention(q, k, v, opt), ref, 1e-12);
    // f32 agrees with f64 to f32 precision
    check_close(scaled_dot_product_attention(q.to(DType::f32), k.to(DType::f32), v.to(DType::f32), opt).to(DType::f64),
                ref, 1e-5);
  }
}

TEST_CASE("softmax attention: gradcheck with causal + padding masks, non-contiguous inputs") {
  Generator gen(2);
  Tensor q = randn({2, 3, 2, 4}, gen, DType::f64).permute({0, 2, 1, 3}).requires_grad_();  // [2,2,3,4] view
  Tensor k = randn({2, 2, 3, 4}, gen, DType::f64).requires_grad_();
  Tensor v = randn({2, 2, 3, 3}, gen, DType::f64).requires_grad_();
  AttentionOptions opt;
  opt.causal = true;
  opt.key_valid = from_vector(std::vector<double>{1, 0, 1, 1, 1, 1}, {2, 3}, DType::f64);
  auto r = gradcheck([&](const std::vector<Tensor>& in) { return scaled_dot_product_attention(in[0], in[1], in[2], opt); },
                     {q, k, v});
  INFO(r.message);
  CHECK(r.ok);
}

TEST_CASE("softmax attention reads heads split out of a fused QKV in place and writes [B, T, H, D] rows") {
  Generator gen(21);
  const int64_t B = 2, T = 5, H = 3, D = 4;
  auto heads = [](const Tensor& qkv) {
    std::vector<Tensor> p = unbind(qkv, 2);
    return std::vector<Tensor>{p[0].permute({0, 2, 1, 3}), p[1].permute({0, 2, 1, 3}), p[2].permute({0, 2, 1, 3})};
  };
  Tensor qkv = randn({B, T, 3, H, D}, gen, DType::f64);
  std::vector<Tensor> h = heads(qkv);
  AttentionOptions opt{.causal = true};
  Tensor out = scaled_dot_product_attention(h[0], h[1], h[2], opt);
  Tensor ref = scaled_dot_product_attention(h[0].contiguous(), h[1].contiguous(), h[2].contiguous(), opt);
  check_close(out, ref, 1e-14);
  CHECK(out.permute({0, 2, 1, 3}).is_contiguous());  // the head merge [B, T, H·D] is a view
  // gradients through the views, a KV-cache step (one query row) and keys/values broadcast over the heads
  auto r = gradcheck([&](const std::vector<Tensor>& in) {
    std::vector<Tensor> p = heads(in[0]);
    return scaled_dot_product_attention(p[0], p[1], p[2], opt);
  }, {qkv.detach().requires_grad_()});
  INFO(r.message);
  CHECK(r.ok);
  Tensor q1 = randn({B, 1, H, D}, gen, DType::f64).permute({0, 2, 1, 3});
  Tensor k1 = randn({B, 1, T, D}, gen, DType::f64), v1 = randn({B, 1, T, 2}, gen, DType::f64);
  auto r1 = gradcheck([&](const std::vector<Tensor>& in) {
    return scaled_dot_product_attention(in[0], in[1].expand({B, H, T, D}), in[2].expand({B, H, T, 2}), opt);
  }, {q1.requires_grad_(), k1.requires_grad_(), v1.requires_grad_()});
  INFO(r1.message);
  CHECK(r1.ok);
  check_close(scaled_dot_product_attention(q1, k1.expand({B, H, T, D}), v1.expand({B, H, T, 2}), opt),
              scaled_dot_product_attention(q1.contiguous(), k1.expand({B, H, T, D}).contiguous(),
                                           v1.expand({B, H, T, 2}).contiguous(), opt), 1e-14);
}

TEST_CASE("softmax attention: a query that sees no key outputs zeros, not NaN") {
  Tensor q = ones({1, 1, 2, 4}, DType::f64), k = ones({1, 1, 2, 4}, DType::f64), v = ones({1, 1, 2, 2}, DType::f64);
  AttentionOptions opt;
  opt.key_valid = zeros({1, 2}, DType::f64);
  Tensor o = scaled_dot_product_attention(q, k, v, opt);
  for (double x : o.to_vector()) CHECK(x == 0.0);
  CHECK_THROWS_WITH_AS(scaled_dot_product_attention(q, k, ones({1, 1, 3, 2}, DType::f64)),
                       doctest::Contains("scaled_dot_product_attention"), Error);
  AttentionOptions bad;
  bad.key_valid = zeros({1, 5}, DType::f64);
  CHECK_THROWS_WITH_AS(scaled_dot_product_attention(q, k, v, bad), doctest::Contains("key_valid"), Error);
}

TEST_CASE("softmax attention with RoPE equals explicit rotation matrices + explicit softmax") {
  Generator gen(3);
  int64_t T = 7, D = 8;
  Tensor q = randn({1, 2, T, D}, gen, DType::f64), k = randn({1, 2, T, D}, gen, DType::f64),
         v = randn({1, 2, T, 4}, gen, DType::f64);
  auto [c, s] = rope_cos_sin(rope_angles_1d(arange(T, DType::f64), D), DType::f64);
  AttentionOptions opt;
  opt.causal = true;
  Tensor fused = scaled_dot_product_attention(rope(q, c, s), rope(k, c, s), v, opt);
  Tensor ref = naive_attention(explicit_rope(q), explicit_rope(k), v, visibility(1, T, T, true, Tensor()));
  check_close(fused, ref, 1e-12);
  // RoPE inside the op (AttentionOptions' tables): the same numbers; with Tq < Tk the queries take the table rows of
  // their positions Tk − Tq.. (a KV cache's new tokens).
  opt.rope_cos = c;
  opt.rope_sin = s;
  check_close(scaled_dot_product_attention(q, k, v, opt), ref, 1e-12);
  Tensor q_last = q.narrow(2, 3, T - 3);
  check_close(scaled_dot_product_attention(q_last, k, v, opt), ref.narrow(2, 3, T - 3), 1e-12);
  // gradients through the op's RoPE, and into learned tables (the composite form)
  Tensor cl = c.detach().requires_grad_(), sl = s.detach().requires_grad_();
  auto r = gradcheck([&](const std::vector<Tensor>& x) {
    AttentionOptions o{.causal = true};
    o.rope_cos = x[3];
    o.rope_sin = x[4];
    return scaled_dot_product_attention(x[0], x[1], x[2], o);
  }, {q.narrow(2, 2, T - 2).contiguous().requires_grad_(), k.detach().requires_grad_(), v.detach().requires_grad_(), cl, sl});
  INFO(r.message);
  CHECK(r.ok);
  AttentionOptions bad = opt;
  bad.rope_cos = c.narrow(0, 0, T - 1);
  bad.rope_sin = s.narrow(0, 0, T - 1);
  CHECK_THROWS_WITH_AS(scaled_dot_product_attention(q, k, v, bad),
                       doctest::Contains("RoPE tables must be [Tk, P] = [7, P] with 2P <= D = 8, got cos [6, 4]"), Error);
  bad.rope_sin = Tensor();
  CHECK_THROWS_WITH_AS(scaled_dot_product_attention(q, k, v, bad), doctest::Contains("given together"), Error);
}

TEST_CASE("linear attention with RoPE equals its explicit O(n^2) formula (non-causal and causal)") {
  Generator gen(4);
  int64_t B = 2, H = 2, T = 6, D = 8, Dv = 3;
  Tensor q = randn({B, H, T, D}, gen, DType::f64), k = randn({B, H, T, D}, gen, DType::f64),
         v = randn({B, H, T, Dv}, gen, DType::f64);
  auto [c, s] = rope_cos_sin(rope_angles_1d(arange(T, DType::f64), D), DType::f64);
  Tensor fq = add(elu(q), 1.0), fk = add(elu(k), 1.0);
  Tensor num_w = matmul(explicit_rope(fq), explicit_rope(fk).transpose(-1, -2));  // [.., T, T], may be < 0
  Tensor den_w = matmul(fq, fk.transpose(-1, -2));                                 // unrotated, > 0
  for (bool causal : {false, true}) {
    CAPTURE(causal);
    Tensor mask = causal ? visibility(1, T, T, true, Tensor()) : ones({1, 1, T, T}, DType::f64);
    Tensor ref = div(matmul(mul(num_w, mask), v), sum(mul(den_w, mask), {-1}, true));
    check_close(linear_attention(q, k, v, causal, c, s), ref, 1e-12);
    // without RoPE it is plain linear attention: weights phi(q).phi(k) normalised
    Tensor plain = div(matmul(mul(den_w, mask), v), sum(mul(den_w, mask), {-1}, true));
    check_close(linear_attention(q, k, v, causal), plain, 1e-12);
  }
  // the denominator stays positive even where the rotated numerator weights are negative
  CHECK(min(den_w).item() > 0);
  CHECK(min(num_w).item() < 0);
}

TEST_CASE("linear attention: gradcheck (causal fused kernel and non-causal composite, with RoPE)") {
  Generator gen(5);
  int64_t T = 5, D = 4;
  Tensor q = randn({1, 2, T, D}, gen, DType::f64).requires_grad_(), k = randn({1, 2, T, D}, gen, DType::f64).requires_grad_(),
         v = randn({1, 2, T, 3}, gen, DType::f64).requires_grad_();
  auto [c, s] = rope_cos_sin(rope_angles_1d(arange(T, DType::f64), D), DType::f64);
  for (bool causal : {false, true}) {
    auto r = gradcheck([&](const std::vector<Tensor>& in) { return linear_attention(in[0], in[1], in[2], causal, c, s); },
                       {q, k, v});
    INFO(r.message);
    CHECK(r.ok);
  }
  // the fused core alone, all five inputs (rotated and unrotated features independent)
  std::vector<Tensor> in;
  for (int i = 0; i < 4; ++i) in.push_back(add(rand({1, 2, T, D}, gen, DType::f64), 0.5).detach().requires_grad_());
  in.push_back(randn({1, 2, T, 3}, gen, DType::f64).requires_grad_());
  auto r = gradcheck([](const std::vector<Tensor>& x) { return causal_linear_attention_core(x[0], x[1], x[2], x[3], x[4]); }, in);
  INFO(r.message);
  CHECK(r.ok);
}

TEST_CASE("attention results do not depend on the thread count") {
  Generator gen(6);
  Tensor q = randn({4, 4, 32, 16}, gen), k = randn({4, 4, 32, 16}, gen), v = randn({4, 4, 32, 16}, gen);
  AttentionOptions opt;
  opt.causal = true;
  set_num_threads(1);
  Tensor a = scaled_dot_product_attention(q, k, v, opt), la = linear_attention(q, k, v, true);
  set_num_threads(2);
  Tensor b = scaled_dot_product_attention(q, k, v, opt), lb = linear_attention(q, k, v, true);
  CHECK(a.to_vector() == b.to_vector());
  CHECK(la.to_vector() == lb.to_vector());
}
