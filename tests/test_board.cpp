// `liandan board` (apps/board.h): run discovery and status, the metrics endpoint on a half-written file, and the
// real server (the liandan binary on a free port) answered through cpp-httplib's client, fuzzed with damaged
// metrics.jsonl / summary.json / config.toml: every answer is JSON, the server never dies.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <random>
#include <thread>

#include <httplib.h>

#include "app_fixtures.h"
#include "apps/board.h"
#include "apps/history.h"
#include "apps/run_dir.h"
#include "process.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace liandan;

namespace {

void put(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << text;
}

// A run directory as the trainer leaves it (config, two logged steps, an evaluation; summary if given).
fs::path make_run(const fs::path& root, const std::string& name, const std::string& status, double lr = 0.1) {
  fs::path d = root / name;
  put(d / "config.toml", "task = \"spirals\"\nsteps = 600\n[optim]\nname = \"sgd\"\nlr = " + std::to_string(lr) + "\n");
  put(d / "metrics.jsonl",
      "{\"step\":50,\"loss\":1.0,\"lr\":0.1,\"time_s\":1.0}\n{\"step\":100,\"loss\":0.5,\"lr\":0.1,\"time_s\":2.0}\n"
      "{\"step\":100,\"eval\":{\"accuracy\":0.9}}\n");
  put(d / "samples" / "final.txt", "hello");
  if (!status.empty()) put(d / "summary.json", json{{"status", status}, {"step", 100}}.dump());
  return d;
}

// `liandan board DIR --port 0` in a child process; the port it printed.
struct BoardProcess {
  pid_t pid = -1;
  int port = 0;
  explicit BoardProcess(const fs::path& dir) {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::dup2(fds[1], 1);
      ::close(fds[0]);
      std::string bin = testing::liandan_bin();
      ::execl(bin.c_str(), bin.c_str(), "board", dir.c_str(), "--port", "0", (char*)nullptr);
      ::_exit(127);
    }
    ::close(fds[1]);
    std::string out;
    char c;
    while (out.find('\n') == std::string::npos && ::read(fds[0], &c, 1) == 1) out += c;  // the first line
    ::close(fds[0]);
    auto colon = out.rfind(':', out.find("/ "));
    if (colon != std::string::npos) port = std::atoi(out.c_str() + colon + 1);
    INFO("board printed: " << out);
    REQUIRE(port > 0);
  }
  bool alive() const { return ::waitpid(pid, nullptr, WNOHANG) == 0; }
  ~BoardProcess() {
    if (pid > 0) {
      ::kill(pid, SIGTERM);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

json get_json(httplib::Client& cli, const std::string& path, int* status = nullptr) {
  auto res = cli.Get(path.c_str());
  REQUIRE_MESSAGE(res, "no answer to " << path);
  if (status) *status = res->status;
  json j = json::parse(res->body, nullptr, false);
  INFO(path << " -> " << res->body.substr(0, 200));
  REQUIRE(!j.is_discarded());
  return j;
}

}  // namespace

TEST_CASE("board: runs found in a parent folder, each with its status") {
  fs::path root = testing::scratch_dir("board", "status");
  make_run(root, "a-finished", "completed");
  make_run(root, "b-failed", "failed");
  make_run(root, "c-interrupted", "interrupted");
  make_run(root, "d-killed", "");  // no summary, no live lock: killed
  fs::path live = make_run(root, "e-running", "interrupted");  // resumed: the old summary, a live lock
  fs::create_directories(root / "not-a-run" / "x");
  put(root / "junk.txt", "x");
  apps::RunLock lock(live);

  auto runs = apps::find_runs({root.string()});
  REQUIRE(runs.size() == 5);
  json j = apps::runs_json(runs);
  std::map<std::string, std::string> status;
  for (auto& r : j) status[r["name"]] = r["status"];
  CHECK(status["a-finished"] == "finished");
  CHECK(status["b-failed"] == "failed");
  CHECK(status["c-interrupted"] == "interrupted");
  CHECK(status["d-killed"] == "interrupted");
  CHECK(status["e-running"] == "running");
  CHECK(j[0]["config"]["optim.lr"] == "0.1");
  CHECK(j[0]["samples"][0]["text"] == "hello");
  // the same directory twice: two names
  auto twice = apps::find_runs({(root / "a-finished").string(), (root / "a-finished").string()});
  REQUIRE(twice.size() == 2);
  CHECK(twice[1].name == "a-finished~2");
}

TEST_CASE("board: metrics since K, half-written last line and junk lines") {
  fs::path root = testing::scratch_dir("board", "metrics");
  fs::path d = make_run(root, "r", "");
  json all = apps::run_metrics_json(d, 0);
  CHECK(all["lines"].size() == 3);
  CHECK(all["next"] == 3);
  json rest = apps::run_metrics_json(d, 2);
  REQUIRE(rest["lines"].size() == 1);
  CHECK(rest["lines"][0]["eval"]["accuracy"] == 0.9);
  {
    std::ofstream f(d / "metrics.jsonl", std::ios::app);
    f << "garbage\n{\"step\":150,\"lo";  // a junk line, then a line being written
  }
  json more = apps::run_metrics_json(d, 3);
  CHECK(more["lines"].empty());
  CHECK(more["skipped"] == 1);
  CHECK(more["next"] == 4);  // the partial line is read on the next poll, once complete
  {
    std::ofstream f(d / "metrics.jsonl", std::ios::app);
    f << "ss\":0.25}\n";
  }
  json done = apps::run_metrics_json(d, 4);
  REQUIRE(done["lines"].size() == 1);
  CHECK(done["lines"][0]["loss"] == 0.25);
}

TEST_CASE("board: the server answers JSON to everything, damaged files included (fuzz)") {
  if (testing::liandan_bin().empty()) return;
  fs::path root = testing::scratch_dir("board", "server");
  make_run(root, "good", "completed", 0.1);
  make_run(root, "other", "completed", 0.3);
  fs::path bad = make_run(root, "bad", "");
  BoardProcess b(root);
  httplib::Client cli("127.0.0.1", b.port);
  cli.set_read_timeout(10, 0);

  auto page = cli.Get("/");
  REQUIRE(page);
  CHECK(page->status == 200);
  CHECK(page->body.find("id=\"charts\"") != std::string::npos);
  json runs = get_json(cli, "/api/runs");
  CHECK(runs.size() == 3);
  CHECK(get_json(cli, "/api/run/good/metrics?since=1")["lines"].size() == 2);
  int st = 0;
  CHECK(get_json(cli, "/api/run/nope/metrics", &st).contains("error"));
  CHECK(st == 404);
  CHECK(get_json(cli, "/api/run/good/metrics?since=-3", &st).contains("error"));
  CHECK(st == 400);
  CHECK(get_json(cli, "/api/run/good/samples/..%2F..%2Fconfig.toml", &st).contains("error"));  // no way out
  CHECK(st == 404);
  auto sample = cli.Get("/api/run/good/samples/final.txt");
  REQUIRE(sample);
  CHECK(sample->body == "hello");

  // Damaged files: random bytes, truncations of valid files, deep nesting, huge numbers.
  std::mt19937 rng(7);
  std::string valid_metrics = "{\"step\":50,\"loss\":1.0,\"lr\":0.1}\n{\"step\":100,\"eval\":{\"acc\":0.9}}\n";
  std::string valid_summary = json{{"status", "completed"}, {"step", 100}, {"eval", {{"acc", 0.9}}}}.dump();
  std::string valid_config = "task = \"spirals\"\n[optim]\nlr = 0.1\n";
  auto mutate = [&](const std::string& s) {
    std::string m = s;
    switch (rng() % 5) {
      case 0: m.resize(rng() % (s.size() + 1)); break;
      case 1: for (int i = 0; i < 4; ++i) m[rng() % m.size()] = char(rng()); break;
      case 2: m = std::string(rng() % 300, '['); break;
      case 3: m = "{\"step\":1e999999,\"loss\":[[[[[[[[[[\n\xff\xfe\n"; break;
      default: for (int i = 0; i < 64; ++i) m += char(rng()); break;
    }
    return m;
  };
  int trials = testing::small_mode() ? 20 : 60, answered = 0;
  for (int t = 0; t < trials; ++t) {
    put(bad / "metrics.jsonl", mutate(valid_metrics));
    put(bad / "summary.json", mutate(valid_summary));
    put(bad / "config.toml", mutate(valid_config));
    json r = get_json(cli, "/api/runs");
    REQUIRE(r.is_array());
    json m = get_json(cli, "/api/run/bad/metrics?since=" + std::to_string(rng() % 3));
    CHECK((m.contains("lines") || m.contains("error")));
    ++answered;
  }
  CHECK(answered == trials);
  CHECK(b.alive());
}

TEST_CASE("plots: one PNG per unit, smoothed training loss") {
  // smooth_ema: a constant stays constant (debiased), and a step moves by (1 - a) per value
  auto c = apps::smooth_ema({2, 2, 2}, 0.9);
  for (double v : c) CHECK(v == doctest::Approx(2.0));
  auto st = apps::smooth_ema({0, 1}, 0.5);  // m1 = 0, m2 = 0.5 / (1 - 0.25)
  CHECK(st[1] == doctest::Approx(0.5 / 0.75));
  fs::path d = testing::scratch_dir("board", "plots") / "lm-s3";
  fs::create_directories(d);
  apps::History h;
  for (int i = 1; i <= 20; ++i) h.add(json{{"step", i * 10}, {"loss", 3.0 / i}});
  h.add(json{{"step", 200}, {"eval", {{"val_loss", 1.0}, {"val_bpc", 1.4}, {"accuracy", 0.5}, {"ode/nfe", 40}}}});
  h.plot(d.string(), "lm");
  CHECK(fs::exists(d / "curves.png"));             // nats: training and held-out loss
  CHECK(fs::exists(d / "metrics.png"));            // fractions
  CHECK(fs::exists(d / "metrics-bits.png"));       // bpc on its own axis
  CHECK(fs::exists(d / "metrics-evaluations.png"));  // NFE apart from distances
}
