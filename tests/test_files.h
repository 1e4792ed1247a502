#pragma once
// What the file-handling tests share: a temporary directory per test case, whole-file reads and writes, and the check
// that a call throws a liandan::Error naming every given part.
#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <string>

#include "core/error.h"

namespace liandan::testing {

// TMP/liandan_test_<pid>_<n> (n counting up within the process), removed with everything in it at the end of scope.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    static int n = 0;
    path = std::filesystem::temp_directory_path() /
           ("liandan_test_" + std::to_string(::getpid()) + "_" + std::to_string(n++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {  // (write permission back first: tests make files and folders read-only)
    std::error_code ec;
    std::filesystem::permissions(path, std::filesystem::perms::owner_all, std::filesystem::perm_options::add, ec);
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

inline std::string read_bytes(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// A new file each time, not one written through: in a run directory last.safetensors is a hard link, and ext4
// flushes a file that is truncated and rewritten (auto_da_alloc), which made corruption loops wait on the disk.
inline void write_bytes(const std::filesystem::path& p, const std::string& s) {
  ::unlink(p.c_str());
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(s.data(), std::streamsize(s.size()));
}

// Runs f, which must throw a liandan::Error whose message contains every one of `parts`.
template <class F>
void check_error(F&& f, std::initializer_list<std::string> parts) {
  try {
    f();
    FAIL("expected a liandan::Error");
  } catch (const Error& e) {
    std::string msg = e.what();
    INFO(msg);
    for (const auto& p : parts) CHECK(msg.find(p) != std::string::npos);
  }
}

}  // namespace liandan::testing
