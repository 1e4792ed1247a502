#pragma once
// What a run shows while it trains: the progress line on a terminal (log lines otherwise), and the metrics
// history behind curves.png / metrics.png, rebuilt from metrics.jsonl when a run resumes.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace liandan::apps {

class TensorBoardWriter;

// A progress bar on a terminal (stderr a tty); otherwise one log line every `log_every` steps.
class Progress {
 public:
  Progress(int64_t total, int64_t start, int64_t log_every);
  void update(int64_t step, double loss, double lr);
  void newline();  // ends the bar's line before other output

 private:
  using clock = std::chrono::steady_clock;
  int64_t total_, start_, log_every_;
  bool tty_;
  clock::time_point t0_;
};

// The logged training losses and held-out metrics of a run, by step.
struct History {
  std::vector<double> train_x, train_y;
  std::map<std::string, std::pair<std::vector<double>, std::vector<double>>> eval;
  // `[log] tensorboard = true`: every line added from now on also goes to RUN_DIR/tensorboard as scalars
  // (train/<key>, eval/<metric>).
  std::shared_ptr<TensorBoardWriter> tensorboard;
  void open_tensorboard(const std::string& dir);

  // One line of metrics.jsonl ({"step","loss",...} or {"step","eval":{...}}); other lines are ignored.
  void add(const nlohmann::json& j);
  // One PNG per unit, titled "<run> (variant <v>) - <task>", legends right of the axes: curves.png (nats: the
  // training loss raw and smoothed, held-out losses), metrics.png (fractions: accuracy, F1),
  // metrics-<unit>.png for the others (bits for bpc, evaluations for NFE, values such as distances).
  void plot(const std::string& dir, const std::string& task) const;
};

// Debiased exponential moving average with weight `a` (0: the values themselves).
std::vector<double> smooth_ema(const std::vector<double>& y, double a);

// Keeps the lines of metrics.jsonl up to `step` (a resumed run redoes the steps after its checkpoint), rewriting the
// file atomically, and returns their history.
History reload_metrics(const std::filesystem::path& path, int64_t step);

}  // namespace liandan::apps
