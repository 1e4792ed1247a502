#include "nn/module.h"

#include <map>
#include <set>
#include <sstream>
#include <unordered_set>

#include "core/autograd.h"

namespace liandan::nn {

Module::Module(std::string type_name) : type_name_(std::move(type_name)) {}

Tensor Module::forward(const Tensor&) {
  LD_FAIL(type_name_, ": forward(const Tensor&) is not implemented (this module takes other arguments)");
}

void Module::check_new_name(const std::string& name, const char* what) const {
  LD_CHECK(!name.empty(), type_name_, ".", what, ": empty name");
  LD_CHECK(name.find('.') == std::string::npos, type_name_, ".", what, ": name \"", name,
           "\" contains '.', which separates the levels of a dotted name");
  for (auto& [n, t] : params_)
    LD_CHECK(n != name, type_name_, ".", what, ": \"", name, "\" is already a parameter");
  for (auto& b : buffers_)
    LD_CHECK(b.name != name, type_name_, ".", what, ": \"", name, "\" is already a buffer");
  for (auto& [n, m] : children_)
    LD_CHECK(n != name, type_name_, ".", what, ": \"", name, "\" is already a submodule");
}

Tensor Module::register_parameter(const std::string& name, Tensor t, bool requires_grad) {
  check_new_name(name, "register_parameter");
  LD_CHECK(t.defined(), type_name_, ".register_parameter: \"", name, "\" is undefined");
  LD_CHECK(is_floating(t.dtype()), type_name_, ".register_parameter: \"", name,
           "\" must be floating (f32 or f64), got ", dtype_name(t.dtype()));
  if (!t.is_leaf()) t = t.detach();
  t.requires_grad_(requires_grad);
  params_.emplace_back(name, t);
  return t;
}

Tensor Module::register_buffer(const std::string& name, Tensor t, bool persistent) {
  check_new_name(name, "register_buffer");
  LD_CHECK(t.defined(), type_name_, ".register_buffer: \"", name, "\" is undefined");
  if (!t.is_leaf() || t.requires_grad()) t = t.detach();
  buffers_.push_back({name, t, persistent});
  return t;
}

void Module::register_module_impl(const std::string& name, std::shared_ptr<Module> m) {
  check_new_name(name, "register_module");
  LD_CHECK(m != nullptr, type_name_, ".register_module: \"", name, "\" is null");
  LD_CHECK(m.get() != this, type_name_, ".register_module: a module cannot contain itself");
  children_.emplace_back(name, std::move(m));
}

// Pre-order walk: f(prefix, module) for this module and every descendant (each module instance once).
template <class F>
void Module::visit(const std::string& prefix, F&& f) const {
  std::unordered_set<const Module*> seen;
  std::function<void(const std::string&, const Module&)> rec = [&](const std::string& p, const Module& m) {
    if (!seen.insert(&m).second) return;
    f(p, m);
    for (auto& [n, c] : m.children_) rec(p + n + ".", *c);
  };
  rec(prefix, *this);
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters(bool recurse) const {
  std::vector<std::pair<std::string, Tensor>> out;
  std::unordered_set<const TensorImpl*> seen;
  auto own = [&](const std::string& p, const Module& m) {
    for (auto& [n, t] : m.params_)
      if (seen.insert(t.impl()).second) out.emplace_back(p + n, t);
  };
  if (recurse) visit("", own);
  else own("", *this);
  return out;
}

std::vector<Tensor> Module::parameters(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters(recurse)) out.push_back(t);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers(bool recurse) const {
  std::vector<std::pair<std::string, Tensor>> out;
  std::unordered_set<const TensorImpl*> seen;
  auto own = [&](const std::string& p, const Module& m) {
    for (auto& b : m.buffers_)
      if (seen.insert(b.t.impl()).second) out.emplace_back(p + b.name, b.t);
  };
  if (recurse) visit("", own);
  else own("", *this);
  return out;
}

std::vector<Tensor> Module::buffers(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_buffers(recurse)) out.push_back(t);
  return out;
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::named_children() const { return children_; }

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::named_modules() const {
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> out;
  std::unordered_set<const Module*> seen{this};
  std::function<void(const std::string&, const Module&)> rec = [&](const std::string& p, const Module& m) {
    for (auto& [n, c] : m.children_) {
      if (!seen.insert(c.get()).second) continue;
      out.emplace_back(p + n, c);
      rec(p + n + ".", *c);
    }
  };
  rec("", *this);
  return out;
}

void Module::apply(const std::function<void(Module&)>& fn) {
  fn(*this);
  for (auto& [n, m] : named_modules()) fn(*m);
}

StateDict Module::state_dict() const {
  StateDict out;
  // Not deduplicated (unlike named_parameters): a tied parameter is saved under every name, as PyTorch
  // does, so each module's own entries are complete. A module registered twice is walked twice.
  std::function<void(const std::string&, const Module&)> rec = [&](const std::string& p, const Module& m) {
    for (auto& [n, t] : m.params_) out.emplace_back(p + n, t);
    for (auto& b : m.buffers_)
      if (b.persistent) out.emplace_back(p + b.name, b.t);
    for (auto& [n, c] : m.children_) rec(p + n + ".", *c);
  };
  rec("", *this);
  return out;
}

namespace {

std::string describe(const Tensor& t) {
  return t.defined() ? shape_str(t.shape()) + " " + dtype_name(t.dtype()) : std::string("undefined");
}

void list_names(std::ostringstream& os, const std::vector<std::string>& names) {
  constexpr size_t kMax = 20;
  for (size_t i = 0; i < names.size() && i < kMax; ++i) os << (i ? ", " : "") << names[i];
  if (names.size() > kMax) os << ", ... (" << names.size() - kMax << " more)";
}

}  // namespace

void Module::load_state_dict(const StateDict& dict, bool strict) {
  StateDict targets = state_dict();
  std::map<std::string, Tensor> want;
  for (auto& [n, t] : targets) want.emplace(n, t);

  std::vector<std::string> unexpected, duplicate, missing, mismatched;
  std::set<std::string> given;
  std::vector<std::pair<Tensor, Tensor>> copies;  // (destination, source)
  for (auto& [n, src] : dict) {
    if (!given.insert(n).second) {
      duplicate.push_back(n);
      continue;
    }
    auto it = want.find(n);
    if (it == want.end()) {
      unexpected.push_back(n);
      continue;
    }
    const Tensor& dst = it->second;
    if (!src.defined() || src.shape() != dst.shape() || src.dtype() != dst.dtype()) {
      mismatched.push_back(n + " (expected " + describe(dst) + ", got " + describe(src) + ")");
      continue;
    }
    copies.emplace_back(dst, src);
  }
  for (auto& [n, t] : targets)
    if (!given.count(n)) missing.push_back(n);

  bool fail = !mismatched.empty() || !duplicate.empty() || (strict && (!missing.empty() || !unexpected.empty()));
  if (fail) {
    std::ostringstream os;
    os << "load_state_dict (" << type_name_ << "): ";
    const char* sep = "";
    if (strict && !missing.empty()) {
      os << sep << missing.size() << " missing key" << (missing.size() > 1 ? "s" : "") << ": ";
      list_names(os, missing);
      sep = "; ";
    }
    if (strict && !unexpected.empty()) {
      os << sep << unexpected.size() << " unexpected key" << (unexpected.size() > 1 ? "s" : "") << ": ";
      list_names(os, unexpected);
      sep = "; ";
    }
    if (!duplicate.empty()) {
      os << sep << "duplicate key" << (duplicate.size() > 1 ? "s" : "") << ": ";
      list_names(os, duplicate);
      sep = "; ";
    }
    if (!mismatched.empty()) {
      os << sep << mismatched.size() << " shape/dtype mismatch" << (mismatched.size() > 1 ? "es" : "") << ": ";
      list_names(os, mismatched);
    }
    LD_FAIL(os.str());
  }
  NoGradGuard ng;
  for (auto& [dst, src] : copies) {
    if (dst.same(src)) continue;
    dst.copy_(src);
  }
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, c] : children_) c->train(on);
}

int64_t Module::num_parameters(bool trainable_only) const {
  int64_t n = 0;
  for (auto& [name, t] : named_parameters())
    if (!trainable_only || t.requires_grad()) n += t.numel();
  return n;
}

void Module::zero_grad(bool set_to_none) {
  NoGradGuard ng;
  for (auto& [n, p] : named_parameters()) {
    if (set_to_none) p.set_grad(Tensor());
    else if (p.grad().defined()) p.grad().zero_();
  }
}

// Replaces each registered tensor's data by `convert(tensor)` in place, once per shared tensor.
void Module::retarget(const std::function<bool(const Tensor&)>& wants, const std::function<Tensor(const Tensor&)>& convert) {
  NoGradGuard ng;
  std::unordered_set<TensorImpl*> done;
  auto apply = [&](const Tensor& x) {
    if (!done.insert(x.impl()).second || !wants(x)) return;
    Tensor c = convert(x.detach()).contiguous();
    TensorImpl* impl = x.impl();
    impl->storage = c.impl()->storage;
    impl->dtype = c.dtype();
    impl->strides = c.strides();
    impl->offset = c.offset();
    impl->grad = nullptr;
  };
  visit("", [&](const std::string&, const Module& m) {
    for (auto& [n, p] : m.params_) apply(p);
    for (auto& b : m.buffers_) apply(b.t);
  });
}

void Module::to(DType t) {
  LD_CHECK(is_floating(t), type_name_, ".to: target dtype must be floating, got ", dtype_name(t));
  LD_CHECK(!is_half(t), type_name_, ".to(", dtype_name(t), "): parameters stay f32 (or f64); train in ",
           dtype_name(t), " with ld::Autocast (core/autocast.h), which keeps f32 master weights");
  retarget([t](const Tensor& x) { return is_floating(x.dtype()) && x.dtype() != t; },
           [t](const Tensor& x) { return x.to(t); });
}

void Module::to(Device d) {
  retarget([d](const Tensor& x) { return x.device() != d; }, [d](const Tensor& x) { return x.to(d); });
}

std::string Module::summary() const {
  std::ostringstream os;
  for (auto& [n, t] : named_parameters()) os << n << " " << shape_str(t.shape()) << " " << dtype_name(t.dtype()) << "\n";
  os << type_name_ << ": " << num_parameters() << " parameters";
  return os.str();
}

// ---------------------------------------------------------------- checkpoints

void save(const Module& module, const std::string& path, const Metadata& metadata, SaveOptions opt) {
  save_safetensors(path, module.state_dict(), metadata, opt);
}

Metadata load(Module& module, const std::string& path, bool strict) {
  SafetensorsReader reader(path);
  std::map<std::string, Tensor> want;
  for (auto& [n, t] : module.state_dict()) want.emplace(n, t);
  StateDict dict;
  for (auto& e : reader.entries()) {
    auto it = want.find(e.name);
    if (it == want.end() && !strict) continue;  // ignored anyway: do not read it
    Tensor t = reader.read(e.name);
    // The file's floating type is a storage choice (bf16, f16, f32, f64): convert to the module's.
    if (it != want.end() && is_floating(t.dtype()) && is_floating(it->second.dtype()) &&
        t.dtype() != it->second.dtype())
      t = t.to(it->second.dtype());
    dict.emplace_back(e.name, t);
  }
  try {
    module.load_state_dict(dict, strict);
  } catch (const Error& err) {
    LD_FAIL("nn::load: ", path, ": ", err.what());
  }
  return reader.metadata();
}

}  // namespace liandan::nn
