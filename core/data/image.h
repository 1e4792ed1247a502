#pragma once
// Images for humans: PNG files (libpng), grids of sample images, and a small line-plot renderer for the
// loss and metric curves of a run (axes, ticks, labels and legend drawn with an embedded 5x7 bitmap font).
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace liandan::data {

// 8-bit pixels, rows top to bottom, channels interleaved: 1 = gray, 3 = RGB, 4 = RGBA.
struct Image {
  int64_t width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;
  Image() = default;
  Image(int64_t w, int64_t h, int64_t c, uint8_t fill = 0);
  uint8_t* at(int64_t x, int64_t y) { return pixels.data() + (y * width + x) * channels; }
  const uint8_t* at(int64_t x, int64_t y) const { return pixels.data() + (y * width + x) * channels; }
};

// Written atomically (a temporary file renamed over `path`), so a viewer never sees half a plot.
void write_png(const std::string& path, const Image& img);
// Any PNG, converted to 8 bits; gray stays 1 channel, colour 3, anything with alpha 4.
Image read_png(const std::string& path);

// [C, H, W] (C = 1 or 3) or [H, W] tensor to an image, mapping [lo, hi] to [0, 255] (clamped, rounded).
Image tensor_to_image(const Tensor& t, double lo = 0.0, double hi = 1.0);

struct GridOptions {
  int64_t nrow = 8;         // images per row (torchvision's make_grid)
  int64_t padding = 2;      // pixels around and between the images
  double lo = 0.0, hi = 1.0;  // value range of the images: [0, 1], or lo = -1 for [-1, 1]
  uint8_t pad_value = 128;  // grey, visible against white-on-black and black-on-white images
};
// [N, C, H, W] (C = 1 or 3) or [N, H, W] to one image of ceil(N / nrow) rows:
// width nrow·(W + padding) + padding, height rows·(H + padding) + padding.
Image image_grid(const Tensor& images, const GridOptions& opt = {});
void save_image_grid(const std::string& path, const Tensor& images, const GridOptions& opt = {});

struct PlotSeries {
  std::string name;
  std::vector<double> x, y;  // same length; non-finite y (and y <= 0 on a log axis) break the line
  int64_t color = -1;        // tab10 index; -1: the series' position
  bool faint = false;        // drawn lighter (raw values under a smoothed curve); an empty name: not in the legend
};
struct PlotOptions {
  int64_t width = 800, height = 480;
  std::string title, xlabel = "step", ylabel;
  bool log_y = false;
};
// An RGB image of the series as lines (tab10 colours), with ticks at 1-2-5 steps and a legend right of the axes.
Image plot_lines(const std::vector<PlotSeries>& series, const PlotOptions& opt = {});
void save_plot(const std::string& path, const std::vector<PlotSeries>& series, const PlotOptions& opt = {});

// Text in the embedded 5x7 font (printable ASCII; other bytes draw '?'), top-left at (x, y), each font
// pixel a scale×scale square; `vertical` writes bottom to top (for a y-axis label). RGB images only.
void draw_text(Image& img, int64_t x, int64_t y, const std::string& text, const uint8_t rgb[3], int64_t scale = 1,
               bool vertical = false);
int64_t text_width(const std::string& text, int64_t scale = 1);  // 6·scale per character, less the last gap

}  // namespace liandan::data
