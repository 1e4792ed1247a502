// What a user can do to a run directory, each case a reproducer from issue #21 that failed before its fix:
// dropout and resume, training over a run, two processes on one directory, a damaged or missing config, picking
// a checkpoint, falling back from a damaged `last`, signals, a file-size limit (a full disk), a model that cannot
// fit, non-finite weights, damaged metadata, FIFOs, and the atomic-file primitives themselves.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "apps/run_dir.h"
#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/random.h"
#include "diffusion/unet.h"
#include "nn/models.h"
#include "core/fileio.h"
#include "core/serialize.h"
#include "app_fixtures.h"
#include "process.h"

using namespace liandan;
using liandan::testing::ProcessResult;
namespace fs = std::filesystem;

namespace {

fs::path scratch(const std::string& name) { return liandan::testing::scratch_dir("test_hardening", name); }

ProcessResult cli(const std::vector<std::string>& args, double timeout = 120, double kill_after = 0,
                  int sig = SIGKILL) {
  return liandan::testing::run_process(liandan::testing::liandan_bin(), args, timeout,
                                       {"OMP_NUM_THREADS=1", "OMP_WAIT_POLICY=PASSIVE"}, kill_after, sig);
}

// A tiny LM on the embedded text: seconds long, with dropout on.
const char* kTinyLM = R"(
task = "lm"
seed = 5
steps = 40
batch_size = 4
log_every = 5
eval_every = 20
checkpoint_every = 10
[data]
corpus = "embedded"
seq_len = 16
val_fraction = 0.3
[model]
d_model = 16
n_layers = 1
n_heads = 2
dropout = 0.1
[eval]
tokens = 40
[sample]
length = 8
)";

const char* kSpirals = R"(
task = "spirals"
seed = 1
steps = 60
batch_size = 32
log_every = 10
eval_every = 30
checkpoint_every = 20
[data]
train_size = 200
val_size = 100
[model]
hidden = 16
)";

fs::path write_config(const fs::path& dir, const std::string& name, const std::string& text) {
  fs::path p = dir / name;
  std::ofstream(p) << text;
  return p;
}

NamedTensors state_of(const fs::path& ckpt) {
  NamedTensors out;
  for (auto& [k, t] : load_safetensors(ckpt.string()).tensors)
    if (k.rfind("model.", 0) == 0 || k.rfind("optim.", 0) == 0 || k.rfind("ema.", 0) == 0) out.emplace_back(k, t);
  return out;
}

void check_same(const NamedTensors& a, const NamedTensors& b) {
  REQUIRE(a.size() == b.size());
  REQUIRE(a.size() > 4);
  for (size_t i = 0; i < a.size(); ++i) {
    CAPTURE(a[i].first);
    CHECK(a[i].first == b[i].first);
    CHECK(a[i].second.to_vector() == b[i].second.to_vector());
  }
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("Resume with dropout is bit-identical: dropout draws from the checkpointed generator") {
  fs::path dir = scratch("dropout");
  fs::path cfg = write_config(dir, "lm.toml", kTinyLM);
  fs::path killed = dir / "killed", whole = dir / "whole";
  ProcessResult r = cli({"train", cfg.string(), "--run-dir", killed.string(), "--die-after-step", "25"});
  INFO(r.output);
  REQUIRE(r.signaled);
  REQUIRE(r.signal == SIGKILL);
  r = cli({"resume", killed.string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  r = cli({"train", cfg.string(), "--run-dir", whole.string()});
  REQUIRE(r.exit_code == 0);
  check_same(state_of(killed / "checkpoints" / "last.safetensors"), state_of(whole / "checkpoints" / "last.safetensors"));
}

TEST_CASE("Models built with a generator that is gone still draw dropout: from the default generator") {
  // Before: Dropout kept a pointer to the construction generator — a local of the tasks' constructors, so vit and
  // ddpm with dropout > 0 read a dead object at step 1 ("Invalid argument").
  nn::ViTConfig v;
  v.d_model = 16, v.n_layers = 1, v.n_heads = 2, v.d_ff = 16, v.patch = 7, v.dropout = 0.5;
  std::shared_ptr<nn::ViT> vit;
  diffusion::UNetConfig u;
  u.base_channels = 8, u.channel_mult = {1}, u.num_res_blocks = 1, u.groups = 4, u.dropout = 0.5, u.mid_attention = false;
  std::shared_ptr<diffusion::UNet> unet;
  {
    Generator init(3);
    vit = std::make_shared<nn::ViT>(v, init);
    unet = std::make_shared<diffusion::UNet>(u, init);
  }
  Generator data(4);
  Tensor x = randn({2, 1, 28, 28}, data);
  Tensor t = full({2}, 10.0);
  for (nn::Module* m : {static_cast<nn::Module*>(vit.get()), static_cast<nn::Module*>(unet.get())}) {
    NoGradGuard ng;
    m->train();
    auto out = [&] { return m == vit.get() ? vit->forward(x) : unet->forward(x, t); };
    manual_seed(11);
    std::vector<double> a = out().to_vector();
    uint64_t used = default_generator().offset();
    CHECK(used > 0);  // dropout drew from the default generator
    std::vector<double> b = out().to_vector();
    CHECK(a != b);    // and the masks differ from call to call
    manual_seed(11);
    CHECK(out().to_vector() == a);  // reproducible from the generator's state, which checkpoints store
  }
}

TEST_CASE("train refuses a directory that holds a run unless --overwrite; the lock refuses a second process") {
  fs::path dir = scratch("overwrite");
  fs::path cfg = write_config(dir, "s.toml", kSpirals);
  fs::path run = dir / "run";
  REQUIRE(cli({"train", cfg.string(), "--run-dir", run.string()}).exit_code == 0);
  auto before = fs::file_size(run / "checkpoints" / "last.safetensors");
  ProcessResult r = cli({"train", cfg.string(), "--run-dir", run.string(), "--set", "optim.lr=0.5"});
  CHECK(r.exit_code != 0);
  CHECK(contains(r.output, "already holds a run"));
  CHECK(contains(r.output, "liandan resume"));
  CHECK(fs::file_size(run / "checkpoints" / "last.safetensors") == before);
  r = cli({"train", cfg.string(), "--run-dir", run.string(), "--overwrite", "--set", "steps=30"});
  CHECK(r.exit_code == 0);
  CHECK(load_safetensors((run / "checkpoints" / "last.safetensors").string()).metadata.at("step") == "30");

  {  // a live run holds the lock: resume and train beside it are refused, naming the holder
    apps::RunLock lock(run);
    r = cli({"resume", run.string(), "--set", "steps=40"});
    CHECK(r.exit_code != 0);
    CHECK(contains(r.output, "in use by process " + std::to_string(::getpid())));
    r = cli({"train", cfg.string(), "--run-dir", run.string(), "--overwrite"});
    CHECK(r.exit_code != 0);
    CHECK(contains(r.output, "in use"));
  }
  r = cli({"resume", run.string(), "--set", "steps=40"});  // the lock went with its holder
  CHECK(r.exit_code == 0);
}

TEST_CASE("resume recovers an empty or missing config.toml from the checkpoint; --checkpoint picks one") {
  fs::path dir = scratch("config");
  fs::path cfg = write_config(dir, "s.toml", kSpirals);
  fs::path run = dir / "run";
  REQUIRE(cli({"train", cfg.string(), "--run-dir", run.string(), "--die-after-step", "45"}).signaled);
  std::ofstream(run / "config.toml", std::ios::trunc).close();  // what a kill during the old in-place write left
  ProcessResult r = cli({"resume", run.string()});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.output, "using the config stored in"));
  CHECK(fs::file_size(run / "config.toml") > 100);  // written back, atomically

  fs::remove(run / "config.toml");
  r = cli({"eval", run.string()});
  CHECK(r.exit_code == 0);
  CHECK(contains(r.output, "val_accuracy"));

  // --checkpoint ckpt-N: resume from an older one (keep_checkpoints = 3 keeps 20, 40 and the final 60).
  r = cli({"resume", run.string(), "--checkpoint", "ckpt-40", "--set", "steps=70"});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.output, "at step 40"));
  r = cli({"resume", run.string(), "--checkpoint", "ckpt-7"});
  CHECK(r.exit_code != 0);
  CHECK(contains(r.output, "ckpt-7.safetensors does not exist"));
  r = cli({"eval", run.string(), "--checkpoint", "../../etc/passwd"});
  CHECK(r.exit_code != 0);
  CHECK(contains(r.output, "last, best or ckpt-N"));
}

TEST_CASE("A damaged last.safetensors: resume falls back to the newest readable checkpoint, naming both") {
  fs::path dir = scratch("fallback");
  fs::path cfg = write_config(dir, "s.toml", kSpirals);
  fs::path run = dir / "run";
  REQUIRE(cli({"train", cfg.string(), "--run-dir", run.string(), "--die-after-step", "45"}).signaled);
  fs::path last = run / "checkpoints" / "last.safetensors";
  // last is a hard link to ckpt-40: replace it by a truncated copy (the link is broken, ckpt-40 stays good).
  std::string bytes = read_regular_file(last.string());
  fs::remove(last);
  std::ofstream(last, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  ProcessResult r = cli({"resume", run.string()});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.output, "last.safetensors is unreadable"));
  CHECK(contains(r.output, "ckpt-40.safetensors"));
}

TEST_CASE("SIGTERM / SIGINT: the step finishes, a checkpoint is written, status interrupted, exit 128 + signal") {
  fs::path dir = scratch("sigterm");
  fs::path cfg = write_config(dir, "s.toml", kSpirals);
  for (int sig : {SIGTERM, SIGINT}) {
    CAPTURE(sig);
    fs::path run = dir / ("run" + std::to_string(sig));
    ProcessResult r = cli({"train", cfg.string(), "--run-dir", run.string(), "--set", "steps=1000000",
                           "--set", "checkpoint_every=1000000"}, 120, 1.5, sig);
    INFO(r.output);
    REQUIRE(r.exit_code == 128 + sig);
    auto summary = nlohmann::json::parse(std::ifstream(run / "summary.json"));
    CHECK(summary["status"] == "interrupted");
    int64_t step = summary["step"].get<int64_t>();
    CHECK(step > 0);
    CHECK(load_safetensors((run / "checkpoints" / "last.safetensors").string()).metadata.at("step") ==
          std::to_string(step));
    r = cli({"resume", run.string(), "--set", "steps=" + std::to_string(step + 5)});
    CHECK(r.exit_code == 0);
  }
}

TEST_CASE("A file-size limit (a full disk) fails the run with the write named; the last good checkpoint stays") {
  fs::path dir = scratch("full");
  fs::path cfg = write_config(dir, "lm.toml", std::string(kTinyLM));
  fs::path run = dir / "run";
  // ulimit -f 40: 40 KiB per file. The config and metrics fit; the first checkpoint (~60 KiB) does not.
  ProcessResult r = liandan::testing::run_process(
      "/bin/bash", {"-c", "ulimit -f 40; exec \"$0\" \"$@\"", liandan::testing::liandan_bin(), "train", cfg.string(),
                    "--run-dir", run.string(), "--set", "model.d_model=32"},
      120, {"OMP_NUM_THREADS=1"});
  INFO(r.output);
  CHECK(r.clean_exit());
  CHECK(r.exit_code != 0);
  CHECK(contains(r.output, "File too large"));
  CHECK(!fs::exists(run / "checkpoints" / "last.safetensors"));
  for (auto& d : {run, run / "checkpoints"})
    for (auto& e : fs::directory_iterator(d)) CHECK(!contains(e.path().filename().string(), ".tmp."));
}

TEST_CASE("A model that cannot fit is refused in seconds, naming the allocation and the machine's memory") {
  fs::path dir = scratch("oom");
  fs::path cfg = write_config(dir, "lm.toml", kTinyLM);
  ProcessResult r = cli({"train", cfg.string(), "--run-dir", (dir / "r").string(), "--set", "model.d_model=65536",
                         "--set", "model.n_heads=4"}, 60);
  INFO(r.output);
  CHECK(r.clean_exit());
  CHECK(r.exit_code != 0);
  CHECK(contains(r.output, "out of memory allocating"));
  CHECK(contains(r.output, "available"));
  CHECK(r.seconds < 30);
}

TEST_CASE("Non-finite weights after a step are never checkpointed (optim.lr = 1e39)") {
  fs::path dir = scratch("nan");
  fs::path cfg = write_config(dir, "s.toml", kSpirals);
  fs::path run = dir / "run";
  ProcessResult r = cli({"train", cfg.string(), "--run-dir", run.string(), "--set", "optim.lr=1e39", "--set",
                         "checkpoint_every=1", "--set", "eval_every=1"});
  INFO(r.output);
  CHECK(r.exit_code == 2);
  CHECK(contains(r.output, "NaN or Inf"));
  for (auto& ck : {"last.safetensors", "best.safetensors", "ckpt-1.safetensors"}) {
    fs::path p = run / "checkpoints" / ck;
    if (!fs::exists(p)) continue;
    for (auto& [k, t] : load_safetensors(p.string()).tensors)
      if (is_floating(t.dtype()))
        for (double v : t.to_vector()) REQUIRE(std::isfinite(v));
  }
}

TEST_CASE("Damaged checkpoint metadata (negative step, non-numeric best/wall_s) is a clear error, not a kill") {
  fs::path dir = scratch("meta");
  fs::path cfg = write_config(dir, "s.toml", kSpirals);
  fs::path run = dir / "run";
  REQUIRE(cli({"train", cfg.string(), "--run-dir", run.string(), "--set", "steps=20"}).exit_code == 0);
  fs::path last = run / "checkpoints" / "last.safetensors";
  SafetensorsContents c = load_safetensors(last.string());
  struct Case {
    std::string field, value, message;
  } cases[] = {{"step", "-5", "'step' must be >= 0"}, {"best", "x1", "'best' is not a number"},
               {"wall_s", "", "'wall_s' is not a number"}, {"rng", "1,2,3", "'rng' must hold"}};
  for (auto& k : cases) {
    CAPTURE(k.field);
    Metadata m = c.metadata;
    m[k.field] = k.value;
    fs::remove(last);
    save_safetensors(last.string(), c.tensors, m);
    ProcessResult r = cli({"resume", run.string(), "--checkpoint", "last", "--set", "steps=30"});
    INFO(r.output);
    CHECK(r.clean_exit());
    CHECK(r.exit_code == 1);
    CHECK(contains(r.output, k.message));
    CHECK(contains(r.output, "last.safetensors"));
  }
}

TEST_CASE("A FIFO where a config or checkpoint should be is an error, never a hang") {
  fs::path dir = scratch("fifo");
  fs::path cfg = write_config(dir, "s.toml", kSpirals);
  fs::path run = dir / "run";
  REQUIRE(cli({"train", cfg.string(), "--run-dir", run.string(), "--set", "steps=20"}).exit_code == 0);
  fs::path last = run / "checkpoints" / "last.safetensors";
  fs::remove(last);
  REQUIRE(::mkfifo(last.c_str(), 0644) == 0);
  // `last`: the newest readable numbered checkpoint takes its place, with a warning; `best`: an error.
  fs::path best = run / "checkpoints" / "best.safetensors";
  fs::remove(best);
  REQUIRE(::mkfifo(best.c_str(), 0644) == 0);
  for (auto cmd : {"eval", "sample", "resume"}) {
    CAPTURE(cmd);
    ProcessResult r = cli({cmd, run.string(), "--checkpoint", "best"}, 30);
    INFO(r.output);
    CHECK(!r.timed_out);
    CHECK(r.exit_code == 1);
    CHECK(contains(r.output, "not a regular file"));
    r = cli({cmd, run.string()}, 30);
    CHECK(!r.timed_out);
    CHECK(r.exit_code == 0);
    CHECK(contains(r.output, "last.safetensors is unreadable"));
  }
  fs::path fifo_cfg = dir / "fifo.toml";
  REQUIRE(::mkfifo(fifo_cfg.c_str(), 0644) == 0);
  ProcessResult r = cli({"train", fifo_cfg.string(), "--run-dir", (dir / "r2").string()}, 30);
  CHECK(!r.timed_out);
  CHECK(r.exit_code != 0);
  CHECK(contains(r.output, "not a regular file"));
}

TEST_CASE("Trainer keys are validated: threads, keep_checkpoints, warmup, clipping, device, bench --steps") {
  fs::path dir = scratch("keys");
  fs::path cfg = write_config(dir, "s.toml", kSpirals);
  struct Case {
    std::vector<std::string> args;
    std::string message;
  } cases[] = {
      {{"--set", "threads=-2"}, "'threads'"},
      {{"--set", "keep_checkpoints=0"}, "'keep_checkpoints' must be >= 1"},
      {{"--set", "optim.warmup=-10"}, "'optim.warmup' must be >= 0"},
      {{"--set", "optim.clip_norm=-1"}, "'optim.clip_norm' must be >= 0"},
      {{"--set", "optim.clip_value=nan"}, "'optim.clip_value' must be >= 0"},
      {{"--set", "device=\"cuda:99999999999\""}, "'device' must be"},
      {{"--set", "ema.decay=nan"}, "'ema.decay' must lie in [0, 1)"},
  };
  int i = 0;
  for (auto& k : cases) {
    CAPTURE(k.message);
    std::vector<std::string> args{"train", cfg.string(), "--run-dir", (dir / ("r" + std::to_string(i++))).string()};
    args.insert(args.end(), k.args.begin(), k.args.end());
    ProcessResult r = cli(args);
    INFO(r.output);
    CHECK(r.clean_exit());
    CHECK(r.exit_code == 1);
    CHECK(contains(r.output, k.message));
  }
  ProcessResult r = cli({"--threads", "-1", "info"});
  CHECK(r.exit_code != 0);
  r = cli({"bench", cfg.string(), "--steps", "-1"});
  CHECK(r.exit_code != 0);
  CHECK(!contains(r.output, "ms/step"));
}

TEST_CASE("A task that fails before reading every key names the unread keys of its sections (typos)") {
  fs::path dir = scratch("typo");
  fs::path cfg = write_config(dir, "lm.toml", kTinyLM);
  ProcessResult r = cli({"train", cfg.string(), "--run-dir", (dir / "r").string(), "--set",
                         "data.corpus=\"/nonexistent/corpus.txt\"", "--set", "data.seq_lenn=32"});
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "'data.seq_lenn'"));
}

TEST_CASE("Stale temporaries of a killed writer are removed when the next run takes the directory") {
  fs::path dir = scratch("stale");
  fs::path cfg = write_config(dir, "s.toml", kSpirals);
  fs::path run = dir / "run";
  REQUIRE(cli({"train", cfg.string(), "--run-dir", run.string(), "--die-after-step", "25"}).signaled);
  std::ofstream(run / "checkpoints" / "ckpt-40.safetensors.tmp.99999") << "partial";
  std::ofstream(run / "summary.json.tmp.12345") << "partial";
  REQUIRE(cli({"resume", run.string()}).exit_code == 0);
  CHECK(!fs::exists(run / "checkpoints" / "ckpt-40.safetensors.tmp.99999"));
  CHECK(!fs::exists(run / "summary.json.tmp.12345"));
}

TEST_CASE("write_file_atomic: a failed write (file-size limit) is an error and keeps the old file; no temporary") {
  fs::path dir = scratch("atomic");
  std::string path = (dir / "f.json").string();
  write_file_atomic(path, "old contents");
  ::signal(SIGXFSZ, SIG_IGN);
  rlimit old;
  ::getrlimit(RLIMIT_FSIZE, &old);
  rlimit small = old;
  small.rlim_cur = 1000;
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
  bool threw = false;
  try {
    write_file_atomic(path, std::string(5000, 'x'));
  } catch (const Error& e) {
    threw = true;
    CHECK(contains(e.what(), "f.json"));
  }
  ::setrlimit(RLIMIT_FSIZE, &old);
  CHECK(threw);
  CHECK(read_regular_file(path) == "old contents");
  for (auto& e : fs::directory_iterator(dir)) CHECK(!contains(e.path().filename().string(), ".tmp."));

  AppendFile log((dir / "m.jsonl").string());
  log.write_line("{\"a\":1}");
  log.write_line("{\"a\":2}");
  CHECK(read_regular_file((dir / "m.jsonl").string()) == "{\"a\":1}\n{\"a\":2}\n");
  CHECK(remove_stale_temp_files(dir.string()) == 0);
  std::ofstream(dir / "x.tmp.123") << "y";
  std::ofstream(dir / "x.tmp.notapid") << "y";
  CHECK(remove_stale_temp_files(dir.string()) == 1);
  CHECK(fs::exists(dir / "x.tmp.notapid"));
}
