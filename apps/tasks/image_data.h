#pragma once
// The data keys every image classifier (vit, mnist_cnn, image_cls) reads, docs/data.md:
//   data.train / data.validation / data.test   IDX images file (gzipped or not) or ImageFolder folder;
//                                             train and test default to data_dir/mnist
//   data.*_labels                              the IDX labels file (default: derived from the images name)
//   data.image_size, data.fit                  the model's size: "resize" (bilinear) or "pad" (centre)
//   data.channels                              1 or 3 (0: the data's)
//   data.mean, data.std                        normalisation per channel ([]: none)
//   data.crop_padding, data.hflip              training augmentation
// Evaluation uses the validation set when one is given, else the test set.
#include <algorithm>
#include <string>

#include "apps/tasks/mnist_common.h"
#include "core/data/image_set.h"

namespace liandan::apps {

struct ImageData {
  data::ImageSet train, eval;
  int64_t n_classes = 0, size = 0, channels = 0;
  data::AugmentOptions augment;
  std::string source;  // "MNIST" or the training path, for describe()
};

namespace image_data_detail {

inline data::ImageSet load_split(Config& c, const std::string& key, const std::string& path) {
  std::string labels = c.get<std::string>(key + "_labels", "");
  try {
    return data::load_image_set(path, labels);
  } catch (const Error& e) {
    throw Error(detail::cat_message("config ", c.source(), ": '", key, "' = '", path, "': ", e.what()));
  }
}

inline data::ImageSet from_mnist(const data::Mnist& m) { return {m.images.unsqueeze(1).contiguous(), m.labels, {}}; }

inline void keep_first(data::ImageSet& s, int64_t limit) {
  if (limit <= 0 || limit >= s.images.size(0)) return;
  s.images = s.images.narrow(0, 0, limit).contiguous();
  s.labels = s.labels.narrow(0, 0, limit).contiguous();
}

}  // namespace image_data_detail

// `default_size`: the image size when data.image_size is 0 (0: the data's own).
// `classifier`: false for ddpm, which reads neither normalisation (its images are [-1, 1]) nor augmentation.
inline ImageData load_image_data(Config& c, const TaskContext& ctx, int64_t default_size, bool classifier = true) {
  using namespace image_data_detail;
  ImageData d;
  std::string train = c.get<std::string>("data.train", ""), test = c.get<std::string>("data.test", "");
  std::string val = c.get<std::string>("data.validation", "");
  data::ImageSet test_set;
  if (train.empty() || test.empty()) {  // the built-in MNIST for what is not given
    MnistSplits m = load_mnist_splits(ctx.data_dir);
    d.train = from_mnist(m.train);
    test_set = from_mnist(m.test);
    d.source = "MNIST";
  }
  if (!train.empty()) d.train = load_split(c, "data.train", train), d.source = train;
  if (!test.empty()) test_set = load_split(c, "data.test", test);
  // The labels keys are read (and recorded) even when the images come from data_dir, so they are all known.
  if (train.empty()) c.get<std::string>("data.train_labels", "");
  if (test.empty()) c.get<std::string>("data.test_labels", "");
  d.eval = val.empty() ? test_set : load_split(c, "data.validation", val);
  if (val.empty()) c.get<std::string>("data.validation_labels", "");
  keep_first(d.train, c.get_int("data.train_limit", 0, 0));  // 0: all

  d.channels = c.get_int("data.channels", 0, 0, 3);
  if (d.channels == 2) c.fail_range("data.channels", 2, "0 (the data's), 1 (gray) or 3 (RGB)");
  if (d.channels == 0) d.channels = std::min<int64_t>(d.train.images.size(1), 3);
  d.size = c.get_int("data.image_size", 0, 0, 1024);
  if (d.size == 0) d.size = default_size ? default_size : std::max(d.train.images.size(2), d.train.images.size(3));
  std::string fit = c.get<std::string>("data.fit", "resize");
  if (fit != "resize" && fit != "pad") c.fail_range("data.fit", "'" + fit + "'", "\"resize\" or \"pad\"");
  std::vector<double> mean, sd;
  if (classifier) mean = c.get<std::vector<double>>("data.mean", {}), sd = c.get<std::vector<double>>("data.std", {});
  if (mean.size() != sd.size() || (mean.size() > 1 && int64_t(mean.size()) != d.channels))
    c.fail_range("data.mean", mean.size(), "as many values as 'data.std' (" + std::to_string(sd.size()) +
                                               "): one, or one per channel (" + std::to_string(d.channels) + ")");
  for (double v : mean)
    if (!(std::isfinite(v) && std::abs(v) <= 1e3)) c.fail_range("data.mean", v, "numbers in [-1000, 1000] (pixels are in [0, 1])");
  for (double v : sd)
    // bounded so that normalised pixels stay far inside f32 (the prediction grids scale them back)
    if (!(std::isfinite(v) && v >= 1e-3 && v <= 1e3)) c.fail_range("data.std", v, "numbers in [0.001, 1000]");
  if (classifier) {
    d.augment.crop_padding = c.get_int("data.crop_padding", 0, 0, d.size);
    d.augment.hflip = c.get<bool>("data.hflip", false);
  }

  for (data::ImageSet* s : {&d.train, &d.eval}) {
    s->images = data::fit_images(data::to_channels(s->images, d.channels), d.size, d.size, fit);
    if (!mean.empty()) s->images = data::normalize_images(s->images, mean, sd);
  }
  const int64_t* l = d.train.labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < d.train.labels.numel(); ++i) {
    LD_CHECK(l[i] >= 0 && l[i] < 100000, "config ", c.source(), ": training label ", i, " is ", l[i],
             " (labels are class indices 0, 1, …)");
    d.n_classes = std::max(d.n_classes, l[i] + 1);
  }
  d.n_classes = std::max<int64_t>(d.n_classes, std::max<size_t>(d.train.classes.size(), 2));
  const int64_t* e = d.eval.labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < d.eval.labels.numel(); ++i)
    LD_CHECK(e[i] >= 0 && e[i] < d.n_classes, "config ", c.source(), ": evaluation label ", i, " is ", e[i],
             ", not one of the ", d.n_classes, " training classes");
  return d;
}

}  // namespace liandan::apps
