// `mpirun -np N liandan train` end to end: data-parallel training equals one process on the same global batch
// (to f32 rounding), a run resumes on another number of processes, a dead rank stops every rank with a message
// naming it, ranks with different configs are refused. (The library's own tests: test_dist, test_dist_faults.)
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/dist/comm.h"
#include "core/serialize.h"
#include "app_fixtures.h"
#include "process.h"

using namespace liandan;
using liandan::testing::ProcessResult;
namespace fs = std::filesystem;

namespace {

fs::path scratch(const std::string& name) { return liandan::testing::scratch_dir("test_apps_dist", name); }

const std::vector<std::string> kEnv = {"OMP_NUM_THREADS=1", "OMP_WAIT_POLICY=PASSIVE", "OMPI_ALLOW_RUN_AS_ROOT=1",
                                       "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1",
                                       "OMPI_MCA_btl_vader_single_copy_mechanism=none"};

// mpirun's path, from PATH ("" when absent).
std::string mpirun() {
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/bin:/bin";
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find(':', start);
    if (end == std::string::npos) end = p.size();
    fs::path cand = fs::path(p.substr(start, end - start)) / "mpirun";
    if (::access(cand.c_str(), X_OK) == 0) return cand.string();
    start = end + 1;
  }
  return "";
}

// `mpirun -np N liandan ARGS` (N = 0: liandan alone). `rank1` replaces rank 1's arguments (MPMD form).
ProcessResult launch(int np, const std::vector<std::string>& args, const std::vector<std::string>& rank1 = {},
                     double timeout = 120) {
  const std::string bin = liandan::testing::liandan_bin();
  if (np == 0) return liandan::testing::run_process(bin, args, timeout, kEnv);
  std::vector<std::string> a{"--oversubscribe", "--bind-to", "none"};
  auto add = [&](int n, const std::vector<std::string>& xs) {
    a.insert(a.end(), {"-np", std::to_string(n), bin});
    a.insert(a.end(), xs.begin(), xs.end());
  };
  if (rank1.empty()) {
    add(np, args);
  } else {
    add(1, args);
    a.push_back(":");
    add(np - 1, rank1);
  }
  return liandan::testing::run_process(mpirun(), a, timeout, kEnv);
}

// Not in the sanitizer pass (LIANDAN_TEST_SMALL): Open MPI's own allocations fail LeakSanitizer there; the Release
// pass runs these cases, and test_dist covers the library under mpirun in both.
bool have_mpirun() { return dist::mpi_available() && !mpirun().empty() && !liandan::testing::small_mode(); }

// A tiny LM without dropout (dropout draws differ by rank in the fast mode), batch 8 = 2 × 4 = 4 × 2.
const char* kLM = R"(
task = "lm"
seed = 2
steps = 8
batch_size = 8
log_every = 2
eval_every = 4
checkpoint_every = 4
threads = 1
[data]
corpus = "embedded"
seq_len = 16
val_fraction = 0.3
[model]
d_model = 16
n_layers = 1
n_heads = 2
[eval]
tokens = 40
[sample]
length = 8
[optim]
lr = 3e-3
accumulate = 2
clip_norm = 1.0
[dist]
timeout = 20
)";

std::vector<std::pair<std::string, std::vector<double>>> weights(const fs::path& run) {
  std::vector<std::pair<std::string, std::vector<double>>> out;
  for (auto& [k, t] : load_safetensors((run / "checkpoints" / "last.safetensors").string()).tensors)
    if (k.rfind("model.", 0) == 0) out.emplace_back(k, t.to_vector());
  return out;
}

double max_abs_diff(const fs::path& a, const fs::path& b) {
  auto x = weights(a), y = weights(b);
  REQUIRE(x.size() == y.size());
  REQUIRE(!x.empty());
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    REQUIRE(x[i].second.size() == y[i].second.size());
    for (size_t j = 0; j < x[i].second.size(); ++j) m = std::max(m, std::abs(x[i].second[j] - y[i].second[j]));
  }
  return m;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("mpirun -np 2 / 4 liandan train equals one process on the same global batch; resume across world sizes") {
  if (!have_mpirun()) {
    MESSAGE("skipped: no MPI in this build or no mpirun on PATH");
    return;
  }
  fs::path dir = scratch("equal");
  fs::path cfg = dir / "lm.toml";
  std::ofstream(cfg) << kLM;
  ProcessResult one = launch(0, {"train", cfg.string(), "--run-dir", (dir / "one").string()});
  INFO(one.output);
  REQUIRE(one.exit_code == 0);
  for (int np : {2, 4}) {
    CAPTURE(np);
    fs::path run = dir / ("np" + std::to_string(np));
    ProcessResult r = launch(np, {"train", cfg.string(), "--run-dir", run.string()});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    CHECK(contains(r.output, "data-parallel: " + std::to_string(np) + " processes"));
    CHECK(max_abs_diff(run, dir / "one") < 2e-5);  // f32 rounding of a differently ordered sum, over 8 steps
    CHECK(max_abs_diff(run, dir / "one") > 0);      // (and it was a real split: the sums did differ in order)
  }
  // Killed after step 5 on one process, resumed on two: the same run.
  fs::path moved = dir / "moved";
  ProcessResult k = launch(0, {"train", cfg.string(), "--run-dir", moved.string(), "--die-after-step", "5"});
  REQUIRE(k.signaled);
  ProcessResult r = launch(2, {"resume", moved.string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.output, "at step 4"));
  CHECK(max_abs_diff(moved, dir / "one") < 2e-5);
}

TEST_CASE("mpirun: a rank that dies or was started with another config stops every rank with a clear message") {
  if (!have_mpirun()) {
    MESSAGE("skipped: no MPI in this build or no mpirun on PATH");
    return;
  }
  fs::path dir = scratch("faults");
  fs::path cfg = dir / "lm.toml";
  std::ofstream(cfg) << kLM;
  std::vector<std::string> base{"train", cfg.string(), "--set", "steps=200", "--set", "dist.timeout=10"};
  auto with = [&](std::vector<std::string> v, const std::vector<std::string>& extra) {
    v.insert(v.end(), extra.begin(), extra.end());
    return v;
  };
  // Rank 1 SIGKILLs itself after step 3.
  ProcessResult r = launch(2, with(base, {"--run-dir", (dir / "a").string()}),
                           with(base, {"--run-dir", (dir / "a").string(), "--die-after-step", "3"}), 90);
  INFO(r.output);
  CHECK(!r.timed_out);
  CHECK(r.exit_code != 0);
  CHECK(r.seconds < 60);
  // Rank 1 with another learning rate: refused at start-up by the config hash.
  r = launch(2, with(base, {"--run-dir", (dir / "b").string()}),
             with(base, {"--run-dir", (dir / "b").string(), "--set", "optim.lr=0.5"}), 90);
  INFO(r.output);
  CHECK(!r.timed_out);
  CHECK(r.exit_code != 0);
  CHECK(contains(r.output, "config"));
  CHECK(contains(r.output, "rank 1"));
}

TEST_CASE("mpirun: deterministic mode is bit-identical on 1, 2 and 4 processes, dropout and resume included") {
  if (!have_mpirun()) {
    MESSAGE("skipped: no MPI in this build or no mpirun on PATH");
    return;
  }
  fs::path dir = scratch("deterministic");
  fs::path cfg = dir / "lm.toml";
  std::ofstream(cfg) << kLM;
  // Dropout on (keyed by chunk, not rank), no accumulation (the chunks accumulate), 4 chunks of 2 rows.
  std::vector<std::string> det{"--set", "steps=20", "--set", "optim.accumulate=1", "--set", "model.dropout=0.1",
                               "--set", "dist.deterministic=true", "--set", "dist.chunks=4"};
  auto train = [&](int np, const std::string& name, std::vector<std::string> extra = {}) {
    std::vector<std::string> a{"train", cfg.string(), "--run-dir", (dir / name).string()};
    a.insert(a.end(), det.begin(), det.end());
    a.insert(a.end(), extra.begin(), extra.end());
    return launch(np, a);
  };
  ProcessResult one = train(0, "one");
  INFO(one.output);
  REQUIRE(one.exit_code == 0);
  for (int np : {2, 4}) {
    CAPTURE(np);
    ProcessResult r = train(np, "np" + std::to_string(np));
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    CHECK(contains(r.output, "deterministic: 4 chunks"));
    CHECK(max_abs_diff(dir / ("np" + std::to_string(np)), dir / "one") == 0);  // bit-identical
  }
  // The fast mode on 2 processes differs in the last bits (and in its dropout draws): the check above is not vacuous.
  ProcessResult fast = launch(2, {"train", cfg.string(), "--run-dir", (dir / "fast").string(), "--set", "steps=20", "--set",
                                  "optim.accumulate=1", "--set", "model.dropout=0.1"});
  REQUIRE(fast.exit_code == 0);
  CHECK(max_abs_diff(dir / "fast", dir / "one") > 0);
  // Killed after step 5 in one process, resumed on 2 (from the step-4 checkpoint): bit-identical.
  ProcessResult k = train(0, "moved", {"--die-after-step", "5"});
  REQUIRE(k.signaled);
  ProcessResult r = launch(2, {"resume", (dir / "moved").string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(max_abs_diff(dir / "moved", dir / "one") == 0);
  // 3 processes do not divide 4 chunks: refused, naming the rule.
  ProcessResult bad = train(3, "three");
  CHECK(bad.exit_code != 0);
  CHECK(contains(bad.output, "power-of-two number of processes"));
}

TEST_CASE("mpirun: ZeRO-1 (dist.zero) trains as unsharded AdamW, and its checkpoints resume on any world size") {
  if (!have_mpirun()) {
    MESSAGE("skipped: no MPI in this build or no mpirun on PATH");
    return;
  }
  fs::path dir = scratch("zero");
  fs::path cfg = dir / "lm.toml";
  std::ofstream(cfg) << kLM;
  auto run = [&](int np, const std::string& name, std::vector<std::string> extra) {
    std::vector<std::string> a{"train", cfg.string(), "--run-dir", (dir / name).string()};
    a.insert(a.end(), extra.begin(), extra.end());
    ProcessResult r = launch(np, a);
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    return r;
  };
  // Fast mode (accumulation and global-norm clipping included) against one unsharded process: f32 rounding.
  run(0, "one", {});
  ProcessResult z = run(2, "zero2", {"--set", "dist.zero=true"});
  CHECK(contains(z.output, "ZeRO-1"));
  CHECK(max_abs_diff(dir / "zero2", dir / "one") < 2e-5);
  // Deterministic mode without clipping: the shard update is AdamW's element for element, so ZeRO on 2 and 4
  // processes equals unsharded AdamW on 1 bit for bit.
  std::vector<std::string> det{"--set", "optim.accumulate=1", "--set", "optim.clip_norm=0", "--set",
                               "dist.deterministic=true"};
  run(0, "det1", det);
  for (int np : {2, 4}) {
    CAPTURE(np);
    std::vector<std::string> e = det;
    e.insert(e.end(), {"--set", "dist.zero=true"});
    run(np, "detzero" + std::to_string(np), e);
    CHECK(max_abs_diff(dir / ("detzero" + std::to_string(np)), dir / "det1") == 0);
  }
  // A ZeRO checkpoint holds the gathered (unsharded) state: it resumes in one process without ZeRO.
  ProcessResult r = launch(0, {"resume", (dir / "zero2").string(), "--set", "dist.zero=false", "--set", "steps=10"});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  // What ZeRO cannot shard is refused by name.
  ProcessResult amos = launch(0, {"train", cfg.string(), "--run-dir", (dir / "amos").string(), "--set",
                                  "dist.zero=true", "--set", "optim.name=amos"});
  CHECK(amos.exit_code != 0);
  CHECK(contains(amos.output, "Amos"));
}

TEST_CASE("mpirun: deterministic mode on every kind of task's randomness: 1 process = 2 processes, bit for bit") {
  if (!have_mpirun()) {
    MESSAGE("skipped: no MPI in this build or no mpirun on PATH");
    return;
  }
  fs::path dir = scratch("det_tasks");
  std::string data = liandan::testing::synthetic_mnist(dir / "data", 64, 16).string();
  const std::string top = "steps = 3\nlog_every = 1\neval_every = 3\ncheckpoint_every = 3\nthreads = 1\ndata_dir = \"" +
                          data + "\"\n";
  // What each draws besides the data order: spirals (row indices), toy2d (noise and times from the task's own
  // generator, per chunk), ddpm (the same through the U-Net, flips of the global batch), image_cls (augmentation of the global batch),
  // multilabel (a shuffling loader), each with dropout from the default generator where the model has it.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"spirals", top + "task = \"spirals\"\nbatch_size = 16\n[data]\ntrain_size = 64\nval_size = 32\n[model]\nhidden = 8\n"},
      {"toy2d", top + "task = \"toy2d\"\nbatch_size = 16\n[data]\ntrain_size = 64\n[model]\nhidden = 8\nblocks = 1\n"
                      "[eval]\nsamples = 16\nsamplers = []\n[sample]\nsampler = \"ddim:2\"\n"},
      {"ddpm", top + "task = \"ddpm\"\nbatch_size = 4\n[model]\nbase_channels = 8\nchannel_mult = [1, 2]\ngroups = 4\n"
                     "[sample]\nsampler = \"ddim:2\"\ncount = 2\n[eval]\nsamplers = []\n[data]\nhflip = true\n"},
      {"image_cls", top + "task = \"image_cls\"\nbatch_size = 8\n[data]\ncrop_padding = 2\nhflip = true\n"
                          "[model]\nname = \"vit\"\nd_model = 8\nn_layers = 1\nn_heads = 2\ndropout = 0.1\n"},
      {"multilabel", top + "task = \"multilabel\"\nbatch_size = 8\n[data]\ntrain_size = 32\ntest_size = 16\n"},
  };
  for (auto& [name, toml] : cases) {
    CAPTURE(name);
    fs::path cfg = dir / (name + ".toml");
    std::ofstream(cfg) << toml << "[dist]\ndeterministic = true\nchunks = 4\ntimeout = 30\n";
    for (int np : {0, 2}) {
      ProcessResult r = launch(np, {"train", cfg.string(), "--run-dir", (dir / (name + std::to_string(np))).string()});
      INFO(r.output);
      REQUIRE(r.exit_code == 0);
    }
    CHECK(max_abs_diff(dir / (name + "2"), dir / (name + "0")) == 0);
  }
}
