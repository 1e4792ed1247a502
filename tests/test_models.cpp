// RoFormer LM / encoder / ViT: KV-cached generation equals full recomputation, gradcheck on tiny
// configurations, safetensors round trip, 2-D RoPE translation invariance through the ViT, and a few SGD
// steps that learn a repeating sequence.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>

#include "core/autograd.h"
#include "core/gradcheck.h"
#include "core/ops.h"
#include "nn/models.h"
#include "op_test_helpers.h"

using namespace liandan;
using liandan::testing::max_abs_diff;

namespace {

nn::RoFormerLMConfig tiny_lm(nn::PositionEncoding pos, nn::AttentionKind kind = nn::AttentionKind::softmax) {
  nn::RoFormerLMConfig c;
  c.vocab_size = 7;
  c.d_model = 8;
  c.n_layers = 2;
  c.n_heads = 2;
  c.d_ff = 16;
  c.max_len = 16;
  c.position = pos;
  c.kind = kind;
  return c;
}

nn::ViTConfig tiny_vit(nn::PositionEncoding pos, nn::Pooling pool = nn::Pooling::mean) {
  nn::ViTConfig c;
  c.image_size = 4;
  c.channels = 1;
  c.patch = 2;
  c.d_model = 8;
  c.n_layers = 1;
  c.n_heads = 2;
  c.d_ff = 16;
  c.n_classes = 3;
  c.position = pos;
  c.pooling = pool;
  return c;
}

GradcheckResult check_params(nn::Module& m, const std::function<Tensor()>& f) {
  m.to(DType::f64);
  return gradcheck([&](const std::vector<Tensor>&) { return f(); }, m.parameters());
}

std::string temp_path(const char* name) {
  return (std::filesystem::temp_directory_path() / (std::string("liandan_test_models_") + name)).string();
}

}  // namespace

TEST_CASE("RoFormerLM: KV-cached logits equal full recomputation (rope1d, learned, sinusoidal, linear)") {
  struct Case {
    nn::PositionEncoding pos;
    nn::AttentionKind kind;
  };
  for (Case c : {Case{nn::PositionEncoding::rope1d, nn::AttentionKind::softmax},
                 Case{nn::PositionEncoding::learned, nn::AttentionKind::softmax},
                 Case{nn::PositionEncoding::sinusoidal, nn::AttentionKind::softmax},
                 Case{nn::PositionEncoding::none, nn::AttentionKind::softmax},
                 Case{nn::PositionEncoding::rope1d, nn::AttentionKind::linear}}) {
    CAPTURE(int(c.pos));
    CAPTURE(int(c.kind));
    Generator g(21);
    nn::RoFormerLM lm(tiny_lm(c.pos, c.kind), g);
    lm.to(DType::f64);
    lm.eval();
    Tensor prompt = randint(0, 7, {2, 3}, g);
    // Sampled (not greedy) so that the sequence is not degenerate; the cache path produces the logits.
    nn::GenerateOptions opt;
    opt.greedy = false;
    opt.temperature = 1.5;
    opt.seed = 4;
    std::vector<Tensor> steps;
    Tensor seq = lm.generate(prompt, 5, opt, &steps);
    REQUIRE(seq.shape() == Shape{2, 8});
    CHECK(max_abs_diff(seq.narrow(1, 0, 3).to(DType::f64), prompt.to(DType::f64)) == 0);
    Tensor full;
    {
      NoGradGuard ng;
      full = lm.forward(seq);  // [2, 8, 7]
    }
    REQUIRE(steps.size() == 5);
    for (int64_t s = 0; s < 5; ++s) {
      CAPTURE(s);
      CHECK(max_abs_diff(steps[size_t(s)], full.select(1, 2 + s)) < 1e-10);
    }
    // Greedy generation picks the argmax of the fully recomputed logits at every step.
    Tensor gseq = lm.generate(prompt, 4);
    Tensor gfull;
    {
      NoGradGuard ng;
      gfull = lm.forward(gseq);
    }
    Tensor am = argmax(gfull.narrow(1, 2, 4), -1);
    CHECK(max_abs_diff(am.to(DType::f64), gseq.narrow(1, 3, 4).to(DType::f64)) == 0);
  }
}

TEST_CASE("sample_token: greedy, top_k = 1, tiny top_p and temperature -> 0 all pick the argmax") {
  std::vector<double> logits = {0.1, 2.0, -1.0, 1.9};
  nn::GenerateOptions o;
  CHECK(nn::sample_token(logits, o, 0.99) == 1);
  o.greedy = false;
  o.top_k = 1;
  CHECK(nn::sample_token(logits, o, 0.99) == 1);
  o.top_k = 0;
  o.top_p = 0.01;
  CHECK(nn::sample_token(logits, o, 0.99) == 1);
  o.top_p = 1.0;
  o.temperature = 1e-6;
  CHECK(nn::sample_token(logits, o, 0.99) == 1);
  // top_k = 2 only ever returns tokens 1 or 3; with u near 1 the second one.
  o.temperature = 1.0;
  o.top_k = 2;
  CHECK(nn::sample_token(logits, o, 0.999) == 3);
  CHECK(nn::sample_token(logits, o, 0.0) == 1);
  // Plain sampling covers the tail: u just below 1 gives the least likely token.
  o.top_k = 0;
  CHECK(nn::sample_token(logits, o, 0.9999999) == 2);
}

TEST_CASE("gradcheck (f64) through each model in a tiny configuration") {
  Tensor tokens = from_vector(std::vector<int64_t>{1, 4, 2, 6, 0, 3, 3, 5}, {2, 4});
  SUBCASE("RoFormerLM rope1d softmax") {
    Generator g(1);
    auto c = tiny_lm(nn::PositionEncoding::rope1d);
    c.n_layers = 1;
    nn::RoFormerLM lm(c, g);
    auto r = check_params(lm, [&] { return lm.forward(tokens); });
    INFO(r.message);
    CHECK(r.ok);
  }
  SUBCASE("RoFormerLM learned positions, linear attention, 2 layers") {
    Generator g(2);
    nn::RoFormerLM lm(tiny_lm(nn::PositionEncoding::learned, nn::AttentionKind::linear), g);
    auto r = check_params(lm, [&] { return lm.loss(tokens); });
    INFO(r.message);
    CHECK(r.ok);
  }
  SUBCASE("RoFormerEncoder rope1d, mean pooling with padding") {
    Generator g(3);
    nn::RoFormerEncoderConfig c;
    c.vocab_size = 7;
    c.d_model = 8;
    c.n_layers = 1;
    c.n_heads = 2;
    c.d_ff = 16;
    c.n_classes = 3;
    nn::RoFormerEncoder enc(c, g);
    Tensor valid = from_vector(std::vector<double>{1, 1, 1, 1, 1, 1, 0, 0}, {2, 4}, DType::f64);
    auto r = check_params(enc, [&] { return enc.forward(tokens, valid); });
    INFO(r.message);
    CHECK(r.ok);
  }
  SUBCASE("ViT rope2d, mean pooling") {
    Generator g(4);
    nn::ViT vit(tiny_vit(nn::PositionEncoding::rope2d), g);
    Tensor img = randn({2, 1, 4, 4}, g, DType::f64);
    auto r = check_params(vit, [&] { return vit.forward(img); });
    INFO(r.message);
    CHECK(r.ok);
  }
  SUBCASE("ViT rope2d, CLS pooling") {
    Generator g(5);
    nn::ViT vit(tiny_vit(nn::PositionEncoding::rope2d, nn::Pooling::cls), g);
    Tensor img = randn({1, 1, 4, 4}, g, DType::f64);
    auto r = check_params(vit, [&] { return vit.forward(img); });
    INFO(r.message);
    CHECK(r.ok);
  }
}

TEST_CASE("state_dict round trip through nn::save / nn::load gives identical outputs") {
  Tensor tokens = from_vector(std::vector<int64_t>{1, 4, 2, 6, 0, 3, 3, 5}, {2, 4});
  {
    Generator g1(7), g2(8);
    nn::RoFormerLM a(tiny_lm(nn::PositionEncoding::learned), g1), b(tiny_lm(nn::PositionEncoding::learned), g2);
    std::string path = temp_path("lm.safetensors");
    nn::save(a, path);
    CHECK(max_abs_diff(a.forward(tokens), b.forward(tokens)) > 1e-3);
    nn::load(b, path);
    CHECK(max_abs_diff(a.forward(tokens), b.forward(tokens)) == 0);
    std::filesystem::remove(path);
  }
  {
    Generator g1(9), g2(10);
    nn::ViT a(tiny_vit(nn::PositionEncoding::rope2d, nn::Pooling::cls), g1);
    nn::ViT b(tiny_vit(nn::PositionEncoding::rope2d, nn::Pooling::cls), g2);
    Tensor img = randn({2, 1, 4, 4}, g1);
    std::string path = temp_path("vit.safetensors");
    nn::save(a, path);
    nn::load(b, path);
    CHECK(max_abs_diff(a.forward(img), b.forward(img)) == 0);
    std::filesystem::remove(path);
  }
  {
    nn::RoFormerEncoderConfig c;
    c.vocab_size = 7;
    c.d_model = 8;
    c.n_heads = 2;
    c.d_ff = 16;
    Generator g1(11), g2(12);
    nn::RoFormerEncoder a(c, g1), b(c, g2);
    std::string path = temp_path("enc.safetensors");
    nn::save(a, path);
    nn::load(b, path);
    CHECK(max_abs_diff(a.forward(tokens), b.forward(tokens)) == 0);
    std::filesystem::remove(path);
  }
}

TEST_CASE("ViT 2-D RoPE: translating every patch's coordinates leaves attention logits and outputs unchanged") {
  Generator g(13);
  auto c = tiny_vit(nn::PositionEncoding::rope2d);
  c.image_size = 8;  // 4 x 4 grid
  c.n_layers = 2;
  nn::ViT vit(c, g);
  vit.to(DType::f64);
  Tensor img = randn({2, 1, 8, 8}, g, DType::f64);
  auto [px, py] = vit.patch_coordinates();
  Tensor x = vit.embed(img);
  auto& attn = *static_cast<nn::TransformerBlock&>(*(*vit.blocks)[0]).attn;
  auto logits = [&](const Tensor& ax, const Tensor& ay) {
    nn::AttentionInputs in;
    std::tie(in.cos, in.sin) = vit.rope_tables(ax, ay, DType::f64);
    return attn.attention_logits(x, in);
  };
  Tensor l0 = logits(px, py), y0 = vit.forward(img, px, py);
  for (auto [c1, c2] : {std::pair{3.0, -2.0}, std::pair{17.0, 5.0}, std::pair{-40.5, 100.25}}) {
    CAPTURE(c1);
    CAPTURE(c2);
    Tensor qx = px + c1, qy = py + c2;
    CHECK(max_abs_diff(logits(qx, qy), l0) < 1e-10);
    CHECK(max_abs_diff(vit.forward(img, qx, qy), y0) < 1e-10);
  }
  // A shift along one axis only is still invariant; but moving a single patch changes the logits.
  CHECK(max_abs_diff(logits(px + 1.0, py), l0) < 1e-10);
  Tensor moved = px.clone();
  moved.set({0}, 9.0);
  CHECK(max_abs_diff(logits(moved, py), l0) > 1e-4);
  // The unshifted logits do depend on the positions (i.e. the table is not trivial).
  CHECK(max_abs_diff(logits(px * 2.0, py), l0) > 1e-4);
}

TEST_CASE("ViT variants run: rope1d, learned, none, CLS; shapes") {
  for (auto pos : {nn::PositionEncoding::rope1d, nn::PositionEncoding::learned, nn::PositionEncoding::none})
    for (auto pool : {nn::Pooling::mean, nn::Pooling::cls}) {
      Generator g(14);
      nn::ViT vit(tiny_vit(pos, pool), g);
      Tensor y = vit.forward(randn({3, 1, 4, 4}, g));
      CHECK(y.shape() == Shape{3, 3});
    }
}

TEST_CASE("a few SGD steps of a tiny LM on a repeating sequence drive the loss down") {
  for (auto kind : {nn::AttentionKind::softmax, nn::AttentionKind::linear}) {
    CAPTURE(int(kind));
    Generator g(15);
    nn::RoFormerLMConfig c = tiny_lm(nn::PositionEncoding::rope1d, kind);
    c.d_model = 32;
    c.n_heads = 4;
    c.d_ff = 64;
    nn::RoFormerLM lm(c, g);
    std::vector<int64_t> seq;
    for (int i = 0; i < 32; ++i) seq.push_back(std::vector<int64_t>{0, 3, 1, 4, 1, 5}[size_t(i % 6)]);
    Tensor tokens = from_vector(seq, {2, 16});
    double first = 0, last = 0;
    for (int step = 0; step < 60; ++step) {
      Tensor loss = lm.loss(tokens);
      if (step == 0) first = loss.item();
      last = loss.item();
      loss.backward();
      NoGradGuard ng;
      for (Tensor p : lm.parameters()) {
        p.add_(p.grad(), -0.3);
        p.set_grad(Tensor());
      }
    }
    CAPTURE(first);
    CAPTURE(last);
    CHECK(first > 1.5);
    CHECK(last < 0.5 * first);
  }
}

TEST_CASE("RoFormerEncoder: padded tokens change nothing (mean pooling, softmax and linear); CLS pooling runs") {
  for (auto kind : {nn::AttentionKind::softmax, nn::AttentionKind::linear}) {
    CAPTURE(int(kind));
    nn::RoFormerEncoderConfig c;
    c.vocab_size = 7;
    c.d_model = 8;
    c.n_heads = 2;
    c.d_ff = 16;
    c.n_classes = 3;
    c.kind = kind;
    Generator g(16);
    nn::RoFormerEncoder enc(c, g);
    enc.to(DType::f64);
    Tensor tokens = from_vector(std::vector<int64_t>{1, 4, 2, 6, 0, 3}, {1, 6});
    Tensor valid = from_vector(std::vector<double>{1, 1, 1, 1, 0, 0}, {1, 6}, DType::f64);
    Tensor y = enc.forward(tokens, valid), y4 = enc.forward(tokens.narrow(1, 0, 4));
    CHECK(max_abs_diff(y, y4) < 1e-12);
    c.pooling = nn::Pooling::cls;
    nn::RoFormerEncoder cls(c, g);
    CHECK(cls.forward(tokens).shape() == Shape{1, 3});
  }
}

TEST_CASE("ViT: larger images with RoPE / no positions (resolution extrapolation); learned positions refuse") {
  Generator g(21);
  auto c = tiny_vit(nn::PositionEncoding::rope2d);
  c.image_size = 8;
  nn::ViT vit(c, g);
  Tensor small = randn({2, 1, 8, 8}, g), big = zeros({2, 1, 16, 12});
  CHECK(vit.forward(big).shape() == Shape{2, c.n_classes});
  // Coordinates for any grid: x = column, y = row.
  auto [px, py] = vit.patch_coordinates(4, 3);
  CHECK(px.to_vector() == std::vector<double>{0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2});
  CHECK(py.to_vector() == std::vector<double>{0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3});
  CHECK_THROWS_WITH_AS(vit.forward(zeros({2, 1, 9, 8})), doctest::Contains("(or any multiple of the patch size)"), Error);
  auto cl = tiny_vit(nn::PositionEncoding::learned);
  cl.image_size = 8;
  nn::ViT learned(cl, g);
  CHECK(learned.forward(small).shape() == Shape{2, c.n_classes});
  CHECK_THROWS_WITH_AS(learned.forward(big), "ViT: expected images [B, 1, 8, 8], got [2, 1, 16, 12]", Error);
}

// #21: the model configs are checked by the constructors (the CLI is not the library's only caller). Each of these
// crashed (SIGFPE, SIGSEGV) or was accepted before.
TEST_CASE("model configs: every size, dropout and RoPE base is checked with an error naming the field") {
  Generator g(0);
  auto lm_err = [&](std::function<void(nn::RoFormerLMConfig&)> edit, const std::string& msg) {
    nn::RoFormerLMConfig c = tiny_lm(nn::PositionEncoding::rope1d);
    edit(c);
    CHECK_THROWS_WITH_AS(nn::RoFormerLM(c, g), doctest::Contains(msg.c_str()), Error);
  };
  lm_err([](auto& c) { c.n_layers = 0; }, "RoFormerLM: n_layers must be in [1, 65536], got 0");  // was: SIGSEGV in generate
  lm_err([](auto& c) { c.n_layers = -1; }, "n_layers must be in [1, 65536], got -1");  // was: "cannot create std::vector ..."
  lm_err([](auto& c) { c.d_ff = 0; }, "RoFormerLM: d_ff must be in [1, 16777216], got 0");  // was: a view error at forward
  lm_err([](auto& c) { c.d_model = -8; }, "d_model must be in [1, 16777216], got -8");
  lm_err([](auto& c) { c.n_heads = 0; }, "n_heads must be in [1, 16777216], got 0");
  lm_err([](auto& c) { c.n_heads = 3; }, "d_model 8 is not divisible by n_heads 3");
  lm_err([](auto& c) { c.dropout = -1; }, "RoFormerLM: dropout must be in [0, 1), got -1");  // was: accepted
  lm_err([](auto& c) { c.dropout = std::nan(""); }, "dropout must be in [0, 1), got nan");
  lm_err([](auto& c) { c.rope_base = 0; }, "rope_base must be a finite number > 0, got 0");
  lm_err([](auto& c) { c.vocab_size = 0; }, "vocab_size must be in [1, 16777216], got 0");
  lm_err([](auto& c) { c.max_len = 0; }, "max_len must be in [1, 16777216], got 0");

  auto vit_err = [&](std::function<void(nn::ViTConfig&)> edit, const std::string& msg) {
    nn::ViTConfig c = tiny_vit(nn::PositionEncoding::rope2d);
    edit(c);
    CHECK_THROWS_WITH_AS(nn::ViT(c, g), doctest::Contains(msg.c_str()), Error);
  };
  vit_err([](auto& c) { c.patch = 0; }, "ViT: patch must be in [1, image_size 4], got 0");  // was: SIGFPE
  vit_err([](auto& c) { c.patch = 8; }, "ViT: patch must be in [1, image_size 4], got 8");
  vit_err([](auto& c) { c.patch = 3; }, "ViT: image_size 4 is not a multiple of patch 3");
  vit_err([](auto& c) { c.n_layers = -1; }, "ViT: n_layers must be in [1, 65536], got -1");  // was: accepted (no blocks)
  vit_err([](auto& c) { c.image_size = 0; }, "ViT: image_size must be in [1, 16777216], got 0");
  vit_err([](auto& c) { c.channels = 0; }, "ViT: channels must be in [1, 16777216], got 0");
  vit_err([](auto& c) { c.n_classes = 0; }, "ViT: n_classes must be in [1, 16777216], got 0");
  vit_err([](auto& c) { c.dropout = 1.0; }, "ViT: dropout must be in [0, 1), got 1");

  nn::RoFormerEncoderConfig e;
  e.n_classes = 0;
  CHECK_THROWS_WITH_AS(nn::RoFormerEncoder(e, g), doctest::Contains("RoFormerEncoder: n_classes must be in [1"), Error);
  e.n_classes = 2;
  e.dropout = -0.5;
  CHECK_THROWS_WITH_AS(nn::RoFormerEncoder(e, g), doctest::Contains("RoFormerEncoder: dropout must be in [0, 1), got -0.5"),
                       Error);
  // The valid edges still build.
  nn::RoFormerLMConfig ok = tiny_lm(nn::PositionEncoding::rope1d);
  ok.n_layers = 1;
  ok.dropout = 0.0;
  CHECK_NOTHROW(nn::RoFormerLM(ok, g));
  nn::ViTConfig whole = tiny_vit(nn::PositionEncoding::none);
  whole.patch = whole.image_size;  // one patch
  CHECK(nn::ViT(whole, g).forward(zeros({1, 1, 4, 4})).shape() == Shape{1, 3});
}

TEST_CASE("generate and sample_token check GenerateOptions: temperature > 0 and finite, top_k >= 0, top_p in (0, 1]") {
  Generator g(0);
  nn::RoFormerLM lm(tiny_lm(nn::PositionEncoding::rope1d), g);
  Tensor prompt = from_vector(std::vector<int64_t>{1, 2}, {1, 2});
  auto with = [](std::function<void(nn::GenerateOptions&)> edit) {
    nn::GenerateOptions o{.greedy = false};
    edit(o);
    return o;
  };
  // Before #21 these were accepted: temperature <= 0 or nan fell back to 1e-8 (greedy) or sampled from NaNs.
  CHECK_THROWS_WITH_AS(lm.generate(prompt, 2, with([](auto& o) { o.temperature = 0; })),
                       "GenerateOptions: temperature must be a finite number > 0, got 0", Error);
  CHECK_THROWS_WITH_AS(lm.generate(prompt, 2, with([](auto& o) { o.temperature = std::nan(""); })),
                       "GenerateOptions: temperature must be a finite number > 0, got nan", Error);
  CHECK_THROWS_WITH_AS(lm.generate(prompt, 2, with([](auto& o) { o.top_k = -1; })),
                       "GenerateOptions: top_k must be >= 0 (0: off), got -1", Error);
  CHECK_THROWS_WITH_AS(lm.generate(prompt, 2, with([](auto& o) { o.top_p = 0; })),
                       "GenerateOptions: top_p must be in (0, 1], got 0", Error);
  CHECK_THROWS_WITH_AS(lm.generate(prompt, -1), "generate: max_new_tokens must be >= 0, got -1", Error);
  CHECK_THROWS_WITH_AS(nn::sample_token({0.5, 1.0}, with([](auto& o) { o.temperature = -1; }), 0.5),
                       doctest::Contains("temperature must be a finite number > 0, got -1"), Error);
  CHECK_THROWS_WITH_AS(nn::sample_token({}, nn::GenerateOptions{}, 0.5), "sample_token: no logits", Error);
  CHECK(lm.generate(prompt, 0).shape() == Shape{1, 2});
  CHECK(lm.generate(prompt, 3, with([](auto& o) { o.temperature = 0.5; })).shape() == Shape{1, 5});
}
