// Discoverable configs (#25): `liandan config TASK` lists every key a task reads, with its type, default, range and
// meaning; the printed file is a valid config that trains; a key no task reads is refused before any data loads
// (with the closest known key); `train --dry-run` reports the model without training or writing anything.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "app_fixtures.h"
#include "apps/config_keys.h"
#include "apps/task.h"
#include "process.h"

using namespace liandan;
using json = nlohmann::json;
using liandan::testing::ProcessResult;
namespace fs = std::filesystem;

namespace {
fs::path scratch(const std::string& name) { return liandan::testing::scratch_dir("test_apps_config", name); }
const std::vector<std::string> kEnv = {"OMP_NUM_THREADS=1", "OMP_WAIT_POLICY=PASSIVE"};

ProcessResult liandan_cli(const std::vector<std::string>& args) {
  return liandan::testing::run_process(liandan::testing::liandan_bin(), args, 120, kEnv);
}

std::string read_text(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The task names `liandan info` prints (the registry's own list, not one kept here).
std::vector<std::string> tasks() {
  std::vector<std::string> out;
  for (auto& [name, help] : apps::task_list()) out.push_back(name);
  return out;
}
}  // namespace

TEST_CASE("liandan config TASK: every key has a type, a default that is valid TOML, and a meaning") {
  REQUIRE(tasks().size() >= 10);
  for (const std::string& task : tasks()) {
    CAPTURE(task);
    ProcessResult r = liandan_cli({"config", task, "--json"});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    json keys = json::parse(r.output.substr(r.output.find('[')));
    std::set<std::string> names;
    for (auto& k : keys) {
      std::string key = k["key"];
      CAPTURE(key);
      names.insert(key);
      CHECK(!k["type"].get<std::string>().empty());
      CHECK(!k["meaning"].get<std::string>().empty());  // apps/config_keys.cpp has a line for it
      if (k["range"] != "required") {                   // the default reads back as a TOML value of the type
        toml::table t = toml::parse("v = " + k["default"].get<std::string>());
        std::string type = k["type"];
        toml::node& v = *t.get("v");
        if (type == "integer") CHECK(v.is_integer());
        if (type == "number") CHECK(v.is_floating_point());
        if (type == "boolean") CHECK(v.is_boolean());
        if (type == "string") CHECK(v.is_string());
        if (type == "integers" || type == "numbers" || type == "strings") CHECK(v.is_array());
      }
    }
    // The trainer's keys are in every task's schema, the optimizers' conditional keys too.
    for (const char* k : {"task", "seed", "steps", "optim.lr", "optim.beta", "optim.momentum", "optim.half_life",
                          "dist.zero", "dist.chunks", "ema.decay", "log.tensorboard", "precision"})
      CHECK(names.count(k));
  }
}

TEST_CASE("liandan config TASK: the printed file is a config that trains, and its defaults are the task's") {
  fs::path dir = scratch("printed");
  for (const std::string task : {"spirals", "toy2d"}) {
    CAPTURE(task);
    ProcessResult r = liandan_cli({"config", task});
    REQUIRE(r.exit_code == 0);
    fs::path cfg = dir / (task + ".toml");
    std::ofstream(cfg) << r.output;
    // Parsed as TOML, every line commented: the same keys and values as the JSON form.
    toml::table t = toml::parse(r.output);
    CHECK(t["task"].value_or(std::string()) == task);
    std::vector<std::string> args{"train", cfg.string(), "--run-dir", (dir / task).string(), "--set", "steps=2",
                                  "--set", "data.train_size=64"};
    if (task == std::string("toy2d")) args.insert(args.end(), {"--set", "eval.samples=16"});
    ProcessResult tr = liandan_cli(args);
    INFO(tr.output);
    REQUIRE(tr.exit_code == 0);
    // The run resolved every key to the printed value (the three set above aside): the defaults are the task's.
    toml::table resolved = toml::parse_file((dir / task / "config.toml").string());
    json keys = json::parse(liandan_cli({"config", task, "--json"}).output);
    int compared = 0;
    for (auto& k : keys) {
      std::string key = k["key"];
      if (key == "steps" || key == "eval.samples" || key == "data.train_size" || k["range"] == "required") continue;
      auto node = resolved.at_path(key);
      if (!node) continue;  // conditional keys (the other optimizers') are not in this run
      std::ostringstream os;
      node.node()->visit([&](auto& v) { os << v; });
      toml::table a = toml::parse("v = " + k["default"].get<std::string>());
      toml::table b = toml::parse("v = " + os.str());
      CAPTURE(key);
      CHECK(a == b);
      ++compared;
    }
    CHECK(compared >= 30);
  }
}

TEST_CASE("config keys: every key read in apps/ has a meaning, and a key no task reads is refused before data loads") {
  // A scan of the sources for the Config getters' literal keys: the table cannot fall behind the code.
  std::regex getter(R"re(\b(?:get|get_int|get_real|get_ints|require)\s*(?:<[^;()]*?>)?\s*\(\s*"([A-Za-z_0-9.]+)")re");
  std::set<std::string> found;
  for (auto& e : fs::recursive_directory_iterator(LIANDAN_SOURCE_DIR "/apps")) {
    std::string ext = e.path().extension().string();
    if ((ext != ".cpp" && ext != ".h") || e.path().filename() == "config.cpp") continue;
    std::string src = read_text(e.path());
    for (std::sregex_iterator it(src.begin(), src.end(), getter), end; it != end; ++it) found.insert((*it)[1]);
  }
  CHECK(found.size() >= 120);
  for (const std::string& k : found) {
    CAPTURE(k);
    CHECK(apps::key_meanings().count(k));
  }
  // A misspelt data key on an MNIST task whose data does not exist: the typo is named, not "not found".
  fs::path dir = scratch("typo");
  fs::path cfg = dir / "vit.toml";
  std::ofstream(cfg) << "task = \"vit\"\ndata_dir = \"" << (dir / "nowhere").string() << "\"\n[data]\ntrian = \"x.gz\"\n";
  ProcessResult r = liandan_cli({"train", cfg.string(), "--run-dir", (dir / "run").string()});
  INFO(r.output);
  CHECK(r.exit_code != 0);
  CHECK(r.output.find("unknown key 'data.trian'") != std::string::npos);
  CHECK(r.output.find("did you mean 'data.train'?") != std::string::npos);
  CHECK(r.output.find("not found") == std::string::npos);
  CHECK(r.output.find("not a folder") == std::string::npos);
}

TEST_CASE("liandan config and --dry-run on bad input: clear errors, exit 1, never a signal") {
  ProcessResult r = liandan_cli({"config", "nope"});
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("unknown task 'nope' (known: ddpm, image_cls, lm") != std::string::npos);
  r = liandan_cli({"config"});
  CHECK(r.exit_code != 0);
  CHECK(!r.signaled);
  CHECK(r.output.find("task") != std::string::npos);
  fs::path dir = scratch("dry_bad");
  fs::path cfg = dir / "bad.toml";
  std::ofstream(cfg) << "task = \"spirals\"\n[model]\nhidden = 0\n";
  r = liandan_cli({"train", cfg.string(), "--dry-run", "--run-dir", (dir / "run").string()});
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("model.hidden") != std::string::npos);
  CHECK(!fs::exists(dir / "run"));
}

TEST_CASE("liandan train --dry-run: the parameter count of the real run, a memory estimate, nothing written") {
  fs::path dir = scratch("dry");
  fs::path cfg = dir / "spirals.toml";
  std::ofstream(cfg) << "task = \"spirals\"\nsteps = 1\nbatch_size = 16\n[data]\ntrain_size = 64\nval_size = 32\n"
                        "[model]\nhidden = 24\n[ema]\ndecay = 0.9\n";
  ProcessResult d = liandan_cli({"train", cfg.string(), "--run-dir", (dir / "run").string(), "--dry-run"});
  INFO(d.output);
  REQUIRE(d.exit_code == 0);
  CHECK(!fs::exists(dir / "run"));  // nothing written
  std::smatch m;
  REQUIRE(std::regex_search(d.output, m, std::regex(R"(parameters: (\d+) )")));
  int64_t params = std::stoll(m[1]);
  CHECK(d.output.find("+ EMA") != std::string::npos);
  CHECK(d.output.find("hidden = 24") != std::string::npos);  // the resolved config
  CHECK(d.output.find("weight_decay = ") != std::string::npos);
  ProcessResult t = liandan_cli({"train", cfg.string(), "--run-dir", (dir / "run").string()});
  REQUIRE(t.exit_code == 0);
  json summary = json::parse(read_text(dir / "run" / "summary.json"));
  CHECK(summary["parameters"].get<int64_t>() == params);
  // 2 -> 24 -> 24 -> 3 arms, with biases (two hidden layers by default).
  CHECK(params == 2 * 24 + 24 + 24 * 24 + 24 + 24 * 3 + 3);
}
