// Kill campaigns on the real `liandan` binary: SIGKILL at random moments and inside each kind of write
// (checkpoint, config, summary, metrics), and SIGTERM, for lm, vit and ddpm with dropout, EMA and gradient
// accumulation on. After every fault the run is continued the way a user would (`resume`, or `train
// --overwrite` when the kill came before the first checkpoint) until it completes, and its final weights,
// optimizer and EMA state must equal an uninterrupted run's bit for bit.
//
// Counts: LIANDAN_FUZZ_COUNT trials per task (default 12, 3 in small mode); a JSON line with the results goes
// to $LIANDAN_FUZZ_REPORT when set (scripts/reliability builds docs/reliability.md from it).
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "core/data/mnist.h"
#include "core/random.h"
#include "core/serialize.h"
#include "app_fixtures.h"
#include "process.h"

using namespace liandan;
using liandan::testing::ProcessResult;
using liandan::testing::run_process;
namespace fs = std::filesystem;

namespace {

fs::path scratch(const std::string& name) { return liandan::testing::scratch_dir("test_faults", name); }

using liandan::testing::synthetic_mnist;

struct TaskCase {
  std::string name;
  std::string config;  // TOML
};

// Tiny runs with every source of state on: dropout (the default generator), EMA, accumulation, a schedule.
std::vector<TaskCase> cases(const std::string& data_dir) {
  const std::string common = "steps = 12\nlog_every = 2\neval_every = 6\ncheckpoint_every = 3\nkeep_checkpoints = 2\n"
                             "batch_size = 8\nthreads = 1\ndata_dir = \"" + data_dir + "\"\n";
  const std::string optim = "[optim]\nname = \"adamw\"\nlr = 3e-3\nschedule = \"cosine\"\nwarmup = 2\naccumulate = 2\n"
                            "clip_norm = 1.0\n[ema]\ndecay = 0.9\n";
  return {
      {"lm", "task = \"lm\"\n" + common +
                 "[data]\ncorpus = \"embedded\"\nseq_len = 16\nval_fraction = 0.3\n"
                 "[model]\nd_model = 16\nn_layers = 1\nn_heads = 2\ndropout = 0.1\n"
                 "[eval]\ntokens = 40\n[sample]\nlength = 8\n" + optim},
      {"vit", "task = \"vit\"\n" + common +
                  "[data]\ntrain_limit = 64\n[model]\nd_model = 16\nn_layers = 1\nn_heads = 2\npatch = 7\ndropout = 0.1\n" +
                  optim},
      {"ddpm", "task = \"ddpm\"\n" + common +
                   "[model]\nbase_channels = 8\nchannel_mult = [1]\nnum_res_blocks = 1\ngroups = 4\ndropout = 0.1\n"
                   "[sample]\nsampler = \"ddim:2\"\ncount = 2\n[eval]\nsamples = 4\nsamplers = []\n" + optim},
  };
}

const std::vector<std::string> kEnv = {"OMP_NUM_THREADS=1", "OMP_WAIT_POLICY=PASSIVE"};

ProcessResult cli(const std::vector<std::string>& args, double kill_after = 0, int sig = SIGKILL,
                  const std::string& fault = "") {
  std::vector<std::string> env = kEnv;
  if (!fault.empty()) env.push_back("LIANDAN_FAULT=" + fault);
  return run_process(liandan::testing::liandan_bin(), args, 120, env, kill_after, sig);
}

// model.*, optim.*, ema.* of the final checkpoint.
NamedTensors final_state(const fs::path& run) {
  NamedTensors out;
  for (auto& [k, t] : load_safetensors((run / "checkpoints" / "last.safetensors").string()).tensors)
    if (k.rfind("model.", 0) == 0 || k.rfind("optim.", 0) == 0 || k.rfind("ema.", 0) == 0) out.emplace_back(k, t);
  return out;
}

bool same_bits(const NamedTensors& a, const NamedTensors& b, std::string& why) {
  if (a.size() != b.size()) return why = "tensor count " + std::to_string(a.size()) + " vs " + std::to_string(b.size()), false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].first != b[i].first) return why = "names " + a[i].first + " vs " + b[i].first, false;
    if (a[i].second.to_vector() != b[i].second.to_vector()) return why = "tensor " + a[i].first + " differs", false;
  }
  return true;
}

std::string summary_status(const fs::path& run) {
  std::ifstream in(run / "summary.json");
  if (!in) return "";
  auto j = nlohmann::json::parse(in, nullptr, false);
  return j.is_discarded() ? "" : j.value("status", "");
}

bool no_checkpoints(const fs::path& run) {
  std::error_code ec;
  for (auto& e : fs::directory_iterator(run / "checkpoints", ec))
    if (e.path().filename().string().rfind("ckpt-", 0) == 0 && e.path().extension() == ".safetensors") return false;
  return true;
}

// Continues an interrupted run to its end as a user would; returns false (with the output) if a command
// crashed, hung or failed for another reason than "nothing to resume from".
bool finish(const fs::path& cfg, const fs::path& run, std::string& log) {
  for (int attempt = 0; attempt < 4; ++attempt) {
    if (summary_status(run) == "completed" && fs::exists(run / "checkpoints" / "last.safetensors")) return true;
    bool resumable = fs::exists(run / "checkpoints") && !no_checkpoints(run);
    ProcessResult r = resumable ? cli({"resume", run.string()})
                                : cli({"train", cfg.string(), "--run-dir", run.string(), "--overwrite"});
    log += (resumable ? "resume: " : "train --overwrite: ") + r.output;
    if (!r.clean_exit()) return false;
    if (r.exit_code != 0) return false;
  }
  return summary_status(run) == "completed";
}

}  // namespace

TEST_CASE("Kill campaign: SIGKILL anywhere (inside every kind of write too) and SIGTERM; resume is bit-identical") {
  REQUIRE_MESSAGE(!liandan::testing::liandan_bin().empty(), "LIANDAN_BIN is not set (run through ctest)");
  fs::path dir = scratch("campaign");
  std::string data_dir = synthetic_mnist(dir / "data", 96, 30).string();
  const long trials = liandan::testing::env_count("LIANDAN_FUZZ_COUNT", liandan::testing::small_mode() ? 3 : 12);
  std::mt19937 rng(20261207);
  // Inside writes: the n-th checkpoint, file (config, summary, metrics rewrite) and metrics-line write.
  const std::vector<std::string> faults = {"checkpoint:1", "checkpoint:3", "file:1", "file:2", "metrics:3", "metrics:7"};
  long n_kill = 0, n_term = 0, n_write = 0, identical = 0, crashes = 0, hangs = 0, term_ckpt_ok = 0;
  for (auto& tc : cases(data_dir)) {
    CAPTURE(tc.name);
    fs::path cfg = dir / (tc.name + ".toml");
    std::ofstream(cfg) << tc.config;
    fs::path whole = dir / (tc.name + "-whole");
    ProcessResult ref = cli({"train", cfg.string(), "--run-dir", whole.string()});
    INFO(ref.output);
    REQUIRE(ref.clean_exit());
    REQUIRE(ref.exit_code == 0);
    NamedTensors want = final_state(whole);
    REQUIRE(want.size() > 4);
    const double span = std::max(0.3, ref.seconds);
    for (long t = 0; t < trials; ++t) {
      fs::path run = dir / (tc.name + "-t" + std::to_string(t));
      int kind = int(t % 3);  // 0: SIGKILL at a random time, 1: SIGKILL inside a write, 2: SIGTERM at a random time
      ProcessResult r;
      std::string what;
      if (kind == 1) {
        what = faults[size_t(rng() % faults.size())];
        r = cli({"train", cfg.string(), "--run-dir", run.string()}, 0, SIGKILL, what);
        ++n_write;
      } else {
        double at = std::uniform_real_distribution<double>(0.05, 0.95)(rng) * span;
        what = (kind == 0 ? "SIGKILL at " : "SIGTERM at ") + std::to_string(at) + " s";
        r = cli({"train", cfg.string(), "--run-dir", run.string()}, at, kind == 0 ? SIGKILL : SIGTERM);
        ++(kind == 0 ? n_kill : n_term);
      }
      CAPTURE(what);
      INFO(r.output);
      if (r.timed_out) ++hangs;
      if (r.signaled && !(kind == 1 && r.signal == SIGKILL)) ++crashes;  // the fault's own SIGKILL is expected
      CHECK(!r.timed_out);
      if (kind == 2 && r.exit_code == 128 + SIGTERM && !r.killed_by_sent_signal) {
        // A graceful stop: a checkpoint at the step it finished, status "interrupted".
        auto meta = load_safetensors((run / "checkpoints" / "last.safetensors").string()).metadata;
        std::ifstream in(run / "summary.json");
        auto s = nlohmann::json::parse(in);
        CHECK(s["status"] == "interrupted");
        CHECK(meta.at("step") == std::to_string(s["step"].get<int64_t>()));
        if (s["status"] == "interrupted" && meta.at("step") == std::to_string(s["step"].get<int64_t>())) ++term_ckpt_ok;
      }
      std::string log;
      bool done = finish(cfg, run, log);
      INFO(log);
      CHECK(done);
      if (!done) continue;
      std::string why;
      bool same = same_bits(final_state(run), want, why);
      CAPTURE(why);
      CHECK(same);
      identical += same;
      // No temporary file outlives the run that made it.
      for (auto& d : {run, run / "checkpoints"})
        for (auto& e : fs::directory_iterator(d)) CHECK(e.path().filename().string().find(".tmp.") == std::string::npos);
    }
  }
  long total = n_kill + n_term + n_write;
  std::string line = nlohmann::json{{"campaign", "kill"}, {"tasks", "lm,vit,ddpm (dropout, EMA, accumulation)"},
                                    {"trials", total}, {"sigkill_random", n_kill}, {"sigkill_in_write", n_write},
                                    {"sigterm", n_term}, {"sigterm_checkpoint_at_stop", term_ckpt_ok},
                                    {"bit_identical", identical}, {"crashes", crashes}, {"hangs", hangs}}
                         .dump();
  MESSAGE(line);
  if (const char* rep = std::getenv("LIANDAN_FUZZ_REPORT")) std::ofstream(rep, std::ios::app) << line << "\n";
  CHECK(identical == total);
  CHECK(crashes == 0);
  CHECK(hangs == 0);
}
