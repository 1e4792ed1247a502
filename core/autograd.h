#pragma once
// Define-by-run autograd. Every differentiable op that sees an input requiring grad records one
// Node for its output (or, for split/unbind, one Node for all its outputs): the edges to its inputs'
// nodes (or leaves), and a backward closure written right beside the op's forward. `backward()` walks the graph in reverse
// topological order and frees each node's saved tensors as soon as the node has run.
#include <functional>
#include <memory>
#include <vector>

#include "core/tensor.h"

namespace liandan {

// ---- grad mode
bool grad_mode_enabled();
void set_grad_mode(bool on);
struct NoGradGuard {
  bool prev;
  NoGradGuard() : prev(grad_mode_enabled()) { set_grad_mode(false); }
  ~NoGradGuard() { set_grad_mode(prev); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;
};

// A tensor saved for backward, with the storage version it had when saved. Reading it after an
// in-place write raises an error instead of silently computing a wrong gradient.
class SavedTensor {
 public:
  SavedTensor() = default;
  SavedTensor(const Tensor& t, const char* op);  // saves a detached alias (no reference cycle)
  const Tensor& get() const;
  bool defined() const { return t_.defined(); }

 private:
  Tensor t_;
  uint64_t version_ = 0;
  const char* op_ = "";
};

// Gradients w.r.t. each input, given the gradient of the output. An undefined Tensor means "no
// gradient for this input".
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_out)>;
// The same for an op with several outputs: one gradient per output, undefined for an output that
// received none (its consumers did not need it).
using MultiBackwardFn = std::function<std::vector<Tensor>(const std::vector<Tensor>& grad_outs)>;

struct Edge {
  std::shared_ptr<Node> node;        // the input's grad_fn, or
  std::shared_ptr<TensorImpl> leaf;  // the input itself when it is a leaf that requires grad
  int output_nr = 0;                 // which of node's outputs the input is
};

struct Node {
  const char* name = "";
  std::vector<Edge> next;  // one per input, in the op's argument order
  BackwardFn backward;     // single-output nodes
  MultiBackwardFn backward_multi;  // nodes recorded by record_multi (any number of outputs)
  int n_outputs = 1;
  bool released = false;   // backward has run and freed the saved tensors
};

// True when grad mode is on and any input requires grad.
bool needs_grad(std::initializer_list<const Tensor*> inputs);
inline bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!grad_mode_enabled()) return false;
  for (auto& t : inputs) if (t.defined() && t.requires_grad()) return true;
  return false;
}

// Attaches a node to `out` when an input requires grad. `inputs` are in the order the backward
// function returns gradients.
void record(const char* name, Tensor& out, const std::vector<Tensor>& inputs, BackwardFn fn);

// One node for all of `outs` (why: split's pieces then come back in one concatenation, not as one
// zero-filled full-size gradient per piece summed up).
void record_multi(const char* name, std::vector<Tensor>& outs, const std::vector<Tensor>& inputs, MultiBackwardFn fn);

// Runs backpropagation from `root` with incoming gradient `grad`.
void run_backward(const Tensor& root, const Tensor& grad);

// ---- post-accumulate-grad hooks (PyTorch's Tensor.register_post_accumulate_grad_hook)
// `hook(leaf)` runs once per backward pass for a leaf that received a gradient in that pass, right after its
// last contribution of the pass was accumulated into .grad (a leaf used by several ops gets one call, after
// the last of them), on the thread running backward, under NoGradGuard; backward then goes on with the rest
// of the graph. Why: nn::DistributedDataParallel starts a gradient bucket's all-reduce from it, so the
// communication overlaps the remaining backward. The hook stays registered while the handle lives.
using PostAccumulateGradHook = std::function<void(const Tensor& leaf)>;
class HookHandle {
 public:
  HookHandle() = default;
  explicit HookHandle(uint64_t id) : id_(id) {}
  HookHandle(HookHandle&& o) noexcept : id_(o.id_) { o.id_ = 0; }
  HookHandle& operator=(HookHandle&& o) noexcept;
  HookHandle(const HookHandle&) = delete;
  HookHandle& operator=(const HookHandle&) = delete;
  ~HookHandle() { remove(); }
  void remove();  // unregisters the hook (idempotent)

 private:
  uint64_t id_ = 0;
};
[[nodiscard]] HookHandle register_post_accumulate_grad_hook(const Tensor& leaf, PostAccumulateGradHook hook);

}  // namespace liandan
