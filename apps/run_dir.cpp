#include "apps/run_dir.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace fs = std::filesystem;

namespace liandan::apps {

RunLock::RunLock(const fs::path& run_dir) {
  fs::path p = run_dir / ".lock";
  fd_ = ::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  LD_CHECK(fd_ >= 0, "cannot open the lock file ", p.string(), ": ", std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {0};
    ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
    std::string holder = n > 0 ? std::string(buf, size_t(n)) : "another process";
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    ::close(fd_);
    fd_ = -1;
    LD_FAIL("run directory ", run_dir.string(), " is in use by process ", holder,
            " (a train or resume is running there); wait for it to end or stop it first");
  }
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) == 0 && ::pwrite(fd_, pid.data(), pid.size(), 0) < 0) {
    // the pid is only for the message above; the lock itself holds
  }
}

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock
}

bool holds_run(const fs::path& dir) {
  for (const char* f : {"config.toml", "metrics.jsonl", "summary.json", "checkpoints"})
    if (fs::exists(dir / f)) return true;
  return false;
}

void clear_run(const fs::path& dir) {
  for (const char* f : {"checkpoints", "samples", "metrics.jsonl", "summary.json", "curves.png", "metrics.png",
                        "config.toml"})
    fs::remove_all(dir / f);
}

// ---------------------------------------------------------------- signals

namespace {

std::atomic<int> g_pending{0};
struct sigaction g_old[3];
constexpr int kSignals[3] = {SIGINT, SIGTERM, SIGHUP};

void on_stop_signal(int sig) {
  int expected = 0;
  if (!g_pending.compare_exchange_strong(expected, sig)) {  // the second signal: stop now
    ::signal(sig, SIG_DFL);
    ::raise(sig);
    return;
  }
  const char msg[] = "\nliandan: stop requested: finishing this step, then writing a checkpoint "
                     "(send the signal again to stop at once)\n";
  ssize_t r = ::write(2, msg, sizeof msg - 1);
  (void)r;
}

}  // namespace

StopSignals::StopSignals() {
  g_pending = 0;
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int i = 0; i < 3; ++i) ::sigaction(kSignals[i], &sa, &g_old[i]);
}

StopSignals::~StopSignals() {
  for (int i = 0; i < 3; ++i) ::sigaction(kSignals[i], &g_old[i], nullptr);
}

int StopSignals::pending() const { return g_pending.load(); }

std::string StopSignals::name(int sig) {
  switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGHUP: return "SIGHUP";
    default: return "signal " + std::to_string(sig);
  }
}

}  // namespace liandan::apps
