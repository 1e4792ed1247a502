#include "optim/clip.h"

#include <algorithm>
#include <cmath>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"

namespace liandan::optim {

namespace {
template <class F>
void for_each_grad(const NamedParams& params, F&& f) {
  for (auto& [name, p] : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    LD_CHECK(g.is_contiguous(), "gradient of '", name, "' is not contiguous");
    f(name, g);
  }
}
double sum_squares(const Tensor& g) {
  if (!g.device().is_cpu()) {  // a device reduction (deterministic), one number back
    NoGradGuard ng;
    return sum(square(g.to(DType::f64))).item();
  }
  double ss = 0;
  LD_DISPATCH_FLOAT(g.dtype(), "grad_norm", [&] {
    const scalar_t* x = g.data_ptr<scalar_t>();
    for (int64_t i = 0; i < g.numel(); ++i) ss += double(x[i]) * double(x[i]);
  });
  return ss;
}
}  // namespace

double grad_norm(const NamedParams& params) {
  double ss = 0;
  for_each_grad(params, [&](const std::string&, const Tensor& g) { ss += sum_squares(g); });
  return std::sqrt(ss);
}

double clip_grad_norm_(const NamedParams& params, double max_norm) {
  LD_CHECK(max_norm > 0, "clip_grad_norm_: max_norm must be > 0, got ", max_norm);
  NoGradGuard no_grad;
  double norm = grad_norm(params);
  double coef = max_norm / (norm + 1e-6);
  if (coef < 1)
    for_each_grad(params, [&](const std::string&, const Tensor& g) { Tensor(g).mul_(coef); });
  return norm;
}

double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm) {
  return clip_grad_norm_(name_params(params), max_norm);
}

void clip_grad_value_(const NamedParams& params, double v) {
  LD_CHECK(v > 0, "clip_grad_value_: value must be > 0, got ", v);
  for_each_grad(params, [&](const std::string&, const Tensor& g) {
    if (!g.device().is_cpu()) {
      NoGradGuard ng;
      Tensor(g).copy_(clamp(g, -v, v));
      return;
    }
    LD_DISPATCH_FLOAT(g.dtype(), "clip_grad_value_", [&] {
      scalar_t* x = g.data_ptr<scalar_t>();
      for (int64_t i = 0; i < g.numel(); ++i) x[i] = std::clamp(x[i], scalar_t(-v), scalar_t(v));
    });
    g.bump_version();
  });
}

std::optional<std::string> first_nonfinite_grad(const NamedParams& params) {
  std::optional<std::string> bad;
  for_each_grad(params, [&](const std::string& name, const Tensor& g) {
    if (bad) return;
    if (!std::isfinite(sum_squares(g))) bad = name;  // NaN or Inf anywhere makes the sum non-finite
  });
  return bad;
}

std::optional<std::string> first_nonfinite_param(const NamedParams& params) {
  for (auto& [name, p] : params)
    if (p.is_contiguous() && !std::isfinite(sum_squares(p))) return name;
  return std::nullopt;
}

GradAccumulation::GradAccumulation(int64_t micro_batches) : k_(micro_batches) {
  LD_CHECK(k_ >= 1, "GradAccumulation: micro-batch count must be >= 1, got ", k_);
}

}  // namespace liandan::optim
