#pragma once
// A fresh temporary directory for one test case, removed with everything in it at the end of the scope:
// TMP/liandan_test_<pid>_<n>, n counting up within the process.
#include <unistd.h>

#include <filesystem>
#include <string>

namespace liandan::testing {

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    static int n = 0;
    path = std::filesystem::temp_directory_path() /
           ("liandan_test_" + std::to_string(::getpid()) + "_" + std::to_string(n++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

}  // namespace liandan::testing
