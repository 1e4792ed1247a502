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
