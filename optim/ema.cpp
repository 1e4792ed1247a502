#include "optim/ema.h"

#include <map>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/error.h"

namespace liandan::optim {

EMA::EMA(const NamedParams& params, double decay, bool warmup) : params_(params), decay_(decay), warmup_(warmup) {
  LD_CHECK(decay >= 0 && decay <= 1, "EMA: decay must lie in [0, 1], got ", decay);
  NoGradGuard no_grad;
  for (auto& [name, p] : params_) {
    LD_CHECK(p.is_contiguous(), "EMA: parameter '", name, "' is not contiguous");
    shadow_.emplace_back(name, p.detach().clone());
  }
}

void EMA::update() {
  double d = warmup_ ? std::min(decay_, (1.0 + double(n_)) / (10.0 + double(n_))) : decay_;
  ++n_;
  // s ← d·s + (1 − d)·p for every parameter: a loop per tensor on the CPU, a few multi-tensor launches on a GPU.
  std::vector<Tensor> shadows, params;
  for (size_t i = 0; i < params_.size(); ++i) {
    shadows.push_back(shadow_[i].second);
    params.push_back(params_[i].second.detach());
  }
  foreach_axpby_(shadows, params, d, 1 - d);
}

void EMA::copy_to(const NamedParams& target) const {
  NoGradGuard no_grad;
  std::map<std::string, Tensor> byname(shadow_.begin(), shadow_.end());
  for (auto& [name, t] : target) {
    auto it = byname.find(name);
    LD_CHECK(it != byname.end(), "EMA::copy_to: no average for parameter '", name, "'");
    LD_CHECK(it->second.shape() == t.shape(), "EMA::copy_to: '", name, "' has shape ", shape_str(t.shape()),
             ", the average has ", shape_str(it->second.shape()));
    Tensor(t).copy_(it->second);
  }
}

void EMA::swap() {
  NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor live = params_[i].second.detach().clone();
    Tensor(params_[i].second).copy_(shadow_[i].second);
    shadow_[i].second.copy_(live);
  }
}

NamedTensors EMA::state_dict() const {
  NamedTensors out;
  for (auto& [name, t] : shadow_) out.emplace_back("ema." + name, t);
  out.emplace_back("ema.__updates", from_vector(std::vector<int64_t>{n_}, {}));
  return out;
}

void EMA::load_state_dict(const NamedTensors& dict, const std::string& source) {
  std::map<std::string, Tensor> byname(dict.begin(), dict.end());
  for (auto& [name, t] : shadow_) {
    auto it = byname.find("ema." + name);
    LD_CHECK(it != byname.end(), "EMA: ", source, ": missing 'ema.", name, "'");
    LD_CHECK(it->second.shape() == t.shape(), "EMA: ", source, ": 'ema.", name, "' has shape ",
             shape_str(it->second.shape()), ", expected ", shape_str(t.shape()));
    t.copy_(it->second);
  }
  auto it = byname.find("ema.__updates");
  LD_CHECK(it != byname.end(), "EMA: ", source, ": missing 'ema.__updates'");
  n_ = int64_t(it->second.item());
}

}  // namespace liandan::optim
