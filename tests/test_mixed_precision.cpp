// Mixed precision on the CPU (issue #9, item 5; #24): bf16/f16 tensors (conversions bit-exact to the reference
// rounding), matmul of half operands with f32 accumulation (bf16: cpu::gemm_bf16, within f32 summation error), Autocast (what it casts, what it leaves alone,
// the gradients' path back to f32 master weights, models within bf16 tolerance of f32), and the dynamic loss
// scaler for f16: underflow rescued, overflow skipped and backed off, growth, checkpoint state.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "core/ops.h"
#include "core/ops/composite.h"
#include "op_test_helpers.h"
#include "core/random.h"
#include "core/serialize.h"
#include "nn/layers.h"
#include "nn/models.h"
#include "optim/adam.h"
#include "optim/grad_scaler.h"
#include "optim/sgd.h"

using namespace liandan;
using liandan::testing::error_of;

namespace {

// The reference rounding of every element of an f32 tensor to a half format and back (core/half.h).
std::vector<double> rounded(const Tensor& x, DType half) {
  std::vector<double> out;
  for (double v : x.to_vector()) {
    float f = float(v);
    out.push_back(half == DType::bf16 ? bf16_to_float(float_to_bf16(f)) : f16_to_float(float_to_f16(f)));
  }
  return out;
}

// max |a − b| / max |b|: the error relative to the tensor's scale (entries near 0 do not blow it up).
double rel_err(const Tensor& a, const Tensor& b) {
  auto va = a.to_vector(), vb = b.to_vector();
  REQUIRE(va.size() == vb.size());
  double m = 0, s = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    m = std::max(m, std::fabs(va[i] - vb[i]));
    s = std::max(s, std::fabs(vb[i]));
  }
  return m / std::max(s, 1e-30);
}

double max_abs(const Tensor& t) { return max(abs(t)).item(); }

// Elements of c = a @ b (half operands) outside the f32 accumulation bound of their exact product:
// |c - a b| <= (K + 4) 2^-24 |a| |b| (cpu::gemm_bf16's bound, tests/test_gemm_bf16.cpp).
int64_t f32_sum_violations(const Tensor& c, const Tensor& a, const Tensor& b) {
  Tensor a64 = a.to(DType::f64), b64 = b.to(DType::f64);
  auto ref = matmul(a64, b64).to_vector(), mag = matmul(abs(a64), abs(b64)).to_vector(), got = c.to_vector();
  REQUIRE(ref.size() == got.size());
  const double gamma = double(a.size(-1) + 4) * std::ldexp(1.0, -24);
  int64_t bad = 0;
  for (size_t i = 0; i < ref.size(); ++i) bad += std::fabs(got[i] - ref[i]) > gamma * mag[i];
  return bad;
}

}  // namespace

TEST_CASE("bf16 / f16 tensors: casts round to nearest even like torch, widen exactly, and other ops refuse by name") {
  Generator g(1);
  Tensor x = mul(randn({1000}, g), 100.0);
  for (DType h : {DType::bf16, DType::f16}) {
    CAPTURE(std::string(dtype_name(h)));
    Tensor xh = x.to(h);
    CHECK(xh.dtype() == h);
    CHECK(dtype_size(h) == 2);
    CHECK(xh.to_vector() == rounded(x, h));                        // element reads decode exactly
    CHECK(xh.to(DType::f32).to_vector() == rounded(x, h));         // widening is exact
    CHECK(xh.to(DType::f64).to(h).to_vector() == rounded(x, h));   // a round trip through f64 changes nothing
    // Strided source, broadcast copy, fill and element writes.
    Tensor m = mul(randn({8, 6}, g), 3.0);
    CHECK(m.t().to(h).to_vector() == rounded(m.t().contiguous(), h));
    Tensor f = empty({3, 2}, h).fill_(1.0 / 3.0);
    CHECK(f.at({2, 1}) == double(h == DType::bf16 ? bf16_to_float(float_to_bf16(1.0f / 3)) : f16_to_float(float_to_f16(1.0f / 3))));
    f.set({0, 0}, 2.5);
    CHECK(f.at({0, 0}) == 2.5);
    CHECK(error_of([&] { exp(xh); }) == "exp: expected a floating dtype (f32 or f64), got " + std::string(dtype_name(h)));
  }
  // f64 -> half is correctly rounded (no double rounding through f32): 1 + 2^-8 + 2^-30 lies just above the
  // bf16 midpoint between 1 and 1 + 2^-7, so it rounds up; through f32 it would be the midpoint and round to 1.
  double just_above = 1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -30);
  CHECK(from_vector(std::vector<double>{just_above}, {1}, DType::f64).to(DType::bf16).item() == 1.0 + std::ldexp(1.0, -7));
  // f16's range: 65504 is the largest finite value, 65520 and above overflow to inf; 2^-25 rounds to 0.
  Tensor edge = from_vector(std::vector<double>{65504, 65519, 65520, -1e6, std::ldexp(1.0, -24), std::ldexp(1.0, -25)}, {6});
  std::vector<double> fe = edge.to(DType::f16).to_vector();
  double inf = std::numeric_limits<double>::infinity();
  CHECK(fe == std::vector<double>{65504, 65504, inf, -inf, std::ldexp(1.0, -24), 0});
  CHECK(edge.to(DType::bf16).at({3}) == -999424.0);  // bf16 keeps f32's range (1e6 to 8 significant bits)
  // Gradients flow through casts (rounded to the narrower format on the way back).
  Tensor a = from_vector(std::vector<double>{1, 2}, {2});
  a.requires_grad_();
  sum(mul(a.to(DType::bf16).to(DType::f32), 1.0 + 1.0 / 1024)).backward();
  CHECK(a.grad().dtype() == DType::f32);
  CHECK(a.grad().to_vector() == std::vector<double>{1.0, 1.0});  // 1 + 2^-10 rounds to 1 in bf16
}

TEST_CASE("bf16 / f16 tensors: safetensors keeps their bits (BF16 / F16 entries)") {
  std::string path = (std::filesystem::temp_directory_path() / "liandan_test_half.safetensors").string();
  Generator g(2);
  Tensor x = randn({4, 5}, g);
  save_safetensors(path, {{"b", x.to(DType::bf16)}, {"h", x.to(DType::f16)}});
  SafetensorsReader r(path);
  CHECK(std::string(st_dtype_name(r.entry("b").dtype)) == "BF16");
  CHECK(std::string(st_dtype_name(r.entry("h").dtype)) == "F16");
  auto c = load_safetensors(path);
  CHECK(c.at("b").to_vector() == rounded(x, DType::bf16));  // loaded widened to f32, exactly
  CHECK(c.at("h").to_vector() == rounded(x, DType::f16));
  std::filesystem::remove(path);
}

TEST_CASE("matmul of half operands accumulates in f32 and returns f32; Autocast casts f32 matmuls only") {
  Generator g(3);
  Tensor a = randn({2, 5, 33}, g), b = randn({33, 7}, g), bt = randn({2, 7, 33}, g).transpose(-1, -2);
  for (DType h : {DType::bf16, DType::f16}) {
    CAPTURE(std::string(dtype_name(h)));
    Tensor c = matmul(a.to(h), b.to(h));
    CHECK(c.dtype() == DType::f32);
    // The product of the rounded operands with f32 accumulation: f16 is widened and multiplied by sgemm (exactly
    // that f32 product); bf16 runs cpu::gemm_bf16 (vdpbf16ps where the CPU has it), within f32 summation error of
    // the exact product of the rounded operands.
    if (h == DType::f16) {
      CHECK(c.to_vector() == matmul(a.to(h).to(DType::f32), b.to(h).to(DType::f32)).to_vector());
      CHECK(matmul(a.to(h), bt.to(h)).to_vector() ==
            matmul(a.to(h).to(DType::f32), bt.to(h).to(DType::f32)).to_vector());
    } else {
      CHECK(f32_sum_violations(c, a.to(h), b.to(h)) == 0);
      CHECK(f32_sum_violations(matmul(a.to(h), bt.to(h)), a.to(h), bt.to(h)) == 0);
    }
    Tensor c32 = matmul(a, b);
    CHECK(rel_err(c, c32) < (h == DType::bf16 ? 1e-2 : 2e-3));
    CHECK(rel_err(c, matmul(a, b)) > 0);  // the rounding is real
    {
      Autocast ac(h);
      CHECK(autocast_dtype() == h);
      CHECK(matmul(a, b).to_vector() == c.to_vector());
      Tensor a64 = a.to(DType::f64), b64 = b.to(DType::f64);
      CHECK(matmul(a64, b64).dtype() == DType::f64);  // f64 is never autocast (gradient checks stay exact)
      CHECK(matmul(a64, b64).to_vector() == matmul(a64, b64).to_vector());
      CHECK(rel_err(matmul(a64, b64), matmul(a, b).to(DType::f64)) > 0);
      {
        Autocast off(DType::f32);
        CHECK(!autocast_enabled());
        CHECK(matmul(a, b).to_vector() == c32.to_vector());
      }
      CHECK(autocast_dtype() == h);  // scopes nest
    }
    CHECK(!autocast_enabled());
  }
  CHECK(error_of([] { Autocast bad(DType::f64); }) ==
        "Autocast: the format must be bf16 or f16 (f32 turns autocast off), got f64");
  CHECK(error_of([&] { matmul(a.to(DType::bf16), b.to(DType::f16)); }) ==
        "matmul: dtype mismatch bf16 [2, 5, 33] vs f16 [33, 7]");
}

TEST_CASE("Autocast gradients: the backward GEMMs take half operands and the f32 master weights get f32 grads") {
  Generator g(4);
  Tensor a = randn({6, 20}, g), w = randn({20, 9}, g), up = randn({6, 9}, g);
  a.requires_grad_();
  w.requires_grad_();
  {
    Autocast ac(DType::bf16);
    sum(mul(matmul(a, w), up)).backward();
  }
  CHECK(a.grad().dtype() == DType::f32);
  CHECK(w.grad().dtype() == DType::f32);
  // da = bf16(bf16(up) @ bf16(w)ᵀ), dw = bf16(bf16(a)ᵀ @ bf16(up)): the GEMMs of PyTorch's bf16 autocast (bf16
  // operands, f32 accumulation, the product rounded once).
  auto h = [](const Tensor& t) { return t.to(DType::bf16); };
  CHECK(a.grad().to_vector() == matmul(h(up), h(w).t()).to(DType::bf16).to(DType::f32).to_vector());
  CHECK(w.grad().to_vector() == matmul(h(a).t(), h(up)).to(DType::bf16).to(DType::f32).to_vector());
  CHECK(rel_err(a.grad(), matmul(up, w.t())) < 1e-2);
  // backward() called inside an autocast scope gives the same gradients (they follow the forward's dtypes).
  Tensor a2 = a.detach().clone().requires_grad_(), w2 = w.detach().clone().requires_grad_();
  {
    Autocast ac(DType::bf16);
    sum(mul(matmul(a2, w2), up)).backward();
  }
  CHECK(a2.grad().to_vector() == a.grad().to_vector());
  // An f32 graph backpropagated inside an autocast scope stays f32.
  Tensor a3 = a.detach().clone().requires_grad_();
  Tensor l3 = sum(mul(matmul(a3, w.detach()), up));
  {
    Autocast ac(DType::bf16);
    l3.backward();
  }
  CHECK(a3.grad().to_vector() == matmul(up, w.t()).to_vector());
}

TEST_CASE("Autocast: Linear, attention and conv follow their f32 results within bf16's tolerance") {
  Generator g(5);
  // Linear and conv2d: outputs and parameter gradients.
  nn::Linear lin(48, 24, true, g);
  nn::Conv2d conv(3, 8, 3, {.padding = 1}, g);
  Tensor x = randn({10, 48}, g), img = randn({2, 3, 9, 9}, g);
  auto run = [&](DType prec) {
    lin.zero_grad();
    conv.zero_grad();
    Tensor y, z;
    {
      Autocast ac(prec);
      y = lin.forward(x);
      z = conv.forward(img);
    }
    (sum(square(y)) + sum(square(z))).backward();
    return std::vector<Tensor>{y.detach(), z.detach(), lin.weight.grad().clone(), conv.weight.grad().clone(),
                               conv.bias.grad().clone()};
  };
  auto f32 = run(DType::f32), b16 = run(DType::bf16);
  for (size_t i = 0; i < f32.size(); ++i) {
    CAPTURE(i);
    CHECK(b16[i].dtype() == DType::f32);
    CHECK(rel_err(b16[i], f32[i]) < 1e-2);
    // On the CPU a 3x3 stride-1 convolution stays on the direct f32 kernels under autocast (faster there than the
    // bf16 unfold + GEMM, core/ops/conv.cpp): its output and gradients (1, 3, 4) are the f32 ones exactly; the
    // Linear's (0, 2) went through bf16.
    bool conv_output = i == 1 || i == 3 || i == 4;
    if (conv_output) CHECK(rel_err(b16[i], f32[i]) == 0);
    else CHECK(rel_err(b16[i], f32[i]) > 0);
  }
  {  // a stride-2 convolution (no direct kernel) takes the bf16 composite: close to f32, not equal
    nn::Conv2d strided(3, 8, 3, {.stride = 2, .padding = 1}, g);
    Tensor z32 = strided.forward(img), z16;
    {
      Autocast ac(DType::bf16);
      z16 = strided.forward(img);
    }
    CHECK(rel_err(z16.to(DType::f32), z32) < 1e-2);
    CHECK(rel_err(z16.to(DType::f32), z32) > 0);
  }
  {  // a bf16 input (a norm's autocast output) is widened and convolved in f32, its gradient flows back in bf16
    Tensor xh = img.to(DType::bf16).detach().requires_grad_(true), zh;
    {
      Autocast ac(DType::bf16);
      zh = conv.forward(xh);
    }
    CHECK(zh.dtype() == DType::f32);
    CHECK(rel_err(zh, conv.forward(img.to(DType::bf16).to(DType::f32))) == 0);
    sum(zh).backward();
    CHECK(xh.grad().dtype() == DType::bf16);
  }
  // Softmax attention (causal) and a RoFormer LM's loss and gradients.
  Tensor q = randn({2, 3, 16, 8}, g), k = randn({2, 3, 16, 8}, g), v = randn({2, 3, 16, 8}, g);
  Tensor o32 = scaled_dot_product_attention(q, k, v, {.causal = true}), o16;
  {
    Autocast ac(DType::bf16);
    o16 = scaled_dot_product_attention(q, k, v, {.causal = true});
  }
  CHECK(rel_err(o16, o32) < 1e-2);
  CHECK(rel_err(o16, o32) > 0);

  nn::RoFormerLMConfig cfg{.vocab_size = 32, .d_model = 32, .n_layers = 2, .n_heads = 2, .d_ff = 64};
  Generator gm(6), data(7);
  nn::RoFormerLM lm(cfg, gm);
  Tensor tokens = randint(0, 32, {4, 17}, data);
  auto lm_grads = [&](DType prec) {
    lm.zero_grad();
    Tensor loss;
    {
      Autocast ac(prec);
      loss = lm.loss(tokens);
    }
    loss.backward();
    std::vector<Tensor> out{loss.detach()};
    for (auto& [n, p] : lm.named_parameters()) out.push_back(p.grad().clone());
    return out;
  };
  auto l32 = lm_grads(DType::f32), l16 = lm_grads(DType::bf16);
  CHECK(std::abs(l16[0].item() - l32[0].item()) < 1e-2 * l32[0].item());
  double worst = 0;
  for (size_t i = 1; i < l32.size(); ++i) worst = std::max(worst, rel_err(l16[i], l32[i]));
  CHECK(worst < 5e-2);  // gradients of the whole model: bf16 rounding at every GEMM, compounded over 2 layers
  CHECK(worst > 0);
}

TEST_CASE("autocast_matmul gives the half product; half activations flow through RoPE, attention and Linear") {
  Generator g(41);
  Tensor a = randn({2, 6, 32}, g), w = randn({32, 16}, g);
  {
    Autocast ac(DType::bf16);
    Tensor h = autocast_matmul(a, w);
    CHECK(h.dtype() == DType::bf16);
    CHECK(h.to_vector() == matmul(a, w).to(DType::bf16).to_vector());  // the f32 product rounded once
    // a half activation times an f32 weight: both go half, the product is f32 as for matmul
    Tensor c = matmul(h, w.t());
    CHECK(c.dtype() == DType::f32);
    CHECK(c.to_vector() == matmul(h.to(DType::f32), w.t()).to_vector());
  }
  CHECK(autocast_matmul(a, w).dtype() == DType::f32);  // autocast off: plain matmul
  CHECK(error_of([&] { matmul(a.to(DType::bf16), w); }) == "matmul: dtype mismatch bf16 [2, 6, 32] vs f32 [32, 16]");
  // RoPE on bf16 rows with f32 tables: the f32 rotation rounded once
  Tensor x = randn({2, 3, 5, 8}, g).to(DType::bf16);
  auto [c, s] = rope_cos_sin(rope_angles_1d(arange(0.0, 5.0, 1.0, DType::f64), 8, 10000.0), DType::f32);
  CHECK(rope(x, c, s).dtype() == DType::bf16);
  CHECK(rope(x, c, s).to_vector() == rope(x.to(DType::f32), c, s).to(DType::bf16).to_vector());
  // attention on bf16 q, k, v (CPU: the autocast composite on their f32 values) returns bf16 and keeps gradients
  Tensor q = randn({1, 2, 7, 8}, g).to(DType::bf16).requires_grad_(), k = randn({1, 2, 7, 8}, g).to(DType::bf16);
  Tensor v = randn({1, 2, 7, 8}, g).to(DType::bf16);
  Tensor o = scaled_dot_product_attention(q, k, v, {.causal = true});
  CHECK(o.dtype() == DType::bf16);
  Tensor o32 = scaled_dot_product_attention(q.detach().to(DType::f32), k.to(DType::f32), v.to(DType::f32), {.causal = true});
  CHECK(rel_err(o, o32) < 2e-2);
  sum(o.to(DType::f32)).backward();
  CHECK(q.grad().dtype() == DType::bf16);
}

TEST_CASE("CPU bf16 attention: the fused kernels with bf16 GEMMs follow the autocast composite (causal, masks, grads)") {
  // Under bf16 autocast (f32 q, k, v) and on bf16 q, k, v the CPU runs the fused kernels with cpu::gemm_bf16: the
  // same roundings as the composite (q, k, v, P, dO and dS rounded to bf16 for their GEMMs, softmax in f32), the
  // f32 sums in another order — so within a few bf16 ulps of the composite, and within bf16 tolerance of f32.
  Generator g(77);
  const int64_t B = 2, H = 3, Tq = 13, Tk = 21, D = 16;
  Tensor q = randn({B, H, Tq, D}, g), k = randn({B, H, Tk, D}, g), v = randn({B, H, Tk, D}, g);
  Tensor up = randn({B, H, Tq, D}, g);
  Tensor valid = ones({B, Tk});
  { NoGradGuard ng; valid.narrow(1, 0, 3).zero_(); }  // batch rows see no keys 0..2
  for (bool half_inputs : {false, true})
    for (bool causal : {false, true}) {
      CAPTURE(half_inputs);
      CAPTURE(causal);
      AttentionOptions opt{.causal = causal};
      opt.key_valid = valid;
      auto run = [&](bool fused) {
        Tensor qi = (half_inputs ? q.to(DType::bf16) : q.clone()).requires_grad_();
        Tensor ki = (half_inputs ? k.to(DType::bf16) : k.clone()).requires_grad_();
        Tensor vi = (half_inputs ? v.to(DType::bf16) : v.clone()).requires_grad_();
        Tensor o;
        {
          Autocast ac(DType::bf16);
          if (fused) {
            o = scaled_dot_product_attention(qi, ki, vi, opt);
          } else {
            auto w = [](const Tensor& t) { return t.to(DType::f32); };
            o = composite::attention(w(qi), w(ki), w(vi), opt);
            if (half_inputs) o = o.to(DType::bf16);
          }
        }
        sum(mul(o.to(DType::f32), up)).backward();
        return std::vector<Tensor>{o.detach().to(DType::f32), qi.grad().to(DType::f32), ki.grad().to(DType::f32),
                                   vi.grad().to(DType::f32)};
      };
      auto fused = run(true), comp = run(false);
      CHECK(fused[0].dtype() == DType::f32);
      for (size_t i = 0; i < fused.size(); ++i) {
        CAPTURE(i);
        CHECK(rel_err(fused[i], comp[i]) < 1.5e-2);
      }
      Tensor o32 = scaled_dot_product_attention(q, k, v, opt);
      CHECK(rel_err(fused[0], o32) < 2e-2);
      CHECK(rel_err(fused[0], o32) > 0);  // bf16 really
    }
}

TEST_CASE("Under autocast FeedForward and MultiheadAttention keep their large activations in bf16, same results") {
  Generator g1(42), g2(42), data(43);
  nn::FeedForward ff(16, 64, true, GeluApprox::none, g1);
  Tensor x = randn({3, 5, 16}, data);
  Tensor ref = ff.forward(x);  // f32
  {
    Autocast ac(DType::bf16);
    Tensor y = ff.forward(x);
    CHECK(y.dtype() == DType::f32);
    CHECK(rel_err(y, ref) < 2e-2);
    // exactly: fc2(bf16(gelu(bf16(x Wᵀ) + b))) with fc2's operands rounded
    Tensor hid = gelu(add(matmul(x, ff.fc1->weight.t()).to(DType::bf16).to(DType::f32), ff.fc1->bias)).to(DType::bf16);
    CHECK(y.to_vector() == ff.fc2->forward(hid).to_vector());
  }
}

TEST_CASE("layer_norm / rms_norm / group_norm_silu with a half output: the f32 result rounded once; its half gradient read as is") {
  Generator g(44);
  Tensor x = add(mul(randn({4, 6, 24}, g), 3.0), 0.5), w = randn({24}, g), b = randn({24}, g);
  for (DType h : {DType::bf16, DType::f16}) {
    CAPTURE(std::string(dtype_name(h)));
    Tensor xl = x.detach().requires_grad_(), wl = w.detach().requires_grad_(), bl = b.detach().requires_grad_();
    Tensor y = layer_norm(xl, {24}, wl, bl, 1e-5, h);
    CHECK(y.dtype() == h);
    CHECK(y.to_vector() == layer_norm(x, {24}, w, b).to(h).to_vector());
    CHECK(rms_norm(x, {24}, w, 1e-6, h).to_vector() == rms_norm(x, {24}, w).to(h).to_vector());
    // backward: a half gradient gives the f32 input's gradients of the same (widened) values
    Tensor gy = randn({4, 6, 24}, g).to(h);
    y.backward(gy);
    Tensor x2 = x.detach().requires_grad_(), w2 = w.detach().requires_grad_(), b2 = b.detach().requires_grad_();
    layer_norm(x2, {24}, w2, b2).backward(gy.to(DType::f32));
    CHECK(xl.grad().dtype() == DType::f32);
    CHECK(xl.grad().to_vector() == x2.grad().to_vector());
    CHECK(wl.grad().to_vector() == w2.grad().to_vector());
    CHECK(bl.grad().to_vector() == b2.grad().to_vector());
  }
  // group_norm + SiLU the same way, and a convolution taking its half output under autocast (the U-Net's chain):
  // the same numbers as from the f32 output rounded by the convolution's own cast
  Tensor img = add(mul(randn({2, 8, 5, 5}, g), 2.0), 0.3), gw = randn({8}, g), gb = randn({8}, g);
  Tensor cw = randn({4, 8, 3, 3}, g), cb = randn({4}, g);
  for (DType h : {DType::bf16, DType::f16}) {
    CAPTURE(std::string(dtype_name(h)));
    Tensor il = img.detach().requires_grad_(), i2 = img.detach().requires_grad_();
    Tensor z = group_norm_silu(il, 4, gw, gb, 1e-5, h);
    CHECK(z.dtype() == h);
    CHECK(z.to_vector() == group_norm_silu(img, 4, gw, gb).to(h).to_vector());
    Tensor y1, y2;
    {
      Autocast ac(h);
      y1 = conv2d(z, cw, cb, 1, 1);
      y2 = conv2d(group_norm_silu(i2, 4, gw, gb).to(h).to(DType::f32), cw, cb, 1, 1);
    }
    CHECK(y1.dtype() == DType::f32);
    CHECK(y1.to_vector() == y2.to_vector());
    Tensor gy = randn(y1.shape(), g);
    y1.backward(gy);
    y2.backward(gy);
    CHECK(liandan::testing::max_abs_diff(il.grad(), i2.grad()) <= 1e-6 * max(abs(i2.grad())).item());
  }
  CHECK(error_of([&] { conv2d(img.to(DType::bf16), cw, cb); }) == "conv2d: dtype mismatch input bf16 vs weight f32");
  CHECK(error_of([&] { layer_norm(x.to(DType::f64), {24}, Tensor(), Tensor(), 1e-5, DType::bf16); }) ==
        "layer_norm: output dtype bf16 for a f64 input (expected the input's, or bf16/f16 from f32)");
  // Under autocast a TransformerBlock's norms write the projections' bf16 operands: the same numbers as f32 + cast
  Generator g1(45), g2(45);
  nn::TransformerBlock blk(24, 2, 48, {}, g1);
  Tensor xt = randn({2, 5, 24}, g2);
  Tensor y1, y2;
  {
    Autocast ac(DType::bf16);
    y1 = blk.forward(xt, {});
    nn::AttentionInputs res;
    res.residual = xt;
    Tensor a = blk.attn->forward(blk.ln1->forward(xt), res);
    y2 = blk.ffn->forward(blk.ln2->forward(a), a);
  }
  CHECK(y1.to_vector() == y2.to_vector());
}

TEST_CASE("Module::to refuses half formats: parameters stay f32 under mixed precision") {
  Generator g(8);
  nn::Linear lin(4, 3, true, g);
  CHECK(error_of([&] { lin.to(DType::bf16); }) ==
        "Linear.to(bf16): parameters stay f32 (or f64); train in bf16 with ld::Autocast (core/autocast.h), which "
        "keeps f32 master weights");
}

TEST_CASE("GradScaler: f16 underflow is rescued by the scale, overflow skips the step and backs off, clean steps grow it") {
  Generator g(9);
  Tensor x = randn({4, 16}, g);
  // Gradients of 1e-8 vanish in f16 (below half its smallest subnormal, 2^-25) ...
  Tensor w = zeros({16, 1}).requires_grad_();
  {
    Autocast ac(DType::f16);
    mul(sum(matmul(x, w)), 1e-8).backward();
  }
  CHECK(max_abs(w.grad()) == 0);
  // ... and survive when the loss is scaled by 2^16 and the gradient unscaled in f32.
  optim::SGD opt({{"w", w}}, {.lr = 1.0});
  optim::GradScaler scaler;
  opt.zero_grad();
  {
    Autocast ac(DType::f16);
    scaler.scale(mul(sum(matmul(x, w)), 1e-8)).backward();
  }
  scaler.unscale_(opt);
  CHECK(!scaler.found_inf());
  Tensor want = mul(sum(x, {0}).unsqueeze(-1), 1e-8);
  CHECK(rel_err(w.grad(), want) < 1e-3);  // f16's precision (2^-11), not zero
  CHECK(error_of([&] { scaler.unscale_(opt); }) == "GradScaler::unscale_: already called since the last update()");
  CHECK(scaler.step(opt));
  scaler.update();
  CHECK(scaler.get_scale() == 65536.0);
  CHECK(scaler.growth_tracker() == 1);

  // Overflow: gradients beyond 65504 in f16 are inf; the step is skipped (weights unchanged), the scale halves.
  Tensor w2 = full({16, 1}, 0.5).requires_grad_();
  optim::SGD opt2({{"w", w2}}, {.lr = 1e-3});
  optim::GradScaler s2({.init_scale = 65536.0, .growth_interval = 3});
  Tensor big = mul(x, 100.0);
  std::vector<double> scales;
  int skipped = 0;
  for (int step = 0; step < 12; ++step) {
    opt2.zero_grad();
    std::vector<double> before = w2.to_vector();
    {
      Autocast ac(DType::f16);
      s2.scale(sum(matmul(big, w2))).backward();
    }
    bool stepped = s2.step(opt2);
    if (!stepped) {
      ++skipped;
      CHECK(w2.to_vector() == before);
    } else {
      CHECK(w2.to_vector() != before);
    }
    s2.update();
    scales.push_back(s2.get_scale());
  }
  // |grad| = |Σ big| ≈ 100·4·σ·... per entry times the scale: overflows f16 until the scale drops below
  // 65504/max|grad|, after which 3 clean steps double it again (and it overflows again).
  CHECK(skipped > 0);
  CHECK(skipped == s2.skipped_steps());
  CHECK(scales.front() == 32768.0);
  double gmax = max_abs(sum(big, {0}));
  double first_ok = 65536.0;
  while (first_ok * gmax > 65504) first_ok /= 2;
  CHECK(*std::min_element(scales.begin(), scales.end()) == first_ok);
  bool grew = false;
  for (size_t i = 1; i < scales.size(); ++i) grew |= scales[i] == 2 * scales[i - 1];
  CHECK(grew);

  // Checkpoint state round trip; disabled scaler is a pass-through.
  optim::GradScaler s3;
  s3.load_state_dict(s2.state_dict(), "ck.safetensors");
  CHECK(s3.get_scale() == s2.get_scale());
  CHECK(s3.growth_tracker() == s2.growth_tracker());
  CHECK(s3.skipped_steps() == s2.skipped_steps());
  CHECK(error_of([&] { s3.load_state_dict({}, "ck.safetensors"); }) ==
        "GradScaler: ck.safetensors: missing 'grad_scaler.scale'");
  optim::GradScaler off({.enabled = false});
  Tensor l = scalar_tensor(3.0);
  CHECK(off.scale(l).same(l));
  CHECK(off.get_scale() == 1.0);
  CHECK(error_of([] { optim::GradScaler bad({.backoff_factor = 1.5}); }) ==
        "GradScaler: backoff_factor must lie in (0, 1), got 1.5");
}
