#pragma once
// ZeRO stage 1 (Rajbhandari et al. 2020): optimizer state sharded over the ranks of a data-parallel run.
//
// All parameters, in group order, are laid end to end in one flat vector of P elements, padded to W·S (S =
// ceil(P/W)); rank r owns elements [r·S, (r+1)·S). Each step:
//   1. the local gradients are reduce-scattered (average): rank r receives the mean gradient of its shard only;
//   2. clipping (clip_norm > 0) scales them by min(1, clip/(‖g‖ + 1e-6)), ‖g‖ the global norm — each rank's
//      shard Σg² all-reduced (torch's clip_grad_norm_ over the whole model);
//   3. an inner optimizer — AdamW, Adam or SGD, built by the caller over the shard's pieces of the parameters
//      (a piece keeps its parameter's group: lr, weight decay) — updates the shard;
//   4. the shards are all-gathered back into every rank's parameters.
// Per rank that holds 1/W of the moments (AdamW: 8·P/W bytes in f32 instead of 8·P) and moves the bytes of one
// all-reduce (a reduce-scatter plus an all-gather). The element-wise update is the unsharded one element for
// element, so the weights equal unsharded AdamW on all-reduced gradients (bit for bit when the two reductions
// round alike — always on 2 ranks; the clipping norm is summed in another order, so with clipping they agree to
// rounding).
//
// Amos is not sharded: its factored slots are reduced over whole rows of each tensor, which a flat shard cuts,
// and sharding it by whole tensors would hand one rank the embedding's full update (load imbalance) for state that
// is under 1 % of AdamW's. Use Amos replicated (DistributedDataParallel + Amos; every rank runs the same update).
// The per-tensor-lr strategy needs each tensor's whole update norm and is refused for the same reason.
//
//   optim::ZeroRedundancyOptimizer opt(task.param_groups(), comm, [](std::vector<optim::ParamGroup> g) {
//     return std::make_unique<optim::AdamW>(std::move(g), optim::AdamWOptions{.lr = 3e-4});
//   }, {.clip_norm = 1.0});
//   loss.backward(); opt.step(); opt.zero_grad();     // no DDP all-reduce needed (grads_averaged = false)
//
// Checkpoints: state_dict() gathers the shards into the unsharded optimizer's state dict (the same keys and
// shapes as AdamW's own), so a checkpoint does not depend on the world size and load_state_dict() takes either.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/dist/comm.h"
#include "optim/optimizer.h"

namespace liandan::optim {

struct ZeroOptions {
  double clip_norm = 0;  // > 0: clip to this global L2 norm
  // The .grad already hold the mean over ranks (after DistributedDataParallel::finish_gradient_sync, e.g. in its
  // deterministic mode): each rank takes its shard without a reduce-scatter.
  bool grads_averaged = false;
};

using OptimizerFactory = std::function<std::unique_ptr<Optimizer>(std::vector<ParamGroup> groups)>;

class ZeroRedundancyOptimizer {
 public:
  // The parameters must already be equal on every rank (DistributedDataParallel or broadcast_module first).
  ZeroRedundancyOptimizer(std::vector<ParamGroup> groups, std::shared_ptr<dist::Communicator> comm,
                          const OptimizerFactory& make, ZeroOptions opt = {});
  // Steps 1-4 above (collective). Returns the global gradient norm before clipping (0 when clip_norm is 0).
  double step();
  void zero_grad(bool set_to_none = true);
  // The optimizer of this rank's shard: schedules drive it (Scheduler(opt.shard_optimizer(), ...)).
  Optimizer& shard_optimizer() { return *inner_; }
  const std::vector<ParamGroup>& param_groups() const { return groups_; }
  int64_t shard_begin() const { return shard_begin_; }  // this rank's elements [begin, end) of the flat vector
  int64_t shard_end() const { return shard_end_; }
  int64_t total_numel() const { return total_; }

  // The unsharded optimizer's state dict, gathered (collective; the same on every rank).
  NamedTensors state_dict();
  // From a state dict of the unsharded form (this class's or the plain optimizer's); each rank keeps its shard.
  void load_state_dict(const NamedTensors& dict, const std::string& source = "state dict");

 private:
  struct Slice {
    size_t group, param;       // index into groups_[group].params
    int64_t offset = 0;        // of the parameter in the flat vector
    int64_t lo = 0, hi = 0;    // the part in this rank's shard, in parameter element coordinates (hi > lo)
    Tensor piece, grad_piece;  // views of shard_ / gshard_
  };
  std::vector<std::pair<size_t, size_t>> flat_order() const;  // (group, param) in flat order

  std::shared_ptr<dist::Communicator> comm_;
  ZeroOptions opt_;
  std::vector<ParamGroup> groups_;
  std::vector<int64_t> offsets_;  // per parameter in flat order
  std::vector<double> scales_;    // init_scale of each whole parameter (what the unsharded state dict stores)
  int64_t total_ = 0, shard_ = 0, shard_begin_ = 0, shard_end_ = 0;
  Tensor full_, grads_, shard_params_, shard_grads_;
  std::vector<Slice> slices_;
  std::unique_ptr<Optimizer> inner_;
};

}  // namespace liandan::optim
