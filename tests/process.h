#pragma once
// Runs a program as a child process with a wall-clock limit and captures what it wrote: the fuzz and
// fault tests drive the real `liandan` binary this way, so that a crash is seen as the signal it is and a
// hang as the timeout it is (neither can be caught inside the test's own process).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

namespace liandan::testing {

struct ProcessResult {
  bool timed_out = false;
  bool signaled = false;  // killed by a signal that was not our timeout's nor the one we sent
  bool killed_by_sent_signal = false;  // ended by the kill_signal we sent (exit_code is then 128 + it)
  int signal = 0;
  int exit_code = -1;     // when it exited normally
  std::string output;     // stdout and stderr together
  double seconds = 0;
  bool clean_exit() const { return !timed_out && !signaled; }
};

// Runs `bin args...` with `env` added to the environment (KEY=VALUE). After `timeout_s` seconds the child
// gets SIGKILL and the result says timed_out. `kill_after_s` > 0 sends `kill_signal` at that moment instead
// (for fault injection), and the run goes on to its end or its timeout.
inline ProcessResult run_process(const std::string& bin, const std::vector<std::string>& args, double timeout_s = 60,
                                 const std::vector<std::string>& env = {}, double kill_after_s = 0,
                                 int kill_signal = SIGKILL) {
  ProcessResult r;
  int fds[2];
  if (::pipe(fds) != 0) return r;
  auto t0 = std::chrono::steady_clock::now();
  // The child is a copy of the test process (doctest's crash handlers included) until execv: signals stay
  // blocked across fork, and the child restores the default actions before it unblocks them, so a signal we
  // send early ends the child as it would end the program.
  sigset_t all, old_mask;
  sigfillset(&all);
  ::sigprocmask(SIG_BLOCK, &all, &old_mask);
  pid_t pid = ::fork();
  if (pid != 0) ::sigprocmask(SIG_SETMASK, &old_mask, nullptr);
  if (pid < 0) return r;
  if (pid == 0) {
    for (int sig = 1; sig < NSIG; ++sig)
      if (sig != SIGKILL && sig != SIGSTOP) ::signal(sig, SIG_DFL);
    ::sigprocmask(SIG_SETMASK, &old_mask, nullptr);
    ::setpgid(0, 0);
    ::dup2(fds[1], 1);
    ::dup2(fds[1], 2);
    ::close(fds[0]);
    ::close(fds[1]);
    for (auto& e : env) ::putenv(const_cast<char*>(e.c_str()));
    std::vector<char*> argv{const_cast<char*>(bin.c_str())};
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(bin.c_str(), argv.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  ::fcntl(fds[0], F_SETFL, O_NONBLOCK);
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  bool sent = false, open = true;
  int status = 0;
  for (;;) {
    if (open) {
      pollfd p{fds[0], POLLIN, 0};
      ::poll(&p, 1, 20);
      char buf[4096];
      ssize_t n;
      while ((n = ::read(fds[0], buf, sizeof buf)) > 0)
        if (r.output.size() < (1 << 20)) r.output.append(buf, size_t(n));
      if (n == 0) open = false;
    } else {
      ::usleep(5000);
    }
    pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (kill_after_s > 0 && !sent && elapsed() >= kill_after_s) {
      ::kill(pid, kill_signal);
      sent = true;
    }
    if (elapsed() >= timeout_s) {
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      r.timed_out = true;
      break;
    }
  }
  char buf[4096];
  ssize_t n;
  ::fcntl(fds[0], F_SETFL, 0);
  if (open && !r.timed_out)
    while ((n = ::read(fds[0], buf, sizeof buf)) > 0) r.output.append(buf, size_t(n));
  ::close(fds[0]);
  r.seconds = elapsed();
  if (!r.timed_out) {
    if (WIFSIGNALED(status)) {
      r.signal = WTERMSIG(status);
      r.signaled = !(sent && r.signal == kill_signal);
      r.killed_by_sent_signal = !r.signaled;
      if (!r.signaled) r.exit_code = 128 + r.signal;
    } else if (WIFEXITED(status)) {
      r.exit_code = WEXITSTATUS(status);
    }
  }
  return r;
}

// The `liandan` binary CTest points the tests at.
inline std::string liandan_bin() {
  const char* bin = std::getenv("LIANDAN_BIN");
  return bin ? bin : "";
}

// Whether the suite runs in its small mode (the ASan+UBSan pass in scripts/test sets LIANDAN_TEST_SMALL).
inline bool small_mode() {
  const char* s = std::getenv("LIANDAN_TEST_SMALL");
  return s && *s && std::string(s) != "0";
}

// A count from the environment (e.g. LIANDAN_FUZZ_COUNT for a longer fuzz campaign), else `fallback`.
inline long env_count(const char* name, long fallback) {
  const char* s = std::getenv(name);
  return s && *s ? std::strtol(s, nullptr, 10) : fallback;
}

}  // namespace liandan::testing
