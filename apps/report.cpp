// `liandan report RUN_DIR...`: a Markdown table of finished runs (their summary.json), one row per variant,
// mean ± std over seeds. Runs named "<variant>-s<seed>" are grouped under <variant>; experiment reports
// (docs/experiments/) paste this table.
#include "apps/report.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>

#include "core/data/image.h"
#include "core/error.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace liandan::apps {

namespace {

std::string variant_of(const std::string& run) {
  static const std::regex seed_suffix("-s[0-9]+$");
  return std::regex_replace(fs::path(run).filename().string(), seed_suffix, "");
}

std::string mean_std(const std::vector<double>& v) {
  if (v.empty()) return "–";
  double m = 0;
  for (double x : v) m += x;
  m /= double(v.size());
  if (v.size() == 1) return fmt_num(m);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  s = std::sqrt(s / double(v.size() - 1));  // sample standard deviation
  return fmt_num(m) + " ± " + fmt_num(s);
}

}  // namespace

std::string fmt_num(double x) {
  char buf[32];
  if (std::abs(x) >= 1000 || x == std::floor(x)) std::snprintf(buf, sizeof buf, "%.0f", x);
  else std::snprintf(buf, sizeof buf, "%.4f", x);
  return buf;
}

// Training-loss curves of the first run of every variant on one chart (smoothed by a running mean over 5
// logged points, so the variants' trends are readable).
void plot_variants(const std::vector<std::string>& run_dirs, const std::string& path, const std::string& title) {
  std::vector<data::PlotSeries> series;
  std::vector<std::string> seen;
  for (auto& dir : run_dirs) {
    std::string v = variant_of(dir);
    if (std::find(seen.begin(), seen.end(), v) != seen.end()) continue;
    seen.push_back(v);
    data::PlotSeries s{v, {}, {}};
    std::ifstream in(fs::path(dir) / "metrics.jsonl");
    std::string line;
    std::vector<double> window;
    while (std::getline(in, line)) {
      json j = json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.contains("loss")) continue;
      window.push_back(j["loss"].get<double>());
      if (window.size() > 5) window.erase(window.begin());
      double m = 0;
      for (double x : window) m += x;
      s.x.push_back(double(j["step"].get<int64_t>()));
      s.y.push_back(m / double(window.size()));
    }
    series.push_back(std::move(s));
  }
  data::PlotOptions o;
  o.title = title;
  o.ylabel = "training loss";
  data::save_plot(path, series, o);
}

int report(const std::vector<std::string>& run_dirs, std::vector<std::string> metrics, const std::string& plot) {
  if (!plot.empty()) plot_variants(run_dirs, plot, fs::path(plot).stem().string());
  struct Row {
    std::map<std::string, std::vector<double>> values;
    std::vector<double> wall;
    int64_t seeds = 0, steps = 0;
    std::string status;
  };
  std::map<std::string, Row> rows;
  std::vector<std::string> order;
  for (auto& dir : run_dirs) {
    fs::path p = fs::path(dir) / "summary.json";
    LD_CHECK(fs::exists(p), "report: ", dir, " has no summary.json (not a finished run)");
    json j = json::parse(std::ifstream(p), nullptr, false);
    LD_CHECK(!j.is_discarded(), "report: ", p.string(), " is not valid JSON");
    std::string v = variant_of(dir);
    if (!rows.count(v)) order.push_back(v);
    Row& r = rows[v];
    r.seeds++;
    r.status = j.value("status", "?");
    r.steps = j.value("steps", int64_t(0));
    r.wall.push_back(j.value("wall_s", 0.0));
    if (j.contains("eval"))
      for (auto& [k, val] : j["eval"].items())
        if (val.is_number()) r.values[k].push_back(val.get<double>());
  }
  if (metrics.empty()) {  // every metric any run has, in first-seen order
    for (auto& v : order)
      for (auto& [k, vals] : rows[v].values)
        if (std::find(metrics.begin(), metrics.end(), k) == metrics.end()) metrics.push_back(k);
  }
  std::printf("| variant | seeds | steps |");
  for (auto& m : metrics) std::printf(" %s |", m.c_str());
  std::printf(" wall s |\n|---|---|---|");
  for (size_t i = 0; i < metrics.size(); ++i) std::printf("---|");
  std::printf("---|\n");
  for (auto& v : order) {
    Row& r = rows[v];
    std::printf("| %s | %lld | %lld |", v.c_str(), (long long)r.seeds, (long long)r.steps);
    for (auto& m : metrics) std::printf(" %s |", mean_std(r.values[m]).c_str());
    std::printf(" %s |\n", mean_std(r.wall).c_str());
  }
  return 0;
}

}  // namespace liandan::apps
