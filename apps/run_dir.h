#pragma once
// What keeps a run directory safe while a run uses it: an exclusive lock (no second `train`/`resume` on the
// same directory), the refusal to train over an existing run, and graceful stops on SIGINT/SIGTERM/SIGHUP.
#include <atomic>
#include <filesystem>
#include <string>

namespace liandan::apps {

// Holds an exclusive flock(2) on RUN_DIR/.lock for its lifetime (the kernel drops it if the process dies, so
// a killed run never leaves a stale lock). A second holder gets an Error naming the process that has it.
class RunLock {
 public:
  explicit RunLock(const std::filesystem::path& run_dir);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  int fd_ = -1;
};

// Whether `dir` already holds a run (a config, metrics, a summary or checkpoints).
bool holds_run(const std::filesystem::path& dir);

// Removes what a run writes (checkpoints, metrics, summary, plots, samples) for `train --overwrite`.
void clear_run(const std::filesystem::path& dir);

// While alive, SIGINT, SIGTERM and SIGHUP do not kill the process: the first one is recorded (pending()) so
// that the loop can finish its step, write a checkpoint and exit with 128 + signal; a second one ends the
// process at once with the default action.
class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  int pending() const;                // the first signal received, or 0
  static std::string name(int sig);   // "SIGTERM"
};

}  // namespace liandan::apps
