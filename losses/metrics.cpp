#include "losses/metrics.h"

#include <cmath>

#include "core/autograd.h"

namespace liandan::metrics {

namespace {

struct Multilabel {
  std::vector<double> s, t;
  int64_t rows = 0, C = 0;
};

Multilabel read_multilabel(const Tensor& scores, const Tensor& targets, const char* op) {
  LD_CHECK(scores.defined() && targets.defined(), op, ": undefined tensor argument");
  LD_CHECK(is_floating(scores.dtype()), op, ": scores must be f32 or f64, got ", dtype_name(scores.dtype()));
  LD_CHECK(scores.dim() >= 1, op, ": scores must have shape [..., C], got ", shape_str(scores.shape()));
  LD_CHECK(scores.shape() == targets.shape(), op, ": scores ", shape_str(scores.shape()), " and targets ",
           shape_str(targets.shape()), " must have the same shape");
  NoGradGuard ng;
  Multilabel m;
  m.C = scores.shape().back();
  m.rows = m.C ? scores.numel() / m.C : shape_numel(Shape(scores.shape().begin(), scores.shape().end() - 1));
  m.s = scores.to_vector();
  m.t = targets.to_vector();
  return m;
}

double ratio(double num, double den, double zero_division) { return den == 0 ? zero_division : num / den; }

}  // namespace

double multilabel_exact_match(const Tensor& scores, const Tensor& targets, double threshold) {
  Multilabel m = read_multilabel(scores, targets, "multilabel_exact_match");
  LD_CHECK(m.rows > 0, "multilabel_exact_match: no examples (scores ", shape_str(scores.shape()), ")");
  int64_t ok = 0;
  for (int64_t r = 0; r < m.rows; ++r) {
    bool all = true;
    for (int64_t c = 0; c < m.C && all; ++c) {
      size_t q = size_t(r * m.C + c);
      all = (m.s[q] > threshold) == (m.t[q] > 0.5);
    }
    ok += all;
  }
  return double(ok) / double(m.rows);
}

F1 multilabel_f1(const Tensor& scores, const Tensor& targets, double threshold, double zero_division) {
  Multilabel m = read_multilabel(scores, targets, "multilabel_f1");
  std::vector<int64_t> tp(size_t(m.C)), fp(size_t(m.C)), fn(size_t(m.C));
  for (int64_t r = 0; r < m.rows; ++r)
    for (int64_t c = 0; c < m.C; ++c) {
      size_t q = size_t(r * m.C + c);
      bool p = m.s[q] > threshold, y = m.t[q] > 0.5;
      tp[size_t(c)] += p && y;
      fp[size_t(c)] += p && !y;
      fn[size_t(c)] += !p && y;
    }
  F1 f;
  double macro = 0;
  for (int64_t c = 0; c < m.C; ++c) {
    size_t k = size_t(c);
    f.tp += tp[k], f.fp += fp[k], f.fn += fn[k];
    double fc = ratio(2.0 * double(tp[k]), double(2 * tp[k] + fp[k] + fn[k]), zero_division);
    f.per_label.push_back(fc);
    macro += fc;
  }
  f.macro = m.C ? macro / double(m.C) : zero_division;
  f.micro = ratio(2.0 * double(f.tp), double(2 * f.tp + f.fp + f.fn), zero_division);
  f.precision = ratio(double(f.tp), double(f.tp + f.fp), zero_division);
  f.recall = ratio(double(f.tp), double(f.tp + f.fn), zero_division);
  return f;
}

NxmAccuracy nxm_accuracy(const Tensor& logits, const Tensor& targets) {
  const char* op = "nxm_accuracy";
  LD_CHECK(logits.defined() && targets.defined(), op, ": undefined tensor argument");
  LD_CHECK(is_floating(logits.dtype()), op, ": logits must be f32 or f64, got ", dtype_name(logits.dtype()));
  LD_CHECK(logits.dim() >= 2, op, ": logits must have shape [..., n, m], got ", shape_str(logits.shape()));
  int64_t m = logits.shape().back(), n = logits.shape()[size_t(logits.dim() - 2)];
  LD_CHECK(m >= 1, op, ": logits have no classes (shape ", shape_str(logits.shape()), ")");
  Shape task_shape(logits.shape().begin(), logits.shape().end() - 1);
  int64_t B = n ? shape_numel(task_shape) / n : shape_numel(Shape(logits.shape().begin(), logits.shape().end() - 2));
  LD_CHECK(B > 0, op, ": no examples (logits ", shape_str(logits.shape()), ")");
  NoGradGuard ng;
  auto argmax_rows = [m](const std::vector<double>& v) {
    std::vector<int64_t> a(v.size() / size_t(m));
    for (size_t r = 0; r < a.size(); ++r) {
      int64_t best = 0;
      for (int64_t k = 1; k < m; ++k)
        if (v[r * size_t(m) + size_t(k)] > v[r * size_t(m) + size_t(best)]) best = k;
      a[r] = best;
    }
    return a;
  };
  std::vector<int64_t> pred = argmax_rows(logits.to_vector()), truth;
  if (targets.dtype() == DType::i64) {
    LD_CHECK(targets.shape() == task_shape, op, ": class-index targets must have shape ", shape_str(task_shape),
             " for logits ", shape_str(logits.shape()), ", got ", shape_str(targets.shape()));
    for (double v : targets.to_vector()) {
      LD_CHECK(v >= 0 && v < double(m), op, ": class index ", int64_t(v), " is out of range for ", m, " classes");
      truth.push_back(int64_t(v));
    }
  } else {
    LD_CHECK(targets.shape() == logits.shape(), op, ": logits ", shape_str(logits.shape()), " and targets ",
             shape_str(targets.shape()), " must have the same shape (or targets i64 of shape ",
             shape_str(task_shape), ")");
    truth = argmax_rows(targets.to_vector());
  }
  NxmAccuracy a;
  a.per_task.assign(size_t(n), 0.0);
  int64_t whole = 0, right = 0;
  for (int64_t b = 0; b < B; ++b) {
    bool all = true;
    for (int64_t i = 0; i < n; ++i) {
      size_t q = size_t(b * n + i);
      bool ok = pred[q] == truth[q];
      a.per_task[size_t(i)] += ok;
      right += ok;
      all = all && ok;
    }
    whole += all;
  }
  for (double& v : a.per_task) v /= double(B);
  a.mean_task = n ? double(right) / double(B * n) : 1.0;
  a.whole_example = double(whole) / double(B);
  return a;
}

}  // namespace liandan::metrics
