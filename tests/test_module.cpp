// nn::Module: registration, dotted names, recursion, state_dict round trips, strict-load errors,
// train/eval propagation, parameter counts, zero_grad, dtype conversion, weight tying, checkpoints.
#include <doctest/doctest.h>

#include <filesystem>
#include <unistd.h>

#include "core/ops.h"
#include "nn/init.h"
#include "nn/layers.h"
#include "nn/module.h"

using namespace liandan;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> names_of(const std::vector<std::pair<std::string, Tensor>>& v) {
  std::vector<std::string> out;
  for (auto& [n, t] : v) out.push_back(n);
  return out;
}

// A small two-level model: own parameter and buffers, a Linear, a Sequential of blocks.
struct Block : nn::Module {
  std::shared_ptr<nn::Linear> fc;
  std::shared_ptr<nn::LayerNorm> norm;
  Block(int64_t d, Generator& g) : Module("Block") {
    fc = register_module("fc", std::make_shared<nn::Linear>(d, d, true, g));
    norm = register_module("norm", std::make_shared<nn::LayerNorm>(d));
  }
  Tensor forward(const Tensor& x) override { return add(x, gelu(fc->forward(norm->forward(x)))); }
};

struct Net : nn::Module {
  Tensor scale, counter, cache;
  std::shared_ptr<nn::Linear> proj;
  std::shared_ptr<nn::Sequential> layers;
  Net(int64_t d, Generator& g) : Module("Net") {
    scale = register_parameter("scale", ones({d}));
    counter = register_buffer("counter", zeros({1}, DType::i64));
    cache = register_buffer("cache", ones({2, d}), /*persistent=*/false);
    proj = register_module("proj", std::make_shared<nn::Linear>(d, d, false, g));
    layers = register_module("layers", std::make_shared<nn::Sequential>());
    layers->push_back(std::make_shared<Block>(d, g));
    layers->push_back(std::make_shared<Block>(d, g));
  }
  Tensor forward(const Tensor& x) override { return mul(layers->forward(proj->forward(x)), scale); }
};

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "liandan_module_XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& n) const { return (path / n).string(); }
};

std::string load_error(nn::Module& m, const nn::StateDict& sd, bool strict = true) {
  try {
    m.load_state_dict(sd, strict);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("parameters have dotted names in registration order, own entries first") {
  Generator g(1);
  Net net(4, g);
  std::vector<std::string> want = {"scale",
                                   "proj.weight",
                                   "layers.0.fc.weight",
                                   "layers.0.fc.bias",
                                   "layers.0.norm.weight",
                                   "layers.0.norm.bias",
                                   "layers.1.fc.weight",
                                   "layers.1.fc.bias",
                                   "layers.1.norm.weight",
                                   "layers.1.norm.bias"};
  CHECK(names_of(net.named_parameters()) == want);
  CHECK(names_of(net.named_parameters(/*recurse=*/false)) == std::vector<std::string>{"scale"});
  CHECK(names_of(net.named_buffers()) == std::vector<std::string>{"counter", "cache"});
  CHECK(names_of(net.state_dict()) ==
        std::vector<std::string>{"scale", "counter", "proj.weight", "layers.0.fc.weight", "layers.0.fc.bias",
                                 "layers.0.norm.weight", "layers.0.norm.bias", "layers.1.fc.weight",
                                 "layers.1.fc.bias", "layers.1.norm.weight", "layers.1.norm.bias"});  // no "cache"
  auto ps = net.parameters();
  REQUIRE(ps.size() == want.size());
  CHECK(ps[0].same(net.scale));  // the registry holds the member's handle
  CHECK(ps[1].same(net.proj->weight));
  for (auto& p : ps) {
    CHECK(p.is_leaf());
    CHECK(p.requires_grad());
  }
  for (auto& b : net.buffers()) CHECK(!b.requires_grad());
  std::vector<std::string> mods;
  for (auto& [n, m] : net.named_modules()) mods.push_back(n + ":" + m->type_name());
  CHECK(mods == std::vector<std::string>{"proj:Linear", "layers:Sequential", "layers.0:Block", "layers.0.fc:Linear",
                                         "layers.0.norm:LayerNorm", "layers.1:Block", "layers.1.fc:Linear",
                                         "layers.1.norm:LayerNorm"});
  CHECK(names_of(std::vector<std::pair<std::string, Tensor>>{}).empty());
  std::vector<std::string> children;
  for (auto& [n, m] : net.named_children()) children.push_back(n);
  CHECK(children == std::vector<std::string>{"proj", "layers"});
  int visited = 0;
  net.apply([&](nn::Module&) { ++visited; });
  CHECK(visited == 9);
}

TEST_CASE("registration checks names and tensors") {
  nn::Module m("M");
  m.register_parameter("w", zeros({2}));
  CHECK_THROWS_WITH_AS(m.register_parameter("w", zeros({2})), doctest::Contains("already a parameter"), Error);
  CHECK_THROWS_WITH_AS(m.register_buffer("w", zeros({2})), doctest::Contains("already a parameter"), Error);
  CHECK_THROWS_WITH_AS(m.register_module("w", std::make_shared<nn::ReLU>()), doctest::Contains("already a parameter"),
                       Error);
  CHECK_THROWS_WITH_AS(m.register_parameter("a.b", zeros({2})), doctest::Contains("contains '.'"), Error);
  CHECK_THROWS_WITH_AS(m.register_parameter("", zeros({2})), doctest::Contains("empty name"), Error);
  CHECK_THROWS_WITH_AS(m.register_parameter("u", Tensor()), doctest::Contains("undefined"), Error);
  CHECK_THROWS_WITH_AS(m.register_parameter("i", zeros({2}, DType::i64)), doctest::Contains("floating"), Error);
  CHECK_THROWS_WITH_AS(m.register_module("n", std::shared_ptr<nn::Module>()), doctest::Contains("null"), Error);
  m.register_module("c", std::make_shared<nn::ReLU>());
  CHECK_THROWS_WITH_AS(m.register_buffer("c", zeros({1})), doctest::Contains("already a submodule"), Error);
  // A tensor with history becomes a detached leaf; requires_grad can be off (a frozen parameter).
  Tensor x = ones({3}, TensorOptions(DType::f32, true));
  Tensor p = m.register_parameter("p", mul(x, 2.0));
  CHECK(p.is_leaf());
  CHECK(p.requires_grad());
  CHECK(p.to_vector() == std::vector<double>{2, 2, 2});
  Tensor frozen = m.register_parameter("frozen", zeros({5}), /*requires_grad=*/false);
  CHECK(!frozen.requires_grad());
  CHECK(m.num_parameters() == 2 + 3 + 5);
  CHECK(m.num_parameters(/*trainable_only=*/true) == 5);
  CHECK_THROWS_WITH_AS(m.forward(x), doctest::Contains("M: forward(const Tensor&) is not implemented"), Error);
}

TEST_CASE("parameter counts") {
  Generator g(2);
  CHECK(nn::Linear(3, 4, true, g).num_parameters() == 16);
  CHECK(nn::Linear(3, 4, false, g).num_parameters() == 12);
  CHECK(nn::Embedding(10, 6, g).num_parameters() == 60);
  CHECK(nn::LayerNorm(8).num_parameters() == 16);
  CHECK(nn::LayerNorm(8, 1e-5, true, false).num_parameters() == 8);
  CHECK(nn::RMSNorm(8).num_parameters() == 8);
  CHECK(nn::GroupNorm(2, 6).num_parameters() == 12);
  CHECK(nn::Conv2d(4, 6, 3, {.groups = 2}, g).num_parameters() == 6 * 2 * 9 + 6);
  CHECK(nn::FeedForward(4, 16, true, GeluApprox::none, g).num_parameters() == 4 * 16 + 16 + 16 * 4 + 4);
  CHECK(nn::SwiGLU(4, 16, false, g).num_parameters() == 3 * 4 * 16);
  Net net(4, g);
  CHECK(net.num_parameters() == 4 + 16 + 2 * (16 + 4 + 4 + 4));
}

TEST_CASE("state_dict round trip gives identical outputs and keeps the handles") {
  Generator g1(1), g2(2);
  Net a(4, g1), b(4, g2);
  Tensor x = randn({3, 4}, g1);
  Tensor ya = a.forward(x);
  CHECK(max(abs(sub(ya, b.forward(x)))).item() > 1e-3);  // different seeds, different models
  Tensor w_before = b.proj->weight;
  {
    NoGradGuard ng;
    a.counter.fill_(7);
  }
  b.load_state_dict(a.state_dict());
  CHECK(b.forward(x).to_vector() == ya.to_vector());
  CHECK(b.proj->weight.same(w_before));  // values copied into the registered tensor
  CHECK(b.proj->weight.impl() != a.proj->weight.impl());
  CHECK(b.counter.item() == 7);
  CHECK(b.cache.to_vector() == a.cache.to_vector());  // non-persistent: untouched (both ones)
  // loading a module's own state dict is a no-op
  a.load_state_dict(a.state_dict());
  CHECK(a.forward(x).to_vector() == ya.to_vector());
}

TEST_CASE("strict loading names missing, unexpected and mis-shaped entries; a failed load changes nothing") {
  Generator g(3);
  Net net(4, g);
  auto sd = net.state_dict();
  std::vector<double> before = net.proj->weight.to_vector();

  SUBCASE("missing") {
    nn::StateDict partial;
    for (auto& [n, t] : sd)
      if (n != "layers.1.fc.bias" && n != "scale") partial.emplace_back(n, zeros_like(t));
    std::string msg = load_error(net, partial);
    CHECK(msg.find("load_state_dict (Net)") != std::string::npos);
    CHECK(msg.find("2 missing keys: scale, layers.1.fc.bias") != std::string::npos);
    CHECK(net.proj->weight.to_vector() == before);  // nothing was copied
    // non-strict: the present entries load
    net.load_state_dict(partial, /*strict=*/false);
    CHECK(max(abs(net.proj->weight)).item() == 0.0);
    CHECK(net.scale.to_vector() == std::vector<double>{1, 1, 1, 1});
  }
  SUBCASE("unexpected") {
    auto extra = sd;
    extra.emplace_back("layers.2.fc.weight", zeros({4, 4}));
    std::string msg = load_error(net, extra);
    CHECK(msg.find("1 unexpected key: layers.2.fc.weight") != std::string::npos);
    CHECK(msg.find("missing") == std::string::npos);
    CHECK_NOTHROW(net.load_state_dict(extra, /*strict=*/false));
  }
  SUBCASE("shape and dtype mismatches are errors even when not strict") {
    auto bad = sd;
    for (auto& [n, t] : bad) {
      if (n == "proj.weight") t = zeros({4, 5});
      if (n == "layers.0.norm.bias") t = zeros({4}, DType::f64);
    }
    for (bool strict : {true, false}) {
      std::string msg = load_error(net, bad, strict);
      CAPTURE(msg);
      CHECK(msg.find("2 shape/dtype mismatches") != std::string::npos);
      CHECK(msg.find("proj.weight (expected [4, 4] f32, got [4, 5] f32)") != std::string::npos);
      CHECK(msg.find("layers.0.norm.bias (expected [4] f32, got [4] f64)") != std::string::npos);
    }
    CHECK(net.proj->weight.to_vector() == before);
  }
  SUBCASE("all problems at once, and duplicates") {
    nn::StateDict bad = {{"scale", zeros({4})}, {"scale", zeros({4})}, {"bogus", zeros({1})}};
    std::string msg = load_error(net, bad);
    CHECK(msg.find("10 missing keys") != std::string::npos);
    CHECK(msg.find("1 unexpected key: bogus") != std::string::npos);
    CHECK(msg.find("duplicate key: scale") != std::string::npos);
    CHECK(net.scale.to_vector() == std::vector<double>{1, 1, 1, 1});
  }
  SUBCASE("undefined entry") {
    auto bad = sd;
    bad[0].second = Tensor();
    CHECK(load_error(net, bad).find("scale (expected [4] f32, got undefined)") != std::string::npos);
  }
}

TEST_CASE("train / eval propagate to every descendant") {
  Generator g(4);
  Net net(4, g);
  auto all_modes = [&](bool want) {
    bool ok = net.is_training() == want;
    for (auto& [n, m] : net.named_modules()) ok &= m->is_training() == want;
    return ok;
  };
  CHECK(all_modes(true));
  net.eval();
  CHECK(all_modes(false));
  CHECK(!net.layers->at<Block>(1)->fc->is_training());
  net.train();
  CHECK(all_modes(true));
  net.layers->train(false);  // a subtree only
  CHECK(net.is_training());
  CHECK(net.proj->is_training());
  CHECK(!net.layers->at<Block>(0)->norm->is_training());
}

TEST_CASE("zero_grad drops or zeroes every gradient") {
  Generator g(5);
  Net net(4, g);
  Tensor x = randn({2, 4}, g);
  sum(net.forward(x)).backward();
  for (auto& p : net.parameters()) CHECK(p.grad().defined());
  CHECK(max(abs(net.proj->weight.grad())).item() > 0);
  net.zero_grad(/*set_to_none=*/false);
  for (auto& p : net.parameters()) {
    REQUIRE(p.grad().defined());
    CHECK(max(abs(p.grad())).item() == 0.0);
  }
  sum(net.forward(x)).backward();
  net.zero_grad();
  for (auto& p : net.parameters()) CHECK(!p.grad().defined());
}

TEST_CASE("to(f64) converts parameters and floating buffers in place") {
  Generator g(6);
  Net net(4, g);
  Tensor x = randn({2, 4}, g);
  Tensor y32 = net.forward(x);
  sum(y32).backward();
  Tensor w = net.proj->weight;
  net.to(DType::f64);
  CHECK(w.same(net.proj->weight));
  CHECK(net.proj->weight.dtype() == DType::f64);
  CHECK(!net.proj->weight.grad().defined());
  CHECK(net.proj->weight.requires_grad());
  for (auto& p : net.parameters()) CHECK(p.dtype() == DType::f64);
  CHECK(net.cache.dtype() == DType::f64);    // floating buffer converted
  CHECK(net.counter.dtype() == DType::i64);  // integer buffer untouched
  Tensor y64 = net.forward(x.to(DType::f64));
  CHECK(y64.dtype() == DType::f64);
  CHECK(max(abs(sub(y64, y32.to(DType::f64)))).item() < 1e-5);
  CHECK_THROWS_WITH_AS(net.to(DType::i64), doctest::Contains("floating"), Error);
  net.to(DType::f32);
  CHECK(net.proj->weight.dtype() == DType::f32);
}

TEST_CASE("tied parameters are listed once but saved under every name") {
  // Tying = one tensor registered under two names (e.g. an LM head sharing the embedding table).
  nn::Module m("M");
  Tensor w = m.register_parameter("a", ones({3}));
  auto child = std::make_shared<nn::Module>("C");
  child->register_parameter("b", w);
  m.register_module("child", child);
  CHECK(names_of(m.named_parameters()) == std::vector<std::string>{"a"});
  CHECK(names_of(m.state_dict()) == std::vector<std::string>{"a", "child.b"});
  CHECK(m.num_parameters() == 3);
  m.to(DType::f64);
  CHECK(m.state_dict()[1].second.same(w));
  CHECK(w.dtype() == DType::f64);
  // loading through either name writes the one shared tensor
  m.load_state_dict({{"a", full({3}, 2.0, DType::f64)}, {"child.b", full({3}, 2.0, DType::f64)}});
  CHECK(w.to_vector() == std::vector<double>{2, 2, 2});
}

TEST_CASE("nn::save / nn::load go through safetensors") {
  TempDir dir;
  Generator g1(8), g2(9);
  Net a(4, g1), b(4, g2);
  Tensor x = randn({3, 4}, g1);
  std::string p = dir.file("net.safetensors");
  nn::save(a, p, {{"step", "17"}});
  Metadata md = nn::load(b, p);
  CHECK(md.at("step") == "17");
  CHECK(b.forward(x).to_vector() == a.forward(x).to_vector());

  // stored as bf16: loads into the f32 model with bf16 precision
  Net c(4, g2);
  nn::save(a, p, {}, {FloatFormat::bf16});
  nn::load(c, p);
  double d = max(abs(sub(c.proj->weight, a.proj->weight))).item();
  CHECK(d > 0);
  CHECK(d < 2e-3);

  // an f64 model loads an f32 file (floating types convert to the module's)
  Net e(4, g2);
  e.to(DType::f64);
  nn::save(a, p);
  nn::load(e, p);
  CHECK(e.proj->weight.dtype() == DType::f64);
  CHECK(e.proj->weight.to_vector() == a.proj->weight.to_vector());

  // errors name the file
  Generator g3(10);
  nn::Linear small(4, 3, true, g3);
  try {
    nn::load(small, p);
    FAIL("expected an error");
  } catch (const Error& err) {
    std::string msg = err.what();
    CHECK(msg.find("net.safetensors") != std::string::npos);
    CHECK(msg.find("missing keys: weight, bias") != std::string::npos);
    CHECK(msg.find("unexpected keys") != std::string::npos);
  }
  // a file with exactly a module's names, written directly
  nn::Linear proj(4, 4, false, g3);
  nn::StateDict only = {{"weight", a.proj->weight}};
  save_safetensors(p, only);
  nn::load(proj, p);
  CHECK(proj.weight.to_vector() == a.proj->weight.to_vector());
  CHECK_THROWS_WITH_AS(nn::load(proj, dir.file("nope.safetensors")), doctest::Contains("nope.safetensors"), Error);
}

TEST_CASE("containers: Sequential indexing and ModuleList") {
  Generator g(11);
  auto seq = std::make_shared<nn::Sequential>(std::initializer_list<std::shared_ptr<nn::Module>>{
      std::make_shared<nn::Linear>(3, 5, true, g), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::Linear>(5, 2, true, g)});
  CHECK(seq->size() == 3);
  CHECK(names_of(seq->named_parameters()) == std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias"});
  CHECK(seq->at<nn::Linear>(2)->out_features == 2);
  CHECK_THROWS_WITH_AS(seq->at<nn::Linear>(1), doctest::Contains("ReLU"), Error);
  CHECK_THROWS_WITH_AS((*seq)[3], doctest::Contains("out of range"), Error);
  nn::ModuleList list;
  list.push_back(std::make_shared<nn::Linear>(2, 2, true, g));
  list.push_back(std::make_shared<nn::Linear>(2, 2, true, g));
  int n = 0;
  for (auto& m : list) n += int(m->num_parameters());
  CHECK(n == 12);
  CHECK(list.type_name() == "ModuleList");
  CHECK_THROWS_WITH_AS(list.forward(zeros({2})), doctest::Contains("ModuleList has no forward"), Error);
  CHECK(seq->summary().find("0.weight [5, 3] f32") != std::string::npos);
}
