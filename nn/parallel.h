#pragma once
// Data-parallel training over a dist::Communicator (core/dist/comm.h), PyTorch's DistributedDataParallel for
// liandan's autograd:
//
//   auto comm = dist::init_from_env();
//   nn::DistributedDataParallel ddp(model, comm);     // rank 0's parameters and buffers on every rank
//   for (...) {
//     opt.zero_grad();
//     Tensor loss = model->loss(local_batch);         // this rank's B/N of the global batch B
//     loss.backward();                                // buckets' all-reduces start during backward
//     ddp.finish_gradient_sync();                     // wait: .grad = mean over ranks = the batch-B gradient
//     opt.step();
//   }
//
// Buckets. The parameters, in reverse registration order (roughly the order backward produces their gradients),
// fill buckets of `bucket_bytes`, one dtype and device each. A post-accumulate-grad hook (core/autograd.h) copies
// each gradient into its bucket when backward has finished with it; when a bucket is full its all-reduce (average)
// starts at once, non-blocking, while backward computes the rest. Buckets start in bucket order on every rank (a
// bucket that is ready early waits for the ones before it), so all ranks post the same collectives in the same
// order. finish_gradient_sync() waits for them and copies the averages back into .grad — it is the step that
// PyTorch's DDP hides at the end of backward(); liandan's backward knows nothing of DDP, so it is one explicit call.
//
// no_sync(): while the guard lives, backward only accumulates into .grad (gradient accumulation); the next backward
// outside it reduces the accumulated sum:  { auto g = ddp.no_sync(); (l1 / k).backward(); }  (lk / k).backward();
//
// A parameter that got no gradient in the synchronised backward is an Error naming it, unless
// find_unused_parameters: then its slot counts as zero, and a parameter no rank used keeps no gradient (as in one
// process).
//
// Deterministic mode (`deterministic = true`): bit-identical gradients — hence weights — on 1, 2, 4, … processes for
// the same global batch. The global batch is cut into C fixed-size chunks (C a power of two); rank r of N owns the
// contiguous chunks [r·C/N, (r+1)·C/N). For each of its chunks a rank runs forward and backward on that chunk alone
// (loss = the chunk's mean) and calls accumulate_chunk(); the chunk gradients are summed as the leaves of one fixed
// balanced binary tree over the C chunks: a rank's chunks form a whole subtree, finish_gradient_sync() all-gathers
// the N subtree sums and adds them in the same tree order, and scales by 1/C (exact: a power of two). No step of
// that depends on N. Constraints: N a power of two dividing C; the same thread count and build on every rank (a
// chunk's gradient must not depend on the process computing it: liandan's kernels are thread-count independent,
// one large OpenBLAS matmul may not be, docs/architecture.md); random ops in the forward keyed by chunk, not rank.
// Cost: one backward per chunk (smaller GEMMs), log2(C/N)+1 gradient-sized partial sums held, an all-gather of N
// gradients instead of an all-reduce of one (N/2 times the bytes received), and no overlap with backward.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/dist/comm.h"
#include "nn/module.h"

namespace liandan::nn {

struct DDPOptions {
  int64_t bucket_bytes = 25 << 20;  // PyTorch's bucket_cap_mb = 25
  bool find_unused_parameters = false;
  bool broadcast_buffers = true;  // buffers from rank 0 at construction, with the parameters
  bool deterministic = false;     // see above
};

// Broadcasts every parameter and buffer of `module` from `root` (what DDP's constructor does).
void broadcast_module(Module& module, dist::Communicator& comm, int root = 0, bool buffers = true);

class DistributedDataParallel {
 public:
  DistributedDataParallel(std::shared_ptr<Module> module, std::shared_ptr<dist::Communicator> comm,
                          DDPOptions opt = {});
  // A module owned elsewhere (the trainer's Task::model()): it must outlive this object.
  DistributedDataParallel(Module& module, std::shared_ptr<dist::Communicator> comm, DDPOptions opt = {})
      : DistributedDataParallel(std::shared_ptr<Module>(&module, [](Module*) {}), std::move(comm), opt) {}
  ~DistributedDataParallel();
  DistributedDataParallel(const DistributedDataParallel&) = delete;
  DistributedDataParallel& operator=(const DistributedDataParallel&) = delete;

  Module& module() { return *module_; }
  dist::Communicator& comm() { return *comm_; }
  const DDPOptions& options() const { return opt_; }

  // Waits for every bucket and leaves in each .grad the mean over ranks (deterministic mode: the tree sum over
  // all chunks / C). Call after the backward of each optimizer step, before clipping and opt.step().
  void finish_gradient_sync();

  // The guard of gradient accumulation: backward inside it does not reduce.
  class NoSync {
   public:
    explicit NoSync(DistributedDataParallel& d) : d_(&d) { ++d.no_sync_depth_; }
    ~NoSync() {
      if (d_) --d_->no_sync_depth_;
    }
    NoSync(NoSync&& o) noexcept : d_(o.d_) { o.d_ = nullptr; }
    NoSync(const NoSync&) = delete;
    NoSync& operator=(const NoSync&) = delete;

   private:
    DistributedDataParallel* d_;
  };
  [[nodiscard]] NoSync no_sync() { return NoSync(*this); }

  // Deterministic mode: after each local chunk's backward. Moves the chunk's gradients into the tree (the
  // parameters' .grad are left empty for the next chunk).
  void accumulate_chunk();
  // Deterministic mode: chunk c of the global batch belongs to rank c / (C / N).
  int64_t chunks_per_rank(int64_t global_chunks) const;

  // The layout (for tests and the benchmark): parameter indices per bucket, in bucket order.
  struct BucketInfo {
    std::vector<std::string> names;
    int64_t numel = 0;
    DType dtype = DType::f32;
  };
  std::vector<BucketInfo> buckets() const;
  // The last synchronised step: buckets started during backward (before finish), and the seconds finish spent
  // waiting for the communication (what did not overlap).
  struct SyncStats {
    int64_t buckets_started_in_backward = 0;
    double wait_s = 0;
    double all_reduce_s = 0;  // submission to completion, summed over buckets
  };
  const SyncStats& last_sync() const { return stats_; }

 private:
  struct Param {
    std::string name;
    Tensor t;
    size_t bucket = 0;
    int64_t offset = 0;  // in the bucket's flat buffer
    bool ready = false;  // its gradient is in the bucket for this step
    HookHandle hook;
  };
  struct Bucket {
    std::vector<size_t> params;
    Tensor flat;
    size_t pending = 0;
    bool started = false;
    dist::Work work;
  };
  void on_grad_ready(size_t index);
  void start_ready_buckets();
  void finish_fast();
  void finish_deterministic();
  [[noreturn]] void fail_unused(const std::vector<size_t>& missing, const char* where) const;
  void reset_step();

  std::shared_ptr<Module> module_;
  std::shared_ptr<dist::Communicator> comm_;
  DDPOptions opt_;
  std::vector<Param> params_;
  std::vector<Bucket> buckets_;
  size_t next_bucket_ = 0;  // the next bucket to start (in order)
  int64_t started_in_backward_ = 0;
  int no_sync_depth_ = 0;
  SyncStats stats_;

  // deterministic mode: the pending subtree sums (flat buffers per bucket + per-parameter "used" counts), each with
  // its level in the tree (a binary counter: two partial sums of equal level are added into one of the next).
  struct Partial {
    std::vector<Tensor> flats;
    Tensor used;  // f64 [params]: how many chunks gave the parameter a gradient
    int level = 0;
  };
  std::vector<Partial> stack_;
  int64_t chunks_ = 0;
};

}  // namespace liandan::nn
