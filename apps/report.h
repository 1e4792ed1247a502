#pragma once
// `liandan report RUN_DIR...`: a Markdown table of finished runs, grouped by variant ("<variant>-s<seed>"
// run directories), mean ± sample std over seeds.
#include <string>
#include <vector>

namespace liandan::apps {

// Prints the table; `metrics` empty = every held-out metric found. `plot` (optional): a PNG of every
// variant's training-loss curve.
int report(const std::vector<std::string>& run_dirs, std::vector<std::string> metrics, const std::string& plot = "");
std::string fmt_num(double x);

}  // namespace liandan::apps
