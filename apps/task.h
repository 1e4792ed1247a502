#pragma once
// A task is what `liandan train` trains: a model, its data and its loss, its held-out metrics and the
// outputs a person looks at (generated text, sample grids). The trainer (apps/trainer.h) owns
// everything generic — optimizer, schedule, clipping, EMA, checkpoints, metrics, progress — so a task is
// only the glue between a config section and the library (nn/, losses/, diffusion/, core/data/).
//
// Tasks register themselves by name (`task = "lm"` in a config):
//   static TaskRegistration reg("lm", "RoFormer char-level LM", [](Config& c, const TaskContext& ctx) { ... });
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "apps/config.h"
#include "core/data/loader.h"
#include "core/data/sampler.h"
#include "core/error.h"
#include "core/tensor.h"
#include "nn/module.h"
#include "optim/optimizer.h"

namespace liandan::apps {

using Metrics = std::vector<std::pair<std::string, double>>;

struct TaskContext {
  uint64_t seed = 0;
  std::string data_dir = "data";  // where scripts/get-data puts downloads
  // Data-parallel runs (docs/distributed.md): this process's rank of `world`.
  int rank = 0, world = 1;
  // The share of each global batch the next train_loss() computes: its rows [index·B/count, (index+1)·B/count).
  // Every rank draws the same global batch of `batch_size` (same data order, same random draws) and keeps its
  // share, so N ranks train on exactly the batches one process would. Fast data-parallel mode: (rank, world).
  // Deterministic mode: `count` is dist.chunks and the trainer points `index` at each of this rank's chunks in
  // turn, restoring the task's state() between them, so a chunk's loss does not depend on which rank computes it.
  // Shared (a pointer) between the trainer and the task's copy of this context.
  struct Share {
    int64_t index = 0, count = 1;
  };
  std::shared_ptr<Share> share = std::make_shared<Share>();
  std::string share_reason;  // why the batch must split into share->count parts (for the error below)

  // The global batch must split evenly into the shares.
  void check_batch(int64_t batch) const {
    LD_CHECK(batch % share->count == 0, "batch_size ", batch, " does not split into ", share->count, " equal parts (",
             share_reason.empty() ? "data-parallel: each process takes batch_size / world rows" : share_reason,
             "; make it a multiple of ", share->count, ")");
  }
  // The current share of a global batch's row indices.
  std::vector<int64_t> shard(const std::vector<int64_t>& rows) const {
    size_t n = rows.size() / size_t(share->count), i = size_t(share->index);
    return {rows.begin() + long(n * i), rows.begin() + long(n * (i + 1))};
  }
  // The current share of a global batch's rows (dim 0), of one tensor or of every field of a batch.
  Tensor shard(const Tensor& x) const { return data::shard_rows(x, share->index, share->count); }
  data::Batch shard(const data::Batch& b) const {
    data::Batch out;
    for (auto& [name, t] : b.fields) out.add(name, shard(t));
    return out;
  }
  // Whether this share is the whole batch (one process, fast mode).
  bool whole() const { return share->count == 1; }
};

class Task {
 public:
  virtual ~Task() = default;
  virtual nn::Module& model() = 0;
  // One line for the log: model size, data.
  virtual std::string describe() const = 0;
  // Optimizer parameter groups. Default: "decay" (tensors of rank ≥ 2) and "no_decay" (biases, norm
  // gains and shifts: weight decay 0), the usual practice for AdamW.
  virtual std::vector<optim::ParamGroup> param_groups();
  // The loss of the next training batch (advances the task's data position).
  virtual Tensor train_loss() = 0;
  // Held-out metrics (the model is in eval mode, under NoGradGuard, with EMA weights when enabled).
  virtual Metrics evaluate() = 0;
  // The metric that picks the "best" checkpoint, and whether lower is better.
  virtual std::pair<std::string, bool> best_metric() const { return {"val_loss", true}; }
  // Writes the outputs a person looks at into `dir` (file names start with `tag`); returns lines to
  // print (e.g. the generated text, or "samples: runs/x/samples/final.png").
  virtual std::vector<std::string> write_samples(const std::string& dir, const std::string& tag) { return {}; }
  // The device of the model and its batches (the config's `device` key, set by the trainer before training).
  Device device = Device::cpu();
  // Whether the task moves its batches to `device`; tasks whose losses or metrics have no device path yet
  // keep the default, and the trainer refuses another device for them with a clear error.
  virtual bool runs_on_devices() const { return false; }
  // Data position and random-number state, for bit-identical resume.
  virtual std::vector<int64_t> state() const = 0;
  virtual void set_state(const std::vector<int64_t>& s) = 0;
};

using TaskFactory = std::function<std::unique_ptr<Task>(Config&, const TaskContext&)>;

struct TaskRegistration {
  TaskRegistration(const std::string& name, const std::string& help, TaskFactory f);
};

std::unique_ptr<Task> make_task(const std::string& name, Config& cfg, const TaskContext& ctx);
// (name, help) of every registered task, sorted by name.
std::vector<std::pair<std::string, std::string>> task_list();

}  // namespace liandan::apps
