#include "optim/optimizer.h"

#include <map>
#include <set>

#include "core/autograd.h"
#include "core/cpu/loops.h"
#include "core/device.h"
#include "core/ops.h"
#include "core/ops/elementwise_kernels.h"
#include "core/error.h"

namespace liandan::optim {

std::vector<double> sums_of_squares(const std::vector<Tensor>& ts) {
  std::vector<double> out(ts.size(), 0.0);
  std::map<std::string, std::vector<size_t>> on_device;  // device name -> indices
  for (size_t i = 0; i < ts.size(); ++i) {
    const Tensor& t = ts[i];
    if (!t.device().is_cpu()) {
      on_device[t.device().str()].push_back(i);
      continue;
    }
    LD_DISPATCH_FLOAT(t.dtype(), "sum of squares", [&] {
      const scalar_t* x = t.data_ptr<scalar_t>();
      double ss = 0;
      for (int64_t k = 0; k < t.numel(); ++k) ss += double(x[k]) * double(x[k]);
      out[i] = ss;
    });
  }
  for (auto& [dev, idx] : on_device) {
    std::vector<Tensor> xs;
    for (size_t i : idx) xs.push_back(ts[i].is_contiguous() ? ts[i] : ts[i].contiguous());
    Device d = xs[0].device();
    Tensor sums = empty({int64_t(xs.size())}, {DType::f64, d});
    device_backend(d).sum_squares(xs, sums);
    std::vector<double> v = sums.to_vector();
    for (size_t k = 0; k < idx.size(); ++k) out[idx[k]] = v[k];
  }
  return out;
}

void foreach_axpby_(const std::vector<Tensor>& ys, const std::vector<Tensor>& xs, double a, double b) {
  LD_CHECK(xs.empty() || xs.size() == ys.size(), "foreach_axpby_: ", ys.size(), " outputs and ", xs.size(), " inputs");
  std::map<std::pair<std::string, DType>, std::pair<std::vector<Tensor>, std::vector<Tensor>>> on_device;
  for (size_t i = 0; i < ys.size(); ++i) {
    const Tensor& y = ys[i];
    const Tensor* x = xs.empty() ? nullptr : &xs[i];
    LD_CHECK(!x || (x->shape() == y.shape() && x->dtype() == y.dtype() && x->device() == y.device()),
             "foreach_axpby_: input ", i, " must have its output's shape ", shape_str(y.shape()), ", dtype ",
             dtype_name(y.dtype()), " and device ", y.device().str());
    if (!y.is_contiguous()) {  // a strided gradient, say: tensor ops write through the view
      NoGradGuard ng;
      Tensor(y).copy_(x ? add(mul(y, a), mul(*x, b)) : mul(y, a));
      continue;
    }
    if (!y.device().is_cpu()) {
      auto& lists = on_device[{y.device().str(), y.dtype()}];
      lists.first.push_back(y);
      if (x) lists.second.push_back(x->contiguous());
      continue;
    }
    Tensor xc = x ? x->contiguous() : Tensor();
    LD_DISPATCH_FLOAT(y.dtype(), "foreach_axpby_", [&] {
      using T = scalar_t;
      T* py = y.data_ptr<T>();
      const T* px = x ? xc.data_ptr<T>() : nullptr;
      const T ta = T(a), tb = T(b);
      cpu::parallel_range(y.numel(), [&](int64_t lo, int64_t hi) {
        if (px)
          for (int64_t j = lo; j < hi; ++j) py[j] = ta * py[j] + tb * px[j];
        else
          for (int64_t j = lo; j < hi; ++j) py[j] = ta * py[j];
      });
    });
    y.bump_version();
  }
  for (auto& [key, lists] : on_device) {
    kernels::foreach_axpby(lists.first[0].device(), lists.first, lists.second, a, b);
    for (const Tensor& y : lists.first) y.bump_version();
  }
}

NamedParams name_params(const std::vector<Tensor>& params) {
  NamedParams out;
  for (size_t i = 0; i < params.size(); ++i) out.emplace_back(std::to_string(i), params[i]);
  return out;
}

double init_scale(const Tensor& p) {
  if (p.dim() < 2) return 0.5;
  double ss = 0;
  for (double x : p.to_vector()) ss += x * x;
  double rms = std::sqrt(ss / double(p.numel()));
  return rms > 0 ? rms : 0.5;
}

Tensor& ParamState::slot(const std::string& n) {
  for (auto& [k, t] : slots)
    if (k == n) return t;
  LD_FAIL("optimizer: parameter '", name, "' has no state '", n, "'");
}

bool ParamState::has_slot(const std::string& n) const {
  for (auto& kv : slots)
    if (kv.first == n) return true;
  return false;
}

void check_nonnegative(const std::string& who, const char* option, double v) {
  LD_CHECK(std::isfinite(v) && v >= 0, who, ": ", option, " must be a finite number >= 0, got ", v);
}

void check_positive(const std::string& who, const char* option, double v) {
  LD_CHECK(std::isfinite(v) && v > 0, who, ": ", option, " must be a finite number > 0, got ", v);
}

void check_unit(const std::string& who, const char* option, double v) {
  LD_CHECK(v >= 0 && v < 1, who, ": ", option, " must be in [0, 1), got ", v);
}

void check_strategy(const std::string& who, const Strategy& st) { check_positive(who, "strategy q", st.q); }

Optimizer::Optimizer(std::string type_name, std::vector<ParamGroup> groups, double default_lr,
                     double default_weight_decay)
    : type_name_(std::move(type_name)), groups_(std::move(groups)) {
  LD_CHECK(!groups_.empty(), type_name_, ": no parameter groups");
  std::set<std::string> group_names;
  std::set<const TensorImpl*> seen;
  for (auto& g : groups_) {
    LD_CHECK(group_names.insert(g.name).second, type_name_, ": duplicate parameter group name '", g.name, "'");
    if (std::isnan(g.lr)) g.lr = default_lr;
    if (std::isnan(g.weight_decay)) g.weight_decay = default_weight_decay;
    LD_CHECK(g.lr >= 0 && std::isfinite(g.lr), type_name_, ": group '", g.name, "': invalid lr ", g.lr);
    LD_CHECK(g.weight_decay >= 0 && std::isfinite(g.weight_decay), type_name_, ": group '", g.name,
             "': invalid weight_decay ", g.weight_decay);
    g.initial_lr = g.lr;
    g.initial_weight_decay = g.weight_decay;
    std::vector<ParamState> st;
    for (auto& [name, p] : g.params) {
      LD_CHECK(p.defined(), type_name_, ": parameter '", name, "' is undefined");
      LD_CHECK(p.dtype() == DType::f32 || p.dtype() == DType::f64, type_name_, ": parameter '", name,
               "' has dtype ", dtype_name(p.dtype()), " (only f32/f64 parameters can be optimized)");
      LD_CHECK(p.is_contiguous(), type_name_, ": parameter '", name, "' is not contiguous");
      LD_CHECK(seen.insert(p.impl()).second, type_name_, ": parameter '", name,
               "' appears twice (in group '", g.name, "')");
      ParamState s;
      s.name = name;
      s.param = p;
      s.scale = std::isnan(g.eta) ? init_scale(p) : g.eta;
      st.push_back(std::move(s));
    }
    states_.push_back(std::move(st));
  }
}

void Optimizer::step() {
  NoGradGuard no_grad;
  std::vector<PendingUpdate> due;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const ParamGroup& g = groups_[gi];
    for (ParamState& s : states_[gi]) {
      Tensor grad = s.param.grad();
      if (!grad.defined()) continue;
      LD_CHECK(grad.shape() == s.param.shape(), type_name_, ": gradient of '", s.name, "' has shape ",
               shape_str(grad.shape()), ", parameter has ", shape_str(s.param.shape()));
      if (grad.dtype() != s.param.dtype()) grad = grad.to(s.param.dtype());
      if (!grad.is_contiguous()) grad = grad.contiguous();
      if (!s.initialized) {
        init_state(s, g);
        s.initialized = true;
      }
      ++s.step;
      due.push_back({&s, &g, grad});
    }
  }
  update_all(due);
  apply_deferred_steps();
  for (PendingUpdate& u : due) u.state->param.bump_version();
}

void Optimizer::step_along(ParamState& s, const Tensor& dir, const Strategy& st, double lr, double keep) {
  if (st.per_tensor_lr && !s.param.device().is_cpu()) {
    deferred_.push_back({&s, dir, lr, keep});
    return;
  }
  Tensor p = s.param;
  p.copy_(add(keep != 1 ? mul(p, keep) : p, mul(dir, -(lr * per_tensor_lr_factor(s, st, dir)))));
}

void Optimizer::apply_deferred_steps() {
  if (deferred_.empty()) return;
  std::vector<Tensor> dirs;
  for (const DeferredStep& d : deferred_) dirs.push_back(d.dir);
  std::vector<double> ss = sums_of_squares(dirs);
  for (size_t i = 0; i < deferred_.size(); ++i) {
    const DeferredStep& d = deferred_[i];
    Tensor p = d.state->param;
    p.copy_(add(d.keep != 1 ? mul(p, d.keep) : p, mul(d.dir, -(d.lr * per_tensor_lr_factor(*d.state, ss[i])))));
  }
  deferred_.clear();
}

void Optimizer::update_all(std::vector<PendingUpdate>& due) {
  for (PendingUpdate& u : due) update(*u.state, *u.group, u.grad);
}

void Optimizer::zero_grad(bool set_to_none) {
  for (auto& g : groups_)
    for (auto& [name, p] : g.params) {
      if (!p.grad().defined()) continue;
      if (set_to_none) p.set_grad(Tensor());
      else p.grad().zero_();
    }
}

void Optimizer::set_lr_factor(double factor) {
  LD_CHECK(factor >= 0 && std::isfinite(factor), type_name_, ": invalid lr factor ", factor);
  for (auto& g : groups_) g.lr = g.initial_lr * factor;
}

double Optimizer::decoupled_decay(const ParamGroup& g, const Strategy& st) const {
  if (!st.tie_weight_decay) return g.lr * g.weight_decay;
  // Tied decay replaces the value, not the choice: a group that opted out (weight_decay 0, e.g. biases
  // and norms) stays undecayed.
  if (g.initial_lr <= 0 || g.initial_weight_decay == 0) return 0.0;
  double schedule_factor = g.lr / g.initial_lr;
  return g.initial_lr * g.initial_lr / (2 * st.q) * schedule_factor;
}

double Optimizer::per_tensor_lr_factor(const ParamState& s, const Strategy& st, const Tensor& direction) {
  if (!st.per_tensor_lr) return 1.0;
  return per_tensor_lr_factor(s, sums_of_squares({direction})[0]);
}

double Optimizer::per_tensor_lr_factor(const ParamState& s, double ss) {
  if (ss == 0) return 0.0;
  double eps0 = std::sqrt(double(s.param.numel())) * s.scale;  // ‖ε₀‖ ≈ √k·σ
  return eps0 / std::sqrt(ss);
}

// ---- state_dict: "state.<group>.<param>.<slot>", "state.<group>.<param>.step" (i64), ".scale" (f64),
//      "group.<group>.{lr,weight_decay,initial_lr,initial_weight_decay}" (f64 scalars)
namespace {
std::string state_key(const ParamGroup& g, const ParamState& s, const std::string& slot) {
  return "state." + g.name + "." + s.name + "." + slot;
}
const char* kGroupFields[] = {"lr", "weight_decay", "initial_lr", "initial_weight_decay"};
double& group_field(ParamGroup& g, int i) {
  double* f[] = {&g.lr, &g.weight_decay, &g.initial_lr, &g.initial_weight_decay};
  return *f[i];
}
}  // namespace

NamedTensors Optimizer::state_dict() const {
  NamedTensors out;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    ParamGroup g = groups_[gi];
    for (int i = 0; i < 4; ++i)
      out.emplace_back("group." + g.name + "." + kGroupFields[i], scalar_tensor(group_field(g, i), DType::f64));
    for (const ParamState& s : states_[gi]) {
      // The expected scale was measured on the weights at construction: a resumed run must not
      // re-measure it on trained weights.
      out.emplace_back(state_key(g, s, "scale"), scalar_tensor(s.scale, DType::f64));
      if (!s.initialized) continue;  // never stepped
      out.emplace_back(state_key(g, s, "step"), from_vector(std::vector<int64_t>{s.step}, {}));
      for (auto& [slot, t] : s.slots) out.emplace_back(state_key(g, s, slot), t);
    }
  }
  return out;
}

void Optimizer::load_state_dict(const NamedTensors& dict, const std::string& source) {
  std::map<std::string, Tensor> byname;
  for (auto& [k, t] : dict) byname[k] = t;
  std::set<std::string> used;
  auto take = [&](const std::string& key, bool required) -> Tensor {
    auto it = byname.find(key);
    if (it == byname.end()) {
      LD_CHECK(!required, type_name_, ": ", source, ": missing optimizer state '", key, "'");
      return Tensor();
    }
    used.insert(key);
    return it->second;
  };
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    ParamGroup& g = groups_[gi];
    for (int i = 0; i < 4; ++i) {
      std::string key = "group." + g.name + "." + kGroupFields[i];
      Tensor t = take(key, true);
      LD_CHECK(t.numel() == 1, type_name_, ": ", source, ": '", key, "' must be a scalar, got shape ",
               shape_str(t.shape()));
      group_field(g, i) = t.item();
    }
    for (ParamState& s : states_[gi]) {
      s.scale = take(state_key(g, s, "scale"), true).item();
      Tensor step = take(state_key(g, s, "step"), false);
      if (!step.defined()) {  // this parameter had no state when saved
        s.slots.clear();
        s.step = 0;
        s.initialized = false;
        continue;
      }
      LD_CHECK(step.numel() == 1, type_name_, ": ", source, ": '", state_key(g, s, "step"),
               "' must be a scalar");
      s.slots.clear();
      init_state(s, g);
      s.initialized = true;
      s.step = int64_t(step.item());
      for (auto& [slot, t] : s.slots) {
        std::string key = state_key(g, s, slot);
        Tensor src = take(key, true);
        LD_CHECK(src.shape() == t.shape(), type_name_, ": ", source, ": '", key, "' has shape ",
                 shape_str(src.shape()), ", expected ", shape_str(t.shape()));
        t.copy_(src.dtype() == t.dtype() ? src : src.to(t.dtype()));
      }
    }
  }
  for (auto& [k, t] : dict)
    LD_CHECK(used.count(k), type_name_, ": ", source, ": unexpected optimizer state '", k,
             "' (no such group, parameter or slot)");
}

int64_t Optimizer::state_bytes() const {
  int64_t bytes = 0;
  for (auto& st : states_)
    for (auto& s : st)
      for (auto& kv : s.slots) bytes += kv.second.numel() * int64_t(dtype_size(kv.second.dtype()));
  return bytes;
}

}  // namespace liandan::optim
