#pragma once
// Files that survive kills and full disks. Every file liandan writes goes through here (or, for checkpoints,
// through save_safetensors, which follows the same steps): the bytes go to a temporary file beside the target,
// are fsync'ed, and the temporary is renamed over the target, so a reader sees the old file or the new one,
// never a half-written one. Every failure (ENOSPC, EIO, a read-only directory) is a liandan::Error naming the
// file; the old file is kept.
#include <string>
#include <string_view>

namespace liandan {

// temp (PATH.tmp.<pid>) -> write -> fsync -> rename -> fsync the directory.
void write_file_atomic(const std::string& path, std::string_view data);

// The whole of a regular file. A FIFO, a directory or a device is an Error (reading a FIFO would block forever).
std::string read_regular_file(const std::string& path);

// Whether `path` is a regular file (following symlinks); false when absent.
bool is_regular_file(const std::string& path);

// A log that only grows (metrics.jsonl): each line is written whole with one write(2) to an O_APPEND
// descriptor, and a failed or short write is an Error (a full disk stops the run instead of losing lines
// silently).
class AppendFile {
 public:
  AppendFile() = default;
  explicit AppendFile(const std::string& path);
  AppendFile(const AppendFile&) = delete;
  AppendFile& operator=(const AppendFile&) = delete;
  AppendFile(AppendFile&& o) noexcept;
  AppendFile& operator=(AppendFile&& o) noexcept;
  ~AppendFile();
  void write_line(std::string_view line);  // appends line + '\n'

 private:
  int fd_ = -1;
  std::string path_;
};

// Deletes the `*.tmp.<pid>` files that a killed writer left in `dir` (not recursive). Call it only while
// holding the directory's lock, so that no live writer's temporary is taken. Returns how many went.
int remove_stale_temp_files(const std::string& dir);

// Fault injection for the kill tests: when the environment has LIANDAN_FAULT=KIND:N, the N-th call of
// fault_point(KIND) in this process sends SIGKILL to the process (e.g. "checkpoint:2" kills it halfway
// through writing its second checkpoint). Writers call it between writing a temporary and renaming it.
void fault_point(const char* kind);

}  // namespace liandan
