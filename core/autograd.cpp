#include "core/autograd.h"

#include <unordered_map>
#include <unordered_set>

#include "core/ops.h"

namespace liandan {

namespace {
thread_local bool g_grad_mode = true;
}
bool grad_mode_enabled() { return g_grad_mode; }
void set_grad_mode(bool on) { g_grad_mode = on; }

SavedTensor::SavedTensor(const Tensor& t, const char* op) : op_(op) {
  if (!t.defined()) return;
  t_ = t.detach();
  version_ = t.version();
}

const Tensor& SavedTensor::get() const {
  LD_CHECK(!t_.defined() || t_.version() == version_, op_,
           " backward: a tensor saved for backward (shape ", shape_str(t_.shape()),
           ") was modified in place after it was saved (version ", version_, " -> ",
           t_.version(), "); clone it before the in-place op");
  return t_;
}

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!g_grad_mode) return false;
  for (auto* t : inputs) if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

namespace {
std::shared_ptr<Node> make_node(const char* name, const std::vector<Tensor>& inputs) {
  auto node = std::make_shared<Node>();
  node->name = name;
  node->next.reserve(inputs.size());
  for (auto& t : inputs) {
    Edge e;
    if (t.defined() && t.requires_grad()) {
      if (t.grad_fn()) {
        e.node = t.grad_fn();
        e.output_nr = t.impl()->output_nr;
      } else {
        e.leaf = t.impl_ptr();
      }
    }
    node->next.push_back(std::move(e));
  }
  return node;
}
}  // namespace

void record(const char* name, Tensor& out, const std::vector<Tensor>& inputs, BackwardFn fn) {
  if (!needs_grad(inputs)) return;
  auto node = make_node(name, inputs);
  node->backward = std::move(fn);
  out.impl()->requires_grad = true;
  out.impl()->grad_fn = std::move(node);
  out.impl()->output_nr = 0;
}

void record_multi(const char* name, std::vector<Tensor>& outs, const std::vector<Tensor>& inputs, MultiBackwardFn fn) {
  if (!needs_grad(inputs)) return;
  auto node = make_node(name, inputs);
  node->backward_multi = std::move(fn);
  node->n_outputs = int(outs.size());
  for (size_t i = 0; i < outs.size(); ++i) {
    outs[i].impl()->requires_grad = true;
    outs[i].impl()->grad_fn = node;
    outs[i].impl()->output_nr = int(i);
  }
}

namespace {

// Sums gradients for the same target; the first one is kept as is (it is never aliased to a
// tensor the user holds: backward closures return fresh tensors or views of fresh tensors).
void accumulate(Tensor& slot, const Tensor& g) {
  if (!slot.defined()) slot = g;
  else slot = add(slot, g);
}

void accumulate_leaf(TensorImpl* leaf, const Tensor& g) {
  LD_CHECK(g.shape() == leaf->shape, "backward: gradient shape ", shape_str(g.shape()),
           " does not match leaf shape ", shape_str(leaf->shape));
  if (!leaf->grad) {
    // Steal the gradient when nothing else can see its storage; otherwise own a copy, so later
    // in-place accumulation never writes into another tensor.
    bool sole_owner = g.is_contiguous() && g.offset() == 0 && g.impl()->storage.use_count() == 1 &&
                      g.impl_ptr().use_count() == 1;
    leaf->grad = sole_owner ? g.detach().impl_ptr() : g.clone().impl_ptr();
  } else {
    Tensor(leaf->grad).add_(g);
  }
}

// Reverse topological order of the nodes reachable from `root` (iterative DFS: long chains such
// as an unrolled sampler must not overflow the stack).
std::vector<Node*> topo_order(Node* root) {
  std::vector<Node*> order;
  std::unordered_set<Node*> seen;
  std::vector<std::pair<Node*, size_t>> stack{{root, 0}};
  seen.insert(root);
  while (!stack.empty()) {
    auto& [n, i] = stack.back();
    if (i < n->next.size()) {
      Node* child = n->next[i++].node.get();
      if (child && seen.insert(child).second) stack.push_back({child, 0});
    } else {
      order.push_back(n);
      stack.pop_back();
    }
  }
  return {order.rbegin(), order.rend()};
}

}  // namespace

void run_backward(const Tensor& root, const Tensor& grad) {
  LD_CHECK(root.requires_grad(), "backward: tensor does not require grad and has no grad_fn");
  Tensor g = grad;
  if (!g.defined()) {
    LD_CHECK(root.numel() == 1, "backward: grad can be implicitly created only for a scalar, got shape ",
             shape_str(root.shape()), "; pass a gradient of that shape");
    g = ones(root.shape(), {root.dtype(), root.device()});
  }
  LD_CHECK(g.device() == root.device(), "backward: gradient is on ", g.device().str(), ", the tensor on ",
           root.device().str());
  LD_CHECK(g.shape() == root.shape() && g.dtype() == root.dtype(), "backward: gradient has shape ",
           shape_str(g.shape()), " ", dtype_name(g.dtype()), ", expected ", shape_str(root.shape()),
           " ", dtype_name(root.dtype()));
  NoGradGuard no_grad;  // backward closures build no graph (first-order autograd)
  if (!root.grad_fn()) {
    accumulate_leaf(root.impl(), g);
    return;
  }
  // The gradients arrived so far for each node's outputs (a vector of one for most nodes).
  std::unordered_map<Node*, std::vector<Tensor>> grads;
  auto slot = [&](Node* n, int output_nr) -> Tensor& {
    std::vector<Tensor>& v = grads[n];
    if (v.empty()) v.resize(size_t(n->n_outputs));
    return v[size_t(output_nr)];
  };
  slot(root.grad_fn().get(), root.impl()->output_nr) = g;
  for (Node* n : topo_order(root.grad_fn().get())) {
    auto it = grads.find(n);
    if (it == grads.end()) continue;
    std::vector<Tensor> gout = std::move(it->second);
    grads.erase(it);
    LD_CHECK(!n->released, n->name, " backward: trying to backward through the graph a second time "
             "(saved tensors were freed after the first backward)");
    std::vector<Tensor> gin = n->backward_multi ? n->backward_multi(gout) : n->backward(gout[0]);
    n->backward = nullptr;  // frees the saved tensors captured by the closure
    n->backward_multi = nullptr;
    n->released = true;
    // Drop the output gradients now: an input gradient that is a view of one (a reshape's) then owns its
    // storage alone, and accumulate_leaf takes it as the leaf's .grad instead of cloning it.
    gout.clear();
    LD_CHECK(gin.size() == n->next.size(), n->name, " backward: returned ", gin.size(),
             " gradients for ", n->next.size(), " inputs");
    for (size_t i = 0; i < gin.size(); ++i) {
      const Edge& e = n->next[i];
      if (!gin[i].defined()) continue;
      if (e.node) accumulate(slot(e.node.get(), e.output_nr), gin[i]);
      else if (e.leaf) accumulate_leaf(e.leaf.get(), gin[i]);
    }
  }
}

}  // namespace liandan
