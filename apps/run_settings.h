#pragma once
// What the trainer reads from a config besides the task's own section: the run settings (steps, intervals,
// device, precision, [dist]) and the optimizer and schedule they name. Every value is checked here, and an error
// names the key and the value.
#include <memory>
#include <string>
#include <vector>

#include "apps/config.h"
#include "core/device.h"
#include "core/dtype.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"

namespace liandan::apps {

struct RunSettings {
  std::string task;
  uint64_t seed;
  int64_t steps, threads, log_every, eval_every, checkpoint_every, keep_checkpoints, accumulate;
  double clip_norm, clip_value, ema_decay;
  bool ema_warmup;
  std::string data_dir;
  bool log_tensorboard;  // [log] tensorboard: also write TensorBoard event files into RUN_DIR/tensorboard
  Device device;
  DType precision;  // f32, or the half format of mixed precision (autocast): bf16 or f16
  // [dist]: data-parallel training when launched by mpirun (docs/distributed.md)
  std::string dist_backend;
  int64_t dist_bucket_mb;
  double dist_timeout;
  bool dist_find_unused;
  bool dist_zero;           // ZeRO-1: AdamW/Adam/SGD state sharded over the ranks (optim/zero.h)
  bool dist_deterministic;  // bit-identical weights on any power-of-two world size (nn/parallel.h)
  int64_t dist_chunks;      // deterministic mode: the global batch in this many fixed chunks (a power of two)
};

// Reads and checks the run settings; sets the thread count when `threads` > 0.
RunSettings read_settings(Config& cfg);

// The optimizer `optim.*` names, over `groups` (the task's parameter groups, or a ZeRO shard's pieces of them).
std::unique_ptr<optim::Optimizer> make_optimizer(Config& cfg, std::vector<optim::ParamGroup> groups);

// The learning-rate schedule `optim.schedule` names (with `optim.warmup` steps of linear warm-up) over `steps`.
optim::Schedule make_schedule(Config& cfg, int64_t steps);

}  // namespace liandan::apps
