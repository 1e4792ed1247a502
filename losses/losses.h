#pragma once
// Loss functions (namespace liandan::losses). Every loss is differentiable w.r.t. its logits /
// inputs (targets never carry a gradient) and takes a Reduction with torch's meaning:
//   none: the per-element (per-sample) losses; sum: their sum; mean: their mean, except where a
//   loss says otherwise (class weights and ignore_index: divide by the total weight of the
//   non-ignored targets, as torch's nll_loss/cross_entropy).
//
//   cross_entropy.cpp  cross_entropy (class indices or probabilities; weight, ignore_index,
//                      label_smoothing), nll_loss, binary_cross_entropy_with_logits (weight,
//                      pos_weight), mse_loss, l1_loss, smooth_l1_loss, huber_loss
//   zlpr.cpp           ZLPR multi-label loss (hard, soft, sparse), its σ(2s) probability helper,
//                      and the two "n m-way classifications" losses (Loss-1, Loss-3)
//
// The math of ZLPR and the n×m losses: shared/docs/seeds-math.md §3-§4 and algorithms.md §2.
#include <cstdint>

#include "core/ops.h"
#include "core/tensor.h"

namespace liandan::losses {

enum class Reduction { none, mean, sum };
const char* reduction_name(Reduction r);

// Applies `r` to per-element losses: none returns `l`, sum sums all of it, mean averages all of it
// (an empty `l` gives NaN under mean, as torch).
Tensor reduce(const Tensor& l, Reduction r);

// ============================================================================ cross-entropy family
// Shapes follow torch: logits [C], [N, C] or [N, C, d1, ...] (the class dim is 1, or 0 for 1-D).
//   Class-index targets: i64 of shape [], [N] or [N, d1, ...]; entries in [0, C) or ignore_index.
//   Probability targets: floating, the logits' shape (each slice along the class dim a distribution;
//   not checked to sum to 1, as torch).
struct CrossEntropyOptions {
  Tensor weight{};                // [C] class weights, or undefined (all 1)
  int64_t ignore_index = -100;    // class-index targets only: such targets contribute nothing
  double label_smoothing = 0.0;   // in [0, 1]: targets become (1-α)·y + α/C
  Reduction reduction = Reduction::mean;
};
// Class indices, per element l_n = -(1-α)·w[y_n]·log p[n, y_n] - (α/C)·Σ_c w[c]·log p[n, c] (0 where
// y_n == ignore_index). mean: Σ_n l_n / Σ_{n not ignored} w[y_n] (NaN when every target is ignored,
// as torch); with α > 0 the smoothing term is divided by the same total weight (torch's choice).
// Probabilities: l_n = -Σ_c w[c]·t'[n, c]·log p[n, c] with t' the smoothed targets; mean divides by
// the number of elements N·d1·..., never by weights (as torch).
Tensor cross_entropy(const Tensor& logits, const Tensor& target, const CrossEntropyOptions& opt = {});

struct NllOptions {
  Tensor weight{};
  int64_t ignore_index = -100;
  Reduction reduction = Reduction::mean;
};
// log_probs [C], [N, C] or [N, C, d1, ...] and i64 targets; l_n = -w[y_n]·log_probs[n, y_n];
// mean divides by Σ_{n not ignored} w[y_n].
Tensor nll_loss(const Tensor& log_probs, const Tensor& target, const NllOptions& opt = {});

struct BceOptions {
  Tensor weight{};    // broadcast to the logits' shape, or undefined
  Tensor pos_weight{};  // broadcast along the last dim (the class dim), or undefined
  Reduction reduction = Reduction::mean;
};
// l = w·[(1-t)·softplus(x) + pw·t·softplus(-x)] (torch's (1-t)·x + (1 + (pw-1)·t)·softplus(-x)
// without its cancellation), softplus(x) = max(x, 0) + log1p(e^{-|x|}): exact for any x. Targets in
// [0, 1] with the logits' shape. mean: over all elements.
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target, const BceOptions& opt = {});

// Regression losses; input and target have the same shape; mean is over all elements.
Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction r = Reduction::mean);
Tensor l1_loss(const Tensor& input, const Tensor& target, Reduction r = Reduction::mean);
// |d| < beta ? 0.5·d²/beta : |d| - 0.5·beta (beta = 0 is l1).
Tensor smooth_l1_loss(const Tensor& input, const Tensor& target, Reduction r = Reduction::mean, double beta = 1.0);
// |d| <= delta ? 0.5·d² : delta·(|d| - 0.5·delta).
Tensor huber_loss(const Tensor& input, const Tensor& target, Reduction r = Reduction::mean, double delta = 1.0);

// ============================================================================ ZLPR (multi-label)
// Logits s [..., C] (raw scores, no activation; predict label i iff s_i > 0) and targets [..., C];
// the loss of each row is over the last dim, so `none` returns shape [...] and mean averages rows.
// Logits <= -1e11 (e.g. pre-masked to -1e12 or -inf) are invalid entries: excluded from both sums,
// so they change neither the loss nor any gradient (bert4keras's convention).
//
// Hard: targets exactly 0/1 (any dtype; anything else is an error),
//   L = log(1 + Σ_{neg} e^{s_i}) + log(1 + Σ_{pos} e^{-s_j}),
// computed as two logsumexps with a 0 logit appended: exact and finite for |s| up to 1e4 and beyond.
// An empty positive (negative) set makes its term log 1 = 0.
Tensor zlpr(const Tensor& logits, const Tensor& targets, Reduction r = Reduction::mean);

// Soft (kexue.fm/archives/9064): targets t in [0, 1] (an error otherwise),
//   L = log(1 + Σ_i (1-t_i)·e^{s_i}) + log(1 + Σ_i t_i·e^{-s_i}),
// computed as logsumexp([s_i + log(1-t_i)], 0) + logsumexp([-s_i + log t_i], 0). The article's masking
// fix: t < eps acts as exactly 0 and t > 1-eps as exactly 1 (the entry leaves the positive, resp.
// negative, sum altogether), so a masked logit of -1e12 cannot meet a finite log(eps) and stay live,
// and soft == hard bit for bit on 0/1 targets. Minimizer: s_i = ½·logit(t_i), i.e. t_i = σ(2 s_i).
Tensor zlpr_soft(const Tensor& logits, const Tensor& targets, Reduction r = Reduction::mean, double eps = 1e-7);

// Probabilities the (soft) ZLPR loss calibrates: σ(2s) (> 0.5 exactly when s > 0).
Tensor zlpr_probs(const Tensor& logits);
// The minimum over s of the soft loss for targets t: 2·log(1 + Σ_i sqrt(t_i(1-t_i))), shape [...]
// (no gradient). zlpr_soft(s, t, none) - zlpr_soft_min(t) >= 0 is a divergence that is 0 at the optimum.
Tensor zlpr_soft_min(const Tensor& targets);

// Sparse ZLPR (bert4keras sparse_multilabel_categorical_crossentropy): logits [..., C], i64
// positive-label indices [..., K] (distinct within a row). pos = lse([-s_pos, 0]), all = lse([s, 0]),
// neg = all + log(clip(1 - e^{lse(s_pos) - all}, 1e-7, 1)). Equals zlpr() while the positives do not
// hold nearly all of the mass (the 1e-7 floor is bert4keras's). With mask_zero, index 0 in the
// targets is padding and class 0 is removed from the loss entirely (it must be a dummy class).
Tensor sparse_zlpr(const Tensor& logits, const Tensor& pos_index, Reduction r = Reduction::mean,
                   bool mask_zero = false);

// Reference ZLPR built from core ops only (logsumexp, where, cat); zlpr/zlpr_soft use a fused
// row kernel (forward and gradient in one pass) and the tests check that both agree.
Tensor zlpr_composite(const Tensor& logits, const Tensor& targets, Reduction r = Reduction::mean);
Tensor zlpr_soft_composite(const Tensor& logits, const Tensor& targets, Reduction r = Reduction::mean,
                           double eps = 1e-7);

// ============================================================================ n m-way classifications
// (kexue.fm/archives/9158, seeds-math §4.) Logits s [..., n, m]: n independent m-way problems per
// example. Targets t: [..., n, m] distributions over the m classes (entries in [0, 1], each row
// summing to 1 within 1e-3), or i64 class indices [..., n] (one-hot). The masking fix of zlpr_soft
// applies: t < eps is exactly 0 (its terms vanish, so a class masked by a -1e12 logit and t = 0 is inert).
// Each example's loss sums over the m classes j; `none` returns shape [...], mean averages examples.
//
// Loss-1 (the article's choice for hard labels):
//   l1 = Σ_j log(1 + Σ_i Σ_{k≠j} t_ij·e^{-s_ij + s_ik}).
// Built from an [..., n, m, m] tensor of exponents, so memory is O(n·m²) per example.
Tensor nxm_loss1(const Tensor& logits, const Tensor& targets, Reduction r = Reduction::mean, double eps = 1e-7);
// Loss-3 (analytic soft optimum t_ij = softmax_j(s_ij); fails on hard labels, see the tests):
//   l3 = Σ_j log(1 + Σ_i t_ij·e^{-s_ij + s̄_i}),  s̄_i = mean_j s_ij.
// s̄ averages every logit of a sub-problem, so Loss-3 cannot take -1e12-masked classes (Loss-1 can).
Tensor nxm_loss3(const Tensor& logits, const Tensor& targets, Reduction r = Reduction::mean, double eps = 1e-7);

}  // namespace liandan::losses
