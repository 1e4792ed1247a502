#pragma once
// Composite multi-digit MNIST: k digits pasted on a larger canvas at random positions (they may overlap),
// with three targets:
//   - "multi_hot" [10]: 1 for every class among the placed digits (hard ZLPR target);
//   - "soft" [10]: per class, the largest visible fraction among its digits (soft ZLPR target; 0 if absent);
//   - "sequence" [k] (i64): the digits' classes from left to right (n×m loss with n = k, m = 10); only when
//     every canvas holds the same number of digits (min_digits == max_digits).
// plus "image" [1, H, W] (f32 in [0, 1]) and "count" (i64, the number of digits).
//
// Compositing ("over", later digits on top, ink intensity as opacity). Digit i (in placement order) has
// intensity v_i(p) in [0, 1] at canvas pixel p (0 outside its box). The canvas is
//   c = v_1 over ... over v_k,  i.e. c(p) = Σ_i v_i(p) · Π_{j>i} (1 - v_j(p))  (= 1 - Π_i (1 - v_i(p))),
// and digit i's visible ink at p is its term a_i(p) = v_i(p) · Π_{j>i} (1 - v_j(p)), so Σ_i a_i = c exactly.
// Its visible fraction is f_i = Σ_p a_i(p) / Σ_p v_i(p) (1 when nothing covers it; 0 for a blank digit).
//
// Placement: y uniform in [0, H - h]; x uniform as well, except that `min_gap` > 0 keeps the left edges of
// horizontally consecutive digits at least min_gap apart (draw k integers in [0, W - w - (k-1)·min_gap],
// then add rank·min_gap), so "left to right" stays readable. Ties in x are ordered by placement order.
//
// Element i of the data set is a pure function of (seed, i): its random numbers are one draw from
// Generator(seed) at offset i·blocks_per_element, so any element can be built alone, on any thread.
#include <cstdint>
#include <vector>

#include "core/data/loader.h"

namespace liandan::data {

struct CompositeOptions {
  int64_t height = 56, width = 56;
  int64_t min_digits = 2, max_digits = 2;  // k uniform in [min_digits, max_digits]
  // Class sampling weights (10 non-negative numbers, normalized here); empty = uniform. The label-imbalance
  // knob; see imbalanced_class_probs.
  std::vector<double> class_probs;
  int64_t min_gap = 0;  // see above; 0 lets digits overlap freely
  int64_t size = 10000;  // elements in the data set
  uint64_t seed = 0;
};

// Weights p_c ∝ ratio^(-c/9): class 0 is `ratio` times as frequent as class 9 (ratio 1 = uniform).
std::vector<double> imbalanced_class_probs(double ratio);

// One composite with everything the targets derive from (for tests and inspection).
struct CompositeSample {
  Tensor image;                          // f32 [1, H, W]
  std::vector<int64_t> classes;          // per digit, placement order
  std::vector<int64_t> source_index;     // row of the source images
  std::vector<int64_t> x, y;             // top-left corner of each digit's box
  std::vector<double> visible_fraction;  // f_i
  std::vector<double> multi_hot, soft;   // [10]
  std::vector<int64_t> sequence;         // classes left to right
};

class CompositeDigits : public Dataset {
 public:
  // images: [N, h, w] (or [N, 1, h, w]) in [0, 1]; labels: i64 [N] in 0..9. Every class that can be drawn
  // (weight > 0) must occur among the labels.
  CompositeDigits(const Tensor& images, const Tensor& labels, CompositeOptions opt);
  int64_t size() const override { return opt_.size; }
  // Fields: image [B, 1, H, W], multi_hot [B, 10], soft [B, 10] (f32), count [B], sequence [B, k] (i64).
  Batch get(const std::vector<int64_t>& indices) const override;
  CompositeSample sample(int64_t index) const;
  const CompositeOptions& options() const { return opt_; }

 private:
  Tensor images_;  // f32 [N, h, w], contiguous
  int64_t h_ = 0, w_ = 0;
  std::vector<std::vector<int64_t>> by_class_;  // source rows of each class
  std::vector<double> cdf_;                     // cumulative class probabilities
  CompositeOptions opt_;
  uint64_t blocks_per_element_ = 0;
};

}  // namespace liandan::data
