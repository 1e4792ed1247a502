#pragma once
// Labelled image sets from files people have, and the transforms image classifiers train with.
//
//   load_image_set(path)   an IDX images file (gzipped or not; [N, H, W] or [N, H, W, C] u8) with its labels
//                          file, or a folder with one sub-folder per class of PNG files (the ImageFolder
//                          convention: classes sorted by name, label = index)
//   fit_images             to another size: bilinear "resize", or "pad" (centre, zeros; crops if larger)
//   to_channels            gray <-> RGB (average / repeat), alpha dropped
//   normalize_images       (x - mean[c]) / std[c]
//   augment_images         random crop after zero padding, random horizontal flip (training batches)
// Every tensor is f32 [N, C, H, W], values in [0, 1] until normalised, on the CPU.
#include <cstdint>
#include <string>
#include <vector>

#include "core/random.h"
#include "core/tensor.h"

namespace liandan::data {

struct ImageSet {
  Tensor images;                     // f32 [N, C, H, W] in [0, 1]
  Tensor labels;                     // i64 [N], 0 ≤ label
  std::vector<std::string> classes;  // folder names (ImageFolder); empty for IDX
};

// The labels file of an IDX images file when none is given: "images" -> "labels" and "idx3"/"idx4" ->
// "idx1" in the file name (train-images-idx3-ubyte.gz -> train-labels-idx1-ubyte.gz). Empty if the name
// has no "images".
std::string idx_labels_path(const std::string& images_path);
// IDX images (+ labels: `labels_path`, or idx_labels_path(path)); or an ImageFolder when `path` is a folder.
ImageSet load_image_set(const std::string& path, const std::string& labels_path = "");
ImageSet load_image_folder(const std::string& dir);

Tensor fit_images(const Tensor& images, int64_t height, int64_t width, const std::string& mode);
Tensor to_channels(const Tensor& images, int64_t channels);
// `mean` and `std` hold one value (every channel) or one per channel; std > 0.
Tensor normalize_images(const Tensor& images, const std::vector<double>& mean, const std::vector<double>& std);

struct AugmentOptions {
  int64_t crop_padding = 0;  // pad by this many zero pixels on each side, then crop back at a random offset
  bool hflip = false;        // mirror left-right with probability ½
  bool active() const { return crop_padding > 0 || hflip; }
};
// A new tensor; the random draws come from `gen` (3 numbers per image), so a run resumes bit-identically.
Tensor augment_images(const Tensor& images, const AugmentOptions& opt, Generator& gen);

}  // namespace liandan::data

namespace liandan::data {

// A small generated labelled set for examples and tests ("digits-like", 10 classes): the digit glyphs of the
// embedded 5x7 font (1x, or scaled ⌊size/8⌋x), white on black, at a random offset, with random speckle noise
// (each pixel flipped to a random grey with probability 0.05). `channels` 1 or 3 (colour: a random tint).
ImageSet synthetic_digits(int64_t n, int64_t size, int64_t channels, Generator& gen);
// Writes `set` as DIR/PREFIX-images-idx3-ubyte.gz (or idx4 [N, H, W, C] for colour) and
// DIR/PREFIX-labels-idx1-ubyte.gz; returns the images path.
std::string write_idx_image_set(const ImageSet& set, const std::string& dir, const std::string& prefix);
// Writes `set` as an ImageFolder: DIR/<class>/<index>.png (class names: set.classes, else the label number).
void write_image_folder(const ImageSet& set, const std::string& dir);

}  // namespace liandan::data
