// The command line's machinery: configs (typed keys, --set, unknown keys), the trainer's run directory,
// bit-identical resume after SIGKILL, divergence handling, and checkpoint errors.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "apps/config.h"
#include "apps/default_config.h"
#include "apps/task.h"
#include "apps/trainer.h"
#include "core/data/image.h"
#include "core/data/image_set.h"
#include "core/data/mnist.h"
#include "app_fixtures.h"
#include "tests/process.h"
#include "core/device.h"
#include "core/error.h"
#include "core/random.h"
#include "core/serialize.h"

using namespace liandan;
using namespace liandan::apps;
namespace fs = std::filesystem;

namespace {

fs::path scratch(const std::string& name) { return liandan::testing::scratch_dir("test_apps", name); }

const char* kSpirals = R"(
task = "spirals"
seed = 3
steps = 300
batch_size = 64
log_every = 25
eval_every = 100
checkpoint_every = 100
[data]
train_size = 600
val_size = 300
[model]
hidden = 32
[optim]
name = "adamw"
lr = 1e-2
schedule = "cosine"
warmup = 20
clip_norm = 1.0
accumulate = 2
[ema]
decay = 0.9
)";

fs::path write_config(const fs::path& dir, const std::string& text) {
  fs::path p = dir / "run.toml";
  std::ofstream(p) << text;
  return p;
}

// Runs the real `liandan` binary (LIANDAN_BIN, set by CTest) and returns its wait status.
int run_cli(const std::vector<std::string>& args) {
  const char* bin = std::getenv("LIANDAN_BIN");
  REQUIRE_MESSAGE(bin, "LIANDAN_BIN is not set (run through ctest)");
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    std::vector<char*> argv{const_cast<char*>(bin)};
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    int devnull = ::open("/dev/null", O_WRONLY);
    ::dup2(devnull, 1);
    ::dup2(devnull, 2);
    ::execv(bin, argv.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

// The repository root: where the tests were built from, or $LIANDAN_SOURCE_DIR (a packed test binary run from
// another checkout, scripts/device-check).
fs::path source_dir() {
  const char* env = std::getenv("LIANDAN_SOURCE_DIR");
  return env && *env ? fs::path(env) : fs::path(LIANDAN_SOURCE_DIR);
}

NamedTensors model_and_optimizer(const fs::path& ckpt) {
  NamedTensors out;
  for (auto& [k, t] : load_safetensors(ckpt.string()).tensors)
    if (k.rfind("model.", 0) == 0 || k.rfind("optim.", 0) == 0 || k.rfind("ema.", 0) == 0) out.emplace_back(k, t);
  return out;
}

}  // namespace

TEST_CASE("Config: typed keys, defaults recorded, --set values parsed as TOML") {
  Config c = Config::from_string("a = 1\n[optim]\nlr = 0.5\nname = \"sgd\"\nlist = [1, 2]\n", "x.toml");
  c.set("optim.lr=3e-4");
  c.set("optim.extra=true");
  c.set("task=lm");  // a bare word is a string
  CHECK(c.get<int64_t>("a", 0) == 1);
  CHECK(c.get<double>("a", 0.0) == 1.0);  // an integer reads as a number
  CHECK(c.get<double>("optim.lr", 0.0) == 3e-4);
  CHECK(c.get<bool>("optim.extra", false));
  CHECK(c.get<std::string>("task", "") == "lm");
  CHECK(c.get<std::string>("optim.name", "") == "sgd");
  CHECK(c.get<std::vector<int64_t>>("optim.list", {}) == std::vector<int64_t>{1, 2});
  CHECK(c.get<int64_t>("steps", 77) == 77);  // absent: the default, recorded in the resolved config
  CHECK(c.resolved_text().find("steps = 77") != std::string::npos);
  c.check_all_used();

  Config u = Config::from_string("steps = 10\n[optim]\nlrr = 1.0\n", "configs/x.toml");
  u.get<int64_t>("steps", 1);
  CHECK_THROWS_WITH_AS(u.check_all_used(),
                       "config configs/x.toml: unknown key 'optim.lrr' (not used by this task; check the spelling)", Error);
  Config t = Config::from_string("steps = \"many\"\n", "configs/y.toml");
  CHECK_THROWS_WITH_AS(t.get<int64_t>("steps", 1), "config configs/y.toml: 'steps' must be an integer, got a string", Error);
  CHECK_THROWS_WITH_AS(Config::from_string("steps = = 3\n", "bad.toml"), doctest::Contains("config bad.toml:1:"), Error);
  CHECK_THROWS_WITH_AS(c.set("no_equals"), "--set expects key=value, got 'no_equals'", Error);
}

TEST_CASE("Trainer: a run killed with SIGKILL and resumed ends bit-identical to an uninterrupted run") {
  fs::path dir = scratch("resume");
  fs::path cfg = write_config(dir, kSpirals);
  std::string killed = (dir / "killed").string(), whole = (dir / "whole").string();

  int st = run_cli({"train", cfg.string(), "--run-dir", killed, "--die-after-step", "250"});
  REQUIRE(WIFSIGNALED(st));
  CHECK(WTERMSIG(st) == SIGKILL);
  // The kill came after step 250: the last complete checkpoint is step 200.
  auto meta = load_safetensors((fs::path(killed) / "checkpoints" / "last.safetensors").string()).metadata;
  CHECK(meta.at("step") == "200");
  st = run_cli({"resume", killed});
  REQUIRE(WIFEXITED(st));
  REQUIRE(WEXITSTATUS(st) == 0);
  st = run_cli({"train", cfg.string(), "--run-dir", whole});
  REQUIRE(WIFEXITED(st));
  REQUIRE(WEXITSTATUS(st) == 0);

  NamedTensors a = model_and_optimizer(fs::path(killed) / "checkpoints" / "last.safetensors");
  NamedTensors b = model_and_optimizer(fs::path(whole) / "checkpoints" / "last.safetensors");
  REQUIRE(a.size() == b.size());
  REQUIRE(a.size() > 10);
  for (size_t i = 0; i < a.size(); ++i) {
    CAPTURE(a[i].first);
    CHECK(a[i].first == b[i].first);
    CHECK(a[i].second.to_vector() == b[i].second.to_vector());  // exact equality
  }
  // The metrics log of the resumed run has each logged step once.
  std::ifstream in(fs::path(killed) / "metrics.jsonl");
  std::string line;
  std::vector<int64_t> steps;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) steps.push_back(j["loss"].is_number() ? j["step"].get<int64_t>() : -1);
  }
  CHECK(steps.size() == 12);  // every 25 steps of 300
  CHECK(std::is_sorted(steps.begin(), steps.end()));
  auto summary = nlohmann::json::parse(std::ifstream(fs::path(killed) / "summary.json"));
  CHECK(summary["status"] == "completed");
  CHECK(fs::exists(fs::path(killed) / "curves.png"));
  CHECK(fs::exists(fs::path(killed) / "config.toml"));
}

TEST_CASE("Trainer: precision = bf16 / f16 trains like f32; f16 runs behind the loss scaler and resumes bit-identically") {
  fs::path dir = scratch("precision");
  auto run = [&](const std::string& precision, const std::string& name, std::vector<std::string> extra = {}) {
    fs::path cfg = dir / (name + ".toml");
    std::ofstream(cfg) << "precision = \"" << precision << "\"\n" << kSpirals;
    std::vector<std::string> args{"train", cfg.string(), "--run-dir", (dir / name).string()};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_cli(args);
  };
  auto summary = [&](const std::string& name) { return nlohmann::json::parse(std::ifstream(dir / name / "summary.json")); };
  REQUIRE(run("f32", "f32") == 0);
  REQUIRE(run("bf16", "bf16") == 0);
  double v32 = summary("f32")["eval"]["val_loss"], v16 = summary("bf16")["eval"]["val_loss"];
  CHECK(summary("bf16")["precision"] == "bf16");
  CHECK(v16 < 0.5);                          // it learned the spirals (chance is ln 2 = 0.69)
  CHECK(std::abs(v16 - v32) < 0.1 * v32 + 0.02);
  CHECK(v16 != v32);                         // the GEMMs really ran in bf16

  // f16: the scale and the skipped steps are logged, and live in the checkpoint: a killed run resumes exactly.
  int st = run("f16", "f16_killed", {"--die-after-step", "250"});
  REQUIRE(WIFSIGNALED(st));
  REQUIRE(run_cli({"resume", (dir / "f16_killed").string()}) == 0);
  REQUIRE(run("f16", "f16_whole") == 0);
  auto ck = [&](const std::string& name) { return load_safetensors((dir / name / "checkpoints" / "last.safetensors").string()); };
  auto a = ck("f16_killed"), b = ck("f16_whole");
  CHECK(a.at("grad_scaler.scale").item() == b.at("grad_scaler.scale").item());
  CHECK(a.at("grad_scaler.scale").item() >= 1.0);
  NamedTensors ma = model_and_optimizer(dir / "f16_killed" / "checkpoints" / "last.safetensors"),
               mb = model_and_optimizer(dir / "f16_whole" / "checkpoints" / "last.safetensors");
  REQUIRE(ma.size() == mb.size());
  for (size_t i = 0; i < ma.size(); ++i) {
    CAPTURE(ma[i].first);
    CHECK(ma[i].second.to_vector() == mb[i].second.to_vector());
  }
  CHECK(std::abs(double(summary("f16_whole")["eval"]["val_loss"]) - v32) < 0.1 * v32 + 0.02);
  std::ifstream in(dir / "f16_whole" / "metrics.jsonl");
  std::string line;
  int with_scale = 0;
  while (std::getline(in, line)) with_scale += nlohmann::json::parse(line).contains("loss_scale");
  CHECK(with_scale == 12);  // every logged step (25 of 300)

  Config bad = Config::from_string(std::string("precision = \"f8\"\n") + kSpirals, "p.toml");
  CHECK_THROWS_WITH_AS(train(bad, {.run_dir = (dir / "bad").string()}),
                       "config p.toml: 'precision' must be \"f32\", \"bf16\" or \"f16\", got \"f8\"", Error);
  fs::remove_all(dir.parent_path());
}

TEST_CASE("Trainer: divergence stops the run with the step named and keeps the last good checkpoint") {
  fs::path dir = scratch("nan");
  std::string text = kSpirals;
  text.replace(text.find("lr = 1e-2"), 9, "lr = 1e30");
  text.replace(text.find("name = \"adamw\""), 14, "name = \"sgd\"");
  text.replace(text.find("clip_norm = 1.0"), 15, "clip_norm = 0.0");
  text.replace(text.find("checkpoint_every = 100"), 22, "checkpoint_every = 1");
  Config cfg = Config::from_string(text, "nan.toml");
  cfg.set("optim.warmup=0");
  cfg.set("optim.schedule=\"constant\"");
  int rc = train(cfg, {.run_dir = (dir / "run").string()});
  CHECK(rc == 2);
  auto summary = nlohmann::json::parse(std::ifstream(dir / "run" / "summary.json"));
  CHECK(summary["status"] == "failed");
  std::string err = summary["error"];
  CAPTURE(err);
  CHECK(err.find("not finite") != std::string::npos);
  CHECK(err.find("parameter") != std::string::npos);  // names the first offending parameter (or says none is)
  int64_t failed_at = summary["step"].get<int64_t>() + 1;
  CHECK(err.find("step " + std::to_string(failed_at) + ":") == 0);
  // The last checkpoint is the step before the failure, and all its tensors are finite.
  auto c = load_safetensors((dir / "run" / "checkpoints" / "last.safetensors").string());
  CHECK(std::stoll(c.metadata.at("step")) == failed_at - 1);
  for (auto& [k, t] : c.tensors)
    if (k.rfind("model.", 0) == 0)
      for (double v : t.to_vector()) REQUIRE(std::isfinite(v));
}

TEST_CASE("Trainer: bad configs and checkpoints are errors naming the file and the field") {
  fs::path dir = scratch("errors");
  Config bad_task = Config::from_string("task = \"nope\"\n", "t.toml");
  CHECK_THROWS_WITH_AS(train(bad_task, {.run_dir = (dir / "a").string()}),
                       doctest::Contains("config t.toml: unknown task 'nope' (known: "), Error);
  Config bad_opt = Config::from_string(std::string(kSpirals) + "", "o.toml");
  bad_opt.set("optim.name=lion");
  CHECK_THROWS_WITH_AS(train(bad_opt, {.run_dir = (dir / "b").string()}),
                       "config o.toml: optim.name must be one of adamw, adam, sgd, amos; got 'lion'", Error);
  Config typo = Config::from_string(kSpirals, "typo.toml");
  typo.set("model.hiden=3");
  CHECK_THROWS_WITH_AS(train(typo, {.run_dir = (dir / "c").string()}),
                       "config typo.toml: unknown key 'model.hiden' (no task reads it; did you mean 'model.hidden'?)", Error);
  // A key another task reads (lm's model.d_model) is refused after the build, naming this task's closest key.
  Config other = Config::from_string(kSpirals, "other.toml");
  other.set("model.layer=3");
  CHECK_THROWS_WITH_AS(train(other, {.run_dir = (dir / "c2").string()}),
                       "config other.toml: unknown key 'model.layer' (no task reads it; did you mean 'model.layers'?)", Error);
  Config foreign = Config::from_string(kSpirals, "foreign.toml");
  foreign.set("model.d_model=3");
  CHECK_THROWS_WITH_AS(train(foreign, {.run_dir = (dir / "c3").string()}),
                       "config foreign.toml: unknown key 'model.d_model' (not used by this task; check the spelling)", Error);

  // The device key: a bad spelling, and a GPU that is not there (this machine, or a CPU-only build).
  Config bad_dev = Config::from_string(kSpirals, "dev.toml");
  bad_dev.set("device=\"gpu\"");
  CHECK_THROWS_WITH_AS(train(bad_dev, {.run_dir = (dir / "e").string()}),
                       "config dev.toml: 'device' must be \"cpu\", \"cuda\" or \"cuda:N\", got \"gpu\"", Error);
  if (!cuda::is_available()) {
    Config no_gpu = Config::from_string(kSpirals, "gpu.toml");
    no_gpu.set("device=\"cuda\"");
    CHECK_THROWS_WITH_AS(train(no_gpu, {.run_dir = (dir / "f").string()}),
                         ("config gpu.toml: device = \"cuda:0\": device cuda:0 is not available: " +
                          cuda::unavailable_reason()).c_str(), Error);
  }

  // A truncated checkpoint: resuming names the file.
  Config ok = Config::from_string(kSpirals, "ok.toml");
  ok.set("steps=100");
  REQUIRE(train(ok, {.run_dir = (dir / "d").string()}) == 0);
  fs::path last = dir / "d" / "checkpoints" / "last.safetensors";
  fs::path copy = dir / "d" / "checkpoints" / "ckpt-100.safetensors";
  fs::remove(last);
  {
    std::ifstream in(copy, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(last, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  }
  // (With a readable numbered checkpoint beside it, resume falls back to that one: test_apps_hardening.)
  std::vector<fs::path> numbered;
  for (auto& e : fs::directory_iterator(dir / "d" / "checkpoints"))
    if (e.path().filename().string().rfind("ckpt-", 0) == 0) numbered.push_back(e.path());
  for (auto& p : numbered) fs::remove(p);
  Config again = Config::from_file((dir / "d" / "config.toml").string());
  CHECK_THROWS_WITH_AS(train(again, {.run_dir = (dir / "d").string(), .resume = true}),
                       doctest::Contains(last.string().c_str()), Error);
  fs::remove_all(dir.parent_path());
}

namespace {
using liandan::testing::synthetic_mnist;
}  // namespace

TEST_CASE("Every task trains a few steps end to end: metrics, checkpoints and samples are written") {
  fs::path dir = scratch("tasks");
  std::string data_dir = synthetic_mnist(dir / "data", 200, 60).string();
  struct Case {
    std::string name, config;
    std::vector<std::string> sets;
    std::vector<std::string> metrics, files;
  } cases[] = {
      {"lm", "", {"data.corpus=\"embedded\"", "data.seq_len=16", "model.d_model=16", "model.n_layers=1", "eval.lengths=[16, 32]",
                  "eval.tokens=40", "data.val_fraction=0.3", "sample.length=20"},
       {"val_bpc", "val_bpc@32"}, {"samples/final.txt"}},
      {"vit", "vit-mnist.toml", {"model.d_model=16", "model.n_layers=1", "eval.canvas=[40]"}, {"val_accuracy", "val_accuracy@40"}, {}},
      {"mnist_cnn", "mnist-cnn.toml", {}, {"val_accuracy"}, {}},
      {"multilabel", "multilabel.toml", {"data.train_size=64", "data.test_size=32", "loss.name=\"zlpr_soft\""},
       {"val_micro_f1", "val_exact_match"}, {"metrics.png"}},
      {"nxm", "nxm.toml", {"data.train_size=64", "data.test_size=32"}, {"val_sequence_accuracy"}, {}},
      {"toy2d", "toy2d.toml", {"eval.samples=64", "eval.samplers=[\"ddpm:20\", \"ddim:5:0.5\", \"pc:30\", \"ode_heun:4\", \"ode_rk45\"]",
                               "model.hidden=16", "sample.sampler=\"em:10\""},
       {"ddim:5:0.5/sw1", "pc:30/sw1", "ode_rk45/nfe"}, {"samples/final.png", "samples/data.png"}},
      {"ddpm", "ddpm-mnist.toml", {"model.base_channels=8", "model.channel_mult=[1, 2]", "eval.samplers=[]", "sample.sampler=\"ddim:3\"",
                                   "sample.count=4"},
       {"val_loss"}, {"samples/final.png"}},
  };
  // The cases are written by hand (each needs its own small settings), but the registry says which tasks exist: a
  // registered task needs a case here or a test case of its own, named below, so a new task cannot go untrained.
  const std::map<std::string, std::string> trained_elsewhere = {
      {"spirals", "the Trainer cases (resume, precision, divergence)"},
      {"image_cls", "\"Own image data by config keys alone\""},
      {"text_cls", "\"text_cls learns a generated labelled corpus\""}};
  for (const auto& [task, help] : task_list()) {
    CAPTURE(task);
    bool here = std::any_of(std::begin(cases), std::end(cases), [&](const Case& c) { return c.name == task; });
    CHECK_MESSAGE((here || trained_elsewhere.count(task) == 1), "task '" << task << "' is registered but trained by no test");
  }
  // Every task on the CPU, and on the GPU too when there is one (device = "cuda"). On the emulated GPU
  // (test_apps_emulated, tests/cuda_emulation) only the GPU leg runs, without vit and ddpm: their kernels are
  // test_cuda_emulated's, and emulated convolutions on these canvases take minutes.
  std::vector<std::string> devices{"cpu"};
  if (cuda::is_available()) devices.push_back("cuda");
  const bool emulated = cuda::is_available() &&
                        device_backend(Device::cuda()).describe().find("emulated") != std::string::npos;
  if (emulated) devices = {"cuda"};
  for (const std::string& device : devices)
  for (auto& c : cases) {
    if (emulated && (c.name == "vit" || c.name == "ddpm")) continue;
    CAPTURE(c.name);
    CAPTURE(device);
    Config cfg = c.config.empty() ? Config::from_string("task = \"lm\"\n", "lm.toml")
                                  : Config::from_file((source_dir() / "configs" / c.config).string());
    for (auto& s : c.sets) cfg.set(s);
    for (auto s : {"steps=4", "eval_every=2", "checkpoint_every=2", "log_every=1", "batch_size=8"}) cfg.set(s);
    cfg.set("data_dir=\"" + data_dir + "\"");
    cfg.set("device=\"" + device + "\"");
    fs::path run = dir / (c.name + "_" + device);
    REQUIRE(train(cfg, {.run_dir = run.string()}) == 0);
    auto summary = nlohmann::json::parse(std::ifstream(run / "summary.json"));
    CHECK(summary["status"] == "completed");
    CHECK(summary["steps"] == 4);
    for (auto& m : c.metrics) {
      CAPTURE(m);
      REQUIRE(summary["eval"].contains(m));
      CHECK(std::isfinite(summary["eval"][m].get<double>()));
    }
    for (auto& f : c.files) CHECK(fs::exists(run / f));
    CHECK(fs::exists(run / "checkpoints" / "last.safetensors"));
    CHECK(fs::exists(run / "checkpoints" / "best.safetensors"));
  }
}

TEST_CASE("The embedded default config (configs/default.toml, scripts/run) is valid: every key known, a step runs") {
  Config cfg = Config::from_string(kDefaultConfig, "<default>");
  CHECK(cfg.get<std::string>("task", "") == "lm");
  Config again = Config::from_string(kDefaultConfig, "<default>");
  CHECK(bench(again, 1) == 0);  // builds the task, optimizer and schedule (unknown keys would throw), runs 2 steps
}

TEST_CASE("Own image data by config keys alone: a gzipped 12x12 IDX set and a colour ImageFolder train vit, mnist_cnn and image_cls") {
  // 10 separable digit-like classes (core/data/image_set.h synthetic_digits), not 28x28: before #25 the tasks
  // refused them ("expected 28x28 images") and gzip ("decompress it first").
  fs::path dir = scratch("own_images");
  Generator g(21);
  std::string train_idx = data::write_idx_image_set(data::synthetic_digits(600, 12, 1, g), (dir / "idx").string(), "train");
  std::string test_idx = data::write_idx_image_set(data::synthetic_digits(200, 12, 1, g), (dir / "idx").string(), "t10k");
  data::write_image_folder(data::synthetic_digits(400, 8, 3, g), (dir / "folder" / "train").string());
  data::write_image_folder(data::synthetic_digits(150, 8, 3, g), (dir / "folder" / "test").string());
  const std::string idx_data = "[data]\ntrain = \"" + train_idx + "\"\ntest = \"" + test_idx + "\"\n";
  const std::string folder_data = "[data]\ntrain = \"" + (dir / "folder" / "train").string() + "\"\ntest = \"" +
                                  (dir / "folder" / "test").string() + "\"\n";
  const bool small = liandan::testing::small_mode();
  struct Case {
    std::string name, config;
    double min_accuracy;
  } cases[] = {
      // vit at the data's 12x12 (patch 4: a 3x3 grid)
      {"vit", "task = \"vit\"\nsteps = 1000\n" + idx_data + "image_size = 12\n[model]\nd_model = 32\nn_layers = 1\nn_heads = 2\n", 0.7},
      // mnist_cnn: resized to its 28x28 (the default), normalised
      {"mnist_cnn", "task = \"mnist_cnn\"\nsteps = 200\n" + idx_data + "mean = [0.1]\nstd = [0.3]\n", 0.8},
      // image_cls: the CNN at 12x12 with augmentation, the MLP and a ViT on colour 8x8 PNG folders (padded to 12)
      {"image_cls_cnn", "task = \"image_cls\"\nsteps = 300\n" + idx_data + "crop_padding = 1\n[model]\nname = \"cnn\"\n", 0.8},
      {"image_cls_mlp", "task = \"image_cls\"\nsteps = 300\n" + folder_data + "[model]\nname = \"mlp\"\nhidden = [64]\n", 0.8},
      {"image_cls_vit", "task = \"image_cls\"\nsteps = 800\n" + folder_data + "image_size = 12\nfit = \"pad\"\nchannels = 1\n"
                        "[model]\nname = \"vit\"\nd_model = 32\nn_layers = 1\nn_heads = 2\n", 0.7},
  };
  for (auto& c : cases) {
    if (small && c.name != "image_cls_mlp") continue;
    CAPTURE(c.name);
    // The case's top-level keys, the shared ones, then its tables (a TOML table runs to the next one).
    std::string text = c.config.substr(0, c.config.find('[')) + "seed = 1\nbatch_size = 32\neval_every = 1000\nlog_every = 1000\n"
           "checkpoint_every = 1000\n[optim]\nname = \"adamw\"\nlr = 3e-3\n" + c.config.substr(c.config.find('['));
    Config cfg = Config::from_string(text, c.name + ".toml");
    fs::path run = dir / c.name;
    auto t0 = std::chrono::steady_clock::now();
    REQUIRE(train(cfg, {.run_dir = run.string()}) == 0);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    auto summary = nlohmann::json::parse(std::ifstream(run / "summary.json"));
    double acc = summary["eval"]["val_accuracy"].get<double>();
    MESSAGE(c.name << ": val_accuracy " << acc << " in " << secs << " s");
    CHECK(acc >= c.min_accuracy);  // chance is 0.1
  }
  // ddpm takes the same data keys (not normalisation / augmentation): colour 8x8 images at their own size.
  Config ddpm = Config::from_string("task = \"ddpm\"\nsteps = 2\nbatch_size = 8\neval_every = 2\ncheckpoint_every = 2\n[data]\n"
                                    "train = \"" + (dir / "folder" / "train").string() + "\"\ntest = \"" +
                                    (dir / "folder" / "test").string() + "\"\nimage_size = 8\n[model]\nbase_channels = 8\n"
                                    "channel_mult = [1, 2]\ngroups = 4\n[eval]\nsamplers = []\n[sample]\nsampler = \"ddim:2\"\n"
                                    "count = 4\n", "ddpm.toml");
  REQUIRE(train(ddpm, {.run_dir = (dir / "ddpm").string()}) == 0);
  data::Image grid = data::read_png((dir / "ddpm" / "samples" / "final.png").string());
  CHECK(grid.channels == 3);
  CHECK(grid.height == 8 + 2 * 2);  // one row of 4 samples, padding 2
}

namespace {
// A labelled corpus: 4 topics with 6 words each, 10 filler words shared by all; a text is 4-12 words, of which
// 1-3 come from its topic(s). `multi`: a text has one or two topics (`a,b<TAB>text`).
void write_topic_corpus(const fs::path& path, int64_t n, bool multi, uint64_t seed) {
  const std::vector<std::vector<std::string>> topics = {
      {"goal", "match", "team", "score", "coach", "league"}, {"stock", "market", "bank", "price", "trade", "fund"},
      {"rain", "storm", "cloud", "wind", "snow", "sunny"},   {"pixel", "kernel", "code", "server", "cache", "bug"}};
  const std::vector<std::string> filler = {"the", "a", "of", "today", "very", "and", "new", "big", "was", "it"};
  const std::vector<std::string> names = {"sport", "money", "weather", "tech"};
  Generator g(seed);
  std::vector<double> u = rand({n, 40}, g, DType::f64).to_vector();
  std::ofstream f(path);
  for (int64_t i = 0; i < n; ++i) {
    const double* r = &u[size_t(40 * i)];
    int64_t a = std::min<int64_t>(int64_t(r[0] * 4), 3), b = (a + 1 + std::min<int64_t>(int64_t(r[1] * 3), 2)) % 4;
    bool two = multi && r[2] < 0.5;
    int64_t words = 4 + std::min<int64_t>(int64_t(r[3] * 9), 8);
    std::string text;
    for (int64_t w = 0; w < words; ++w) {
      double q = r[4 + w * 2], z = r[5 + w * 2];
      const auto& pool = w < (two ? 2 : 1) + int64_t(r[30] * 2) ? topics[size_t(two && w % 2 ? b : a)] : filler;
      (void)q;
      text += (text.empty() ? "" : " ") + pool[std::min<size_t>(size_t(z * double(pool.size())), pool.size() - 1)];
    }
    // Shuffle the words a little: the topic words are not always first.
    size_t cut = size_t(r[31] * double(text.size()));
    size_t sp = text.find(' ', cut);
    if (sp != std::string::npos) text = text.substr(sp + 1) + " " + text.substr(0, sp);
    std::string labels = names[size_t(a)];
    if (two) labels = names[size_t(std::min(a, b))] + "," + names[size_t(std::max(a, b))];
    f << labels << '\t' << text << '\n';
  }
}
}  // namespace

TEST_CASE("text_cls learns a generated labelled corpus: softmax CE (4 classes) and ZLPR multi-label") {
  fs::path dir = scratch("text_cls");
  write_topic_corpus(dir / "train.tsv", 800, false, 1);
  write_topic_corpus(dir / "test.tsv", 200, false, 2);
  write_topic_corpus(dir / "train_multi.tsv", 800, true, 3);
  write_topic_corpus(dir / "test_multi.tsv", 200, true, 4);
  struct Case {
    std::string name, files, metric;
    double min;
  } cases[] = {{"ce", "train = \"" + (dir / "train.tsv").string() + "\"\ntest = \"" + (dir / "test.tsv").string() + "\"\n",
                "val_accuracy", 0.9},  // chance 0.25
               {"zlpr", "train = \"" + (dir / "train_multi.tsv").string() + "\"\ntest = \"" + (dir / "test_multi.tsv").string() + "\"\n",
                "val_micro_f1", 0.8}};  // random scores: about 0.4
  for (auto& c : cases) {
    CAPTURE(c.name);
    Config cfg = Config::from_string("task = \"text_cls\"\nseed = 1\nsteps = 300\nbatch_size = 32\neval_every = 1000\n"
                                     "log_every = 1000\ncheckpoint_every = 1000\n[data]\n" + c.files +
                                     "max_len = 96\n[model]\nd_model = 32\nn_layers = 1\nn_heads = 2\n"
                                     "[optim]\nname = \"adamw\"\nlr = 3e-3\n", c.name + ".toml");
    fs::path run = dir / c.name;
    auto t0 = std::chrono::steady_clock::now();
    REQUIRE(train(cfg, {.run_dir = run.string()}) == 0);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    auto summary = nlohmann::json::parse(std::ifstream(run / "summary.json"));
    double v = summary["eval"][c.metric].get<double>();
    MESSAGE("text_cls " << c.name << ": " << c.metric << " " << v << " in " << secs << " s");
    CHECK(v >= c.min);
  }
  // Bad data: a line without a TAB, a test label the training set has not got.
  std::ofstream(dir / "bad.tsv") << "sport\tgoal\nno tab here\n";
  Config bad = Config::from_string("task = \"text_cls\"\n[data]\ntrain = \"" + (dir / "bad.tsv").string() + "\"\ntest = \"" +
                                   (dir / "test.tsv").string() + "\"\n", "bad.toml");
  CHECK_THROWS_WITH_AS(train(bad, {.run_dir = (dir / "bad").string()}), doctest::Contains("bad.tsv:2: no TAB"), Error);
}

TEST_CASE("liandan sample: --seed and --prompt for lm (same seed, same text), --steps needs --sampler, predictions for classifiers") {
  fs::path dir = scratch("sample_cli");
  Config cfg = Config::from_string("task = \"lm\"\nsteps = 2\nbatch_size = 4\nlog_every = 1\neval_every = 2\ncheckpoint_every = 2\n"
                                   "[data]\ncorpus = \"embedded\"\nseq_len = 16\nval_fraction = 0.3\n[model]\nd_model = 16\n"
                                   "n_layers = 1\n[eval]\nlengths = [16]\ntokens = 40\n[sample]\nlength = 30\n", "lm.toml");
  fs::path run = dir / "lm";
  REQUIRE(train(cfg, {.run_dir = run.string()}) == 0);
  auto text_with = [&](const std::string& seed) {
    REQUIRE(run_cli({"sample", run.string(), "--seed", seed, "--prompt", "Zq \"x\""}) == 0);
    std::ifstream f(run / "samples" / "last.txt");
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  std::string a = text_with("1"), b = text_with("2"), a2 = text_with("1");
  CHECK(a.find("Zq \"x\"") != std::string::npos);  // the prompt, quotes and all
  CHECK(a == a2);
  CHECK(a != b);
  CHECK(WEXITSTATUS(run_cli({"sample", run.string(), "--steps", "3"})) == 1);
  // A classifier's samples are its predictions.
  fs::path data_dir = synthetic_mnist(dir / "data", 64, 32);
  Config cls = Config::from_string("task = \"image_cls\"\nsteps = 2\nbatch_size = 8\ndata_dir = \"" + data_dir.string() +
                                   "\"\n[model]\nname = \"mlp\"\nhidden = [8]\n", "cls.toml");
  REQUIRE(train(cls, {.run_dir = (dir / "cls").string()}) == 0);
  REQUIRE(run_cli({"sample", (dir / "cls").string()}) == 0);
  CHECK(fs::exists(dir / "cls" / "samples" / "last-predictions.png"));
}
