#include "apps/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <sstream>

#include <spdlog/spdlog.h>

#include "core/error.h"
#include "optim/clip.h"

namespace liandan::apps {

std::string join_ints(const std::vector<int64_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s;
}

std::vector<int64_t> parse_ints(const std::string& s, const std::string& file, const std::string& field) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string tok;
  while (std::getline(ss, tok, ',')) {
    errno = 0;
    char* end = nullptr;
    long long v = std::strtoll(tok.c_str(), &end, 10);
    LD_CHECK(!tok.empty() && errno == 0 && end == tok.c_str() + tok.size(), "checkpoint ", file, ": metadata field '",
             field, "' is not a list of integers: '", s, "'");
    out.push_back(v);
  }
  return out;
}

std::string meta_at(const Metadata& m, const std::string& key, const std::string& file) {
  auto it = m.find(key);
  LD_CHECK(it != m.end(), "checkpoint ", file, ": metadata field '", key, "' is missing");
  return it->second;
}

int64_t meta_int(const Metadata& m, const std::string& key, const std::string& file) {
  auto v = parse_ints(meta_at(m, key, file), file, key);
  LD_CHECK(v.size() == 1, "checkpoint ", file, ": metadata field '", key, "' must be one integer");
  return v[0];
}

double meta_double(const Metadata& m, const std::string& key, const std::string& file) {
  std::string s = meta_at(m, key, file);
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  LD_CHECK(!s.empty() && end == s.c_str() + s.size(), "checkpoint ", file, ": metadata field '", key,
           "' is not a number: '", s, "'");
  return v;
}

NamedTensors prefixed(const std::string& prefix, const NamedTensors& in) {
  NamedTensors out;
  for (auto& [k, t] : in) out.emplace_back(prefix + k, t);
  return out;
}

NamedTensors with_prefix_removed(const std::string& prefix, const NamedTensors& in) {
  NamedTensors out;
  for (auto& [k, t] : in)
    if (k.rfind(prefix, 0) == 0) out.emplace_back(k.substr(prefix.size()), t);
  return out;
}

void check_all_finite(const NamedTensors& tensors, const std::string& what) {
  NamedTensors floating;
  for (auto& [k, t] : tensors)
    if (is_floating(t.dtype())) floating.emplace_back(k, t.is_contiguous() ? t : t.contiguous());
  if (auto bad = optim::first_nonfinite_param(floating))
    LD_FAIL(what, ": tensor '", *bad, "' holds NaN or Inf; no checkpoint is written (the last good one is kept)");
}

// ---------------------------------------------------------------- writing

void Checkpointer::save(int64_t step, const NamedTensors& tensors, const Metadata& meta) {
  fs::create_directories(dir);
  fs::path p = dir / ("ckpt-" + std::to_string(step) + ".safetensors");
  save_safetensors(p.string(), tensors, meta);
  link_as(p, "last.safetensors");
  prune();
}

void Checkpointer::save_best(const NamedTensors& tensors, const Metadata& meta) {
  fs::create_directories(dir);
  save_safetensors((dir / "best.safetensors").string(), tensors, meta);
}

void Checkpointer::link_as(const fs::path& target, const std::string& name) {
  fs::path tmp = dir / (name + ".tmp." + std::to_string(::getpid()));
  fs::remove(tmp);
  std::error_code ec;
  fs::create_hard_link(target, tmp, ec);
  if (ec) fs::copy_file(target, tmp, fs::copy_options::overwrite_existing);  // file systems without links
  fs::rename(tmp, dir / name);
}

void Checkpointer::prune() {
  auto ck = numbered_checkpoints(dir);
  for (size_t i = 0; i + size_t(std::max<int64_t>(keep, 1)) < ck.size(); ++i) fs::remove(ck[i].second);
}

std::vector<std::pair<int64_t, fs::path>> numbered_checkpoints(const fs::path& dir) {
  std::vector<std::pair<int64_t, fs::path>> ck;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(dir, ec)) {
    std::string n = e.path().filename().string();
    const std::string head = "ckpt-", tail = ".safetensors";
    if (n.size() <= head.size() + tail.size() || n.rfind(head, 0) != 0 || n.substr(n.size() - tail.size()) != tail) continue;
    std::string num = n.substr(head.size(), n.size() - head.size() - tail.size());
    if (num.empty() || num.size() > 18 || num.find_first_not_of("0123456789") != std::string::npos) continue;
    ck.emplace_back(std::stoll(num), e.path());
  }
  std::sort(ck.begin(), ck.end());
  return ck;
}

// ---------------------------------------------------------------- choosing and reading

fs::path checkpoint_path(const fs::path& run_dir, const std::string& which) {
  bool numbered = which.size() > 5 && which.rfind("ckpt-", 0) == 0 && which.size() <= 23 &&
                  which.find_first_not_of("0123456789", 5) == std::string::npos;
  LD_CHECK(which == "last" || which == "best" || numbered, "--checkpoint must be last, best or ckpt-N (N a step), got '",
           which, "'");
  return run_dir / "checkpoints" / (which + ".safetensors");
}

ReadCheckpoint read_checkpoint(const fs::path& run_dir, const std::string& which) {
  fs::path p = checkpoint_path(run_dir, which);
  try {
    LD_CHECK(fs::exists(p), "checkpoint ", p.string(), " does not exist");
    return {p.string(), load_safetensors(p.string())};
  } catch (const Error& e) {
    if (which != "last") throw;
    auto ck = numbered_checkpoints(run_dir / "checkpoints");
    for (auto it = ck.rbegin(); it != ck.rend(); ++it) {
      try {
        ReadCheckpoint r{it->second.string(), load_safetensors(it->second.string())};
        spdlog::warn("{} is unreadable ({}); using {} instead, the newest checkpoint that reads cleanly", p.string(),
                     e.what(), r.path);
        return r;
      } catch (const Error& older) {
        spdlog::warn("{} is unreadable too: {}", it->second.string(), older.what());
      }
    }
    throw;
  }
}

}  // namespace liandan::apps
