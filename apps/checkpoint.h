#pragma once
// Checkpoints of a run directory: writing them (numbered, `last`, `best`, pruning), choosing one to resume
// from, and the metadata fields the trainer stores in them.
//
//   checkpoints/ckpt-<step>.safetensors   the newest `keep` of them
//   checkpoints/last.safetensors          a hard link to the newest ckpt-<step>
//   checkpoints/best.safetensors          the best held-out metric so far
//
// Every file is written atomically (save_safetensors: temp, fsync, rename) and carries per-tensor checksums,
// so a checkpoint is either complete and verified or refused with an Error naming it. A checkpoint with a
// non-finite tensor is never written.
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "core/serialize.h"

namespace liandan::apps {

namespace fs = std::filesystem;

// ---- metadata fields (strings in the safetensors header), each parse naming the file and the field
std::string join_ints(const std::vector<int64_t>& v);
std::vector<int64_t> parse_ints(const std::string& s, const std::string& file, const std::string& field);
std::string meta_at(const Metadata& m, const std::string& key, const std::string& file);
int64_t meta_int(const Metadata& m, const std::string& key, const std::string& file);
double meta_double(const Metadata& m, const std::string& key, const std::string& file);  // "nan" allowed

NamedTensors prefixed(const std::string& prefix, const NamedTensors& in);
NamedTensors with_prefix_removed(const std::string& prefix, const NamedTensors& in);

// Throws (naming the tensor and `what`) when a floating tensor holds NaN or Inf.
void check_all_finite(const NamedTensors& tensors, const std::string& what);

struct Checkpointer {
  fs::path dir;
  int64_t keep = 3;

  // ckpt-<step> is written atomically; `last` becomes a hard link to it (link to a temp name, then rename:
  // atomic too), so the newest complete checkpoint is always reachable as last.safetensors.
  void save(int64_t step, const NamedTensors& tensors, const Metadata& meta);
  void save_best(const NamedTensors& tensors, const Metadata& meta);

 private:
  void link_as(const fs::path& target, const std::string& name);
  void prune();
};

// The numbered checkpoints in `dir`, by step (ascending); names that do not parse are ignored.
std::vector<std::pair<int64_t, fs::path>> numbered_checkpoints(const fs::path& dir);

// "last", "best" or "ckpt-N" -> RUN_DIR/checkpoints/<which>.safetensors; anything else is an Error.
fs::path checkpoint_path(const fs::path& run_dir, const std::string& which);

// Reads and verifies the checkpoint `which` of a run. When `which` is "last" and last.safetensors is missing
// or damaged, falls back to the newest numbered checkpoint that reads cleanly, with a warning naming both.
struct ReadCheckpoint {
  std::string path;
  SafetensorsContents contents;
};
ReadCheckpoint read_checkpoint(const fs::path& run_dir, const std::string& which);

}  // namespace liandan::apps
