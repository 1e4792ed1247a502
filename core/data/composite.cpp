#include "core/data/composite.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/random.h"

namespace liandan::data {

namespace {
constexpr int64_t kClasses = 10;

// floor(u · m) for u in [0, 1), clamped to m - 1 (u is never 1, but rounding must not make it reach m).
int64_t pick(double u, int64_t m) { return std::min(m - 1, int64_t(u * double(m))); }
}  // namespace

std::vector<double> imbalanced_class_probs(double ratio) {
  LD_CHECK(std::isfinite(ratio) && ratio >= 1, "imbalanced_class_probs: ratio must be a finite number >= 1, got ", ratio);
  std::vector<double> p(kClasses);
  for (int64_t c = 0; c < kClasses; ++c) p[size_t(c)] = std::pow(ratio, -double(c) / double(kClasses - 1));
  double s = std::accumulate(p.begin(), p.end(), 0.0);
  for (double& x : p) x /= s;
  return p;
}

CompositeDigits::CompositeDigits(const Tensor& images, const Tensor& labels, CompositeOptions opt)
    : opt_(std::move(opt)) {
  const char* op = "CompositeDigits";
  LD_CHECK(images.dim() == 3 || (images.dim() == 4 && images.size(1) == 1), op,
           ": images must be [N, h, w] or [N, 1, h, w], got ", shape_str(images.shape()));
  images_ = images.detach().reshape({images.size(0), images.size(-2), images.size(-1)}).to(DType::f32).contiguous();
  h_ = images_.size(1), w_ = images_.size(2);
  LD_CHECK(labels.dtype() == DType::i64 && labels.dim() == 1 && labels.size(0) == images_.size(0), op,
           ": labels must be i64 [", images_.size(0), "], got ", dtype_name(labels.dtype()), " ",
           shape_str(labels.shape()));
  LD_CHECK(opt_.min_digits >= 1 && opt_.max_digits >= opt_.min_digits, op, ": need 1 <= min_digits <= max_digits, got ",
           opt_.min_digits, ", ", opt_.max_digits);
  LD_CHECK(opt_.size >= 0 && opt_.min_gap >= 0, op, ": size and min_gap must be >= 0, got ", opt_.size, " and ",
           opt_.min_gap);
  // Bounds before the products below (a canvas wider than 2^16 or more digits than it can hold is nonsense).
  constexpr int64_t kMaxSide = int64_t(1) << 16;
  LD_CHECK(opt_.height >= 1 && opt_.height <= kMaxSide && opt_.width >= 1 && opt_.width <= kMaxSide, op,
           ": height and width must be in [1, ", kMaxSide, "], got ", opt_.height, " and ", opt_.width);
  LD_CHECK(opt_.max_digits <= opt_.width && opt_.min_gap <= opt_.width, op, ": max_digits ", opt_.max_digits,
           " and min_gap ", opt_.min_gap, " must be at most the width ", opt_.width);
  LD_CHECK(opt_.height >= h_ && opt_.width - w_ - (opt_.max_digits - 1) * opt_.min_gap >= 0, op, ": a ", opt_.height,
           "x", opt_.width, " canvas cannot hold ", opt_.max_digits, " digits of ", h_, "x", w_, " with min_gap ",
           opt_.min_gap);

  std::vector<double> p = opt_.class_probs.empty() ? std::vector<double>(kClasses, 1.0) : opt_.class_probs;
  LD_CHECK(int64_t(p.size()) == kClasses, op, ": class_probs needs ", kClasses, " weights, got ", p.size());
  double total = 0;
  for (double x : p) {
    LD_CHECK(x >= 0 && std::isfinite(x), op, ": class_probs must be finite and >= 0, got ", x);
    total += x;
  }
  LD_CHECK(total > 0, op, ": class_probs sum to 0");
  by_class_.resize(kClasses);
  const int64_t* l = labels.contiguous().data_ptr<int64_t>();
  for (int64_t i = 0; i < labels.size(0); ++i) {
    LD_CHECK(l[i] >= 0 && l[i] < kClasses, op, ": label ", i, " is ", l[i], ", not 0..9");
    by_class_[size_t(l[i])].push_back(i);
  }
  double acc = 0;
  for (int64_t c = 0; c < kClasses; ++c) {
    LD_CHECK(p[size_t(c)] == 0 || !by_class_[size_t(c)].empty(), op, ": class ", c,
             " has weight ", p[size_t(c)], " but no image");
    acc += p[size_t(c)] / total;
    cdf_.push_back(acc);
  }
  cdf_.back() = 1.0;
  // One f64 uniform for k and four per digit (class, source row, x, y); f64 draws use 2 per Philox block.
  blocks_per_element_ = uint64_t(1 + 4 * opt_.max_digits + 1) / 2;
}

CompositeSample CompositeDigits::sample(int64_t index) const {
  LD_CHECK(index >= 0 && index < opt_.size, "CompositeDigits: index ", index, " out of range for ", opt_.size);
  Generator gen;
  gen.set_state(opt_.seed, uint64_t(index) * blocks_per_element_);
  Tensor u_t = rand({1 + 4 * opt_.max_digits}, gen, DType::f64);
  const double* u = u_t.data_ptr<double>();

  CompositeSample s;
  int64_t k = opt_.min_digits + pick(u[0], opt_.max_digits - opt_.min_digits + 1);
  int64_t span_x = opt_.width - w_ - (k - 1) * opt_.min_gap, span_y = opt_.height - h_;
  std::vector<int64_t> xv(static_cast<size_t>(k));
  for (int64_t j = 0; j < k; ++j) {
    const double* uj = u + 1 + 4 * j;
    int64_t c = int64_t(std::upper_bound(cdf_.begin(), cdf_.end(), uj[0]) - cdf_.begin());
    c = std::min(c, kClasses - 1);
    const auto& rows = by_class_[size_t(c)];
    s.classes.push_back(c);
    s.source_index.push_back(rows[size_t(pick(uj[1], int64_t(rows.size())))]);
    xv[size_t(j)] = pick(uj[2], span_x + 1);
    s.y.push_back(pick(uj[3], span_y + 1));
  }
  // Left-to-right order: by drawn x, ties by placement order; rank r gets r·min_gap added.
  std::vector<int64_t> order(static_cast<size_t>(k));
  std::iota(order.begin(), order.end(), int64_t(0));
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return xv[size_t(a)] < xv[size_t(b)]; });
  s.x.resize(size_t(k));
  for (int64_t r = 0; r < k; ++r) s.x[size_t(order[size_t(r)])] = xv[size_t(order[size_t(r)])] + r * opt_.min_gap;
  for (int64_t r = 0; r < k; ++r) s.sequence.push_back(s.classes[size_t(order[size_t(r)])]);

  // "over" compositing from the top digit down: T(p) = Π_{j>i}(1 - v_j(p)) is the transmittance above digit i.
  const int64_t H = opt_.height, W = opt_.width;
  std::vector<double> T(size_t(H * W), 1.0);
  s.visible_fraction.assign(size_t(k), 0.0);
  const float* src = images_.data_ptr<float>();
  for (int64_t i = k - 1; i >= 0; --i) {
    const float* v = src + s.source_index[size_t(i)] * h_ * w_;
    double ink = 0, visible = 0;
    for (int64_t r = 0; r < h_; ++r)
      for (int64_t c = 0; c < w_; ++c) {
        double vi = std::clamp(double(v[r * w_ + c]), 0.0, 1.0);
        double& t = T[size_t((s.y[size_t(i)] + r) * W + s.x[size_t(i)] + c)];
        ink += vi;
        visible += vi * t;
        t *= 1.0 - vi;
      }
    s.visible_fraction[size_t(i)] = ink > 0 ? visible / ink : 0.0;
  }
  s.image = empty({1, H, W});
  float* img = s.image.data_ptr<float>();
  for (size_t p = 0; p < T.size(); ++p) img[p] = float(1.0 - T[p]);

  s.multi_hot.assign(kClasses, 0.0);
  s.soft.assign(kClasses, 0.0);
  for (int64_t i = 0; i < k; ++i) {
    size_t c = size_t(s.classes[size_t(i)]);
    s.multi_hot[c] = 1.0;
    s.soft[c] = std::max(s.soft[c], s.visible_fraction[size_t(i)]);
  }
  return s;
}

Batch CompositeDigits::get(const std::vector<int64_t>& indices) const {
  int64_t B = int64_t(indices.size()), H = opt_.height, W = opt_.width;
  bool fixed_k = opt_.min_digits == opt_.max_digits;
  Tensor image = empty({B, 1, H, W}), multi_hot = empty({B, kClasses}), soft = empty({B, kClasses});
  Tensor count = empty({B}, DType::i64), sequence = empty({B, opt_.max_digits}, DType::i64);
  for (int64_t b = 0; b < B; ++b) {
    CompositeSample s = sample(indices[size_t(b)]);
    std::copy_n(s.image.data_ptr<float>(), H * W, image.data_ptr<float>() + b * H * W);
    for (int64_t c = 0; c < kClasses; ++c) {
      multi_hot.data_ptr<float>()[b * kClasses + c] = float(s.multi_hot[size_t(c)]);
      soft.data_ptr<float>()[b * kClasses + c] = float(s.soft[size_t(c)]);
    }
    count.data_ptr<int64_t>()[b] = int64_t(s.classes.size());
    if (fixed_k) std::copy(s.sequence.begin(), s.sequence.end(), sequence.data_ptr<int64_t>() + b * opt_.max_digits);
  }
  Batch batch;
  batch.add("image", image);
  batch.add("multi_hot", multi_hot);
  batch.add("soft", soft);
  batch.add("count", count);
  if (fixed_k) batch.add("sequence", sequence);
  return batch;
}

}  // namespace liandan::data
