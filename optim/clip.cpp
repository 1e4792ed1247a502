#include "optim/clip.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <vector>

#include "core/autograd.h"
#include "core/device.h"
#include "core/error.h"
#include "core/ops.h"

namespace liandan::optim {

namespace {

// The defined gradients of `params` with their names (contiguous: an Error names one that is not).
std::vector<std::pair<std::string, Tensor>> grads_of(const NamedParams& params) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (auto& [name, p] : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    LD_CHECK(g.is_contiguous(), "gradient of '", name, "' is not contiguous");
    out.emplace_back(name, g);
  }
  return out;
}

template <class F>
void for_each_grad(const NamedParams& params, F&& f) {
  for (auto& [name, g] : grads_of(params)) f(name, g);
}

std::vector<double> grad_sums_of_squares(const std::vector<std::pair<std::string, Tensor>>& grads) {
  std::vector<Tensor> ts;
  for (auto& kv : grads) ts.push_back(kv.second);
  return sums_of_squares(ts);
}

}  // namespace

double grad_norm(const NamedParams& params) {
  double ss = 0;
  for (double s : grad_sums_of_squares(grads_of(params))) ss += s;
  return std::sqrt(ss);
}

double clip_grad_norm_(const NamedParams& params, double max_norm) {
  LD_CHECK(max_norm > 0, "clip_grad_norm_: max_norm must be > 0, got ", max_norm);
  NoGradGuard no_grad;
  double norm = grad_norm(params);
  double coef = max_norm / (norm + 1e-6);
  if (coef < 1) {
    std::vector<Tensor> grads;
    for (auto& kv : grads_of(params)) grads.push_back(kv.second);
    foreach_axpby_(grads, {}, coef, 0.0);  // one multi-tensor pass on a GPU
  }
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

// NaN or Inf anywhere in a tensor makes its sum of squares non-finite.
std::optional<std::string> first_nonfinite_grad(const NamedParams& params) {
  auto grads = grads_of(params);
  std::vector<double> ss = grad_sums_of_squares(grads);
  for (size_t i = 0; i < ss.size(); ++i)
    if (!std::isfinite(ss[i])) return grads[i].first;
  return std::nullopt;
}

std::optional<std::string> first_nonfinite_param(const NamedParams& params) {
  std::vector<std::string> names;
  std::vector<Tensor> ts;
  for (auto& [name, p] : params)
    if (p.is_contiguous()) names.push_back(name), ts.push_back(p.detach());
  std::vector<double> ss = sums_of_squares(ts);
  for (size_t i = 0; i < ss.size(); ++i)
    if (!std::isfinite(ss[i])) return names[i];
  return std::nullopt;
}

GradAccumulation::GradAccumulation(int64_t micro_batches) : k_(micro_batches) {
  LD_CHECK(k_ >= 1, "GradAccumulation: micro-batch count must be >= 1, got ", k_);
}

}  // namespace liandan::optim
