#include "optim/zero.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "core/autograd.h"
#include "core/ops.h"
#include "optim/adam.h"
#include "optim/sgd.h"

namespace liandan::optim {

namespace {
// The slots the element-wise optimizers keep (the gathered state dict lists them for every parameter).
std::vector<std::string> slot_names(Optimizer& inner) {
  const std::string& t = inner.type_name();
  if (auto* a = dynamic_cast<Adam*>(&inner)) {
    LD_CHECK(!a->options().strategy.per_tensor_lr, "ZeroRedundancyOptimizer: the per-tensor-lr strategy needs each "
             "tensor's whole update norm; it cannot run on a flat shard (use it unsharded)");
    std::vector<std::string> s{"exp_avg", "exp_avg_sq"};
    if (a->options().amsgrad) s.push_back("max_exp_avg_sq");
    return s;
  }
  if (auto* s = dynamic_cast<SGD*>(&inner)) {
    LD_CHECK(!s->options().strategy.per_tensor_lr, "ZeroRedundancyOptimizer: the per-tensor-lr strategy needs each "
             "tensor's whole update norm; it cannot run on a flat shard (use it unsharded)");
    if (s->options().momentum > 0) return {"momentum_buffer"};
    return {};
  }
  LD_FAIL("ZeroRedundancyOptimizer: optimizer '", t, "' cannot be sharded element-wise (AdamW, Adam and SGD can); ",
          t == "Amos" ? "Amos's factored slots span whole rows — keep it replicated (DistributedDataParallel + Amos; its "
                        "state is < 1 % of AdamW's)"
                      : "run it unsharded");
}
}  // namespace

std::vector<std::pair<size_t, size_t>> ZeroRedundancyOptimizer::flat_order() const {
  std::vector<std::pair<size_t, size_t>> out;
  for (size_t g = 0; g < groups_.size(); ++g)
    for (size_t p = 0; p < groups_[g].params.size(); ++p) out.emplace_back(g, p);
  return out;
}

ZeroRedundancyOptimizer::ZeroRedundancyOptimizer(std::vector<ParamGroup> groups,
                                                 std::shared_ptr<dist::Communicator> comm,
                                                 const OptimizerFactory& make, ZeroOptions opt)
    : comm_(std::move(comm)), opt_(opt), groups_(std::move(groups)) {
  LD_CHECK(comm_ != nullptr, "ZeroRedundancyOptimizer: null communicator");
  LD_CHECK(opt_.clip_norm >= 0, "ZeroRedundancyOptimizer: clip_norm must be >= 0, got ", opt_.clip_norm);
  Tensor first;
  for (auto [g, p] : flat_order()) {
    const auto& [name, t] = groups_[g].params[p];
    LD_CHECK(t.defined() && t.is_contiguous(), "ZeroRedundancyOptimizer: parameter '", name,
             "' is undefined or not contiguous");
    if (!first.defined()) first = t;
    LD_CHECK(t.dtype() == first.dtype() && t.device() == first.device(), "ZeroRedundancyOptimizer: parameter '", name,
             "' is ", dtype_name(t.dtype()), " on ", t.device().str(), ", the first one ", dtype_name(first.dtype()),
             " on ", first.device().str(), " (one flat vector needs one dtype and device)");
    offsets_.push_back(total_);
    scales_.push_back(std::isnan(groups_[g].eta) ? init_scale(t) : groups_[g].eta);
    total_ += t.numel();
  }
  LD_CHECK(total_ > 0, "ZeroRedundancyOptimizer: no parameters");
  const int64_t w = comm_->world_size(), r = comm_->rank();
  shard_ = (total_ + w - 1) / w;
  shard_begin_ = std::min(total_, r * shard_);
  shard_end_ = std::min(total_, (r + 1) * shard_);
  TensorOptions to{first.dtype(), first.device()};
  full_ = zeros({w * shard_}, to);
  grads_ = zeros({w * shard_}, to);  // the padding stays zero
  shard_params_ = zeros({shard_}, to);
  shard_grads_ = zeros({shard_}, to);
  // The pieces of this rank's shard, one per parameter it cuts, in the parameter's group.
  std::vector<ParamGroup> inner_groups;
  auto order = flat_order();
  for (size_t g = 0; g < groups_.size(); ++g) {
    ParamGroup ig = groups_[g];
    ig.params.clear();
    inner_groups.push_back(std::move(ig));
  }
  for (size_t i = 0; i < order.size(); ++i) {
    auto [g, p] = order[i];
    const Tensor& t = groups_[g].params[p].second;
    int64_t lo = std::max(shard_begin_, offsets_[i]), hi = std::min(shard_end_, offsets_[i] + t.numel());
    if (hi <= lo) continue;
    Slice s{g, p, offsets_[i], lo - offsets_[i], hi - offsets_[i], shard_params_.narrow(0, lo - shard_begin_, hi - lo),
            shard_grads_.narrow(0, lo - shard_begin_, hi - lo)};
    {
      NoGradGuard ng;
      s.piece.copy_(t.reshape({t.numel()}).narrow(0, s.lo, s.hi - s.lo));
    }
    inner_groups[g].params.emplace_back(groups_[g].params[p].first, s.piece);
    slices_.push_back(std::move(s));
  }
  inner_ = make(std::move(inner_groups));
  LD_CHECK(inner_ != nullptr, "ZeroRedundancyOptimizer: the factory returned no optimizer");
  slot_names(*inner_);  // refuses what cannot be sharded
}

double ZeroRedundancyOptimizer::step() {
  NoGradGuard ng;
  auto order = flat_order();
  const int64_t nparams = int64_t(order.size());
  // The shard's current values (the parameters may have been loaded or changed since the last step).
  for (Slice& s : slices_) {
    const Tensor& t = groups_[s.group].params[s.param].second;
    s.piece.copy_(t.reshape({t.numel()}).narrow(0, s.lo, s.hi - s.lo));
  }
  // 1. gradients: this rank's shard of the mean over ranks, and which parameters any rank has a gradient for.
  Tensor used = zeros({nparams}, DType::f64);
  double* u = used.data_ptr<double>();
  for (size_t i = 0; i < order.size(); ++i)
    u[i] = groups_[order[i].first].params[order[i].second].second.grad().defined() ? 1 : 0;
  if (opt_.grads_averaged) {
    for (Slice& s : slices_) {
      Tensor g = groups_[s.group].params[s.param].second.grad();
      if (g.defined()) s.grad_piece.copy_(g.reshape({g.numel()}).narrow(0, s.lo, s.hi - s.lo));
      else s.grad_piece.zero_();
    }
  } else {
    for (size_t i = 0; i < order.size(); ++i) {
      const Tensor& t = groups_[order[i].first].params[order[i].second].second;
      Tensor dst = grads_.narrow(0, offsets_[i], t.numel());
      if (t.grad().defined()) dst.copy_(t.grad().reshape({t.numel()}));
      else dst.zero_();
    }
    dist::Work ws = comm_->reduce_scatter(shard_grads_, grads_, dist::ReduceOp::average);
    dist::Work wu = comm_->all_reduce(used, dist::ReduceOp::sum);
    ws.wait();
    wu.wait();
  }
  // 2. clipping over the global norm.
  double norm = 0;
  if (opt_.clip_norm > 0) {
    Tensor ss = from_vector(std::vector<double>{sums_of_squares({shard_grads_})[0]}, {1}, DType::f64);
    comm_->all_reduce(ss, dist::ReduceOp::sum).wait();
    norm = std::sqrt(ss.item());
    double coef = opt_.clip_norm / (norm + 1e-6);
    if (coef < 1) foreach_axpby_({shard_grads_}, {}, coef, 0.0);
  }
  // 3. the shard's update; a parameter no rank has a gradient for is skipped (as unsharded).
  for (Slice& s : slices_) {
    size_t i = 0;
    while (order[i] != std::make_pair(s.group, s.param)) ++i;
    s.piece.set_grad(u[i] > 0 ? s.grad_piece : Tensor());
  }
  inner_->step();
  for (Slice& s : slices_) s.piece.set_grad(Tensor());
  // 4. every rank's shard back into every rank's parameters.
  comm_->all_gather(full_, shard_params_).wait();
  for (size_t i = 0; i < order.size(); ++i) {
    Tensor t = groups_[order[i].first].params[order[i].second].second;
    t.copy_(full_.narrow(0, offsets_[i], t.numel()).view(t.shape()));
  }
  return norm;
}

void ZeroRedundancyOptimizer::zero_grad(bool set_to_none) {
  for (auto& g : groups_)
    for (auto& [name, p] : g.params) {
      if (!p.grad().defined()) continue;
      if (set_to_none) p.set_grad(Tensor());
      else p.grad().zero_();
    }
}

namespace {
std::string key(const std::string& group, const std::string& param, const std::string& slot) {
  return "state." + group + "." + param + "." + slot;
}
}  // namespace

NamedTensors ZeroRedundancyOptimizer::state_dict() {
  NoGradGuard ng;
  auto order = flat_order();
  const int64_t w = comm_->world_size();
  // Step counts: the rank holding a parameter's first element reports it.
  Tensor steps = zeros({int64_t(order.size())}, DType::i64);
  std::map<std::pair<size_t, size_t>, ParamState*> state_of;
  for (size_t gi = 0; gi < inner_->states().size(); ++gi)
    for (ParamState& s : inner_->states()[gi])
      for (const Slice& sl : slices_)
        if (sl.piece.same(s.param)) state_of[{sl.group, sl.param}] = &s;
  for (const Slice& sl : slices_)
    if (sl.lo == 0) {
      size_t i = size_t(std::find(order.begin(), order.end(), std::make_pair(sl.group, sl.param)) - order.begin());
      steps.data_ptr<int64_t>()[i] = state_of[{sl.group, sl.param}]->step;
    }
  comm_->all_reduce(steps, dist::ReduceOp::sum).wait();
  // Each slot as one flat vector, gathered.
  std::vector<std::string> names = slot_names(*inner_);
  std::vector<Tensor> full_slots;
  for (const std::string& n : names) {
    Tensor local = zeros({shard_}, {full_.dtype(), full_.device()});
    for (const Slice& sl : slices_) {
      ParamState* s = state_of[{sl.group, sl.param}];
      if (s->initialized) local.narrow(0, sl.offset + sl.lo - shard_begin_, sl.hi - sl.lo).copy_(s->slot(n));
    }
    full_slots.push_back(empty({w * shard_}, {full_.dtype(), full_.device()}));
    comm_->all_gather(full_slots.back(), local).wait();
  }
  NamedTensors out;
  for (size_t g = 0; g < groups_.size(); ++g) {
    const ParamGroup& ig = inner_->param_groups()[g];
    out.emplace_back("group." + ig.name + ".lr", scalar_tensor(ig.lr, DType::f64));
    out.emplace_back("group." + ig.name + ".weight_decay", scalar_tensor(ig.weight_decay, DType::f64));
    out.emplace_back("group." + ig.name + ".initial_lr", scalar_tensor(ig.initial_lr, DType::f64));
    out.emplace_back("group." + ig.name + ".initial_weight_decay", scalar_tensor(ig.initial_weight_decay, DType::f64));
    for (size_t i = 0; i < order.size(); ++i) {
      if (order[i].first != g) continue;
      const auto& [pname, t] = groups_[g].params[order[i].second];
      out.emplace_back(key(ig.name, pname, "scale"), scalar_tensor(scales_[i], DType::f64));
      int64_t step = steps.data_ptr<int64_t>()[i];
      if (step == 0) continue;  // never stepped
      out.emplace_back(key(ig.name, pname, "step"), from_vector(std::vector<int64_t>{step}, {}));
      for (size_t k = 0; k < names.size(); ++k)
        out.emplace_back(key(ig.name, pname, names[k]), full_slots[k].narrow(0, offsets_[i], t.numel()).view(t.shape()).clone());
    }
  }
  return out;
}

void ZeroRedundancyOptimizer::load_state_dict(const NamedTensors& dict, const std::string& source) {
  std::map<std::string, Tensor> byname(dict.begin(), dict.end());
  auto order = flat_order();
  NamedTensors inner;
  for (const auto& [k, t] : dict)
    if (k.rfind("group.", 0) == 0) inner.emplace_back(k, t);
  for (size_t i = 0; i < order.size(); ++i) {  // the whole parameters' expected scales, as saved
    auto it = byname.find(key(groups_[order[i].first].name, groups_[order[i].first].params[order[i].second].first, "scale"));
    if (it != byname.end()) scales_[i] = it->second.item();
  }
  for (const Slice& sl : slices_) {
    const std::string& g = groups_[sl.group].name;
    const std::string& pname = groups_[sl.group].params[sl.param].first;
    inner.emplace_back(key(g, pname, "scale"), scalar_tensor(0.5, DType::f64));  // pieces: the unused default
    auto st = byname.find(key(g, pname, "step"));
    if (st == byname.end()) continue;
    inner.emplace_back(key(g, pname, "step"), st->second);
    for (const std::string& n : slot_names(*inner_)) {
      auto it = byname.find(key(g, pname, n));
      LD_CHECK(it != byname.end(), "ZeroRedundancyOptimizer: ", source, ": missing optimizer state '", key(g, pname, n), "'");
      const Tensor& full = it->second;
      const Tensor& p = groups_[sl.group].params[sl.param].second;
      LD_CHECK(full.shape() == p.shape(), "ZeroRedundancyOptimizer: ", source, ": '", key(g, pname, n), "' has shape ",
               shape_str(full.shape()), ", expected ", shape_str(p.shape()));
      inner.emplace_back(key(g, pname, n), full.reshape({p.numel()}).narrow(0, sl.lo, sl.hi - sl.lo).contiguous());
    }
  }
  inner_->load_state_dict(inner, source);
}

}  // namespace liandan::optim
