#pragma once
// Shared glue of the MNIST tasks (vit, mnist_cnn, multilabel, nxm, ddpm): the data set from
// data_dir/mnist (scripts/get-data), a shuffling loader whose state goes into checkpoints, and the small
// CNN used as the classifier for FID features (docs/experiments/diffusion.md documents it).
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "apps/task.h"
#include "core/data/loader.h"
#include "core/data/mnist.h"
#include "core/error.h"
#include "core/ops.h"
#include "nn/layers.h"

namespace liandan::apps {

// Train and test splits as f32 [N, 1, 28, 28] in [0, 1] and i64 [N] labels; `limit` > 0 keeps the first
// `limit` training images (quick runs).
struct MnistSplits {
  data::Mnist train, test;
};
inline MnistSplits load_mnist_splits(const std::string& data_dir, int64_t limit = 0) {
  std::string dir = data_dir + "/mnist";
  LD_CHECK(!data_dir.empty() && std::filesystem::is_directory(dir), "config: 'data_dir' = '", data_dir, "': ", dir,
           " is not a folder; run scripts/get-data (it writes data/mnist/), or set data_dir to the folder above mnist/");
  MnistSplits s{data::load_mnist(dir, true), data::load_mnist(dir, false)};
  if (limit > 0 && limit < s.train.images.size(0)) {
    s.train.images = s.train.images.narrow(0, 0, limit).contiguous();
    s.train.labels = s.train.labels.narrow(0, 0, limit).contiguous();
  }
  return s;
}

// `batch_size` (default `fallback`): at least 1 and at most the `n` examples of the training set (the loaders
// drop the last incomplete batch, so a larger batch would make no batch at all).
inline int64_t read_batch_size(Config& c, int64_t fallback, int64_t n, const char* what) {
  int64_t b = c.get_int("batch_size", fallback, 1);
  if (b > n) c.fail_range("batch_size", b, "at most the " + std::to_string(n) + " " + what);
  return b;
}

// A data loader plus the checkpointable state glue every task needs.
struct LoaderState {
  std::unique_ptr<data::DataLoader> loader;
  std::vector<int64_t> state() const { return loader->state(); }
  // The next global batch (the loader is not sharded) and `ctx`'s share of it.
  data::Batch next(const TaskContext& ctx) { return ctx.shard(loader->next()); }
  void set_state(const std::vector<int64_t>& s) { loader->set_state(s); }
};

// The classifier whose penultimate features define the FID of MNIST samples:
//   conv3×3(1→32) ReLU avgpool2 → conv3×3(32→64) ReLU avgpool2 → Linear(3136→128) ReLU → Linear(128→10).
// image_cls / mnist_cnn on other data build it for their channels, size (a multiple of 4) and classes.
class MnistCNN : public nn::Module {
 public:
  explicit MnistCNN(Generator& gen, int64_t channels = 1, int64_t size = 28, int64_t classes = 10)
      : nn::Module("MnistCNN") {
    LD_CHECK(size >= 4 && size % 4 == 0, "MnistCNN: image size ", size, " must be a positive multiple of 4 (two 2x2 pools)");
    conv1 = register_module("conv1", std::make_shared<nn::Conv2d>(channels, 32, 3, nn::Conv2dOptions{.padding = 1}, gen));
    conv2 = register_module("conv2", std::make_shared<nn::Conv2d>(32, 64, 3, nn::Conv2dOptions{.padding = 1}, gen));
    fc1 = register_module("fc1", std::make_shared<nn::Linear>(64 * (size / 4) * (size / 4), 128, true, gen));
    fc2 = register_module("fc2", std::make_shared<nn::Linear>(128, classes, true, gen));
  }
  // The 128-d features (after the ReLU) of images [B, C, S, S].
  Tensor features(const Tensor& x) {
    Tensor h = avg_pool2d(relu(conv1->forward(x)), 2);
    h = avg_pool2d(relu(conv2->forward(h)), 2);
    return relu(fc1->forward(h.flatten(1)));
  }
  Tensor forward(const Tensor& x) override { return fc2->forward(features(x)); }
  std::shared_ptr<nn::Conv2d> conv1, conv2;
  std::shared_ptr<nn::Linear> fc1, fc2;
};

// Accuracy and mean cross-entropy of `logits_fn` over a labelled set, in batches.
template <class F>
std::pair<double, double> classify_eval(const Tensor& images, const Tensor& labels, F&& logits_fn, int64_t batch = 500);

}  // namespace liandan::apps

#include "losses/losses.h"

namespace liandan::apps {
template <class F>
std::pair<double, double> classify_eval(const Tensor& images, const Tensor& labels, F&& logits_fn, int64_t batch) {
  int64_t n = images.size(0), correct = 0;
  double loss = 0;
  for (int64_t i = 0; i < n; i += batch) {
    int64_t b = std::min(batch, n - i);
    Tensor logits = logits_fn(images.narrow(0, i, b).contiguous());
    Tensor y = labels.narrow(0, i, b).contiguous();
    loss += losses::cross_entropy(logits, y).item() * double(b);
    std::vector<double> pred = argmax(logits.cpu(), 1).to_vector(), truth = y.to_vector();
    for (int64_t j = 0; j < b; ++j) correct += pred[size_t(j)] == truth[size_t(j)];
  }
  return {double(correct) / double(n), loss / double(n)};
}
}  // namespace liandan::apps
