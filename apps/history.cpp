#include "apps/history.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <sstream>

#include <spdlog/spdlog.h>

#include "apps/tensorboard.h"
#include "core/data/image.h"
#include "core/fileio.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace liandan::apps {

namespace {
std::string fmt_time(double s) {
  char buf[32];
  int64_t t = int64_t(s + 0.5);
  std::snprintf(buf, sizeof buf, "%lld:%02lld", (long long)(t / 60), (long long)(t % 60));
  return buf;
}
}  // namespace

Progress::Progress(int64_t total, int64_t start, int64_t log_every)
    : total_(total), start_(start), log_every_(log_every), tty_(::isatty(2)), t0_(clock::now()) {}

void Progress::update(int64_t step, double loss, double lr) {
  double elapsed = std::chrono::duration<double>(clock::now() - t0_).count();
  double rate = double(step - start_) / std::max(elapsed, 1e-9);
  double eta = double(total_ - step) / std::max(rate, 1e-9);
  if (tty_) {
    int width = 30, filled = int(width * double(step) / double(total_));
    std::string bar(size_t(filled), '#');
    bar.resize(size_t(width), '.');
    std::fprintf(stderr, "\r[%s] %lld/%lld  %.1f it/s  ETA %s  loss %.4f  lr %.2e ", bar.c_str(), (long long)step,
                 (long long)total_, rate, fmt_time(eta).c_str(), loss, lr);
    if (step == total_) std::fprintf(stderr, "\n");
  } else if (step % log_every_ == 0 || step == total_) {
    spdlog::info("step {}/{}  loss {:.4f}  lr {:.3e}  {:.1f} it/s  ETA {}", step, total_, loss, lr, rate, fmt_time(eta));
  }
}

void Progress::newline() {
  if (tty_) std::fprintf(stderr, "\n");
}

void History::add(const json& j) {
  if (!j.contains("step") || !j["step"].is_number_integer()) return;
  int64_t step = j["step"].get<int64_t>();
  if (j.contains("loss") && j["loss"].is_number()) {
    train_x.push_back(double(step));
    train_y.push_back(j["loss"].get<double>());
  }
  if (j.contains("eval") && j["eval"].is_object())
    for (auto& [k, v] : j["eval"].items())
      if (v.is_number()) {
        eval[k].first.push_back(double(step));
        eval[k].second.push_back(v.get<double>());
        if (tensorboard) tensorboard->add_scalar("eval/" + k, v.get<double>(), step);
      }
  if (tensorboard)
    for (auto& [k, v] : j.items())
      if (k != "step" && v.is_number()) tensorboard->add_scalar("train/" + k, v.get<double>(), step);
}

void History::open_tensorboard(const std::string& dir) { tensorboard = std::make_shared<TensorBoardWriter>(dir); }

namespace {
// The unit of a held-out metric, from its name: one chart per unit, never nats and bits on one axis.
std::string unit_of(const std::string& k) {
  if (k.find("bpc") != std::string::npos || k.find("bits") != std::string::npos) return "bits";
  if (k.find("loss") != std::string::npos || k.find("nll") != std::string::npos) return "nats";
  if (k.find("nfe") != std::string::npos) return "evaluations";
  for (const char* d : {"sw1", "fid", "dist", "mmd", "wasserstein"})
    if (k.find(d) != std::string::npos) return "distance";
  if (k.find("acc") != std::string::npos || k.find("f1") != std::string::npos || k.find("precision") != std::string::npos ||
      k.find("recall") != std::string::npos)
    return "fraction";
  return "value";
}
}  // namespace

std::vector<double> smooth_ema(const std::vector<double>& y, double a) {
  std::vector<double> out;
  double m = 0, w = 1;
  for (double v : y) {  // debiased exponential moving average (TensorBoard's smoothing)
    m = a * m + (1 - a) * v;
    w *= a;
    out.push_back(m / (1 - w));
  }
  return out;
}

void History::plot(const std::string& dir, const std::string& task) const {
  // Title: run name, its variant (the name less "-s<seed>") and the task.
  std::string run = std::filesystem::path(dir).lexically_normal().filename().string();
  if (run.empty()) run = std::filesystem::path(dir).lexically_normal().parent_path().filename().string();
  std::string variant = run;
  if (auto p = variant.rfind("-s"); p != std::string::npos && p + 2 < variant.size() &&
                                    variant.find_first_not_of("0123456789", p + 2) == std::string::npos)
    variant.resize(p);
  std::string title = run + (variant != run ? " (variant " + variant + ")" : "") + " - " + task;
  std::map<std::string, std::vector<data::PlotSeries>> by_unit;
  if (!train_x.empty()) {
    by_unit["nats"].push_back({"", train_x, train_y, 0, true});  // raw, faint, under the smoothed curve
    by_unit["nats"].push_back({"train loss (smoothed)", train_x, smooth_ema(train_y, 0.9), 0, false});
  }
  for (auto& [k, xy] : eval) {
    auto& v = by_unit[unit_of(k)];
    v.push_back({k, xy.first, xy.second, int64_t(v.size() + 1), false});
  }
  data::PlotOptions o;
  o.title = title;
  o.xlabel = "step";
  // curves.png: losses in nats; metrics.png: fractions (accuracy, F1); metrics-<unit>.png: the others.
  for (auto& [unit, series] : by_unit) {
    o.ylabel = unit;
    std::string file = unit == "nats" ? "curves.png" : unit == "fraction" ? "metrics.png" : "metrics-" + unit + ".png";
    data::save_plot(dir + "/" + file, series, o);
  }
}

History reload_metrics(const fs::path& path, int64_t step) {
  History h;
  if (!fs::exists(path)) return h;
  std::string kept;
  std::stringstream in(read_regular_file(path.string()));
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("step") || !j["step"].is_number_integer() || j["step"].get<int64_t>() > step)
      continue;
    h.add(j);
    kept += line + "\n";
  }
  write_file_atomic(path.string(), kept);
  return h;
}

}  // namespace liandan::apps
