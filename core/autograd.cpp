#include "core/autograd.h"

#include <atomic>
#include <mutex>
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

// The post-accumulate-grad hooks: leaf -> (id, hook). Held weakly, so a hook of a freed tensor never fires on
// another tensor that reuses its address.
struct HookEntry {
  uint64_t id;
  std::weak_ptr<TensorImpl> leaf;
  PostAccumulateGradHook fn;
};
std::mutex g_hooks_mu;
std::unordered_map<TensorImpl*, std::vector<HookEntry>> g_hooks;
std::atomic<size_t> g_hook_count{0};  // run_backward does no hook bookkeeping while this is 0
uint64_t g_next_hook_id = 1;

std::vector<PostAccumulateGradHook> hooks_of(TensorImpl* leaf) {
  std::lock_guard<std::mutex> lock(g_hooks_mu);
  std::vector<PostAccumulateGradHook> out;
  auto it = g_hooks.find(leaf);
  if (it != g_hooks.end())
    for (auto& e : it->second)
      if (e.leaf.lock().get() == leaf) out.push_back(e.fn);
  return out;
}

bool has_hooks(TensorImpl* leaf) {
  std::lock_guard<std::mutex> lock(g_hooks_mu);
  return g_hooks.count(leaf) != 0;
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

HookHandle register_post_accumulate_grad_hook(const Tensor& leaf, PostAccumulateGradHook hook) {
  LD_CHECK(leaf.defined() && leaf.is_leaf() && leaf.requires_grad(),
           "register_post_accumulate_grad_hook: the tensor must be a leaf that requires grad");
  std::lock_guard<std::mutex> lock(g_hooks_mu);
  uint64_t id = g_next_hook_id++;
  g_hooks[leaf.impl()].push_back({id, leaf.impl_ptr(), std::move(hook)});
  ++g_hook_count;
  return HookHandle(id);
}

void HookHandle::remove() {
  if (id_ == 0) return;
  std::lock_guard<std::mutex> lock(g_hooks_mu);
  for (auto it = g_hooks.begin(); it != g_hooks.end(); ++it) {
    auto& v = it->second;
    for (size_t i = 0; i < v.size(); ++i)
      if (v[i].id == id_) {
        v.erase(v.begin() + std::ptrdiff_t(i));
        --g_hook_count;
        if (v.empty()) g_hooks.erase(it);
        id_ = 0;
        return;
      }
  }
  id_ = 0;
}

HookHandle& HookHandle::operator=(HookHandle&& o) noexcept {
  if (this != &o) {
    remove();
    id_ = o.id_;
    o.id_ = 0;
  }
  return *this;
}

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
    if (g_hook_count.load() != 0)
      for (auto& h : hooks_of(root.impl())) h(root);
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
  std::vector<Node*> order = topo_order(root.grad_fn().get());
  // Hooked leaves by the last node (in execution order) with an edge to them: after that node their gradient
  // of this pass is complete. Only computed while some hook exists.
  std::vector<std::vector<std::shared_ptr<TensorImpl>>> final_after;
  std::unordered_set<TensorImpl*> touched;  // hooked leaves that received a gradient in this pass
  if (g_hook_count.load() != 0) {
    std::unordered_map<TensorImpl*, std::pair<size_t, std::shared_ptr<TensorImpl>>> last;
    for (size_t i = 0; i < order.size(); ++i)
      for (const Edge& e : order[i]->next)
        if (e.leaf && has_hooks(e.leaf.get())) last[e.leaf.get()] = {i, e.leaf};
    if (!last.empty()) final_after.resize(order.size());
    for (auto& [impl, at] : last) final_after[at.first].push_back(at.second);
  }
  auto fire_hooks = [&](size_t i) {
    if (final_after.empty()) return;
    for (auto& leaf : final_after[i])
      if (touched.count(leaf.get()))
        for (auto& h : hooks_of(leaf.get())) h(Tensor(leaf));
  };
  for (size_t ni = 0; ni < order.size(); ++ni) {
    Node* n = order[ni];
    auto it = grads.find(n);
    if (it == grads.end()) {
      fire_hooks(ni);
      continue;
    }
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
      else if (e.leaf) {
        accumulate_leaf(e.leaf.get(), gin[i]);
        if (!final_after.empty()) touched.insert(e.leaf.get());
      }
    }
    fire_hooks(ni);
  }
}

}  // namespace liandan
