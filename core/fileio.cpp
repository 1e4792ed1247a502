#include "core/fileio.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>

#include "core/error.h"

namespace liandan {

namespace {

std::string errno_text() { return std::strerror(errno); }

void write_all(int fd, const char* p, size_t n, const std::string& what) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    LD_CHECK(w > 0, "writing ", what, " failed: ", w < 0 ? errno_text() : std::string("nothing written"));
    p += w;
    n -= size_t(w);
  }
}

void fsync_directory_of(const std::string& path) {
  std::string dir = std::filesystem::path(path).parent_path().string();
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);  // the rename is done; a failure to make it durable leaves a complete file, so no error
    ::close(dfd);
  }
}

}  // namespace

void write_file_atomic(const std::string& path, std::string_view data) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  LD_CHECK(fd >= 0, "cannot create ", tmp, " (to write ", path, "): ", errno_text());
  try {
    size_t half = data.size() / 2;
    write_all(fd, data.data(), half, path);
    fault_point("file");  // the kill tests: a writer killed here leaves only the temporary
    write_all(fd, data.data() + half, data.size() - half, path);
    LD_CHECK(::fsync(fd) == 0, "writing ", path, " failed: fsync: ", errno_text());
    int rc = ::close(fd);
    fd = -1;
    LD_CHECK(rc == 0, "writing ", path, " failed: close: ", errno_text());
    LD_CHECK(::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename ", tmp, " to ", path, ": ", errno_text());
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  fsync_directory_of(path);
}

bool is_regular_file(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string read_regular_file(const std::string& path) {
  struct stat st;
  LD_CHECK(::stat(path.c_str(), &st) == 0, path, ": ", errno_text());
  LD_CHECK(S_ISREG(st.st_mode), path, " is not a regular file (a ",
           S_ISDIR(st.st_mode) ? "directory" : S_ISFIFO(st.st_mode) ? "FIFO" : "device or socket", ")");
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);  // never blocks, even if swapped for a FIFO
  LD_CHECK(fd >= 0, "cannot open ", path, ": ", errno_text());
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      std::string e = errno_text();
      ::close(fd);
      LD_FAIL("reading ", path, " failed: ", e);
    }
    if (r == 0) break;
    out.append(buf, size_t(r));
  }
  ::close(fd);
  return out;
}

AppendFile::AppendFile(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  LD_CHECK(fd_ >= 0, "cannot open ", path, " for appending: ", errno_text());
}
AppendFile::AppendFile(AppendFile&& o) noexcept : fd_(o.fd_), path_(std::move(o.path_)) { o.fd_ = -1; }
AppendFile& AppendFile::operator=(AppendFile&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    path_ = std::move(o.path_);
    o.fd_ = -1;
  }
  return *this;
}
AppendFile::~AppendFile() {
  if (fd_ >= 0) ::close(fd_);
}

void AppendFile::write_line(std::string_view line) {
  LD_CHECK(fd_ >= 0, "AppendFile: not open");
  std::string s(line);
  s += '\n';
  fault_point("metrics");
  write_all(fd_, s.data(), s.size(), path_);
}

int remove_stale_temp_files(const std::string& dir) {
  int n = 0;
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator(dir, ec)) {
    std::string name = e.path().filename().string();
    auto pos = name.rfind(".tmp.");
    if (pos == std::string::npos || pos + 5 >= name.size()) continue;
    if (name.find_first_not_of("0123456789", pos + 5) != std::string::npos) continue;
    if (std::filesystem::remove(e.path(), ec)) ++n;
  }
  return n;
}

void fault_point(const char* kind) {
  static const char* spec = std::getenv("LIANDAN_FAULT");
  if (!spec || !*spec) return;
  static std::mutex mu;
  static std::map<std::string, long> seen;
  std::string s = spec;
  auto colon = s.find(':');
  if (colon == std::string::npos || s.compare(0, colon, kind) != 0) return;
  long at = std::strtol(s.c_str() + colon + 1, nullptr, 10);
  std::lock_guard<std::mutex> lock(mu);
  if (++seen[kind] == at) ::kill(::getpid(), SIGKILL);
}

}  // namespace liandan
