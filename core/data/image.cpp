#include "core/data/image.h"

#include <png.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/fileio.h"

namespace liandan::data {

Image::Image(int64_t w, int64_t h, int64_t c, uint8_t fill) : width(w), height(h), channels(c) {
  LD_CHECK(w >= 0 && h >= 0 && (c == 1 || c == 3 || c == 4), "Image: bad size ", w, "x", h, "x", c);
  pixels.assign(size_t(w * h * c), fill);
}

// ---------------------------------------------------------------- PNG (libpng's simplified API)

namespace {
uint32_t png_format(int64_t channels) {
  return channels == 1 ? PNG_FORMAT_GRAY : channels == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_RGBA;
}
}  // namespace

void write_png(const std::string& path, const Image& img) {
  LD_CHECK(img.width > 0 && img.height > 0 && int64_t(img.pixels.size()) == img.width * img.height * img.channels,
           "write_png: ", path, ": inconsistent image ", img.width, "x", img.height, "x", img.channels, " with ",
           img.pixels.size(), " bytes");
  png_image im;
  std::memset(&im, 0, sizeof im);
  im.version = PNG_IMAGE_VERSION;
  im.width = png_uint_32(img.width);
  im.height = png_uint_32(img.height);
  im.format = png_format(img.channels);
  // Encoded in memory, then written like every other file (core/fileio.h: temp, fsync, rename).
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&im, nullptr, &size, 0, img.pixels.data(), 0, nullptr))
    LD_FAIL("write_png: ", path, ": ", im.message);
  std::string bytes(size, '\0');
  if (!png_image_write_to_memory(&im, bytes.data(), &size, 0, img.pixels.data(), 0, nullptr))
    LD_FAIL("write_png: ", path, ": ", im.message);
  bytes.resize(size);
  write_file_atomic(path, bytes);
}

Image read_png(const std::string& path) {
  png_image im;
  std::memset(&im, 0, sizeof im);
  im.version = PNG_IMAGE_VERSION;
  LD_CHECK(png_image_begin_read_from_file(&im, path.c_str()), "read_png: ", path, ": ", im.message);
  bool alpha = im.format & PNG_FORMAT_FLAG_ALPHA, color = im.format & PNG_FORMAT_FLAG_COLOR;
  Image img;
  img.channels = alpha ? 4 : color ? 3 : 1;
  img.width = im.width;
  img.height = im.height;
  im.format = png_format(img.channels);
  img.pixels.resize(PNG_IMAGE_SIZE(im));
  if (!png_image_finish_read(&im, nullptr, img.pixels.data(), 0, nullptr)) {
    std::string msg = im.message;
    png_image_free(&im);
    LD_FAIL("read_png: ", path, ": ", msg);
  }
  return img;
}

// ---------------------------------------------------------------- tensors to images

namespace {
uint8_t to_byte(double v, double lo, double hi) {
  double t = (v - lo) / (hi - lo);
  if (!(t > 0)) return 0;  // also NaN
  return uint8_t(std::lround(std::min(t, 1.0) * 255.0));
}

// Copies image `t` ([C, H, W] with C = 1 or 3, contiguous f64) into `img` at (x0, y0).
void blit(Image& img, const double* t, int64_t C, int64_t H, int64_t W, int64_t x0, int64_t y0, double lo, double hi) {
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x)
      for (int64_t c = 0; c < img.channels; ++c)
        img.at(x0 + x, y0 + y)[c] = to_byte(t[(C == 1 ? 0 : c) * H * W + y * W + x], lo, hi);
}
}  // namespace

Image tensor_to_image(const Tensor& t, double lo, double hi) {
  LD_CHECK(t.dim() == 2 || (t.dim() == 3 && (t.size(0) == 1 || t.size(0) == 3)),
           "tensor_to_image: expected [H, W] or [C, H, W] with C = 1 or 3, got ", shape_str(t.shape()));
  LD_CHECK(hi > lo, "tensor_to_image: empty value range [", lo, ", ", hi, "]");
  Tensor x = t.detach().to(DType::f64).contiguous();
  int64_t C = t.dim() == 2 ? 1 : t.size(0);
  Image img(t.size(-1), t.size(-2), C);
  blit(img, x.data_ptr<double>(), C, img.height, img.width, 0, 0, lo, hi);
  return img;
}

Image image_grid(const Tensor& images, const GridOptions& opt) {
  LD_CHECK(images.dim() == 3 || (images.dim() == 4 && (images.size(1) == 1 || images.size(1) == 3)),
           "image_grid: expected [N, H, W] or [N, C, H, W] with C = 1 or 3, got ", shape_str(images.shape()));
  LD_CHECK(opt.nrow >= 1 && opt.padding >= 0 && opt.hi > opt.lo, "image_grid: bad options (nrow ", opt.nrow,
           ", padding ", opt.padding, ", range [", opt.lo, ", ", opt.hi, "])");
  Tensor x = images.detach().to(DType::f64).contiguous();
  int64_t N = x.size(0), C = x.dim() == 4 ? x.size(1) : 1, H = x.size(-2), W = x.size(-1), p = opt.padding;
  LD_CHECK(N >= 1, "image_grid: no images");
  int64_t cols = std::min(opt.nrow, N), rows = (N + opt.nrow - 1) / opt.nrow;
  Image img(cols * (W + p) + p, rows * (H + p) + p, C, opt.pad_value);
  for (int64_t i = 0; i < N; ++i)
    blit(img, x.data_ptr<double>() + i * C * H * W, C, H, W, p + (i % opt.nrow) * (W + p), p + (i / opt.nrow) * (H + p),
         opt.lo, opt.hi);
  return img;
}

void save_image_grid(const std::string& path, const Tensor& images, const GridOptions& opt) {
  write_png(path, image_grid(images, opt));
}

// ---------------------------------------------------------------- text

namespace {
// 5x7 glyphs of printable ASCII (32..126): 7 rows of 5 bits, row 0 in bits 34..30, the leftmost pixel the
// high bit of its row. Drawn for liandan (public domain).
constexpr uint64_t kFont[95] = {
    0x000000000, 0x108421004, 0x294a00000, 0x295f57d4a, 0x11f4717c4, 0x632222263, 0x32544564d, 0x108400000,
    0x088842082, 0x208210888, 0x009575480, 0x0084f9080, 0x000003088, 0x0000f8000, 0x00000018c, 0x002222200,
    0x3a33ae62e, 0x11842108e, 0x3a211111f, 0x7c441062e, 0x08ca97c42, 0x7e1e0862e, 0x1910f462e, 0x7c2222108,
    0x3a317462e, 0x3a317844c, 0x018c03180, 0x018c03088, 0x088882082, 0x001f07c00, 0x208208888, 0x3a2111004,
    0x3a216d6ae, 0x3a31fc631, 0x7a31f463e, 0x3a308422e, 0x72518c65c, 0x7e10f421f, 0x7e10f4210, 0x3a30bc62f,
    0x4631fc631, 0x38842108e, 0x1c4210a4c, 0x4654c5251, 0x42108421f, 0x4775ac631, 0x4639ace31, 0x3a318c62e,
    0x7a31f4210, 0x3a318d64d, 0x7a31f5251, 0x3e107043e, 0x7c8421084, 0x46318c62e, 0x46318c544, 0x4631ad6aa,
    0x462a22a31, 0x463151084, 0x7c222221f, 0x39084210e, 0x020820820, 0x38421084e, 0x115100000, 0x00000001f,
    0x208200000, 0x000e0be2f, 0x4216cc63e, 0x000e8422e, 0x042d9c62f, 0x000e8fe0e, 0x1928e2108, 0x01f18bc2e,
    0x4216cc631, 0x100c2108e, 0x080610a4c, 0x4212a6292, 0x30842108e, 0x001aad631, 0x0016cc631, 0x000e8c62e,
    0x001e8fa10, 0x000d9bc21, 0x0016cc210, 0x000e8383e, 0x211c42126, 0x00118c66d, 0x00118c544, 0x00118d6aa,
    0x001151151, 0x00118bc2e, 0x001f1111f, 0x088441082, 0x108421084, 0x208411088, 0x0008a8800,
};

void put(Image& img, int64_t x, int64_t y, const uint8_t rgb[3]) {
  if (x < 0 || y < 0 || x >= img.width || y >= img.height) return;
  std::memcpy(img.at(x, y), rgb, 3);
}

void fill_rect(Image& img, int64_t x0, int64_t y0, int64_t w, int64_t h, const uint8_t rgb[3]) {
  for (int64_t y = y0; y < y0 + h; ++y)
    for (int64_t x = x0; x < x0 + w; ++x) put(img, x, y, rgb);
}
}  // namespace

int64_t text_width(const std::string& text, int64_t scale) {
  return text.empty() ? 0 : (6 * int64_t(text.size()) - 1) * scale;
}

void draw_text(Image& img, int64_t x, int64_t y, const std::string& text, const uint8_t rgb[3], int64_t scale,
               bool vertical) {
  LD_CHECK(img.channels == 3, "draw_text: expected an RGB image, got ", img.channels, " channels");
  for (size_t i = 0; i < text.size(); ++i) {
    unsigned char ch = uint8_t(text[i]);
    uint64_t g = kFont[(ch >= 32 && ch < 127 ? ch : '?') - 32];
    for (int64_t r = 0; r < 7; ++r)
      for (int64_t c = 0; c < 5; ++c) {
        if (!((g >> (34 - (r * 5 + c))) & 1)) continue;
        int64_t gx = (int64_t(i) * 6 + c) * scale, gy = r * scale;  // font pixel in text coordinates
        if (vertical) fill_rect(img, x + gy, y - gx - scale + 1, scale, scale, rgb);
        else fill_rect(img, x + gx, y + gy, scale, scale, rgb);
      }
  }
}

// ---------------------------------------------------------------- line plots

namespace {
constexpr uint8_t kTab10[10][3] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {214, 39, 40},  {148, 103, 189},
                                   {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207}};
constexpr uint8_t kBlack[3] = {0, 0, 0}, kGrid[3] = {225, 225, 225}, kFrame[3] = {120, 120, 120},
                  kWhite[3] = {255, 255, 255};

// Ticks at multiples of 1, 2 or 5 × 10^k, about `target` of them across [lo, hi].
std::vector<double> nice_ticks(double lo, double hi, int target) {
  double raw = (hi - lo) / target, mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag * (raw / mag < 1.5 ? 1 : raw / mag < 3.5 ? 2 : raw / mag < 7.5 ? 5 : 10);
  std::vector<double> t;
  for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step)
    t.push_back(std::fabs(v) < step * 1e-9 ? 0.0 : v);
  return t;
}

std::string tick_label(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

// Bresenham, 2 pixels thick, clipped to [x0, x1] x [y0, y1].
void line(Image& img, int64_t ax, int64_t ay, int64_t bx, int64_t by, const uint8_t rgb[3], int64_t cx0, int64_t cy0,
          int64_t cx1, int64_t cy1) {
  int64_t dx = std::abs(bx - ax), dy = -std::abs(by - ay), sx = ax < bx ? 1 : -1, sy = ay < by ? 1 : -1, err = dx + dy;
  while (true) {
    for (int64_t oy = 0; oy < 2; ++oy)
      for (int64_t ox = 0; ox < 2; ++ox)
        if (ax + ox >= cx0 && ax + ox <= cx1 && ay + oy >= cy0 && ay + oy <= cy1) put(img, ax + ox, ay + oy, rgb);
    if (ax == bx && ay == by) break;
    int64_t e2 = 2 * err;
    if (e2 >= dy) err += dy, ax += sx;
    if (e2 <= dx) err += dx, ay += sy;
  }
}
}  // namespace

Image plot_lines(const std::vector<PlotSeries>& series, const PlotOptions& opt) {
  LD_CHECK(opt.width >= 200 && opt.height >= 150, "plot_lines: image too small (", opt.width, "x", opt.height,
           "; at least 200x150)");
  auto usable = [&](double y) { return std::isfinite(y) && (!opt.log_y || y > 0); };
  double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
  for (const auto& s : series) {
    LD_CHECK(s.x.size() == s.y.size(), "plot_lines: series '", s.name, "' has ", s.x.size(), " x and ", s.y.size(),
             " y values");
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !usable(s.y[i])) continue;
      double y = opt.log_y ? std::log10(s.y[i]) : s.y[i];
      xlo = std::min(xlo, s.x[i]), xhi = std::max(xhi, s.x[i]), ylo = std::min(ylo, y), yhi = std::max(yhi, y);
    }
  }
  if (!(xlo <= xhi)) xlo = 0, xhi = 1, ylo = 0, yhi = 1;  // nothing to draw: empty axes
  if (xhi - xlo < 1e-12) xlo -= 0.5, xhi += 0.5;
  if (yhi - ylo < 1e-12) ylo -= 0.5, yhi += 0.5;
  double pad = 0.05 * (yhi - ylo);
  ylo -= pad, yhi += pad;

  int64_t s = std::max<int64_t>(1, std::min(opt.width, opt.height) / 240);  // font scale
  std::vector<double> yt = opt.log_y ? std::vector<double>{} : nice_ticks(ylo, yhi, 6), xt = nice_ticks(xlo, xhi, 8);
  if (opt.log_y) {
    // decades, plus 2 and 5 when the range spans under three decades
    bool fine = yhi - ylo < 3;
    for (double d = std::floor(ylo); d <= std::ceil(yhi); d += 1)
      for (double m : fine ? std::vector<double>{1, 2, 5} : std::vector<double>{1})
        if (double v = d + std::log10(m); v >= ylo && v <= yhi) yt.push_back(v);
  }
  int64_t label_w = 0;
  for (double v : yt) label_w = std::max(label_w, text_width(tick_label(opt.log_y ? std::pow(10, v) : v), s));
  int64_t ch = 7 * s, gap = 4 * s;
  int64_t left = gap + (opt.ylabel.empty() ? 0 : ch + 2 * gap) + label_w + gap + 3 * s;
  int64_t top = gap * 2 + (opt.title.empty() ? 0 : ch + gap);
  int64_t bottom = opt.height - (gap + ch + gap + 3 * s + (opt.xlabel.empty() ? 0 : ch + gap) + gap);
  // The legend goes right of the axes, outside the data (inside, it covered rising accuracy curves).
  int64_t name_w = 0, n = 0;
  for (const auto& sr : series)
    if (!sr.name.empty()) name_w = std::max(name_w, text_width(sr.name, s)), ++n;
  int64_t legend_w = n > 0 ? gap * 3 + 6 * s * 3 + name_w : 0;
  int64_t right = opt.width - 4 * gap - (n > 0 ? legend_w + gap : 0);
  LD_CHECK(right - left >= 50, "plot_lines: legend names too long for a ", opt.width, " pixel wide plot");
  auto px = [&](double x) { return left + int64_t(std::lround((x - xlo) / (xhi - xlo) * double(right - left))); };
  auto py = [&](double y) { return bottom - int64_t(std::lround((y - ylo) / (yhi - ylo) * double(bottom - top))); };

  // A series' tab10 colour; `faint` ones (raw values under their smoothed curve) mixed 65% with white.
  auto colour = [&](size_t k) {
    const uint8_t* c = kTab10[size_t(series[k].color >= 0 ? series[k].color : int64_t(k)) % 10];
    static thread_local uint8_t mixed[3];
    if (!series[k].faint) return c;
    for (int i = 0; i < 3; ++i) mixed[i] = uint8_t(c[i] + (255 - c[i]) * 65 / 100);
    return static_cast<const uint8_t*>(mixed);
  };
  Image img(opt.width, opt.height, 3, 255);
  for (double v : yt) {  // grid lines and tick labels
    int64_t y = py(v);
    fill_rect(img, left, y, right - left + 1, 1, kGrid);
    fill_rect(img, left - 3 * s, y, 3 * s, 1, kFrame);
    std::string l = tick_label(opt.log_y ? std::pow(10, v) : v);
    draw_text(img, left - 3 * s - gap - text_width(l, s), y - ch / 2, l, kBlack, s);
  }
  for (double v : xt) {
    int64_t x = px(v);
    fill_rect(img, x, top, 1, bottom - top + 1, kGrid);
    fill_rect(img, x, bottom + 1, 1, 3 * s, kFrame);
    std::string l = tick_label(v);
    draw_text(img, x - text_width(l, s) / 2, bottom + 3 * s + gap, l, kBlack, s);
  }
  for (auto [x, y, w, h] : std::vector<std::array<int64_t, 4>>{{left, top, right - left + 1, 1},
                                                               {left, bottom, right - left + 1, 1},
                                                               {left, top, 1, bottom - top + 1},
                                                               {right, top, 1, bottom - top + 1}})
    fill_rect(img, x, y, w, h, kFrame);
  if (!opt.title.empty()) draw_text(img, (opt.width - text_width(opt.title, s)) / 2, gap * 2, opt.title, kBlack, s);
  if (!opt.xlabel.empty())
    draw_text(img, (left + right - text_width(opt.xlabel, s)) / 2, opt.height - gap - ch, opt.xlabel, kBlack, s);
  if (!opt.ylabel.empty())
    draw_text(img, gap, (top + bottom + text_width(opt.ylabel, s)) / 2, opt.ylabel, kBlack, s, true);

  for (size_t k = 0; k < series.size(); ++k) {
    const auto& sr = series[k];
    bool have = false;
    int64_t lx = 0, ly = 0;
    for (size_t i = 0; i < sr.x.size(); ++i) {
      if (!std::isfinite(sr.x[i]) || !usable(sr.y[i])) {
        have = false;
        continue;
      }
      int64_t x = px(sr.x[i]), y = py(opt.log_y ? std::log10(sr.y[i]) : sr.y[i]);
      line(img, have ? lx : x, have ? ly : y, x, y, colour(k), left, top, right, bottom);
      if (sr.x.size() <= 40)  // sparse series (evaluations): a marker per point, so even one point shows
        fill_rect(img, x - s - 1, y - s - 1, 2 * s + 3, 2 * s + 3, colour(k));
      have = true, lx = x, ly = y;
    }
  }
  if (n > 0) {  // legend, right of the axes
    int64_t row = ch + gap, w = legend_w, h = gap + n * row;
    int64_t x0 = right + 2 * gap, y0 = top;
    fill_rect(img, x0, y0, w, h, kWhite);
    for (auto [x, y, ww, hh] : std::vector<std::array<int64_t, 4>>{{x0, y0, w, 1}, {x0, y0 + h, w + 1, 1},
                                                                   {x0, y0, 1, h}, {x0 + w, y0, 1, h}})
      fill_rect(img, x, y, ww, hh, kFrame);
    int64_t r = 0;
    for (size_t k = 0; k < series.size(); ++k) {
      if (series[k].name.empty()) continue;
      int64_t y = y0 + gap + r++ * row;
      fill_rect(img, x0 + gap, y + ch / 2 - s / 2, 6 * s * 3 - gap, std::max<int64_t>(2, s), colour(k));
      draw_text(img, x0 + gap * 2 + 6 * s * 3 - gap, y, series[k].name, kBlack, s);
    }
  }
  return img;
}

void save_plot(const std::string& path, const std::vector<PlotSeries>& series, const PlotOptions& opt) {
  write_png(path, plot_lines(series, opt));
}

}  // namespace liandan::data
