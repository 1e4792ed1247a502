#include "losses/metrics.h"

#include <algorithm>
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

// ---------------------------------------------------------------- distances between sample sets

namespace {

extern "C" void dsyev_(const char* jobz, const char* uplo, const int* n, double* a, const int* lda, double* w,
                       double* work, const int* lwork, int* info);

// Symmetric eigen-decomposition A = V diag(w) Vᵀ (row-major in, V's columns are eigenvectors).
void sym_eig(int n, std::vector<double> a, std::vector<double>& w, std::vector<double>& v, const char* op) {
  w.assign(size_t(n), 0.0);
  int lwork = -1, info = 0;
  double query = 0;
  dsyev_("V", "U", &n, a.data(), &n, w.data(), &query, &lwork, &info);
  lwork = int(query);
  std::vector<double> work(size_t(std::max(lwork, 1)));
  dsyev_("V", "U", &n, a.data(), &n, w.data(), work.data(), &lwork, &info);
  LD_CHECK(info == 0, op, ": the eigen-decomposition failed (LAPACK dsyev info ", info, ")");
  v = std::move(a);  // LAPACK leaves the eigenvectors column-major: v[k*n + i] = V[i][k]
}

// The PSD square root S = V diag(√max(w, 0)) Vᵀ of a symmetric matrix (row-major n×n).
std::vector<double> sqrt_psd(int n, const std::vector<double>& a, const char* op) {
  std::vector<double> w, vt;
  sym_eig(n, a, w, vt, op);  // LAPACK column-major output: vt[k*n + i] = V[i][k]
  std::vector<double> out(size_t(n) * size_t(n), 0.0);
  for (int k = 0; k < n; ++k) {
    double r = std::sqrt(std::max(w[size_t(k)], 0.0));
    if (r == 0) continue;
    const double* vk = &vt[size_t(k) * size_t(n)];
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) out[size_t(i) * size_t(n) + size_t(j)] += r * vk[i] * vk[j];
  }
  return out;
}

std::vector<double> matmul_sq(int n, const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> c(size_t(n) * size_t(n), 0.0);
  for (int i = 0; i < n; ++i)
    for (int k = 0; k < n; ++k) {
      double aik = a[size_t(i) * size_t(n) + size_t(k)];
      for (int j = 0; j < n; ++j) c[size_t(i) * size_t(n) + size_t(j)] += aik * b[size_t(k) * size_t(n) + size_t(j)];
    }
  return c;
}

void mean_cov(const Tensor& x, const char* op, std::vector<double>& mean, std::vector<double>& cov) {
  LD_CHECK(x.dim() == 2 && x.size(0) >= 2, op, ": features must be [N >= 2, d], got ", shape_str(x.shape()));
  int64_t N = x.size(0), d = x.size(1);
  std::vector<double> v = x.to_vector();
  mean.assign(size_t(d), 0.0);
  for (int64_t r = 0; r < N; ++r)
    for (int64_t j = 0; j < d; ++j) mean[size_t(j)] += v[size_t(r * d + j)];
  for (auto& m : mean) m /= double(N);
  cov.assign(size_t(d * d), 0.0);
  for (int64_t r = 0; r < N; ++r)
    for (int64_t i = 0; i < d; ++i) {
      double ci = v[size_t(r * d + i)] - mean[size_t(i)];
      for (int64_t j = 0; j < d; ++j) cov[size_t(i * d + j)] += ci * (v[size_t(r * d + j)] - mean[size_t(j)]);
    }
  for (auto& c : cov) c /= double(N - 1);
}

double frechet(int n, const std::vector<double>& m1, const std::vector<double>& c1, const std::vector<double>& m2,
               const std::vector<double>& c2) {
  const char* op = "frechet_distance";
  double d2 = 0;
  for (int i = 0; i < n; ++i) d2 += (m1[size_t(i)] - m2[size_t(i)]) * (m1[size_t(i)] - m2[size_t(i)]);
  std::vector<double> s1 = sqrt_psd(n, c1, op);
  std::vector<double> inner = matmul_sq(n, matmul_sq(n, s1, c2), s1);  // C1^½ C2 C1^½: symmetric PSD
  for (int i = 0; i < n; ++i)  // symmetrize rounding
    for (int j = 0; j < i; ++j) {
      double a = 0.5 * (inner[size_t(i * n + j)] + inner[size_t(j * n + i)]);
      inner[size_t(i * n + j)] = inner[size_t(j * n + i)] = a;
    }
  std::vector<double> w, v;
  sym_eig(n, inner, w, v, op);
  double tr_sqrt = 0, tr = 0;
  for (double x : w) tr_sqrt += std::sqrt(std::max(x, 0.0));
  for (int i = 0; i < n; ++i) tr += c1[size_t(i * n + i)] + c2[size_t(i * n + i)];
  return std::max(0.0, d2 + tr - 2 * tr_sqrt);
}

}  // namespace

double frechet_distance(const Tensor& mean1, const Tensor& cov1, const Tensor& mean2, const Tensor& cov2) {
  LD_CHECK(mean1.dim() == 1 && mean2.shape() == mean1.shape() && cov1.dim() == 2 && cov1.size(0) == mean1.size(0) &&
               cov1.size(1) == mean1.size(0) && cov2.shape() == cov1.shape(),
           "frechet_distance: expected means [d] and covariances [d, d], got ", shape_str(mean1.shape()), ", ",
           shape_str(cov1.shape()), ", ", shape_str(mean2.shape()), ", ", shape_str(cov2.shape()));
  return frechet(int(mean1.size(0)), mean1.to_vector(), cov1.to_vector(), mean2.to_vector(), cov2.to_vector());
}

double frechet_distance(const Tensor& features1, const Tensor& features2) {
  LD_CHECK(features1.dim() == 2 && features2.dim() == 2 && features1.size(1) == features2.size(1),
           "frechet_distance: features must be [N, d] with the same d, got ", shape_str(features1.shape()), " and ",
           shape_str(features2.shape()));
  std::vector<double> m1, c1, m2, c2;
  mean_cov(features1, "frechet_distance", m1, c1);
  mean_cov(features2, "frechet_distance", m2, c2);
  return frechet(int(features1.size(1)), m1, c1, m2, c2);
}

double sliced_wasserstein(const Tensor& a, const Tensor& b, int64_t projections, Generator& gen) {
  LD_CHECK(a.dim() == 2 && a.shape() == b.shape() && a.size(0) >= 1, "sliced_wasserstein: expected two [N, d] sets ",
           "of the same shape, got ", shape_str(a.shape()), " and ", shape_str(b.shape()));
  LD_CHECK(projections >= 1, "sliced_wasserstein: projections must be >= 1");
  int64_t N = a.size(0), d = a.size(1);
  std::vector<double> va = a.to_vector(), vb = b.to_vector(), dirs = randn({projections, d}, gen, DType::f64).to_vector();
  double total = 0;
  std::vector<double> pa(static_cast<size_t>(N)), pb(static_cast<size_t>(N));
  for (int64_t p = 0; p < projections; ++p) {
    const double* u = &dirs[size_t(p * d)];
    double norm = 0;
    for (int64_t j = 0; j < d; ++j) norm += u[j] * u[j];
    norm = std::sqrt(norm);
    for (int64_t r = 0; r < N; ++r) {
      double x = 0, y = 0;
      for (int64_t j = 0; j < d; ++j) {
        x += va[size_t(r * d + j)] * u[j];
        y += vb[size_t(r * d + j)] * u[j];
      }
      pa[size_t(r)] = x / norm;
      pb[size_t(r)] = y / norm;
    }
    std::sort(pa.begin(), pa.end());
    std::sort(pb.begin(), pb.end());
    double w = 0;
    for (int64_t r = 0; r < N; ++r) w += std::abs(pa[size_t(r)] - pb[size_t(r)]);
    total += w / double(N);
  }
  return total / double(projections);
}

}  // namespace liandan::metrics
