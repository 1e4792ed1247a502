#pragma once
// Module: the PyTorch-C++-frontend-like base of every layer and model.
//
//   struct Block : nn::Module {
//     std::shared_ptr<nn::Linear> fc;
//     Tensor scale;
//     Block(Generator& g) : Module("Block") {
//       fc = register_module("fc", std::make_shared<nn::Linear>(4, 4, true, g));
//       scale = register_parameter("scale", ones({4}));
//     }
//     Tensor forward(const Tensor& x) override { return fc->forward(x) * scale; }
//   };
//
// Parameters are leaf tensors with requires_grad; buffers are tensors without gradients (persistent
// ones are in the state dict). Names are dotted paths in registration order: a module's own
// parameters (then buffers) first, then each child's, recursively ("layers.0.weight"), as in PyTorch.
// A registered Tensor is the same handle as the member that holds it: `to(DType)`, `to(Device)`
// and `load_state_dict` change the TensorImpl in place, so members stay valid.
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/serialize.h"
#include "core/tensor.h"

namespace liandan::nn {

// Ordered (name, tensor) pairs; the same type as liandan::NamedTensors, so a state dict goes straight to
// save_safetensors.
using StateDict = NamedTensors;

class Module {
 public:
  explicit Module(std::string type_name = "Module");
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  const std::string& type_name() const { return type_name_; }

  // The single-tensor forward used by Sequential; modules with other signatures define their own
  // `forward` overloads (add `using Module::forward;` to keep this one visible) and leave this one
  // throwing.
  virtual Tensor forward(const Tensor& x);
  Tensor operator()(const Tensor& x) { return forward(x); }

  // ---- registration. Names are non-empty, contain no '.', and are unique within the module.
  // The tensor becomes a leaf parameter (detached if needed) with requires_grad = `requires_grad`.
  Tensor register_parameter(const std::string& name, Tensor t, bool requires_grad = true);
  // Buffers: state without gradients (running statistics, cached tables). Non-persistent buffers are not
  // in the state dict (e.g. RoPE's cos/sin tables, which are recomputed).
  Tensor register_buffer(const std::string& name, Tensor t, bool persistent = true);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    register_module_impl(name, m);
    return m;
  }

  // ---- traversal (recursive, dotted names, registration order)
  // A parameter registered under two names (weight tying) is listed once, under its first name.
  std::vector<std::pair<std::string, Tensor>> named_parameters(bool recurse = true) const;
  std::vector<Tensor> parameters(bool recurse = true) const;
  std::vector<std::pair<std::string, Tensor>> named_buffers(bool recurse = true) const;
  std::vector<Tensor> buffers(bool recurse = true) const;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const;
  // Descendants in pre-order with dotted names, not including this module.
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_modules() const;
  // Calls fn on this module and then every descendant (pre-order).
  void apply(const std::function<void(Module&)>& fn);

  // ---- state
  // Parameters and persistent buffers, all names (tied parameters appear under each name). The entries are
  // the module's own tensors (shared storage, as in PyTorch): clone them to keep a snapshot.
  StateDict state_dict() const;
  // Copies values into the registered tensors. Every entry is checked before anything is copied, so a
  // failed load changes nothing. Errors list all missing keys, unexpected keys, duplicate keys and
  // shape/dtype mismatches; with strict = false missing and unexpected keys are ignored, mismatches
  // are still errors.
  void load_state_dict(const StateDict& dict, bool strict = true);

  // ---- mode
  virtual void train(bool on = true);  // recursive
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // ---- utilities
  int64_t num_parameters(bool trainable_only = false) const;  // elements of the unique parameters
  // Drops every parameter's gradient (set_to_none, PyTorch's default) or zeroes it in place.
  void zero_grad(bool set_to_none = true);
  // Converts floating parameters and buffers to `t` in place (the handles stay valid; gradients are
  // dropped). Integer buffers are left alone.
  void to(DType t);
  // Moves every parameter and buffer to device `d` in place (handles stay valid; gradients are dropped):
  // `model.to(Device::cuda(0))`, then batches moved the same way, and the same training code runs there.
  void to(Device d);
  // One line per parameter: name, shape, dtype; then the total.
  std::string summary() const;

 protected:
  void retarget(const std::function<bool(const Tensor&)>& wants, const std::function<Tensor(const Tensor&)>& convert);
  void register_module_impl(const std::string& name, std::shared_ptr<Module> m);

 private:
  void check_new_name(const std::string& name, const char* what) const;
  template <class F> void visit(const std::string& prefix, F&& f) const;

  struct Buffer {
    std::string name;
    Tensor t;
    bool persistent;
  };
  std::string type_name_;
  bool training_ = true;
  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<Buffer> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

// ---- checkpoints through safetensors
// Writes module.state_dict() (atomically, see core/serialize.h).
void save(const Module& module, const std::string& path, const Metadata& metadata = {}, SaveOptions opt = {});
// Reads a file written by `save` (or any safetensors file with matching names) into the module and
// returns the file's metadata. Errors name the file.
Metadata load(Module& module, const std::string& path, bool strict = true);

}  // namespace liandan::nn
