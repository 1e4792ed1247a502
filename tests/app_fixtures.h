#pragma once
// What the end-to-end tests of the command line share: a fresh scratch directory per test binary and process,
// and a synthetic MNIST (random blobs in IDX format, labels 0..9) so every MNIST task runs without downloads.
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "core/data/mnist.h"
#include "core/random.h"

namespace liandan::testing {

// TMP/liandan_<suite>_<pid>/<name>, emptied.
inline std::filesystem::path scratch_dir(const std::string& suite, const std::string& name) {
  auto p = std::filesystem::temp_directory_path() / ("liandan_" + suite + "_" + std::to_string(::getpid())) / name;
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

// DIR/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte; returns DIR (a task's data_dir).
inline std::filesystem::path synthetic_mnist(const std::filesystem::path& dir, int64_t n_train, int64_t n_test) {
  std::filesystem::path m = dir / "mnist";
  std::filesystem::create_directories(m);
  Generator g(1);
  auto write = [&](const std::string& prefix, int64_t n) {
    std::vector<uint8_t> img(size_t(n * 28 * 28)), lab(static_cast<size_t>(n));
    std::vector<double> u = rand({n * 28 * 28}, g, DType::f64).to_vector();
    for (size_t i = 0; i < img.size(); ++i) img[i] = uint8_t(u[i] > 0.8 ? 255 * u[i] : 0);
    for (int64_t i = 0; i < n; ++i) lab[size_t(i)] = uint8_t(i % 10);
    data::write_idx_u8((m / (prefix + "-images-idx3-ubyte")).string(), {n, 28, 28}, img);
    data::write_idx_u8((m / (prefix + "-labels-idx1-ubyte")).string(), {n}, lab);
  };
  write("train", n_train);
  write("t10k", n_test);
  return dir;
}

}  // namespace liandan::testing
