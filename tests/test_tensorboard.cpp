// TensorBoard event files (apps/tensorboard.h): CRC32C against its published check value, and the files read back
// by an independent reader (tests/tensorboard/read_events.py: python3-protobuf, event.proto compiled by protoc,
// its own CRC32C) — skipped with a message when python3-protobuf or protoc is absent.
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "app_fixtures.h"
#include "apps/history.h"
#include "apps/tensorboard.h"
#include "process.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace liandan;

TEST_CASE("tensorboard: CRC32C check values") {
  CHECK(apps::crc32c("123456789", 9) == 0xE3069283u);  // the CRC-32C check value (RFC 3720 and every CRC catalogue)
  std::string zeros(32, '\0');
  CHECK(apps::crc32c(zeros.data(), zeros.size()) == 0x8A9136AAu);  // RFC 3720 B.4: 32 bytes of zeros
}

TEST_CASE("tensorboard: scalars and images read back by protobuf") {
  fs::path dir = testing::scratch_dir("tensorboard", "events");
  std::string file;
  {
    apps::History h;
    h.open_tensorboard((dir / "tb").string());
    file = h.tensorboard->path();
    h.add(json{{"step", 10}, {"loss", 2.5}, {"lr", 0.001}});
    h.add(json{{"step", 20}, {"eval", {{"accuracy", 0.75}, {"val_loss", 0.5}}}});
    h.tensorboard->add_image("samples/grid", std::string("\x89PNG fake", 9), 28, 56, 1, 20);
  }
  std::string python = fs::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
  auto r = testing::run_process(python, {LIANDAN_SOURCE_DIR "/tests/tensorboard/read_events.py", file, dir.string()}, 60);
  if (r.exit_code == 3) {
    MESSAGE("SKIPPED the independent reader: " << r.output);
    return;
  }
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  std::vector<json> recs;
  std::istringstream in(r.output);
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] == '{') recs.push_back(json::parse(line));
  REQUIRE(recs.size() == 6);  // version, loss, lr, accuracy, val_loss, image
  CHECK(recs[0]["file_version"] == "brain.Event:2");
  CHECK(recs[1]["step"] == 10);
  CHECK(recs[1]["scalars"]["train/loss"] == 2.5);
  CHECK(std::abs(recs[2]["scalars"]["train/lr"].get<double>() - 0.001) < 1e-9);  // float32 in the file
  CHECK(recs[3]["step"] == 20);
  CHECK(recs[3]["scalars"]["eval/accuracy"] == 0.75);
  CHECK(recs[4]["scalars"]["eval/val_loss"] == 0.5);
  CHECK(recs[5]["images"]["samples/grid"] == json::array({28, 56, 1, 9}));
  CHECK(std::abs(recs[1]["wall_time"].get<double>() - double(std::time(nullptr))) < 600);
}

TEST_CASE("tensorboard: `[log] tensorboard = true` in a training run writes the run's scalars") {
  fs::path dir = testing::scratch_dir("tensorboard", "run");
  fs::path cfg = dir / "spirals.toml";
  std::ofstream(cfg) << "task = \"spirals\"\nsteps = 6\nlog_every = 2\neval_every = 3\ncheckpoint_every = 6\n"
                        "batch_size = 16\n[data]\ntrain_size = 64\nval_size = 32\n[model]\nhidden = 8\n[log]\n"
                        "tensorboard = true\n";
  auto t = testing::run_process(testing::liandan_bin(), {"train", cfg.string(), "--run-dir", (dir / "r").string()}, 120,
                                {"OMP_NUM_THREADS=1"});
  INFO(t.output);
  REQUIRE(t.exit_code == 0);
  std::vector<fs::path> files;
  for (auto& e : fs::directory_iterator(dir / "r" / "tensorboard")) files.push_back(e.path());
  REQUIRE(files.size() == 1);
  std::string python = fs::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
  auto r = testing::run_process(python, {LIANDAN_SOURCE_DIR "/tests/tensorboard/read_events.py", files[0].string(),
                                         dir.string()}, 60);
  if (r.exit_code == 3) {
    MESSAGE("SKIPPED the independent reader: " << r.output);
    return;
  }
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  std::set<int64_t> loss_steps;
  bool eval_seen = false;
  std::istringstream in(r.output);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] != '{') continue;
    json j = json::parse(line);
    if (j.contains("scalars") && j["scalars"].contains("train/loss")) loss_steps.insert(j["step"].get<int64_t>());
    if (j.contains("scalars") && j["scalars"].contains("eval/val_loss")) eval_seen = true;
  }
  CHECK(loss_steps == std::set<int64_t>{2, 4, 6});  // log_every = 2
  CHECK(eval_seen);
}
