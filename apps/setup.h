#pragma once
// Everything a run needs, built from a config (`build`): the run settings, the communicator, the task and its model,
// DDP or ZeRO, the optimizer, schedule, EMA and loss scaler — shared by train, resume, sample, eval, bench, the dry
// run and `liandan config`. And what is done with it outside the step: checkpoint tensors in and out, evaluation
// under the EMA weights, the memory a run will need.
#include <memory>
#include <string>

#include "apps/checkpoint.h"
#include "apps/config.h"
#include "apps/run_settings.h"
#include "apps/task.h"
#include "core/autograd.h"
#include "core/dist/comm.h"
#include "core/serialize.h"
#include "nn/parallel.h"
#include "optim/ema.h"
#include "optim/grad_scaler.h"
#include "optim/schedule.h"
#include "optim/zero.h"

namespace liandan::apps {

struct Setup {
  RunSettings rs;
  std::shared_ptr<dist::Communicator> comm;            // world 1 without mpirun
  std::unique_ptr<nn::DistributedDataParallel> ddp;   // world > 1 (or deterministic): gradients averaged over ranks
  std::shared_ptr<TaskContext::Share> share;          // the part of the global batch the task computes next
  std::unique_ptr<Task> task;
  std::unique_ptr<optim::Optimizer> opt;              // null with ZeRO: `zero` owns the shard's optimizer
  std::unique_ptr<optim::ZeroRedundancyOptimizer> zero;  // dist.zero
  // The optimizer the schedule drives and the step's learning rate comes from.
  optim::Optimizer& optimizer() const { return zero ? zero->shard_optimizer() : *opt; }
  std::unique_ptr<optim::Scheduler> sched;
  std::unique_ptr<optim::EMA> ema;
  std::unique_ptr<optim::GradScaler> scaler;  // enabled for precision = "f16" only
};

// Reads the settings, refuses a key no task reads, builds the task (its data and model), moves it to its device, wraps
// it for data-parallel training and builds the optimizer, schedule, EMA and scaler; checks that every key was read.
Setup build(Config& cfg);

// The next training batch's loss, with the forward under autocast when the run is in mixed precision.
Tensor train_loss(Setup& s);

// "AdamW", or "AdamW (ZeRO-1, state sharded over N processes)".
std::string optimizer_name(const Setup& s);

// The model ("model.*"), optimizer ("optim.*"), EMA and scaler tensors of a checkpoint. Collective with ZeRO (the
// shards are gathered into the unsharded optimizer's state): every rank calls it.
NamedTensors checkpoint_tensors(const Setup& s);

// Loads a checkpoint read from disk into a built setup; returns its step. Any mismatch (a tensor missing or of
// another shape) is an Error naming the checkpoint file.
int64_t load_checkpoint(Setup& s, const ReadCheckpoint& ck);

// Runs f with the EMA weights in the model (if any), in eval mode and without gradients.
template <class F>
auto with_eval_weights(Setup& s, F&& f) {
  NoGradGuard ng;
  s.task->model().eval();
  if (s.ema) s.ema->swap();
  struct Restore {
    Setup& s;
    ~Restore() {
      if (s.ema) s.ema->swap();
      s.task->model().train();
    }
  } restore{s};
  return f();
}

// The bytes of a run's weights, and of what training adds beside them: gradients, optimizer state, EMA copy.
struct TrainingMemory {
  size_t weights = 0;
  double gradients = 0, optimizer = 0, ema = 0;
  double added() const { return gradients + optimizer + ema; }
};
TrainingMemory training_memory(const Setup& s);

// Refuses, before the first step, a CPU run whose gradients and optimizer state cannot fit beside the weights
// (the weights are allocated already; the allocator refuses any single request that cannot fit, activations
// included, so this only catches the sum early and names what it is made of).
void check_memory_fits(const Setup& s, const std::string& source);

}  // namespace liandan::apps
