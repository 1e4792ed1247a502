// `liandan board`: the HTTP server behind the live view (apps/board.h). Every request re-reads the run
// directories, so the page sees a run as it is written; nothing is cached or written.
#include "apps/board.h"

#include <sys/stat.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <httplib.h>
#include <spdlog/spdlog.h>
#include <toml++/toml.h>

#include "apps/board_page.h"  // generated from apps/board.html (kBoardPage)
#include "core/error.h"
#include "core/fileio.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace liandan::apps {

namespace {

// Larger files are refused: a run's own files are far smaller, and a junk file must not exhaust memory.
constexpr uintmax_t kMaxFile = uintmax_t(256) << 20;

bool looks_like_run(const fs::path& d) {
  std::error_code ec;
  for (const char* f : {"config.toml", "metrics.jsonl", "summary.json"})
    if (fs::is_regular_file(d / f, ec)) return true;
  return false;
}

// The file's bytes, or an Error naming it (missing, not a regular file, too large).
std::string read_small(const fs::path& p) {
  std::error_code ec;
  auto size = fs::file_size(p, ec);
  LD_CHECK(!ec, "cannot read ", p.string(), ": ", ec.message());
  LD_CHECK(size <= kMaxFile, p.string(), " is ", size, " bytes (more than ", kMaxFile, ")");
  return read_regular_file(p.string());
}

// Whether a live process holds the flock on RUN_DIR/.lock. /proc/locks lists every flock with the inode of
// its file; reading it takes no lock, so the board never makes a starting `train` fail on a held lock.
bool lock_held(const fs::path& dir) {
  struct stat st {};
  if (::stat((dir / ".lock").c_str(), &st) != 0) return false;
  std::ifstream in("/proc/locks");
  std::string line;
  while (std::getline(in, line)) {
    // "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"
    std::istringstream ls(line);
    std::string id, kind, mode, rw, pid, dev_inode;
    if (!(ls >> id >> kind)) continue;
    if (kind == "->") ls >> kind;  // a waiter
    if (kind != "FLOCK" || !(ls >> mode >> rw >> pid >> dev_inode)) continue;
    auto colon = dev_inode.rfind(':');
    if (colon != std::string::npos && dev_inode.substr(colon + 1) == std::to_string(st.st_ino)) return true;
  }
  return false;
}

// "section.key" -> value as TOML text, for the page's config differences.
void flatten(const toml::table& t, const std::string& prefix, json& out) {
  for (auto& [k, v] : t) {
    std::string key = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (auto* sub = v.as_table()) {
      flatten(*sub, key, out);
    } else {
      std::ostringstream s;
      if (auto d = v.value<double>(); d && v.is_floating_point()) {  // shortest round-trip form: 0.1, not 0.1000…01
        char buf[32];
        auto r = std::to_chars(buf, buf + sizeof buf, *d);
        s << std::string(buf, r.ptr);
      } else {
        v.visit([&](auto& node) { s << node; });
      }
      out[key] = s.str();
    }
  }
}

json config_of(const fs::path& dir) {
  fs::path p = dir / "config.toml";
  std::error_code ec;
  if (!fs::exists(p, ec)) return json{{"error", "no config.toml"}};
  try {
    toml::table t = toml::parse(read_small(p), p.string());
    json flat = json::object();
    flatten(t, "", flat);
    return flat;
  } catch (const std::exception& e) {
    return json{{"error", std::string("config.toml: ") + e.what()}};
  }
}

json summary_of(const fs::path& dir) {
  fs::path p = dir / "summary.json";
  std::error_code ec;
  if (!fs::exists(p, ec)) return nullptr;
  try {
    json j = json::parse(read_small(p), nullptr, false);
    if (j.is_discarded() || !j.is_object()) return json{{"error", "summary.json is not a JSON object"}};
    return j;
  } catch (const std::exception& e) {
    return json{{"error", e.what()}};
  }
}

// The samples/ files, newest first (name, bytes, mtime; the first 4 KiB of text files inline).
json samples_of(const fs::path& dir) {
  json out = json::array();
  std::error_code ec;
  fs::path sd = dir / "samples";
  if (!fs::is_directory(sd, ec)) return out;
  std::vector<std::pair<fs::file_time_type, fs::path>> files;
  for (auto it = fs::directory_iterator(sd, ec); !ec && it != fs::directory_iterator(); it.increment(ec))
    if (it->is_regular_file(ec)) files.push_back({it->last_write_time(ec), it->path()});
  std::sort(files.begin(), files.end(), [](auto& a, auto& b) { return a.first > b.first; });
  for (size_t i = 0; i < files.size() && i < 20; ++i) {
    auto& p = files[i].second;
    json f{{"name", p.filename().string()}, {"bytes", fs::file_size(p, ec)}};
    std::string ext = p.extension().string();
    if (ext == ".txt" || ext == ".md" || ext == ".json") {
      std::ifstream in(p, std::ios::binary);
      std::string text(4096, '\0');
      in.read(text.data(), std::streamsize(text.size()));
      text.resize(size_t(in.gcount()));
      // invalid UTF-8 (a sample cut mid-character) would make the JSON dump throw
      f["text"] = json(text).dump(-1, ' ', false, json::error_handler_t::replace);
      f["text"] = json::parse(f["text"].get<std::string>());
    }
    out.push_back(f);
  }
  return out;
}

json error_json(const std::string& msg) { return json{{"error", msg}}; }

void reply(httplib::Response& res, const json& j, int status = 200) {
  res.status = j.is_object() && j.contains("error") && status == 200 ? 404 : status;
  res.set_content(j.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

}  // namespace

std::vector<BoardRun> find_runs(const std::vector<std::string>& paths) {
  std::vector<BoardRun> runs;
  std::map<std::string, int> seen;
  auto add = [&](const fs::path& d) {
    std::string name = fs::path(d).lexically_normal().filename().string();
    if (name.empty()) name = fs::path(d).lexically_normal().parent_path().filename().string();
    if (name.empty()) name = "run";
    int n = ++seen[name];
    runs.push_back({n == 1 ? name : name + "~" + std::to_string(n), d});
  };
  for (auto& p : paths) {
    std::error_code ec;
    if (looks_like_run(p)) {
      add(p);
      continue;
    }
    if (!fs::is_directory(p, ec)) continue;
    std::vector<fs::path> subs;
    for (auto it = fs::directory_iterator(p, ec); !ec && it != fs::directory_iterator(); it.increment(ec))
      if (it->is_directory(ec) && looks_like_run(it->path())) subs.push_back(it->path());
    std::sort(subs.begin(), subs.end());
    for (auto& s : subs) add(s);
  }
  return runs;
}

std::string run_status(const fs::path& dir) {
  if (lock_held(dir)) return "running";
  json s = summary_of(dir);
  if (s.is_object() && s.contains("status") && s["status"].is_string()) {
    std::string st = s["status"].get<std::string>();
    if (st == "completed") return "finished";
    if (st == "failed" || st == "interrupted") return st;
  }
  return "interrupted";  // stopped without a summary (killed), or a summary the board cannot read
}

json runs_json(const std::vector<BoardRun>& runs) {
  json out = json::array();
  for (auto& r : runs) {
    json j{{"name", r.name}, {"path", r.dir.string()}, {"status", run_status(r.dir)}};
    j["summary"] = summary_of(r.dir);
    j["config"] = config_of(r.dir);
    j["samples"] = samples_of(r.dir);
    out.push_back(j);
  }
  return out;
}

json run_metrics_json(const fs::path& dir, int64_t since) {
  fs::path p = dir / "metrics.jsonl";
  std::error_code ec;
  if (!fs::exists(p, ec)) return json{{"lines", json::array()}, {"next", 0}};
  std::string text;
  try {
    text = read_small(p);
  } catch (const std::exception& e) {
    return error_json(e.what());
  }
  json lines = json::array();
  int64_t n = 0, skipped = 0;
  size_t pos = 0;
  // Only complete lines: the trainer may be half-way through appending the last one.
  for (size_t nl; (nl = text.find('\n', pos)) != std::string::npos; pos = nl + 1, ++n) {
    if (n < since) continue;
    json j = json::parse(text.begin() + long(pos), text.begin() + long(nl), nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      ++skipped;
      continue;
    }
    lines.push_back(std::move(j));
  }
  return json{{"lines", lines}, {"next", std::max(n, since)}, {"skipped", skipped}};
}

int board(const std::vector<std::string>& paths, const std::string& host, int port) {
  LD_CHECK(port >= 0 && port <= 65535, "board: --port must be in [0, 65535], got ", port);
  httplib::Server srv;
  auto lookup = [&](const std::string& name) -> std::optional<BoardRun> {
    for (auto& r : find_runs(paths))
      if (r.name == name) return r;
    return std::nullopt;
  };
  srv.Get("/", [](const httplib::Request&, httplib::Response& res) { res.set_content(kBoardPage, "text/html"); });
  srv.Get("/api/runs", [&](const httplib::Request&, httplib::Response& res) { reply(res, runs_json(find_runs(paths))); });
  srv.Get(R"(/api/run/([^/]+)/metrics)", [&](const httplib::Request& req, httplib::Response& res) {
    auto r = lookup(req.matches[1]);
    if (!r) return reply(res, error_json("no run named '" + std::string(req.matches[1]) + "'"));
    int64_t since = 0;
    if (req.has_param("since")) {
      std::string s = req.get_param_value("since");
      char* end = nullptr;
      long long v = std::strtoll(s.c_str(), &end, 10);
      if (s.empty() || *end || v < 0) return reply(res, error_json("since must be a line number >= 0, got '" + s + "'"), 400);
      since = v;
    }
    reply(res, run_metrics_json(r->dir, since));
  });
  srv.Get(R"(/api/run/([^/]+)/samples/([^/]+))", [&](const httplib::Request& req, httplib::Response& res) {
    auto r = lookup(req.matches[1]);
    std::string file = req.matches[2];
    if (!r) return reply(res, error_json("no run named '" + std::string(req.matches[1]) + "'"));
    if (file == "." || file == "..") return reply(res, error_json("bad sample name"), 400);
    fs::path p = r->dir / "samples" / file;
    std::error_code ec;
    if (!fs::is_regular_file(p, ec)) return reply(res, error_json("no sample '" + file + "'"));
    try {
      std::string ext = p.extension().string();
      res.set_content(read_small(p), ext == ".png" ? "image/png" : ext == ".jpg" ? "image/jpeg" : "text/plain; charset=utf-8");
    } catch (const std::exception& e) {
      reply(res, error_json(e.what()), 500);
    }
  });
  srv.set_error_handler([](const httplib::Request& req, httplib::Response& res) {  // unknown paths: JSON too
    if (res.body.empty()) reply(res, error_json("no such endpoint: " + req.path), res.status);
  });
  srv.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string msg = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      msg = e.what();
    } catch (...) {
    }
    reply(res, error_json(msg), 500);
  });
  int bound = port == 0 ? srv.bind_to_any_port(host) : (srv.bind_to_port(host, port) ? port : -1);
  LD_CHECK(bound > 0, "board: cannot listen on ", host, ":", port, " (in use, or not an address of this machine)");
  auto runs = find_runs(paths);
  std::printf("liandan board: http://%s:%d/  (%zu runs; Ctrl-C stops)\n", host.c_str(), bound, runs.size());
  std::fflush(stdout);
  srv.listen_after_bind();
  return 0;
}

}  // namespace liandan::apps
