// Config hardening (#21): Config's strict parsing and range-checked getters, and a fuzzer that feeds every
// key of every task boundary values through the real `liandan` binary.
//
// The fuzzer takes the keys from the tasks themselves: one short base run per task writes the resolved
// config (RUN_DIR/config.toml: every key the task, the trainer and the optimizer read, with its default), so
// a key added later is fuzzed without touching this file. Then, per key, values chosen by its type —
// integers 0, -1, 2^63-1; floats 0, -1, nan, ±inf, 1e308; strings "", "zzz"; arrays [], [0], [-1]; and a
// value of the wrong type — each one run `liandan train BASE --set key=value` (steps = 1, tiny models,
// synthetic MNIST). Every run must end by itself (no signal, no timeout) with exit 0, or with a non-zero
// exit whose "[error]" line names the key or the value.
//
// CI runs a sample (LIANDAN_FUZZ_COUNT runs, default 200, about 25 s on 2 cores; 12 under the sanitizers' small
// mode, without the variant bases), spread over the bases round-robin; LIANDAN_FUZZ_FULL=1 runs every one
// (about 1,700, 4 minutes). LIANDAN_FUZZ_SEED picks another
// sample, LIANDAN_FUZZ_JOBS the number of parallel runs (2), LIANDAN_FUZZ_REPORT a file that gets one JSON
// line with the counts, LIANDAN_FUZZ_VERBOSE=1 lists the runs that exited 0 (=2: every error message too).
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>
#include <toml++/toml.h>

#include "apps/config.h"
#include "core/data/image_set.h"
#include "core/data/mnist.h"
#include "app_fixtures.h"
#include "core/error.h"
#include "core/random.h"
#include "tests/process.h"

using namespace liandan;
using liandan::apps::Config;
namespace fs = std::filesystem;

namespace {

// ---------------------------------------------------------------- Config: strict values, ranges, unread keys

TEST_CASE("Config::set: one TOML value; out-of-range numbers, line breaks and broken TOML are errors") {
  Config c;
  c.set("steps=3");
  c.set("task=lm");                   // a bare word is a string
  c.set("device=cuda:0");             // so is one with a colon
  c.set("data.corpus=/tmp/x.txt");    // or a path
  c.set("sample.prompt=Once upon");   // words that are not TOML
  c.set("optim.lr=nan");              // TOML's nan and inf are numbers (the readers refuse them where nonsense)
  c.set("empty=");
  CHECK(c.get<int64_t>("steps", 0) == 3);
  CHECK(c.get<std::string>("task", "") == "lm");
  CHECK(c.get<std::string>("device", "") == "cuda:0");
  CHECK(c.get<std::string>("data.corpus", "") == "/tmp/x.txt");
  CHECK(c.get<std::string>("sample.prompt", "") == "Once upon");
  CHECK(std::isnan(c.get<double>("optim.lr", 0.0)));
  CHECK(c.get<std::string>("empty", "x").empty());

  // TOML gives up on these; before, they fell through to bare strings ("must be an integer, got a string").
  CHECK_THROWS_WITH_AS(c.set("steps=99999999999999999999"),
                       "--set: 'steps' = 99999999999999999999 is out of range for a 64-bit integer", Error);
  CHECK_THROWS_WITH_AS(c.set("steps=-9223372036854775809"),
                       "--set: 'steps' = -9223372036854775809 is out of range for a 64-bit integer", Error);
  CHECK_THROWS_WITH_AS(c.set("optim.lr=1e999"), "--set: 'optim.lr' = 1e999 is not a finite number", Error);
  CHECK_THROWS_WITH_AS(c.set("optim.lr=-1.5e400"), "--set: 'optim.lr' = -1.5e400 is not a finite number", Error);
  CHECK(c.get<int64_t>("steps", 0) == 3);  // unchanged by the failed sets

  // A line break would let the value define more keys: before, `steps=3\nfoo=1` set foo too, silently.
  CHECK_THROWS_WITH_AS(c.set("steps=3\nfoo=1"), doctest::Contains("--set steps: the value must be a single TOML value on one line"),
                       Error);
  CHECK_THROWS_WITH_AS(c.set("steps=3\r"), doctest::Contains("on one line"), Error);
  CHECK_FALSE(c.has("foo"));
  // Text that starts like TOML must be TOML.
  CHECK_THROWS_WITH_AS(c.set("eval.lengths=[1, 2"), doctest::Contains("--set: 'eval.lengths' = [1, 2 is not a TOML value"),
                       Error);
  CHECK_THROWS_WITH_AS(c.set("eval.lengths=[1, 99999999999999999999]"), doctest::Contains("not representable"), Error);
  CHECK_THROWS_WITH_AS(c.set("sample.prompt=\"unterminated"), doctest::Contains("quote a string"), Error);
  CHECK_THROWS_WITH_AS(c.set("steps=1.2.3"), doctest::Contains("'steps' = 1.2.3 is not a TOML value"), Error);
  CHECK_THROWS_WITH_AS(c.set("steps=3 foo"), doctest::Contains("quote a string"), Error);  // trailing content
  // Keys are names separated by dots.
  CHECK_THROWS_WITH_AS(c.set("optim..lr=1"), doctest::Contains("bad key 'optim..lr'"), Error);
  CHECK_THROWS_WITH_AS(c.set("optim.=1"), doctest::Contains("bad key 'optim.'"), Error);
  CHECK_THROWS_WITH_AS(c.set("a b=1"), doctest::Contains("bad key 'a b'"), Error);
  CHECK_THROWS_WITH_AS(c.set("=1"), "--set expects key=value, got '=1'", Error);
}

TEST_CASE("Config: range-checked getters name the key, the range and the value") {
  Config c = Config::from_string("batch_size = 0\nlr = nan\nfrac = 1.0\nlens = [16, 0]\nnone = []\nok = 5\n", "r.toml");
  CHECK_THROWS_WITH_AS(c.get_int("batch_size", 8, 1), "config r.toml: 'batch_size' must be >= 1, got 0", Error);
  CHECK_THROWS_WITH_AS(c.get_int("batch_size", 8, 1, 64), "config r.toml: 'batch_size' must be in [1, 64], got 0", Error);
  CHECK_THROWS_WITH_AS(c.get_real("lr", 1e-3, 0, INFINITY), "config r.toml: 'lr' must be a finite number >= 0, got nan",
                       Error);
  CHECK_THROWS_WITH_AS(c.get_real("frac", 0.1, 0, 1, true, true),
                       "config r.toml: 'frac' must be a finite number in (0, 1), got 1", Error);
  CHECK_THROWS_WITH_AS(c.get_ints("lens", {}, 1), "config r.toml: 'lens' must be an array of integers >= 1, got [16, 0]",
                       Error);
  CHECK_THROWS_WITH_AS(c.get_ints("none", {8}, 1, 100, 1),
                       "config r.toml: 'none' must be an array of at least 1 integer, got []", Error);
  CHECK(c.get_int("ok", 0, 1, 5) == 5);
  CHECK(c.get_real("frac", 0.1, 0, 1) == 1.0);
  CHECK(c.get_int("absent", 7, 1) == 7);  // the default is checked and recorded like a given value
  CHECK(c.resolved_text().find("absent = 7") != std::string::npos);
  CHECK_THROWS_WITH_AS(c.get_real("absent_inf", INFINITY, 0, INFINITY), doctest::Contains("got inf"), Error);
}

TEST_CASE("Config::unread_keys: the given keys nothing has read yet (typos, when a task fails early)") {
  Config c = Config::from_string("task = \"vit\"\n[data]\ntrain_limt = 100\n[model]\nd_model = 8\n", "t.toml");
  c.set("optim.lr=0.1");
  CHECK(c.unread_keys() == std::vector<std::string>{"data.train_limt", "model.d_model", "optim.lr", "task"});
  c.get<std::string>("task", "");
  c.get<int64_t>("data.train_limit", 0);  // what the task reads: the typo stays unread
  c.get<int64_t>("model.d_model", 64);
  CHECK(c.unread_keys() == std::vector<std::string>{"data.train_limt", "optim.lr"});
  c.get<double>("optim.lr", 1e-3);
  CHECK(c.unread_keys() == std::vector<std::string>{"data.train_limt"});
  CHECK_THROWS_WITH_AS(c.check_all_used(), doctest::Contains("unknown key 'data.train_limt'"), Error);
}

// ---------------------------------------------------------------- the fuzzer

fs::path scratch(const std::string& name) { return liandan::testing::scratch_dir("test_fuzz_config", name); }

using liandan::testing::synthetic_mnist;

// One base configuration: a task (or an optimizer / process variant of one) in a size that trains one step in
// well under a second.
struct Base {
  std::string name, toml;
};

std::vector<Base> bases(const std::string& data_dir) {
  // Top-level keys first: in TOML, keys after a [table] header belong to that table.
  const std::string top = "steps = 1\nlog_every = 1\neval_every = 1\ncheckpoint_every = 1\ndata_dir = \"" + data_dir + "\"\n";
  const std::string spirals = top + "task = \"spirals\"\nbatch_size = 16\n[data]\ntrain_size = 64\nval_size = 32\n[model]\nhidden = 8\n";
  const std::string toy2d = top + "task = \"toy2d\"\nbatch_size = 16\n[data]\ntrain_size = 64\n[model]\nhidden = 8\nblocks = 1\n"
                                  "[eval]\nsamples = 16\n";
  const std::string mnist = top + "batch_size = 8\n";
  return {
      {"spirals", spirals},
      {"spirals-sgd", spirals + "[optim]\nname = \"sgd\"\nmomentum = 0.9\nschedule = \"step\"\n"},
      {"spirals-amos", spirals + "[optim]\nname = \"amos\"\nschedule = \"inverse_square\"\n[ema]\ndecay = 0.9\n"},
      {"spirals-adam", spirals + "[optim]\nname = \"adam\"\nschedule = \"linear\"\nper_tensor_lr = true\n"},
      {"toy2d", toy2d + "samplers = [\"ddim:2\"]\n[sample]\nsampler = \"ddim:2\"\n"},
      {"toy2d-ve", toy2d + "samplers = [\"ode_euler:2\"]\n[sample]\nsampler = \"em:2\"\n[diffusion]\nprocess = \"ve\"\n"},
      {"toy2d-vp", toy2d + "samplers = [\"rd:2\"]\n[sample]\nsampler = \"pc:2\"\n[diffusion]\nprocess = \"subvp\"\n"},
      {"lm", top + "task = \"lm\"\nbatch_size = 4\n[data]\ncorpus = \"embedded\"\nseq_len = 16\nval_fraction = 0.3\n"
                   "[model]\nd_model = 16\nn_layers = 1\nn_heads = 2\n[eval]\nlengths = [16]\ntokens = 40\n[sample]\nlength = 4\n"},
      {"vit", mnist + "task = \"vit\"\n[model]\nd_model = 8\nn_layers = 1\nn_heads = 2\n"},
      {"mnist_cnn", mnist + "task = \"mnist_cnn\"\n"},
      // Own data (#25): a gzipped 8x8 IDX set by path, every image key given so arrays have elements.
      {"image_cls", mnist + "task = \"image_cls\"\n[data]\ntrain = \"" + data_dir + "/digits/train-images-idx3-ubyte.gz\"\n"
                    "test = \"" + data_dir + "/digits/t10k-images-idx3-ubyte.gz\"\nimage_size = 8\nmean = [0.1]\nstd = [0.3]\n"
                    "crop_padding = 1\nhflip = true\n[model]\nname = \"mlp\"\nhidden = [8]\n"},
      {"text_cls", mnist + "task = \"text_cls\"\n[data]\ntrain = \"" + data_dir + "/text/train.tsv\"\ntest = \"" + data_dir +
                   "/text/test.tsv\"\nmax_len = 16\n[model]\nd_model = 8\nn_layers = 1\nn_heads = 2\n"},
      {"image_cls-vit", mnist + "task = \"image_cls\"\n[model]\nname = \"vit\"\nd_model = 8\nn_layers = 1\nn_heads = 2\n"},
      {"multilabel", mnist + "task = \"multilabel\"\n[data]\ntrain_size = 32\ntest_size = 16\n"},
      {"nxm", mnist + "task = \"nxm\"\n[data]\ntrain_size = 32\ntest_size = 16\n"},
      {"ddpm", top + "task = \"ddpm\"\nbatch_size = 4\n[model]\nbase_channels = 8\nchannel_mult = [1, 2]\ngroups = 4\n"
                     "[sample]\nsampler = \"ddim:2\"\ncount = 2\n[eval]\nsamplers = []\n"},
  };
}

struct Key {
  std::string name;
  toml::node_type type;
  toml::node_type element = toml::node_type::none;  // arrays: the type of their first element, if any
};

// Every leaf of a resolved config.
void leaves(const toml::table& t, const std::string& prefix, std::vector<Key>& out) {
  for (auto& [k, v] : t) {
    std::string key = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (v.is_table()) {
      leaves(*v.as_table(), key, out);
    } else {
      Key kk{key, v.type()};
      if (v.is_array() && !v.as_array()->empty()) kk.element = (*v.as_array())[0].type();
      out.push_back(kk);
    }
  }
}

// Boundary values by type, as --set text; the last is of the wrong type.
std::vector<std::string> values_for(const Key& k) {
  switch (k.type) {
    case toml::node_type::integer:
      // `steps` is the amount of work: 2^63 - 1 steps is a valid, endless run.
      if (k.name == "steps") return {"0", "-1", "\"zzz\""};
      return {"0", "-1", "9223372036854775807", "\"zzz\""};
    case toml::node_type::floating_point: return {"0", "-1", "nan", "inf", "-inf", "1e308", "\"zzz\""};
    case toml::node_type::string: return {"\"\"", "\"zzz\"", "0"};
    case toml::node_type::boolean: return {"\"zzz\"", "0"};
    case toml::node_type::array:
      if (k.element == toml::node_type::string) return {"[]", "[\"\"]", "[\"zzz\"]", "[0]", "\"zzz\""};
      return {"[]", "[0]", "[-1]", "[9223372036854775807]", "[\"zzz\"]", "\"zzz\""};
    default: return {"\"zzz\""};
  }
}

// Keys whose failures are reported but not failed on (none now: the trainer's keys are checked in
// apps/run_settings.cpp, optim.accumulate bounded by 65536 and optim.eta_factor > 0 named).
const std::set<std::string> kPendingTrainerKeys = {};

bool is_word_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

// Whether `word` occurs in `text` with no identifier character on either side.
bool contains_word(const std::string& text, const std::string& word) {
  for (size_t at = text.find(word); at != std::string::npos; at = text.find(word, at + 1)) {
    bool left = at == 0 || !is_word_char(text[at - 1]);
    bool right = at + word.size() >= text.size() || !is_word_char(text[at + word.size()]);
    if (left && right) return true;
  }
  return false;
}

// The "[error]" lines of spdlog's output.
std::string error_lines(const std::string& out) {
  std::string lines;
  std::istringstream is(out);
  for (std::string line; std::getline(is, line);)
    if (line.find("[error]") != std::string::npos) lines += line + "\n";
  return lines;
}

// Whether an error names the key (in full, or its last part as a word: "RoFormerLM: n_layers must be ...") or
// a distinctive value ("zzz", "nan", "9223372036854775807"; not a bare 0 or -1, which any message may hold).
bool names_key_or_value(const std::string& errors, const std::string& key, const std::string& value) {
  if (errors.find(key) != std::string::npos) return true;
  const std::string leaf = key.substr(key.rfind('.') == std::string::npos ? 0 : key.rfind('.') + 1);
  if (contains_word(errors, leaf)) return true;
  std::string bare = value;
  bare.erase(std::remove(bare.begin(), bare.end(), '"'), bare.end());
  if (bare == "1e308" && errors.find("1e+308") != std::string::npos) return true;
  return bare.size() >= 3 && errors.find(bare) != std::string::npos;
}

// A finite but enormous rate (optim.lr = 1e308) is not refused: the first step overflows, and the trainer
// stops with its divergence error, which names the tensor that went non-finite rather than the key.
bool diverged(const std::string& errors) {
  return errors.find("NaN or Inf") != std::string::npos || errors.find("not finite") != std::string::npos;
}

struct Run {
  std::string base, key, value;
};

struct Outcome {
  enum Kind { ok, clear, diverged, crash, hang, unclear } kind = ok;
  std::string detail;
};

// The tester's reproducers of #21, each a signal or a misleading message before: now an error naming the key or
// option and the value.
TEST_CASE("#21 reproducers: each is an error naming the key and the bad value, not a signal") {
  using namespace liandan::testing;
  const std::string bin = liandan_bin();
  if (bin.empty()) {
    MESSAGE("LIANDAN_BIN is not set (CTest sets it): the reproducers are skipped");
    return;
  }
  fs::path dir = scratch("repro");
  const std::vector<std::string> lm = {"--set", "task=lm", "--set", "data.corpus=embedded", "--set", "data.seq_len=16",
                                       "--set", "model.d_model=16", "--set", "model.n_layers=1", "--set", "eval.tokens=40",
                                       "--set", "data.val_fraction=0.3", "--set", "sample.length=4", "--set", "eval.lengths=[16]",
                                       "--set", "steps=1"};
  const std::vector<std::string> toy = {"--set", "task=toy2d", "--set", "data.train_size=64", "--set", "model.hidden=8",
                                        "--set", "eval.samples=16", "--set", "sample.sampler=ddim:2", "--set", "steps=1"};
  const std::vector<std::string> spirals = {"--set", "task=spirals", "--set", "data.train_size=64", "--set", "steps=1"};
  struct Case {
    const std::vector<std::string>* base;
    std::string set, expected;
  } cases[] = {
      {&lm, "eval.lengths=[]", "'eval.lengths' must be an array of at least 1 integer, got []"},       // was SIGSEGV
      {&lm, "eval.lengths=[0]", "'eval.lengths' must be an array of integers in [1, 1048576], got [0]"},  // SIGFPE
      {&lm, "model.n_layers=0", "RoFormerLM: n_layers must be in [1, 65536], got 0"},                 // SIGSEGV
      {&lm, "model.n_layers=-1", "RoFormerLM: n_layers must be in [1, 65536], got -1"},  // std::vector max_size()
      {&lm, "model.d_ff=0", "RoFormerLM: d_ff must be in [1, 16777216], got 0"},         // a view error
      {&lm, "batch_size=0", "'batch_size' must be in [1, 1048576], got 0"},  // "mean: reducing over zero elements"
      {&lm, "eval.tokens=0", "'eval.tokens' must be >= 1, got 0"},            // blamed the validation text
      {&lm, "model.dropout=-1", "RoFormerLM: dropout must be in [0, 1), got -1"},  // accepted
      {&lm, "model.dropout=nan", "RoFormerLM: dropout must be in [0, 1), got nan"},
      {&lm, "sample.temperature=0", "'sample.temperature' must be a finite number > 0, got 0"},  // accepted
      {&lm, "sample.temperature=nan", "'sample.temperature' must be a finite number > 0, got nan"},
      {&lm, "sample.top_k=-1", "'sample.top_k' must be >= 0, got -1"},
      {&lm, "steps=99999999999999999999", "'steps' = 99999999999999999999 is out of range for a 64-bit integer"},
      {&lm, "optim.lr=1e999", "'optim.lr' = 1e999 is not a finite number"},  // both: "got a string"
      {&lm, "steps=3\nfoo=1", "--set steps: the value must be a single TOML value on one line"},  // dropped foo
      {&lm, "eval.tokens=9223372036854775807", ""},  // valid (all validation tokens); eval.tokens + 1 overflowed
      {&toy, "batch_size=0", "'batch_size' must be in [1, 1048576], got 0"},  // SIGSEGV in diffusion::ddpm_loss
      {&toy, "eval.samples=0", "'eval.samples' must be in [1, 1048576], got 0"},  // SIGSEGV
      {&spirals, "batch_size=0", "'batch_size' must be in [1, 10000000], got 0"},  // "loss is -nan"
  };
  int i = 0;
  for (const Case& c : cases) {
    CAPTURE(c.set);
    std::vector<std::string> args = {"train"};
    args.insert(args.end(), c.base->begin(), c.base->end());
    args.insert(args.end(), {"--set", c.set, "--run-dir", (dir / std::to_string(i++)).string()});
    ProcessResult r = run_process(bin, args, small_mode() ? 120 : 30, {"OMP_NUM_THREADS=1"});
    INFO(r.output);
    REQUIRE(r.clean_exit());
    if (c.expected.empty()) {
      CHECK(r.exit_code == 0);
    } else {
      CHECK(r.exit_code == 1);
      CHECK(error_lines(r.output).find(c.expected) != std::string::npos);
    }
  }
}

TEST_CASE("Config fuzzer: every key of every task, boundary values: exit 0 or an error naming the key or value") {
  using namespace liandan::testing;
  const std::string bin = liandan_bin();
  if (bin.empty()) {
    MESSAGE("LIANDAN_BIN is not set (CTest sets it): the config fuzzer is skipped");
    return;
  }
  const bool full = env_count("LIANDAN_FUZZ_FULL", 0) != 0;
  const long count = env_count("LIANDAN_FUZZ_COUNT", small_mode() ? 12 : 200);
  const long jobs = std::max(1L, env_count("LIANDAN_FUZZ_JOBS", 2));
  const double timeout_s = small_mode() ? 120 : 30;
  const std::vector<std::string> child_env = {"OMP_NUM_THREADS=1", "OMP_WAIT_POLICY=PASSIVE"};

  fs::path dir = scratch("fuzz");
  const std::string data_dir = synthetic_mnist(dir / "data", 64, 32).string();
  Generator digits(2);
  data::write_idx_image_set(data::synthetic_digits(64, 8, 1, digits), data_dir + "/digits", "train");
  data::write_idx_image_set(data::synthetic_digits(32, 8, 1, digits), data_dir + "/digits", "t10k");
  fs::create_directories(data_dir + "/text");
  for (const char* split : {"train", "test"}) {
    std::ofstream f(data_dir + "/text/" + split + ".tsv");
    for (int i = 0; i < 16; ++i) f << (i % 3 ? "a" : "a,b") << "\t" << (i % 2 ? "some words" : "other text here") << "\n";
  }

  // One base run per configuration: it must succeed, and its resolved config lists the keys.
  std::map<std::string, fs::path> base_config;  // name -> resolved config.toml (the fuzz runs' config)
  std::map<std::string, std::vector<Key>> base_keys;
  std::set<std::string> tasks;
  // Under the sanitizers (small mode) only the tasks' own bases, not the optimizer / process variants.
  std::vector<Base> all_bases;
  for (const Base& b : bases(data_dir))
    if (!small_mode() || b.name.find('-') == std::string::npos) all_bases.push_back(b);
  for (const Base& b : all_bases) {
    CAPTURE(b.name);
    fs::path src = dir / (b.name + ".toml"), run = dir / ("base-" + b.name);
    std::ofstream(src) << b.toml;
    ProcessResult r = run_process(bin, {"train", src.string(), "--run-dir", run.string()}, timeout_s * 2, child_env);
    INFO(r.output);
    REQUIRE(r.clean_exit());
    REQUIRE(r.exit_code == 0);
    base_config[b.name] = run / "config.toml";
    toml::table resolved = toml::parse_file((run / "config.toml").string());
    leaves(resolved, "", base_keys[b.name]);
    tasks.insert(resolved["task"].value_or(std::string()));
  }

  // The tasks' own schema (`liandan config TASK --json`, what users read): every key a base run of the task resolved
  // is in it, and its keys that the base runs did not resolve are fuzzed on the task's first base too.
  for (const std::string& task : tasks) {
    CAPTURE(task);
    ProcessResult r = run_process(bin, {"config", task, "--json"}, timeout_s, child_env);
    REQUIRE(r.exit_code == 0);
    nlohmann::json schema = nlohmann::json::parse(r.output.substr(r.output.find('[')));
    std::set<std::string> in_schema;
    for (auto& k : schema) in_schema.insert(k["key"].get<std::string>());
    if (base_keys.count(task))
      for (const Key& k : base_keys[task]) {
        CAPTURE(k.name);
        CHECK(in_schema.count(k.name));
      }
    std::string first;
    for (const Base& b : all_bases)
      if (first.empty() && b.name.substr(0, b.name.find('-')) == task) first = b.name;
    std::set<std::string> have;
    for (const Key& k : base_keys[first]) have.insert(k.name);
    const std::map<std::string, std::pair<toml::node_type, toml::node_type>> types = {
        {"integer", {toml::node_type::integer, toml::node_type::none}},
        {"number", {toml::node_type::floating_point, toml::node_type::none}},
        {"boolean", {toml::node_type::boolean, toml::node_type::none}},
        {"string", {toml::node_type::string, toml::node_type::none}},
        {"integers", {toml::node_type::array, toml::node_type::integer}},
        {"numbers", {toml::node_type::array, toml::node_type::floating_point}},
        {"strings", {toml::node_type::array, toml::node_type::string}}};
    for (auto& k : schema) {
      std::string name = k["key"];
      if (have.count(name) || !k["when"].get<std::string>().empty() || !types.count(k["type"])) continue;
      auto [type, element] = types.at(k["type"]);
      base_keys[first].push_back(Key{name, type, element});
    }
  }

  // Every (base, key, value); variants fuzz only the keys their base run does not have.
  std::map<std::string, std::vector<Run>> per_base;
  std::set<std::pair<std::string, std::string>> seen;  // (task, key)
  std::set<std::string> keys_all;
  for (const Base& b : all_bases) {
    std::string task = b.name.substr(0, b.name.find('-'));
    for (const Key& k : base_keys[b.name]) {
      if (!seen.insert({task, k.name}).second) continue;
      keys_all.insert(task + ":" + k.name);
      for (const std::string& v : values_for(k)) per_base[b.name].push_back({b.name, k.name, v});
    }
  }
  // A sample spread over the bases: shuffled within each, then taken round-robin.
  std::mt19937_64 rng(uint64_t(env_count("LIANDAN_FUZZ_SEED", 21)));
  std::vector<Run> runs;
  size_t total = 0;
  for (auto& [name, list] : per_base) {
    std::shuffle(list.begin(), list.end(), rng);
    total += list.size();
  }
  for (size_t i = 0; runs.size() < total; ++i)
    for (auto& [name, list] : per_base)
      if (i < list.size()) runs.push_back(list[i]);
  if (!full && long(runs.size()) > count) runs.resize(size_t(std::max(0L, count)));

  std::vector<Outcome> outcomes(runs.size());
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i; (i = next++) < runs.size();) {
      const Run& r = runs[i];
      fs::path run_dir = dir / ("run-" + std::to_string(i));
      ProcessResult p = run_process(bin, {"train", base_config[r.base].string(), "--set", r.key + "=" + r.value,
                                          "--run-dir", run_dir.string()}, timeout_s, child_env);
      Outcome& o = outcomes[i];
      std::string errors = error_lines(p.output);
      if (p.timed_out) o = {Outcome::hang, "timed out after " + std::to_string(int(timeout_s)) + " s"};
      else if (p.signaled) o = {Outcome::crash, "signal " + std::to_string(p.signal)};
      else if (p.exit_code == 0) o = {Outcome::ok, ""};
      else if (!errors.empty() && names_key_or_value(errors, r.key, r.value)) o = {Outcome::clear, ""};
      else if (r.value == "1e308" && diverged(errors)) o = {Outcome::diverged, ""};
      else o = {Outcome::unclear, "exit " + std::to_string(p.exit_code)};
      if (o.kind == Outcome::clear) o.detail = errors.substr(0, errors.find('\n'));
      if (o.kind != Outcome::ok && o.kind != Outcome::clear) {
        std::string tail = p.output.size() > 600 ? p.output.substr(p.output.size() - 600) : p.output;
        o.detail += ": " + (errors.empty() ? tail : errors);
      }
      fs::remove_all(run_dir);
    }
  };
  std::vector<std::thread> pool;
  for (long j = 0; j < jobs; ++j) pool.emplace_back(worker);
  for (auto& t : pool) t.join();

  // 1: also list the runs that exited 0; 2: and every error message.
  const long verbose = env_count("LIANDAN_FUZZ_VERBOSE", 0);
  long n_ok = 0, n_clear = 0, n_diverged = 0, n_crash = 0, n_hang = 0, n_unclear = 0, n_pending = 0;
  for (size_t i = 0; i < runs.size(); ++i) {
    const Run& r = runs[i];
    const Outcome& o = outcomes[i];
    switch (o.kind) {
      case Outcome::ok:
        ++n_ok;
        if (verbose) MESSAGE("exit 0: " << r.base << ": --set " << r.key << "=" << r.value);
        continue;
      case Outcome::clear:
        ++n_clear;
        if (verbose >= 2) MESSAGE("error: " << r.base << ": --set " << r.key << "=" << r.value << ": " << o.detail);
        continue;
      case Outcome::diverged: ++n_diverged; continue;
      case Outcome::crash: ++n_crash; break;
      case Outcome::hang: ++n_hang; break;
      case Outcome::unclear: ++n_unclear; break;
    }
    const std::string what = r.base + ": --set " + r.key + "=" + r.value + ": " + o.detail;
    if (kPendingTrainerKeys.count(r.key)) {
      ++n_pending;
      MESSAGE("trainer-owned key, pending (#21): " << what);
      continue;
    }
    FAIL_CHECK(what);
  }
  MESSAGE("config fuzzer: " << tasks.size() << " tasks, " << keys_all.size() << " (task, key) pairs, " << runs.size()
                            << " runs of " << total << ": exit 0 " << n_ok << ", clear errors " << n_clear
                            << ", divergence stops (1e308 rates) " << n_diverged << ", crashes "
                            << n_crash << ", hangs " << n_hang << ", unclear " << n_unclear << " (of them on trainer-owned keys "
                            << n_pending << ")");
  if (const char* report = std::getenv("LIANDAN_FUZZ_REPORT"); report && *report) {
    std::ofstream(report, std::ios::app) << "{\"test\": \"test_fuzz_config\", \"tasks\": " << tasks.size()
                                         << ", \"keys\": " << keys_all.size() << ", \"runs\": " << runs.size()
                                         << ", \"possible_runs\": " << total << ", \"exit0\": " << n_ok
                                         << ", \"clear_errors\": " << n_clear << ", \"diverged\": " << n_diverged
                                         << ", \"crashes\": " << n_crash
                                         << ", \"hangs\": " << n_hang << ", \"unclear\": " << n_unclear
                                         << ", \"pending_trainer_keys\": " << n_pending << "}\n";
  }
  CHECK(runs.size() > 0);
  CHECK(tasks.size() == 10);
  fs::remove_all(dir.parent_path());
}

}  // namespace
