#pragma once
// `liandan board [RUN_DIRS | PARENT_DIRS ...] [--host H] [--port N]`: a live view of runs in the browser.
// A small HTTP server (cpp-httplib) that reads only run directories (apps/trainer.h) and serves one page whose
// HTML/JS/CSS are compiled into the binary (apps/board.html; no CDN, no data leaves the machine):
//   GET /                              the page (curves, overlaid runs, config differences, samples, status)
//   GET /api/runs                      every run: name, status, step, summary, flattened config, samples
//   GET /api/run/NAME/metrics?since=K  the complete metrics.jsonl lines from line K on, and the next K
//   GET /api/run/NAME/samples/FILE     a file of the run's samples/ (images, text)
// Every answer about a damaged file is an error JSON ({"error": "..."}), never a crash: a half-written last
// metrics line is left for the next poll, junk lines are skipped.
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace liandan::apps {

// The runs under `paths`: each path that holds a run is one; otherwise its sub-directories that hold runs are.
// Names are the directories' names (a repeated name gets "~2", "~3").
struct BoardRun {
  std::string name;
  std::filesystem::path dir;
};
std::vector<BoardRun> find_runs(const std::vector<std::string>& paths);

// running (a live process holds RUN_DIR/.lock), finished (summary "completed"), failed, interrupted (the
// summary says so, or the run stopped without a summary: killed).
std::string run_status(const std::filesystem::path& dir);

// The JSON answers of the endpoints, as the server sends them (for tests without a socket).
nlohmann::json runs_json(const std::vector<BoardRun>& runs);
nlohmann::json run_metrics_json(const std::filesystem::path& dir, int64_t since);

// Serves until the process is stopped. port 0: any free port (printed).
int board(const std::vector<std::string>& paths, const std::string& host, int port);

}  // namespace liandan::apps
