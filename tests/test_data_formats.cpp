// Image data by path (core/data/image_set.h, core/data/mnist.h): gzipped IDX, channels-last IDX, ImageFolder,
// resize / pad, channel conversion, normalisation and augmentation.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <filesystem>
#include <fstream>

#include "app_fixtures.h"
#include "core/data/image.h"
#include "core/data/image_set.h"
#include "core/data/mnist.h"
#include "core/data/text_cls.h"
#include "core/error.h"
#include "core/ops.h"

using namespace liandan;
using namespace liandan::data;
namespace fs = std::filesystem;

namespace {
fs::path scratch(const std::string& name) { return liandan::testing::scratch_dir("test_data_formats", name); }

std::vector<uint8_t> bytes_of(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}
}  // namespace

TEST_CASE("IDX: a gzipped file reads back exactly like the plain one; corrupt and truncated gzip are errors") {
  fs::path d = scratch("gz");
  std::vector<uint8_t> data(3 * 5 * 7);
  for (size_t i = 0; i < data.size(); ++i) data[i] = uint8_t(i * 37 % 251);
  write_idx_u8((d / "a-idx3").string(), {3, 5, 7}, data);
  write_idx_u8((d / "a-idx3.gz").string(), {3, 5, 7}, data);
  std::vector<uint8_t> gz = bytes_of(d / "a-idx3.gz");
  REQUIRE(gz.size() > 2);
  CHECK((gz[0] == 0x1f && gz[1] == 0x8b));  // really gzip
  IdxU8 plain = read_idx_u8((d / "a-idx3").string()), zipped = read_idx_u8((d / "a-idx3.gz").string());
  CHECK(zipped.dims == Shape{3, 5, 7});
  CHECK(zipped.data == data);
  CHECK(plain.data == data);
  // Truncated and corrupt streams.
  std::vector<uint8_t> cut(gz.begin(), gz.begin() + std::ptrdiff_t(gz.size() / 2));
  std::ofstream(d / "cut.gz", std::ios::binary).write(reinterpret_cast<const char*>(cut.data()), std::streamsize(cut.size()));
  CHECK_THROWS_WITH_AS(read_idx_u8((d / "cut.gz").string()), doctest::Contains("truncated gzip"), Error);
  std::vector<uint8_t> bad = gz;
  for (size_t i = 10; i < bad.size() - 8; ++i) bad[i] ^= 0x5a;
  std::ofstream(d / "bad.gz", std::ios::binary).write(reinterpret_cast<const char*>(bad.data()), std::streamsize(bad.size()));
  CHECK_THROWS_WITH_AS(read_idx_u8((d / "bad.gz").string()), doctest::Contains("bad.gz"), Error);
  // load_mnist takes the .gz names too.
  fs::path m = d / "mnist";
  fs::create_directories(m);
  std::vector<uint8_t> img(2 * 28 * 28, 7), lab{3, 4};
  write_idx_u8((m / "t10k-images-idx3-ubyte.gz").string(), {2, 28, 28}, img);
  write_idx_u8((m / "t10k-labels-idx1-ubyte.gz").string(), {2}, lab);
  Mnist t = load_mnist(m.string(), false);
  CHECK(t.labels.to_vector() == std::vector<double>{3, 4});
}

TEST_CASE("load_image_set: IDX [N, H, W] and [N, H, W, C] to [N, C, H, W], labels file derived from the name") {
  CHECK(idx_labels_path("/x/train-images-idx3-ubyte.gz") == "/x/train-labels-idx1-ubyte.gz");
  CHECK(idx_labels_path("/x/t-images-idx4-ubyte") == "/x/t-labels-idx1-ubyte");
  CHECK(idx_labels_path("/x/pictures.idx").empty());
  fs::path d = scratch("idx");
  // 2 images 2x3 with 3 channels: pixel value = 100·i + 10·(y·3 + x) + k.
  std::vector<uint8_t> px;
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 6; ++j)
      for (int k = 0; k < 3; ++k) px.push_back(uint8_t(100 * i + 10 * j + k));
  write_idx_u8((d / "c-images-idx4-ubyte.gz").string(), {2, 2, 3, 3}, px);
  write_idx_u8((d / "c-labels-idx1-ubyte.gz").string(), {2}, {1, 0});
  ImageSet s = load_image_set((d / "c-images-idx4-ubyte.gz").string());
  CHECK(s.images.shape() == Shape{2, 3, 2, 3});
  // image 1, channel 2, y 1, x 0: j = 3 -> 100 + 30 + 2.
  CHECK(s.images.select(0, 1).select(0, 2).select(0, 1).select(0, 0).item() == doctest::Approx(132.0 / 255));
  CHECK(s.labels.to_vector() == std::vector<double>{1, 0});
  CHECK_THROWS_WITH_AS(load_image_set((d / "nothing-images-idx3").string()), doctest::Contains("not found"), Error);
  write_idx_u8((d / "pics.idx").string(), {1, 2, 2}, {0, 0, 0, 0});
  CHECK_THROWS_WITH_AS(load_image_set((d / "pics.idx").string()), doctest::Contains("no labels file"), Error);
  write_idx_u8((d / "few-images-idx3-ubyte").string(), {2, 2, 2}, std::vector<uint8_t>(8));
  write_idx_u8((d / "few-labels-idx1-ubyte").string(), {3}, {0, 1, 2});
  CHECK_THROWS_WITH_AS(load_image_set((d / "few-images-idx3-ubyte").string()), doctest::Contains("3 labels"), Error);
}

TEST_CASE("ImageFolder: one sub-folder per class (sorted), PNGs gray or colour; bad folders are errors") {
  fs::path d = scratch("folder");
  Generator g(3);
  ImageSet s = synthetic_digits(12, 8, 3, g);
  s.classes = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"};
  write_image_folder(s, (d / "set").string());
  ImageSet r = load_image_folder((d / "set").string());
  CHECK(r.images.shape() == Shape{12, 3, 8, 8});
  std::vector<std::string> sorted = s.classes;
  std::sort(sorted.begin(), sorted.end());
  std::set<int64_t> present;
  for (double v : s.labels.to_vector()) present.insert(int64_t(v));
  CHECK(r.classes.size() == present.size());  // only the classes with images have folders
  // Every image comes back (8-bit rounding) with its class name: match by pixel sum.
  double total_in = sum(s.images).item(), total_out = sum(r.images).item();
  CHECK(total_out == doctest::Approx(total_in).epsilon(0.01));
  fs::create_directories(d / "empty");
  CHECK_THROWS_WITH_AS(load_image_folder((d / "empty").string()), doctest::Contains("no sub-folders"), Error);
  fs::create_directories(d / "nopng" / "a");
  CHECK_THROWS_WITH_AS(load_image_folder((d / "nopng").string()), doctest::Contains("no .png files"), Error);
  write_png((d / "set" / r.classes[0] / "odd.png").string(), Image(5, 5, 1));
  CHECK_THROWS_WITH_AS(load_image_folder((d / "set").string()), doctest::Contains("one size"), Error);
}

TEST_CASE("fit_images / to_channels / normalize_images / augment_images: closed forms") {
  // Bilinear 2x2 -> 4x4 (align_corners = false): the corners keep their values, the inner samples interpolate.
  Tensor x = from_vector(std::vector<float>{0, 1, 2, 3}, {1, 1, 2, 2});
  Tensor r = fit_images(x, 4, 4, "resize");
  std::vector<double> v = r.to_vector();
  CHECK(v[0] == doctest::Approx(0));
  CHECK(v[15] == doctest::Approx(3));
  CHECK(v[1] == doctest::Approx(0.25));  // x = 1: source 0.25 between 0 and 1
  CHECK(v[5] == doctest::Approx(0.75));  // (0.25, 0.25): 0.25·1 + 0.25·2
  // Pad: centred, zeros around; then cropping back gives the original.
  Tensor p = fit_images(x, 4, 4, "pad");
  CHECK(p.to_vector() == std::vector<double>{0, 0, 0, 0, 0, 0, 1, 0, 0, 2, 3, 0, 0, 0, 0, 0});
  CHECK(fit_images(p, 2, 2, "pad").to_vector() == x.to_vector());
  CHECK_THROWS_WITH_AS(fit_images(x, 3, 3, "stretch"), doctest::Contains("'stretch'"), Error);
  // Channels: RGB -> gray is the mean; gray -> RGB repeats.
  Tensor rgb = from_vector(std::vector<float>{0.3f, 0.6f, 0.9f}, {1, 3, 1, 1});
  CHECK(to_channels(rgb, 1).item() == doctest::Approx(0.6));
  CHECK(to_channels(to_channels(rgb, 1), 3).to_vector() == std::vector<double>(3, to_channels(rgb, 1).item()));
  Tensor n = normalize_images(rgb, {0.1, 0.2, 0.3}, {0.5, 0.5, 0.25});
  CHECK(n.to_vector()[2] == doctest::Approx((0.9 - 0.3) / 0.25));
  CHECK_THROWS_WITH_AS(normalize_images(rgb, {0.1, 0.2}, {1.0, 1.0}), doctest::Contains("one per channel"), Error);
  // Augmentation: a shifted / mirrored copy — the multiset of pixels is kept by a flip, and a crop with
  // padding moves pixels or drops them, never invents values.
  Generator g(5);
  Tensor img = rand({64, 1, 6, 6}, g);
  Tensor flipped = augment_images(img, {.crop_padding = 0, .hflip = true}, g);
  int mirrored = 0, same = 0;
  for (int64_t i = 0; i < 64; ++i) {
    std::vector<double> a = img.select(0, i).to_vector(), b = flipped.select(0, i).to_vector();
    bool m = true, s = a == b;
    for (int y = 0; y < 6; ++y)
      for (int xx = 0; xx < 6; ++xx) m = m && b[size_t(y * 6 + xx)] == a[size_t(y * 6 + 5 - xx)];
    mirrored += m;
    same += s;
    CHECK((m || s));
  }
  CHECK(mirrored > 16);  // about half of 64
  CHECK(same > 16);
  Tensor cropped = augment_images(img, {.crop_padding = 2, .hflip = false}, g);
  std::set<double> orig;
  for (double u : img.to_vector()) orig.insert(u);
  int64_t zeros_seen = 0;
  for (double u : cropped.to_vector()) {
    if (u == 0) ++zeros_seen;
    else CHECK(orig.count(u) == 1);
  }
  CHECK(zeros_seen > 0);
  // The same generator state gives the same augmentation (resume).
  Generator g1(9), g2(9);
  CHECK(augment_images(img, {.crop_padding = 1, .hflip = true}, g1).to_vector() ==
        augment_images(img, {.crop_padding = 1, .hflip = true}, g2).to_vector());
}

TEST_CASE("synthetic_digits: 10 classes, the written gzipped IDX set reads back identically (8-bit)") {
  Generator g(1);
  ImageSet s = synthetic_digits(200, 12, 1, g);
  std::set<int64_t> classes;
  for (double v : s.labels.to_vector()) classes.insert(int64_t(v));
  CHECK(classes.size() == 10);
  fs::path d = scratch("digits");
  std::string images = write_idx_image_set(s, d.string(), "train");
  CHECK(images == (d / "train-images-idx3-ubyte.gz").string());
  ImageSet r = load_image_set(images);
  CHECK(r.images.shape() == Shape{200, 1, 12, 12});
  CHECK(r.labels.to_vector() == s.labels.to_vector());
  CHECK(max(abs(r.images - s.images)).item() <= 0.5 / 255 + 1e-6);
}

TEST_CASE("pad_sequences: ids padded to the longest (or cut at max_len) and a key mask of the real tokens") {
  PaddedBatch b = pad_sequences({{5, 6, 7}, {8}, {}}, 0);
  CHECK(b.ids.shape() == Shape{3, 3});
  CHECK(b.ids.to_vector() == std::vector<double>{5, 6, 7, 8, 0, 0, 0, 0, 0});
  CHECK(b.key_valid.to_vector() == std::vector<double>{1, 1, 1, 1, 0, 0, 1, 0, 0});  // an empty row keeps one key
  PaddedBatch c = pad_sequences({{5, 6, 7}, {8}}, -1, 2);
  CHECK(c.ids.to_vector() == std::vector<double>{5, 6, 8, -1});
  CHECK(c.key_valid.to_vector() == std::vector<double>{1, 1, 1, 0});
  CHECK_THROWS_WITH_AS(pad_sequences({}, 0), doctest::Contains("no sequences"), Error);
  CHECK(multi_hot({{0, 2}, {1}}, 3).to_vector() == std::vector<double>{1, 0, 1, 0, 1, 0});
  CHECK_THROWS_WITH_AS(multi_hot({{3}}, 3), doctest::Contains("label 3"), Error);
}

TEST_CASE("read_labelled_text: label<TAB>text lines (multi-label a,b) and class folders; errors name file and line") {
  fs::path d = scratch("text");
  std::ofstream(d / "t.tsv") << "b\tsecond\n\na,b\tboth\r\nc\tthird\n";
  LabelledText t = read_labelled_text((d / "t.tsv").string());
  CHECK(t.classes == std::vector<std::string>{"a", "b", "c"});
  CHECK(t.texts == std::vector<std::string>{"second", "both", "third"});
  CHECK(t.labels == std::vector<std::vector<int64_t>>{{1}, {0, 1}, {2}});
  CHECK(t.multi_label());
  CHECK_THROWS_WITH_AS(read_labelled_text((d / "t.tsv").string(), {"a", "b"}),
                       doctest::Contains("t.tsv:4: label 'c' is not one of the 2 training classes"), Error);
  fs::create_directories(d / "f" / "neg");
  fs::create_directories(d / "f" / "pos");
  std::ofstream(d / "f" / "pos" / "1.txt") << "good";
  std::ofstream(d / "f" / "neg" / "1.txt") << "bad";
  LabelledText f = read_labelled_text((d / "f").string());
  CHECK(f.classes == std::vector<std::string>{"neg", "pos"});
  CHECK(f.labels == std::vector<std::vector<int64_t>>{{0}, {1}});
  CHECK_FALSE(f.multi_label());
  std::ofstream(d / "bad.tsv") << "a\tok\nnotab\n";
  CHECK_THROWS_WITH_AS(read_labelled_text((d / "bad.tsv").string()), doctest::Contains("bad.tsv:2: no TAB"), Error);
}
