#include "core/data/image_set.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "core/data/image.h"
#include "core/data/mnist.h"
#include "core/error.h"
#include "core/ops.h"

namespace liandan::data {

namespace fs = std::filesystem;

std::string idx_labels_path(const std::string& images_path) {
  fs::path p(images_path);
  std::string name = p.filename().string();
  size_t at = name.find("images");
  if (at == std::string::npos) return "";
  name.replace(at, 6, "labels");
  for (const char* d : {"idx3", "idx4"})
    if (size_t i = name.find(d); i != std::string::npos) name.replace(i, 4, "idx1");
  return (p.parent_path() / name).string();
}

namespace {

// IDX u8 [N, H, W] or [N, H, W, C] (channels interleaved, as in a PNG) -> f32 [N, C, H, W] in [0, 1].
Tensor idx_to_images(const IdxU8& idx, const std::string& path) {
  const Shape& d = idx.dims;
  LD_CHECK(d.size() == 3 || d.size() == 4, "load_image_set: ", path, ": expected [N, H, W] or [N, H, W, C] images, got ",
           shape_str(d));
  int64_t n = d[0], h = d[1], w = d[2], c = d.size() == 4 ? d[3] : 1;
  LD_CHECK(h > 0 && w > 0 && c >= 1 && c <= 4, "load_image_set: ", path, ": images ", shape_str(d),
           " need H, W > 0 and 1 to 4 channels");
  Tensor out = empty({n, c, h, w});
  float* o = out.data_ptr<float>();
  const uint8_t* s = idx.data.data();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x)
        for (int64_t k = 0; k < c; ++k)
          o[((i * c + k) * h + y) * w + x] = float(s[((i * h + y) * w + x) * c + k]) * (1.0f / 255.0f);
  return out;
}

}  // namespace

ImageSet load_image_set(const std::string& path, const std::string& labels_path) {
  LD_CHECK(fs::exists(path), "load_image_set: ", path, " not found");
  if (fs::is_directory(path)) return load_image_folder(path);
  std::string lp = labels_path.empty() ? idx_labels_path(path) : labels_path;
  LD_CHECK(!lp.empty(), "load_image_set: ", path, ": no labels file given, and the name has no 'images' to ",
           "derive one from (give the labels file's path)");
  LD_CHECK(fs::exists(lp), "load_image_set: labels file ", lp, " (of ", path, ") not found");
  ImageSet s{idx_to_images(read_idx_u8(path), path), read_idx_labels(lp), {}};
  LD_CHECK(s.images.size(0) == s.labels.size(0), "load_image_set: ", path, " has ", s.images.size(0), " images but ", lp,
           " has ", s.labels.size(0), " labels");
  LD_CHECK(s.images.size(0) > 0, "load_image_set: ", path, " holds no images");
  return s;
}

ImageSet load_image_folder(const std::string& dir) {
  std::vector<fs::path> classes;
  for (auto& e : fs::directory_iterator(dir))
    if (e.is_directory()) classes.push_back(e.path());
  std::sort(classes.begin(), classes.end());
  LD_CHECK(!classes.empty(), "load_image_folder: ", dir, " has no sub-folders (one per class, holding PNG files)");
  std::vector<Image> imgs;
  std::vector<int64_t> labels;
  ImageSet s;
  for (size_t k = 0; k < classes.size(); ++k) {
    s.classes.push_back(classes[k].filename().string());
    std::vector<fs::path> files;
    for (auto& e : fs::directory_iterator(classes[k])) {
      std::string ext = e.path().extension().string();
      std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
      if (e.is_regular_file() && ext == ".png") files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());  // a fixed order: the same run on any file system
    for (auto& f : files) {
      imgs.push_back(read_png(f.string()));
      labels.push_back(int64_t(k));
      const Image& a = imgs.front();
      const Image& b = imgs.back();
      LD_CHECK(a.width == b.width && a.height == b.height, "load_image_folder: ", f.string(), " is ", b.width, "x",
               b.height, " but the first image is ", a.width, "x", a.height, " (every image must have one size)");
    }
  }
  LD_CHECK(!imgs.empty(), "load_image_folder: ", dir, ": no .png files in its class folders");
  int64_t c = 1, h = imgs[0].height, w = imgs[0].width, n = int64_t(imgs.size());
  for (auto& im : imgs) c = std::max(c, im.channels == 4 ? 3 : im.channels);  // alpha dropped
  s.images = empty({n, c, h, w});
  float* o = s.images.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    const Image& im = imgs[size_t(i)];
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x)
        for (int64_t k = 0; k < c; ++k) {
          int64_t src = im.channels == 1 ? 0 : std::min<int64_t>(k, 2);  // gray images repeat into RGB
          o[((i * c + k) * h + y) * w + x] = float(im.at(x, y)[src]) * (1.0f / 255.0f);
        }
  }
  s.labels = from_vector(labels, {n});
  return s;
}

Tensor fit_images(const Tensor& images, int64_t height, int64_t width, const std::string& mode) {
  LD_CHECK(images.dim() == 4, "fit_images: expected [N, C, H, W], got ", shape_str(images.shape()));
  LD_CHECK(height > 0 && width > 0, "fit_images: size ", height, "x", width, " must be positive");
  LD_CHECK(mode == "resize" || mode == "pad", "fit_images: mode must be 'resize' or 'pad', got '", mode, "'");
  int64_t n = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3);
  if (h == height && w == width) return images;
  Tensor src = images.contiguous();
  const float* s = src.data_ptr<float>();
  Tensor out = zeros({n, c, height, width});
  float* o = out.data_ptr<float>();
  for (int64_t p = 0; p < n * c; ++p) {
    const float* sp = s + p * h * w;
    float* op = o + p * height * width;
    for (int64_t y = 0; y < height; ++y)
      for (int64_t x = 0; x < width; ++x) {
        if (mode == "pad") {  // centred; a larger source is cropped around its centre
          int64_t sy = y - (height - h) / 2, sx = x - (width - w) / 2;
          if (sy >= 0 && sy < h && sx >= 0 && sx < w) op[y * width + x] = sp[sy * w + sx];
          continue;
        }
        // Bilinear with pixel centres aligned (align_corners = false, as torch's default).
        double fy = std::clamp((y + 0.5) * double(h) / double(height) - 0.5, 0.0, double(h - 1));
        double fx = std::clamp((x + 0.5) * double(w) / double(width) - 0.5, 0.0, double(w - 1));
        int64_t y0 = int64_t(fy), x0 = int64_t(fx), y1 = std::min(y0 + 1, h - 1), x1 = std::min(x0 + 1, w - 1);
        double ay = fy - double(y0), ax = fx - double(x0);
        op[y * width + x] = float((1 - ay) * ((1 - ax) * sp[y0 * w + x0] + ax * sp[y0 * w + x1]) +
                                  ay * ((1 - ax) * sp[y1 * w + x0] + ax * sp[y1 * w + x1]));
      }
  }
  return out;
}

Tensor to_channels(const Tensor& images, int64_t channels) {
  LD_CHECK(images.dim() == 4, "to_channels: expected [N, C, H, W], got ", shape_str(images.shape()));
  LD_CHECK(channels == 1 || channels == 3, "to_channels: channels must be 1 or 3, got ", channels);
  int64_t c = images.size(1);
  if (c == channels) return images;
  if (c == 4) return to_channels(images.narrow(1, 0, 3).contiguous(), channels);  // alpha dropped
  if (channels == 1) return mean(images.narrow(1, 0, std::min<int64_t>(c, 3)), {1}, true).contiguous();
  LD_CHECK(c == 1, "to_channels: cannot turn ", c, " channels into 3");
  return cat({images, images, images}, 1);
}

Tensor normalize_images(const Tensor& images, const std::vector<double>& mean, const std::vector<double>& std) {
  int64_t c = images.size(1);
  auto per_channel = [&](const std::vector<double>& v, const char* what) {
    LD_CHECK(v.size() == 1 || int64_t(v.size()) == c, "normalize_images: ", what, " has ", v.size(),
             " values; give 1 or one per channel (", c, ")");
    return [&v](int64_t k) { return v.size() == 1 ? v[0] : v[size_t(k)]; };
  };
  auto m = per_channel(mean, "mean");
  auto sd = per_channel(std, "std");
  for (size_t k = 0; k < std.size(); ++k)
    LD_CHECK(std::isfinite(std[k]) && std[k] > 0, "normalize_images: std ", std[k], " must be a positive number");
  Tensor out = images.contiguous().clone();
  float* o = out.data_ptr<float>();
  int64_t plane = images.size(2) * images.size(3);
  for (int64_t p = 0; p < images.size(0) * c; ++p) {
    float mu = float(m(p % c)), inv = float(1.0 / sd(p % c));
    for (int64_t i = 0; i < plane; ++i) o[p * plane + i] = (o[p * plane + i] - mu) * inv;
  }
  return out;
}

Tensor augment_images(const Tensor& images, const AugmentOptions& opt, Generator& gen) {
  LD_CHECK(images.dim() == 4, "augment_images: expected [N, C, H, W], got ", shape_str(images.shape()));
  LD_CHECK(opt.crop_padding >= 0, "augment_images: crop_padding ", opt.crop_padding, " must be >= 0");
  int64_t n = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3), p = opt.crop_padding;
  Tensor src = images.contiguous();
  std::vector<double> u = rand({n, 3}, gen, DType::f64).to_vector();
  Tensor out = zeros(images.shape());
  const float* s = src.data_ptr<float>();
  float* o = out.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    // Offsets in [-p, p]: the crop window of the zero-padded image, relative to the original.
    int64_t dy = std::min(int64_t(u[size_t(3 * i)] * double(2 * p + 1)), 2 * p) - p;
    int64_t dx = std::min(int64_t(u[size_t(3 * i + 1)] * double(2 * p + 1)), 2 * p) - p;
    bool flip = opt.hflip && u[size_t(3 * i + 2)] < 0.5;
    for (int64_t k = 0; k < c; ++k) {
      const float* sp = s + (i * c + k) * h * w;
      float* op = o + (i * c + k) * h * w;
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x) {
          int64_t sy = y + dy, sx = (flip ? w - 1 - x : x) + dx;
          if (sy >= 0 && sy < h && sx >= 0 && sx < w) op[y * w + x] = sp[sy * w + sx];
        }
    }
  }
  return out;
}

}  // namespace liandan::data

namespace liandan::data {

ImageSet synthetic_digits(int64_t n, int64_t size, int64_t channels, Generator& gen) {
  LD_CHECK(n > 0, "synthetic_digits: n ", n, " must be positive");
  LD_CHECK(size >= 8 && size <= 1024, "synthetic_digits: size ", size, " must be in [8, 1024]");
  LD_CHECK(channels == 1 || channels == 3, "synthetic_digits: channels ", channels, " must be 1 or 3");
  int64_t scale = size / 8, gw = 5 * scale, gh = 7 * scale;
  std::vector<double> u = rand({n, 6}, gen, DType::f64).to_vector();
  std::vector<double> noise = rand({n, size * size, 2}, gen, DType::f64).to_vector();
  ImageSet s;
  s.images = zeros({n, channels, size, size});
  std::vector<int64_t> labels(static_cast<size_t>(n));
  float* o = s.images.data_ptr<float>();
  const uint8_t white[3] = {255, 255, 255};
  for (int64_t i = 0; i < n; ++i) {
    const double* r = &u[size_t(6 * i)];
    int64_t label = std::min<int64_t>(int64_t(r[0] * 10), 9);
    labels[size_t(i)] = label;
    Image glyph(size, size, 3);
    int64_t x0 = std::min(int64_t(r[1] * double(size - gw + 1)), size - gw);
    int64_t y0 = std::min(int64_t(r[2] * double(size - gh + 1)), size - gh);
    draw_text(glyph, x0, y0, std::string(1, char('0' + label)), white, scale);
    for (int64_t k = 0; k < channels; ++k) {
      float tint = channels == 1 ? 1.0f : float(0.4 + 0.6 * r[3 + k]);
      for (int64_t p = 0; p < size * size; ++p) {
        const double* z = &noise[size_t(2 * (i * size * size + p))];
        float v = glyph.pixels[size_t(3 * p)] / 255.0f * tint;
        if (z[0] < 0.05) v = float(z[1]);
        o[(i * channels + k) * size * size + p] = v;
      }
    }
  }
  s.labels = from_vector(labels, {n});
  return s;
}

std::string write_idx_image_set(const ImageSet& set, const std::string& dir, const std::string& prefix) {
  fs::create_directories(dir);
  Tensor x = set.images.contiguous();
  int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  std::vector<uint8_t> pixels(static_cast<size_t>(x.numel())), labels(static_cast<size_t>(n));
  const float* p = x.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < c; ++k)
      for (int64_t j = 0; j < h * w; ++j)  // [N, C, H, W] -> [N, H, W, C]
        pixels[size_t((i * h * w + j) * c + k)] =
            uint8_t(std::lround(255.0 * std::clamp(double(p[(i * c + k) * h * w + j]), 0.0, 1.0)));
  const int64_t* l = set.labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    LD_CHECK(l[i] >= 0 && l[i] < 256, "write_idx_image_set: label ", l[i], " does not fit a byte");
    labels[size_t(i)] = uint8_t(l[i]);
  }
  std::string images = dir + "/" + prefix + (c == 1 ? "-images-idx3-ubyte.gz" : "-images-idx4-ubyte.gz");
  write_idx_u8(images, c == 1 ? Shape{n, h, w} : Shape{n, h, w, c}, pixels);
  write_idx_u8(dir + "/" + prefix + "-labels-idx1-ubyte.gz", {n}, labels);
  return images;
}

void write_image_folder(const ImageSet& set, const std::string& dir) {
  const int64_t* l = set.labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < set.images.size(0); ++i) {
    std::string cls = size_t(l[i]) < set.classes.size() ? set.classes[size_t(l[i])] : std::to_string(l[i]);
    fs::create_directories(dir + "/" + cls);
    write_png(dir + "/" + cls + "/" + std::to_string(i) + ".png", tensor_to_image(set.images.select(0, i)));
  }
}

}  // namespace liandan::data
