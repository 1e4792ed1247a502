// Checkpoint mutations against the real `liandan` binary: a tiny spirals run is trained once, then copies of
// its last checkpoint are damaged (truncated; a byte flipped in the header or in the data; bytes inserted or
// removed; the header length changed) and `resume`, `eval` or `sample` (in turn) runs on a fresh copy of the
// run directory. Every run must end without a signal, a timeout or a sanitizer report, and either
//   - fail (non-zero exit) with an error naming the damaged file, or
//   - succeed, which is right only when the damaged file still loads with every checksum passing and the same
//     tensors and metadata as the original, or when the command fell back to an older checkpoint and its
//     output names the damaged file (read_checkpoint's fallback for `last`).
// A damaged file that loads in-process with other values than the original is a silent corruption: a failure.
//
// The damage goes to last.safetensors and to the ckpt-N it is a hard link of (one inode on disk). Every other
// mutation also removes the older checkpoint, so both the error path and the fallback path are exercised.
//
// Counts: LIANDAN_FUZZ_COUNT mutations (default 500, 60 in small mode), seed LIANDAN_FUZZ_SEED (default 1); a
// JSON line with the results goes to $LIANDAN_FUZZ_REPORT when set (docs/reliability.md is built from it).
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "tests/test_files.h"
#include "core/serialize.h"
#include "process.h"

using namespace liandan;
using liandan::testing::ProcessResult;
using liandan::testing::run_process;
namespace fs = std::filesystem;

namespace {

using liandan::testing::check_error;
using liandan::testing::read_bytes;
using liandan::testing::TempDir;
using liandan::testing::write_bytes;

const char* kRunConfig = R"(task = "spirals"
seed = 3
steps = 20
batch_size = 16
log_every = 5
eval_every = 10
checkpoint_every = 10
threads = 1
[data]
train_size = 64
val_size = 32
[model]
hidden = 8
[optim]
name = "adamw"
lr = 1e-2
)";

const std::vector<std::string> kEnv = {"OMP_NUM_THREADS=1", "OMP_WAIT_POLICY=PASSIVE"};


uint64_t header_len(const std::string& b) {
  uint64_t n = 0;
  std::memcpy(&n, b.data(), 8);
  return n;
}

// One random mutation of a valid safetensors file `good` (header length `n`); `what` describes it.
std::string mutate(const std::string& good, std::mt19937_64& rng, int kind, std::string& what) {
  const uint64_t n = header_len(good), size = good.size(), data = size - 8 - n;
  auto pick = [&](uint64_t lo, uint64_t hi) { return lo + rng() % (hi - lo); };  // in [lo, hi)
  std::string b = good;
  switch (kind) {
    case 0: {  // truncation, half of them inside the header
      uint64_t at = rng() % 2 ? pick(0, 8 + n) : pick(8 + n, size);
      b.resize(at);
      what = "truncated to " + std::to_string(at) + " of " + std::to_string(size) + " bytes";
      break;
    }
    case 1:
    case 2: {  // one byte flipped in the header JSON / in the data
      uint64_t at = kind == 1 ? pick(8, 8 + n) : pick(8 + n, size);
      b[at] = char(uint8_t(b[at]) ^ uint8_t(1 + rng() % 255));
      what = std::string("flipped byte ") + std::to_string(at) + (kind == 1 ? " (header)" : " (data)");
      break;
    }
    case 3: {  // 1-4 random bytes inserted
      uint64_t at = pick(0, size + 1), k = 1 + rng() % 4;
      std::string ins;
      for (uint64_t i = 0; i < k; ++i) ins.push_back(char(rng()));
      b.insert(at, ins);
      what = "inserted " + std::to_string(k) + " byte(s) at " + std::to_string(at);
      break;
    }
    case 4: {  // 1-4 bytes removed
      uint64_t k = 1 + rng() % 4, at = pick(0, size - k + 1);
      b.erase(at, k);
      what = "removed " + std::to_string(k) + " byte(s) at " + std::to_string(at);
      break;
    }
    default: {  // the header length changed: off by a little (mostly), by a padding step, or anything
      static const int64_t kDeltas[] = {-1, 1, -1, 1, -2, 2, -3, 3, -8, 8, -7, 7};
      uint64_t m;
      switch (rng() % 4) {
        case 0: m = rng(); break;
        case 1: m = n + data + rng() % 16; break;  // around the file's end
        default: m = uint64_t(int64_t(n) + kDeltas[rng() % std::size(kDeltas)]); break;
      }
      if (m == n) m = n + 1;
      std::memcpy(b.data(), &m, 8);
      what = "header length " + std::to_string(n) + " -> " + std::to_string(m);
      break;
    }
  }
  if (b == good) {  // (cannot happen with the kinds above, but a no-op must not count as a mutation)
    b.push_back('\0');
    what += " + a trailing zero byte";
  }
  return b;
}
const char* kKinds[] = {"truncate", "flip_header", "flip_data", "insert", "remove", "header_length"};
constexpr int kNumKinds = 6;

// Same names, types, shapes and bytes (NaN payloads included), and the same metadata.
bool same_contents(const SafetensorsContents& a, const SafetensorsContents& b) {
  if (a.tensors.size() != b.tensors.size() || a.metadata != b.metadata) return false;
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const Tensor &x = a.tensors[i].second, &y = b.tensors[i].second;
    if (a.tensors[i].first != b.tensors[i].first || x.dtype() != y.dtype() || x.shape() != y.shape()) return false;
    if (x.numel() && std::memcmp(x.raw_data(), y.raw_data(), size_t(x.numel()) * dtype_size(x.dtype())) != 0)
      return false;
  }
  return true;
}

bool has_sanitizer_report(const std::string& out) {
  return out.find("AddressSanitizer") != std::string::npos || out.find("LeakSanitizer") != std::string::npos ||
         out.find("runtime error:") != std::string::npos || out.find("terminate called") != std::string::npos;
}

// Whether some error or warning line of `out` names `file`.
bool names_file(const std::string& out, const std::string& file) {
  size_t start = 0;
  while (start < out.size()) {
    size_t end = out.find('\n', start);
    if (end == std::string::npos) end = out.size();
    std::string line = out.substr(start, end - start);
    if (line.find(file) != std::string::npos && (line.find("error") != std::string::npos || line.find("warn") != std::string::npos))
      return true;
    start = end + 1;
  }
  return false;
}

std::string tail(const std::string& s, size_t n = 1500) { return s.size() > n ? "..." + s.substr(s.size() - n) : s; }

}  // namespace

TEST_CASE("damaged checkpoints: resume, eval and sample fail cleanly naming the file, never crash or hang") {
  const std::string bin = liandan::testing::liandan_bin();
  REQUIRE_MESSAGE(!bin.empty(), "LIANDAN_BIN is not set (run through ctest)");
  const bool small = liandan::testing::small_mode();
  const long count = liandan::testing::env_count("LIANDAN_FUZZ_COUNT", small ? 60 : 500);
  const uint64_t seed = uint64_t(liandan::testing::env_count("LIANDAN_FUZZ_SEED", 1));
  const double timeout = small ? 180 : 60;  // one command; normally well under a second

  fs::path root = fs::temp_directory_path() / ("liandan_test_fuzz_ckpt_" + std::to_string(::getpid()));
  fs::remove_all(root);
  fs::create_directories(root);
  std::ofstream(root / "run.toml") << kRunConfig;
  fs::path base = root / "base";
  {
    ProcessResult tr = run_process(bin, {"train", (root / "run.toml").string(), "--run-dir", base.string()}, 10 * timeout, kEnv);
    INFO(tail(tr.output));
    REQUIRE(tr.clean_exit());
    REQUIRE(tr.exit_code == 0);
  }

  // last.safetensors is a hard link of the newest ckpt-N; the older ckpt-M is the fallback.
  const fs::path ck = base / "checkpoints";
  const std::string good = read_bytes(ck / "last.safetensors");
  const SafetensorsContents original = load_safetensors((ck / "last.safetensors").string());
  std::string twin, older;
  for (auto& e : fs::directory_iterator(ck)) {
    std::string name = e.path().filename().string();
    if (name.rfind("ckpt-", 0) != 0) continue;
    (read_bytes(e.path()) == good ? twin : older) = name;
  }
  REQUIRE(!twin.empty());
  REQUIRE(!older.empty());
  REQUIRE(header_len(good) + 8 < good.size());

  const std::vector<std::string> commands = {"resume", "eval", "sample"};
  std::mt19937_64 rng(seed);
  std::map<std::string, long> per_command, per_kind;
  long clean_errors = 0, fallbacks = 0, loadable = 0, crashes = 0, hangs = 0, bad = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (long i = 0; i < count; ++i) {
    const std::string& cmd = commands[size_t(i) % commands.size()];
    const int kind = int(rng() % kNumKinds);
    const bool keep_older = (i / long(commands.size())) % 2 == 1;
    std::string what;
    const std::string damaged = mutate(good, rng, kind, what);
    ++per_command[cmd];
    ++per_kind[kKinds[kind]];

    fs::path run = root / "run";
    fs::remove_all(run);
    fs::copy(base, run, fs::copy_options::recursive);
    const fs::path file = run / "checkpoints" / "last.safetensors";
    const std::string shown = "checkpoints/last.safetensors";  // how errors and warnings name it
    write_bytes(file, damaged);
    write_bytes(run / "checkpoints" / twin, damaged);
    if (!keep_older) fs::remove(run / "checkpoints" / older);

    // What the library says about the damaged file: refused, or loads to exactly the original.
    bool loads = false, same = false;
    try {
      same = same_contents(load_safetensors(file.string()), original);
      loads = true;
    } catch (const Error&) {
    }

    ProcessResult r = run_process(bin, {cmd, run.string()}, timeout, kEnv);
    const std::string ctx = "mutation " + std::to_string(i) + " (seed " + std::to_string(seed) + "): " + what + "; `" +
                            cmd + "`" + (keep_older ? " with " + older + " kept" : " as the only checkpoint") +
                            "; exit " + std::to_string(r.exit_code) + "\n" + tail(r.output);
    auto failure = [&](const std::string& why) {
      if (++bad <= 5) FAIL_CHECK(why << ": " << ctx);
    };
    if (r.exit_code == 127 && r.output.empty()) {
      failure("could not run " + bin + " (exec failed: relinked meanwhile?)");
    } else if (r.timed_out) {
      ++hangs;
      failure("timed out");
    } else if (r.signaled || has_sanitizer_report(r.output)) {
      ++crashes;
      failure(r.signaled ? "killed by signal " + std::to_string(r.signal) : std::string("sanitizer report"));
    } else if (loads && !same) {
      failure("the damaged file loads with other values than the original (a silent corruption)");
    } else if (r.exit_code == 0) {
      if (loads) {
        ++loadable;
      } else if (names_file(r.output, shown)) {
        ++fallbacks;  // an older checkpoint was used, with a warning naming the damaged one
      } else {
        failure("exit 0 on a damaged checkpoint without a word about it");
      }
    } else if (loads) {
      failure("the command failed although the checkpoint loads cleanly");
    } else if (names_file(r.output, shown)) {
      ++clean_errors;
    } else {
      failure("the error does not name the damaged checkpoint");
    }
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fs::remove_all(root);

  nlohmann::json by_cmd(per_command), by_kind(per_kind);
  std::string line = nlohmann::json{{"campaign", "checkpoint_mutations"},
                                    {"task", "spirals"},
                                    {"mutations", count},
                                    {"seed", seed},
                                    {"per_command", by_cmd},
                                    {"per_kind", by_kind},
                                    {"clean_errors", clean_errors},
                                    {"fallbacks_naming_the_file", fallbacks},
                                    {"loads_passing_checksums", loadable},
                                    {"failures", bad},
                                    {"crashes", crashes},
                                    {"hangs", hangs},
                                    {"seconds", std::round(seconds * 10) / 10}}
                         .dump();
  MESSAGE(line);
  if (const char* rep = std::getenv("LIANDAN_FUZZ_REPORT")) std::ofstream(rep, std::ios::app) << line << "\n";
  CHECK(bad == 0);
  CHECK(crashes == 0);
  CHECK(hangs == 0);
  CHECK(clean_errors + fallbacks + loadable == count);
  CHECK(clean_errors > 0);  // the error path really ran
}
