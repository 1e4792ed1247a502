#pragma once
// Metrics for multi-label and n×m outputs (namespace liandan::metrics). Inputs are tensors of any
// floating dtype and layout; results are plain doubles (no autograd).
//
// Multi-label: scores s [..., C] (ZLPR logits: label predicted iff s > threshold, 0 by default,
// which is σ(2s) > 0.5) and targets [..., C] (a label is true iff target > 0.5, so 0/1 and soft
// targets both work). Every leading index is one example.
// n×m: logits [..., n, m] (prediction: argmax over m, first maximum on ties) and targets either i64
// class indices [..., n] or distributions [..., n, m] (their argmax).
#include <cstdint>
#include <vector>

#include "core/random.h"
#include "core/tensor.h"

namespace liandan::metrics {

// Fraction of examples whose whole predicted label set equals the true one (subset accuracy).
// An example with no true and no predicted label counts as a match.
double multilabel_exact_match(const Tensor& scores, const Tensor& targets, double threshold = 0.0);

struct F1 {
  double micro = 0;               // 2·TP / (2·TP + FP + FN) over all (example, label) pairs
  double macro = 0;               // mean over labels of each label's F1
  double precision = 0, recall = 0;  // micro precision TP/(TP+FP) and recall TP/(TP+FN)
  int64_t tp = 0, fp = 0, fn = 0;
  std::vector<double> per_label;  // F1 of each label
};
// A 0/0 ratio (a label never true and never predicted, or no positives at all for micro) is
// `zero_division` (0 by default, as scikit-learn's f1_score).
F1 multilabel_f1(const Tensor& scores, const Tensor& targets, double threshold = 0.0, double zero_division = 0.0);

struct NxmAccuracy {
  std::vector<double> per_task;  // [n]: accuracy of sub-problem i over the examples
  double mean_task = 0;          // mean of per_task (= accuracy over all (example, i) pairs)
  double whole_example = 0;      // fraction of examples with all n sub-problems right
};
NxmAccuracy nxm_accuracy(const Tensor& logits, const Tensor& targets);

// ---- distances between sample sets (generative models)

// Fréchet distance between Gaussians N(μ1, C1), N(μ2, C2): ‖μ1 − μ2‖² + Tr(C1 + C2 − 2(C1^½ C2 C1^½)^½)
// (symmetric eigen-decompositions by LAPACK dsyev, in double; tiny negative eigenvalues from rounding are
// clamped to 0). means [d], covariances [d, d].
double frechet_distance(const Tensor& mean1, const Tensor& cov1, const Tensor& mean2, const Tensor& cov2);
// The same from feature rows [N, d] (sample mean and unbiased covariance of each set): FID when the
// features are a classifier's penultimate activations.
double frechet_distance(const Tensor& features1, const Tensor& features2);
// Sliced Wasserstein-1 between equal-size point sets [N, d]: the mean over `projections` random unit
// directions (from `gen`) of the 1-D W1 distance between the sorted projections.
double sliced_wasserstein(const Tensor& a, const Tensor& b, int64_t projections, Generator& gen);

}  // namespace liandan::metrics
