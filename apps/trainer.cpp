#include "apps/trainer.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include <spdlog/spdlog.h>

#include "apps/checkpoint.h"
#include "apps/config_keys.h"
#include "apps/history.h"
#include "apps/run_settings.h"
#include "apps/run_dir.h"
#include "apps/task.h"
#include "core/autograd.h"
#include "core/data/image.h"
#include "core/data/image_set.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/random.h"
#include "core/serialize.h"
#include "core/device.h"
#include "core/fileio.h"
#include "core/threads.h"
#include "core/dist/comm.h"
#include "nn/parallel.h"
#include "core/allocator.h"
#include "optim/adam.h"
#include "optim/amos.h"
#include "optim/clip.h"
#include "optim/ema.h"
#include "optim/grad_scaler.h"
#include "optim/schedule.h"
#include "optim/sgd.h"
#include "optim/zero.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace liandan::apps {

namespace {

void write_json_atomic(const fs::path& path, const json& j) { write_file_atomic(path.string(), j.dump(2) + "\n"); }

std::string default_run_dir(const Config& cfg, const std::string& task) {
  std::string stem = cfg.source() == "<default>" ? "default" : fs::path(cfg.source()).stem().string();
  return (fs::path("runs") / stem).string();
}

// What ZeRO-1 cannot do, refused before anything is built (optim/zero.h says why).
void check_zero_supported(Config& cfg, const RunSettings& rs) {
  std::string opt = cfg.get<std::string>("optim.name", "adamw");
  LD_CHECK(opt != "amos", "config ", cfg.source(), ": dist.zero shards AdamW, Adam and SGD; Amos's factored slots ",
           "span whole rows (and its state is < 1 % of AdamW's): train Amos with dist.zero = false (replicated)");
  LD_CHECK(rs.precision != DType::f16, "config ", cfg.source(), ": dist.zero with precision = \"f16\" is not ",
           "supported (the loss scaler would have to unscale sharded gradients); use precision = \"bf16\", which needs ",
           "no scaler");
  LD_CHECK(rs.clip_value == 0, "config ", cfg.source(), ": dist.zero clips by the global norm only (optim.clip_norm); ",
           "optim.clip_value = ", rs.clip_value, " is not supported with it");
}

// Everything a run needs, built from a config: shared by train, sample, eval and bench.
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

// The share of the available memory a CPU model's weights (and the task's data) may take while they are built:
// training adds gradients, the optimizer's state and the EMA copy, each as large as the weights.
std::pair<size_t, std::string> model_budget(Config& cfg, const RunSettings& rs) {
  std::string opt = cfg.get<std::string>("optim.name", "adamw");
  double slots = opt == "sgd" ? 1 : opt == "amos" ? 0.5 : 2;
  double copies = 2 + slots + (rs.ema_decay > 0 ? 1 : 0);
  MemoryInfo m = system_memory();
  size_t budget = m.available ? size_t(double(m.available) / copies) : 0;
  return {budget ? budget : ~size_t(0),
          fmt::format("the model's weights may take 1/{:.1f} of the available memory while it is "
                                         "built (training adds gradients, {} state{})", copies, opt,
                                         rs.ema_decay > 0 ? " and the EMA copy" : "")};
}

Setup build(Config& cfg) {
  Setup s;
  s.rs = read_settings(cfg);
  check_known_keys(cfg);  // a key no task reads is a typo: refused before the task loads any data
  s.comm = dist::init({.backend = s.rs.dist_backend, .timeout_s = s.rs.dist_timeout});
  const int rank = s.comm->rank(), world = s.comm->world_size();
  // On a multi-GPU node each rank takes its own GPU: device = "cuda" means cuda:LOCAL_RANK.
  if (!s.rs.device.is_cpu() && world > 1 && cfg.get<std::string>("device", "cpu") == "cuda")
    s.rs.device = Device::cuda(s.comm->local_rank());
  default_generator().set_state(s.rs.seed, 0);  // dropout and anything else that draws from it
  try {
    std::optional<CpuAllocationBudget> budget;
    if (s.rs.device.is_cpu()) {
      auto [bytes, why] = model_budget(cfg, s.rs);
      budget.emplace(bytes, why);
    }
    TaskContext ctx{s.rs.seed, s.rs.data_dir, rank, world};
    s.share = ctx.share;
    if (s.rs.dist_deterministic) {  // the chunks, whatever the world size; the trainer points at each in turn
      s.share->count = s.rs.dist_chunks;
      ctx.share_reason = "deterministic mode: the global batch in dist.chunks = " + std::to_string(s.rs.dist_chunks) +
                         " equal chunks";
    } else {
      s.share->index = rank;
      s.share->count = world;
    }
    s.task = make_task(s.rs.task, cfg, ctx);
  } catch (const Error& e) {
    // A mistyped key is the likely cause when the task fails before reading every given key (a misspelled
    // data key shows up as "data not found"): name the unread keys of the sections it had read from.
    std::string unread;
    for (auto& k : cfg.unread_keys()) {
      auto dot = k.rfind('.');
      bool trainers = k.rfind("optim.", 0) == 0 || k.rfind("ema.", 0) == 0;  // read after the task
      if (dot != std::string::npos && !trainers && cfg.read_any_in(k.substr(0, dot))) unread += (unread.empty() ? "'" : ", '") + k + "'";
    }
    if (unread.empty()) throw;
    LD_FAIL(e.what(), "\n  (config ", cfg.source(), ": the task had not read these keys when it failed: ", unread,
            "; check their spelling)");
  }
  if (!s.rs.device.is_cpu()) {  // before the optimizer, so that its state is created on the device
    LD_CHECK(s.task->runs_on_devices(), "config ", cfg.source(), ": task '", s.rs.task, "' runs on the CPU only so far",
             " (device = \"", s.rs.device.str(), "\")");
    try {
      device_backend(s.rs.device);
    } catch (const Error& e) {
      LD_FAIL("config ", cfg.source(), ": device = \"", s.rs.device.str(), "\": ", e.what());
    }
    s.task->device = s.rs.device;
    s.task->model().to(s.rs.device);
  }
  if (s.rs.dist_deterministic)
    LD_CHECK(s.rs.dist_chunks % world == 0, "config ", cfg.source(), ": deterministic mode needs a power-of-two number ",
             "of processes that divides dist.chunks = ", s.rs.dist_chunks, "; got ", world, " processes");
  if (s.rs.dist_zero) check_zero_supported(cfg, s.rs);
  // Fast ZeRO reduce-scatters the gradients itself: no DDP, only rank 0's weights on every rank. Otherwise DDP
  // (rank 0's weights; buckets reduced during backward, or the chunk tree in deterministic mode).
  if (s.rs.dist_zero && !s.rs.dist_deterministic)
    nn::broadcast_module(s.task->model(), *s.comm);
  else if (world > 1 || s.rs.dist_deterministic)
    s.ddp = std::make_unique<nn::DistributedDataParallel>(
        s.task->model(), s.comm,
        nn::DDPOptions{.bucket_bytes = s.rs.dist_bucket_mb << 20, .find_unused_parameters = s.rs.dist_find_unused,
                       .deterministic = s.rs.dist_deterministic});
  if (s.rs.dist_zero)
    s.zero = std::make_unique<optim::ZeroRedundancyOptimizer>(
        s.task->param_groups(), s.comm, [&cfg](std::vector<optim::ParamGroup> g) { return make_optimizer(cfg, std::move(g)); },
        optim::ZeroOptions{.clip_norm = s.rs.clip_norm, .grads_averaged = s.rs.dist_deterministic});
  else
    s.opt = make_optimizer(cfg, s.task->param_groups());
  s.sched = std::make_unique<optim::Scheduler>(s.optimizer(), make_schedule(cfg, s.rs.steps));
  if (s.rs.ema_decay > 0)
    s.ema = std::make_unique<optim::EMA>(s.task->model().named_parameters(), s.rs.ema_decay, s.rs.ema_warmup);
  s.scaler = std::make_unique<optim::GradScaler>(optim::GradScalerOptions{.enabled = s.rs.precision == DType::f16});
  cfg.check_all_used();
  return s;
}

// The next training batch's loss, with the forward under autocast when the run is in mixed precision.
Tensor train_loss(Setup& s) {
  Autocast ac(s.rs.precision);
  return s.task->train_loss();
}

std::string optimizer_name(const Setup& s) {
  if (!s.zero) return s.opt->type_name();
  return fmt::format("{} (ZeRO-1, state sharded over {} processes)", s.optimizer().type_name(), s.comm->world_size());
}

// Collective with ZeRO (the shards are gathered into the unsharded optimizer's state): every rank calls it.
NamedTensors checkpoint_tensors(const Setup& s) {
  NamedTensors t = prefixed("model.", s.task->model().state_dict());
  for (auto& kv : prefixed("optim.", s.zero ? s.zero->state_dict() : s.opt->state_dict())) t.push_back(kv);
  if (s.ema)
    for (auto& kv : s.ema->state_dict()) t.push_back(kv);
  if (s.scaler->enabled())
    for (auto& kv : s.scaler->state_dict()) t.push_back(kv);
  return t;
}

// Loads a checkpoint read from disk into a built setup; returns its step. Any mismatch (a tensor missing or of
// another shape) is an Error naming the checkpoint file.
int64_t load_checkpoint(Setup& s, const ReadCheckpoint& ck) {
  const std::string& path = ck.path;
  const SafetensorsContents& c = ck.contents;
  try {
    s.task->model().load_state_dict(with_prefix_removed("model.", c.tensors), true);
    if (s.zero)
      s.zero->load_state_dict(with_prefix_removed("optim.", c.tensors), path);
    else
      s.opt->load_state_dict(with_prefix_removed("optim.", c.tensors), path);
    if (s.ema) s.ema->load_state_dict(c.tensors, path);
    if (s.scaler->enabled()) s.scaler->load_state_dict(c.tensors, path);
  } catch (const Error& e) {
    LD_FAIL("checkpoint ", path, ": ", e.what());
  }
  int64_t step = meta_int(c.metadata, "step", path);
  LD_CHECK(step >= 0, "checkpoint ", path, ": metadata field 'step' must be >= 0, got ", step);
  s.sched->set_steps_taken(step);
  auto rng = parse_ints(meta_at(c.metadata, "rng", path), path, "rng");
  LD_CHECK(rng.size() == 2, "checkpoint ", path, ": metadata field 'rng' must hold seed,offset");
  default_generator().set_state(uint64_t(rng[0]), uint64_t(rng[1]));
  try {
    s.task->set_state(parse_ints(meta_at(c.metadata, "task_state", path), path, "task_state"));
  } catch (const Error& e) {
    LD_FAIL("checkpoint ", path, ": metadata field 'task_state': ", e.what());
  }
  return step;
}

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

json metrics_json(const Metrics& m) {
  json j = json::object();
  for (auto& [k, v] : m) j[k] = v;
  return j;
}

std::string metrics_line(const Metrics& m) {
  std::string s;
  for (auto& [k, v] : m) s += fmt::format("{}{} {:.4f}", s.empty() ? "" : "  ", k, v);
  return s;
}

}  // namespace

// ---------------------------------------------------------------- one training step (train and bench)

namespace {

struct StepResult {
  double loss = std::nan("");     // mean over the micro-batches
  double grad_norm = std::nan("");  // before clipping, when clip_norm is on
  double lr = 0;                   // the learning rate the step used
};

// One optimizer step: `accumulate` micro-batches' forward and backward, the non-finite checks, clipping, the
// (scaled) optimizer step, the schedule and the EMA. `step` is the number of the step being taken (for errors).
// The loss's value, checked: a non-finite loss stops training with the first non-finite parameter named.
double checked_loss(const Tensor& loss, const optim::NamedParams& named, int64_t step) {
  double lv = loss.item();
  if (!std::isfinite(lv)) {
    auto bad = optim::first_nonfinite_param(named);
    LD_FAIL("step ", step, ": the loss is ", lv, " (not finite)",
            bad ? "; first non-finite parameter: '" + *bad + "'" : std::string("; all parameters are finite"),
            "; training stopped");
  }
  return lv;
}

// Deterministic mode: this rank's chunks of the global batch, each from the same task state (so each draws the same
// global batch and takes its chunk of it) and with dropout keyed by the chunk's number, never by the rank; DDP sums
// the chunk gradients in a fixed tree. Returns the sum of the local chunks' losses.
double deterministic_chunks(Setup& s, const optim::NamedParams& named, int64_t step) {
  const int64_t C = s.rs.dist_chunks, per = C / s.comm->world_size(), first = s.comm->rank() * per;
  const std::vector<int64_t> start = s.task->state();
  Generator& gen = default_generator();
  const uint64_t seed = gen.seed(), base = gen.offset();
  constexpr uint64_t kBlocksPerChunk = uint64_t(1) << 32;
  double loss_sum = 0;
  for (int64_t c = first; c < first + per; ++c) {
    if (c != first) s.task->set_state(start);
    s.share->index = c;
    gen.set_state(seed, base + uint64_t(c) * kBlocksPerChunk);
    Tensor loss = train_loss(s);
    loss_sum += checked_loss(loss, named, step);
    s.scaler->scale(loss).backward();
    s.ddp->accumulate_chunk();
  }
  gen.set_state(seed, base + uint64_t(C) * kBlocksPerChunk);  // past every chunk's stretch, on every rank
  return loss_sum / double(per);
}

// The rest of a ZeRO-1 step (no loss scaler, no clip_value: check_zero_supported): the gradients checked on this
// rank, reduce-scattered (unless DDP's deterministic tree already averaged them), clipped by the global norm, the
// shard updated and the parameters all-gathered (optim/zero.h).
StepResult zero_step(Setup& s, const optim::NamedParams& named, int64_t step, StepResult r) {
  if (auto bad = optim::first_nonfinite_grad(named))
    LD_FAIL("step ", step, ": the gradient of parameter '", *bad, "' is not finite; training stopped");
  r.lr = s.optimizer().param_groups()[0].lr;
  double norm = s.zero->step();
  if (s.rs.clip_norm > 0) r.grad_norm = norm;
  s.zero->zero_grad();
  s.sched->step();
  if (s.ema) s.ema->update();
  return r;
}

StepResult train_step(Setup& s, optim::GradAccumulation& acc, const optim::NamedParams& named, int64_t step) {
  const RunSettings& rs = s.rs;
  StepResult r;
  double loss_sum = 0;
  if (rs.dist_deterministic) {
    loss_sum = deterministic_chunks(s, named, step);
  } else {
    for (int64_t m = 0; m < rs.accumulate; ++m) {
      // Data-parallel: the micro-batches before the last only accumulate; the last one's backward reduces the sum.
      std::optional<nn::DistributedDataParallel::NoSync> accumulate_only;
      if (s.ddp && m + 1 < rs.accumulate) accumulate_only.emplace(s.ddp->no_sync());
      Tensor loss = train_loss(s);
      loss_sum += checked_loss(loss, named, step);
      s.scaler->scale(rs.accumulate > 1 ? loss * acc.loss_scale() : loss).backward();
      acc.micro_step();
    }
    loss_sum /= double(rs.accumulate);
  }
  if (s.ddp) s.ddp->finish_gradient_sync();  // .grad = the mean over the ranks: the global batch's gradient
  r.loss = loss_sum;
  if (s.zero) return zero_step(s, named, step, r);
  s.scaler->unscale_(*s.opt);
  // f16: an Inf/NaN gradient means the loss scale was too large: the scaler skips the step and halves
  // the scale. Only when that keeps happening down to a scale of 1 is it the model's fault.
  if (s.scaler->found_inf() && s.scaler->get_scale() < 1.0)
    LD_FAIL("step ", step, ": the gradients are not finite even at loss scale ", s.scaler->get_scale(),
            " (f16 mixed precision, ", s.scaler->skipped_steps(), " steps skipped so far); training stopped");
  // With the scaler on, unscale_ has already scanned every gradient; without it, scan and name the parameter.
  if (!s.scaler->enabled())
    if (auto bad = optim::first_nonfinite_grad(named))
      LD_FAIL("step ", step, ": the gradient of parameter '", *bad, "' is not finite; training stopped");
  if (!s.scaler->found_inf()) {
    if (rs.clip_norm > 0) r.grad_norm = optim::clip_grad_norm_(named, rs.clip_norm);
    if (rs.clip_value > 0) optim::clip_grad_value_(named, rs.clip_value);
  }
  r.lr = s.opt->param_groups()[0].lr;
  if (!s.scaler->step(*s.opt))
    spdlog::debug("step {}: gradients overflowed in f16, step skipped, loss scale {} -> {}", step,
                  s.scaler->get_scale(), s.scaler->get_scale() / 2);
  s.scaler->update();
  s.opt->zero_grad();
  s.sched->step();
  if (s.ema) s.ema->update();
  return r;
}

// Refuses, before the first step, a CPU run whose gradients and optimizer state cannot fit beside the weights
// (the weights are allocated already; the allocator refuses any single request that cannot fit, activations
// included, so this only catches the sum early and names what it is made of).
// The bytes of a run's weights, and of what training adds beside them: gradients, optimizer state, EMA copy.
struct TrainingMemory {
  size_t weights = 0;
  double gradients = 0, optimizer = 0, ema = 0;
  double added() const { return gradients + optimizer + ema; }
};
TrainingMemory training_memory(const Setup& s) {
  TrainingMemory m;
  for (auto& [n, p] : s.task->model().named_parameters()) m.weights += size_t(p.numel()) * dtype_size(p.dtype());
  const std::string& opt = s.optimizer().type_name();
  double slots = opt == "SGD" ? 1 : opt == "Amos" ? 0.5 : 2;  // momentum; Amos's factored slots; Adam's m, v
  if (s.zero) slots /= s.comm->world_size();                  // ZeRO-1: this rank's shard of the state
  m.gradients = double(m.weights);
  m.optimizer = double(m.weights) * slots;
  m.ema = s.ema ? double(m.weights) : 0;
  return m;
}

void check_memory_fits(const Setup& s, const std::string& source) {
  if (!s.rs.device.is_cpu()) return;
  TrainingMemory tm = training_memory(s);
  size_t weights = tm.weights;
  const std::string& opt = s.optimizer().type_name();
  double need = tm.added();
  MemoryInfo m = system_memory();
  if (m.available && need > double(m.available))
    LD_FAIL("config ", source, ": the model does not fit in memory: ", s.task->model().num_parameters(),
            " parameters (", format_bytes(weights), " of weights) need about ", format_bytes(size_t(need)),
            " more for gradients, ", opt, " state", s.ema ? ", EMA" : "", " and the machine has ",
            format_bytes(m.available), " available (of ", format_bytes(m.total), "); make the model smaller");
}

}  // namespace

// ---------------------------------------------------------------- train / resume

Config run_config(const std::string& run_dir, const std::string& which) {
  fs::path path = fs::path(run_dir) / "config.toml";
  std::string problem;
  if (is_regular_file(path.string())) {
    try {
      std::string text = read_regular_file(path.string());
      if (!text.empty()) return Config::from_string(text, path.string());
      problem = "it is empty";
    } catch (const Error& e) {
      problem = e.what();
    }
  } else {
    problem = fs::exists(path) ? "it is not a regular file" : "it does not exist";
  }
  LD_CHECK(fs::is_directory(fs::path(run_dir) / "checkpoints"), run_dir, " is not a run directory (no usable ",
           "config.toml: ", problem, "; no checkpoints/)");
  // Every checkpoint holds the resolved config: recover it from the one we are about to load.
  ReadCheckpoint ck = read_checkpoint(run_dir, which);
  std::string text = meta_at(ck.contents.metadata, "config", ck.path);
  spdlog::warn("{}: {}; using the config stored in {}", path.string(), problem, ck.path);
  return Config::from_string(text, ck.path + " (config)");
}

namespace {

// The training run of one process. Data-parallel (mpirun -np N): every rank builds the same model and trains on its
// share of each global batch; rank 0 alone owns the run directory (lock, config, metrics, plots, checkpoints,
// samples, summary) and logs, the other ranks only warn and fail. Checkpoints hold the full state (DDP keeps every
// rank's weights equal), so a run resumes on any number of processes.
int train_on(Config& cfg, const TrainOptions& topt, dist::Communicator& comm) {
  const bool main_rank = comm.rank() == 0;
  if (!main_rank) spdlog::set_level(spdlog::level::warn);
  // The run directory first: a run that is in use or would be overwritten is refused before any work.
  std::string task_name = cfg.has("task") ? Config(cfg).require<std::string>("task") : "";
  fs::path run = topt.run_dir.empty() ? fs::path(default_run_dir(cfg, task_name)) : fs::path(topt.run_dir);
  std::optional<RunLock> lock;
  if (main_rank) {
    fs::create_directories(run);
    lock.emplace(run);
    if (!topt.resume && holds_run(run)) {
      LD_CHECK(topt.overwrite, "run directory ", run.string(), " already holds a run; continue it with `liandan resume ",
               run.string(), "`, start a new one with --run-dir DIR, or pass --overwrite to replace it");
      clear_run(run);
    }
    for (auto& d : {run, run / "checkpoints", run / "samples"})
      if (int n = remove_stale_temp_files(d.string()))
        spdlog::info("removed {} temporary file(s) a killed run left in {}", n, d.string());
  }

  Setup s = build(cfg);
  const RunSettings& rs = s.rs;
  check_memory_fits(s, cfg.source());
  Checkpointer ck{run / "checkpoints", rs.keep_checkpoints};
  std::string config_text = cfg.resolved_text();
  if (comm.world_size() > 1) {  // ranks started with other configs or another build are refused
    dist::check_same_config(comm, config_text, "config " + cfg.source());
    spdlog::info("data-parallel: {} processes ({} backend{}{}), rank 0 writes {}", comm.world_size(), comm.backend(),
                 rs.dist_deterministic ? fmt::format(", deterministic: {} chunks of the global batch", rs.dist_chunks)
                                       : std::string(", fast"),
                 rs.dist_zero ? ", ZeRO-1 optimizer state" : "", run.string());
  }
  if (main_rank) fs::create_directories(run / "samples");

  int64_t step = 0;
  double best = std::nan(""), wall_before = 0;
  auto [best_name, lower_better] = s.task->best_metric();
  History hist;
  if (topt.resume) {
    ReadCheckpoint c = read_checkpoint(run, topt.checkpoint);
    step = load_checkpoint(s, c);
    best = meta_double(c.contents.metadata, "best", c.path);
    wall_before = meta_double(c.contents.metadata, "wall_s", c.path);
    LD_CHECK(std::isfinite(wall_before) && wall_before >= 0, "checkpoint ", c.path, ": metadata field 'wall_s' must be ",
             "a time in seconds, got ", wall_before);
    if (main_rank) hist = reload_metrics(run / "metrics.jsonl", step);
    spdlog::info("resuming {} at step {} of {} from {}", run.string(), step, rs.steps, c.path);
  }
  // Rewritten only when it changed (resume with --set), and atomically: a kill or a full disk keeps the old one.
  fs::path cfg_file = run / "config.toml";
  if (main_rank && (!is_regular_file(cfg_file.string()) || read_regular_file(cfg_file.string()) != config_text))
    write_file_atomic(cfg_file.string(), config_text);
  spdlog::info("task {}: {}", rs.task, s.task->describe());
  spdlog::info("optimizer {} ({} parameter groups), {} steps, {} threads, run directory {}", optimizer_name(s),
               s.optimizer().param_groups().size(), rs.steps, get_num_threads(), run.string());
  if (rs.precision != DType::f32 || !rs.device.is_cpu())
    spdlog::info("device {}, precision {}{}", rs.device.str(), dtype_name(rs.precision),
                 rs.precision == DType::f32 ? "" : " mixed (autocast GEMMs, f32 weights)");

  if (main_rank && rs.log_tensorboard) hist.open_tensorboard((run / "tensorboard").string());
  auto named = s.task->model().named_parameters();
  std::optional<AppendFile> metrics;
  if (main_rank) metrics.emplace((run / "metrics.jsonl").string());
  auto t0 = std::chrono::steady_clock::now();
  auto wall = [&] { return wall_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  auto meta_for = [&](int64_t at) {
    return Metadata{{"step", std::to_string(at)},
                    {"task", rs.task},
                    {"config", config_text},
                    {"task_state", join_ints(s.task->state())},
                    {"rng", std::to_string(default_generator().seed()) + "," + std::to_string(default_generator().offset())},
                    {"best", fmt::format("{}", best)},
                    {"wall_s", fmt::format("{}", wall())},
                    {"format", "liandan-checkpoint-1"}};
  };
  // Never a checkpoint with a non-finite tensor (lr = 1e39 makes every weight Inf without a NaN loss yet).
  auto save = [&](int64_t at) {
    NamedTensors t = checkpoint_tensors(s);  // on every rank: collective with ZeRO
    if (!main_rank) return;
    check_all_finite(t, "step " + std::to_string(at));
    ck.save(at, t, meta_for(at));
  };
  auto run_eval = [&](int64_t at) {
    Metrics m = with_eval_weights(s, [&] { return s.task->evaluate(); });
    json j{{"step", at}, {"eval", metrics_json(m)}};
    if (main_rank) {  // every rank evaluates (the same numbers); rank 0 records
      metrics->write_line(j.dump());
      hist.add(j);
      hist.plot(run.string(), rs.task);
      spdlog::info("step {} eval: {}", at, metrics_line(m));
    }
    bool improved = false;
    for (auto& [k, v] : m)
      if (k == best_name && (std::isnan(best) || (lower_better ? v < best : v > best))) best = v, improved = true;
    if (s.zero && comm.world_size() > 1) {  // the save below is collective: rank 0's decision, on every rank
      Tensor flag = from_vector(std::vector<double>{improved ? 1.0 : 0.0}, {1});
      comm.broadcast(flag, 0).wait();
      improved = flag.to_vector()[0] > 0;
    }
    if (improved) {
      NamedTensors t = checkpoint_tensors(s);
      if (main_rank) {
        check_all_finite(t, "step " + std::to_string(at));
        ck.save_best(t, meta_for(at));
      }
    }
    return m;
  };
  auto write_summary = [&](const json& j) {
    if (!main_rank) return;
    try {
      write_json_atomic(run / "summary.json", j);
    } catch (const Error& e) {  // already failing: say so, keep the first error as the cause
      spdlog::error("{}", e.what());
    }
  };

  s.task->model().train();
  Progress progress(rs.steps, step, rs.log_every);
  optim::GradAccumulation acc(rs.accumulate);
  StopSignals signals;
  double last_loss = std::nan("");
  try {
    while (step < rs.steps) {
      StepResult r = train_step(s, acc, named, step + 1);
      ++step;
      int stop_signal = signals.pending();
      if (comm.world_size() > 1) {  // the loss over the global batch; a stop requested on any rank stops them all
        Tensor both = from_vector(std::vector<double>{r.loss, double(stop_signal)}, {2});
        comm.all_reduce(both, dist::ReduceOp::sum).wait();
        auto v = both.to_vector();
        r.loss = v[0] / comm.world_size();
        if (!stop_signal && v[1] > 0) stop_signal = SIGTERM;
      }
      last_loss = r.loss;
      if (main_rank) progress.update(step, last_loss, r.lr);
      if (step % rs.log_every == 0 || step == rs.steps) {
        json j{{"step", step}, {"loss", last_loss}, {"lr", r.lr}, {"time_s", wall()}};
        if (!std::isnan(r.grad_norm)) j["grad_norm"] = r.grad_norm;
        if (s.scaler->enabled()) {
          j["loss_scale"] = s.scaler->get_scale();
          j["skipped_steps"] = s.scaler->skipped_steps();
        }
        if (main_rank) metrics->write_line(j.dump());
        hist.add(j);
      }
      if (step % rs.eval_every == 0 && step != rs.steps && !stop_signal) {
        progress.newline();
        run_eval(step);
      }
      bool saved = step % rs.checkpoint_every == 0 && step != rs.steps;
      if (saved) save(step);
      if (int sig = stop_signal) {  // SIGINT / SIGTERM / SIGHUP: keep this step, stop cleanly
        progress.newline();
        if (!saved) save(step);
        if (main_rank) hist.plot(run.string(), rs.task);
        write_summary(json{{"status", "interrupted"}, {"step", step}, {"signal", StopSignals::name(sig)},
                           {"wall_s", wall()}});
        spdlog::warn("{}: stopped after step {} of {}; checkpoint written, continue with `liandan resume {}`",
                     StopSignals::name(sig), step, rs.steps, run.string());
        return 128 + sig;
      }
      if (topt.die_after_step > 0 && step == topt.die_after_step) ::kill(::getpid(), SIGKILL);
    }
  } catch (const Error& e) {
    progress.newline();
    write_summary(json{{"status", "failed"}, {"step", step}, {"error", e.what()}});
    spdlog::error("{}", e.what());
    if (fs::exists(run / "checkpoints" / "last.safetensors"))
      spdlog::error("the last good checkpoint is kept in {}", (run / "checkpoints").string());
    else
      spdlog::error("no checkpoint was written before the failure");
    if (comm.world_size() > 1) comm.abort(e.what());  // the other ranks would wait in their next collective
    return 2;
  }

  Metrics final_m = run_eval(step);
  save(step);
  if (!main_rank) return 0;
  std::vector<std::string> lines = with_eval_weights(s, [&] { return s.task->write_samples((run / "samples").string(), "final"); });
  for (auto& l : lines) std::printf("%s\n", l.c_str());
  json summary{{"status", "completed"},
               {"task", rs.task},
               {"steps", step},
               {"final_train_loss", last_loss},
               {"eval", metrics_json(final_m)},
               {"best", {{best_name, best}}},
               {"parameters", s.task->model().num_parameters()},
               {"optimizer", optimizer_name(s)},
               {"optimizer_state_bytes", s.optimizer().state_bytes()},  // per process with ZeRO
               {"wall_s", wall()},
               {"threads", get_num_threads()},
               {"device", rs.device.str()},
               {"precision", dtype_name(rs.precision)}};
  write_json_atomic(run / "summary.json", summary);
  std::printf("%s\n", metrics_line(final_m).c_str());
  std::printf("run directory: %s (curves.png, samples/, checkpoints/, summary.json)\n", run.string().c_str());
  return 0;
}

}  // namespace

int train(Config& cfg, const TrainOptions& topt) {
  // Launched by mpirun: one communicator per process; an exception on any rank stops every rank (run_guarded).
  auto comm = dist::init({.backend = cfg.get<std::string>("dist.backend", "auto"),
                          .timeout_s = cfg.get<double>("dist.timeout", 300.0)});
  return dist::run_guarded(*comm, [&] { return train_on(cfg, topt, *comm); });
}

// ---------------------------------------------------------------- sample / eval from a run directory

namespace {
Setup setup_from_run(const std::string& run_dir, const std::string& which, const std::vector<std::string>& sets,
                     Config& cfg) {
  cfg = run_config(run_dir, which);
  for (auto& s : sets) cfg.set(s);
  Setup s = build(cfg);
  load_checkpoint(s, read_checkpoint(run_dir, which));
  return s;
}
}  // namespace

int sample(const std::string& run_dir, const std::string& which, const std::vector<std::string>& sets) {
  Config cfg;
  Setup s = setup_from_run(run_dir, which, sets, cfg);
  fs::create_directories(fs::path(run_dir) / "samples");
  auto lines = with_eval_weights(s, [&] { return s.task->write_samples((fs::path(run_dir) / "samples").string(), which); });
  for (auto& l : lines) std::printf("%s\n", l.c_str());
  return 0;
}

int evaluate(const std::string& run_dir, const std::string& which, const std::vector<std::string>& sets) {
  Config cfg;
  Setup s = setup_from_run(run_dir, which, sets, cfg);
  Metrics m = with_eval_weights(s, [&] { return s.task->evaluate(); });
  std::printf("%-24s %s\n", "metric", "value");
  for (auto& [k, v] : m) std::printf("%-24s %.6g\n", k.c_str(), v);
  return 0;
}

int bench(Config& cfg, int64_t steps) {
  LD_CHECK(steps >= 1, "bench: --steps must be >= 1, got ", steps);
  Setup s = build(cfg);
  check_memory_fits(s, cfg.source());
  s.task->model().train();
  auto named = s.task->model().named_parameters();
  optim::GradAccumulation acc(s.rs.accumulate);
  train_step(s, acc, named, 1);  // warm-up: allocator caches, OpenMP pool
  auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < steps; ++i) train_step(s, acc, named, i + 2);
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / double(steps);
  std::printf("%s: %s\n%lld steps, %.2f ms/step (%.1f steps/s), %d threads\n", s.rs.task.c_str(),
              s.task->describe().c_str(), (long long)steps, ms, 1000.0 / ms, get_num_threads());
  return 0;
}

// ---------------------------------------------------------------- dry run and the config schema

int dry_run(Config& cfg) {
  Setup s = build(cfg);
  TrainingMemory tm = training_memory(s);
  MemoryInfo m = system_memory();
  std::printf("task %s: %s\n", s.rs.task.c_str(), s.task->describe().c_str());
  std::printf("parameters: %lld (%s of weights)\n", (long long)s.task->model().num_parameters(),
              format_bytes(tm.weights).c_str());
  std::printf("optimizer: %s\n", optimizer_name(s).c_str());
  std::printf("training memory: about %s = weights %s + gradients %s + optimizer state %s%s, plus the activations of "
              "one batch (measure them with `liandan bench`); this machine has %s available of %s\n",
              format_bytes(size_t(double(tm.weights) + tm.added())).c_str(), format_bytes(tm.weights).c_str(),
              format_bytes(size_t(tm.gradients)).c_str(), format_bytes(size_t(tm.optimizer)).c_str(),
              s.ema ? (" + EMA " + format_bytes(size_t(tm.ema))).c_str() : "", format_bytes(m.available).c_str(),
              format_bytes(m.total).c_str());
  check_memory_fits(s, cfg.source());
  std::printf("resolved config (every key, defaults included):\n%s", cfg.resolved_text().c_str());
  return 0;
}

namespace {
// A temporary folder removed with everything in it when it goes out of scope.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "liandan-config-XXXXXX").string();
    LD_CHECK(::mkdtemp(tmpl.data()) != nullptr, "cannot create a temporary folder in ", fs::temp_directory_path().string());
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};
}  // namespace

std::vector<Config::KeyInfo> task_schema(const std::string& task) {
  // The small data set every task can be built on: generated 28x28 digits as MNIST, a labelled text file, and the
  // embedded corpus for lm (the defaults printed are the readers' own, not these).
  TempDir tmp;
  Generator g(1);
  for (auto [prefix, n] : {std::pair{"train", 512}, {"t10k", 128}})
    data::write_idx_image_set(data::synthetic_digits(n, 28, 1, g), (tmp.path / "mnist").string(), prefix);
  std::string text;
  for (int i = 0; i < 512; ++i) text += (i % 2 ? "b\tsome other words\n" : "a\tone text\n");
  write_file_atomic((tmp.path / "text.tsv").string(), text);
  std::string toml = "task = " + toml_quote(task) + "\ndata_dir = " + toml_quote(tmp.path.string()) +
                     "\nthreads = 1\n[data]\n";
  std::string corpus;
  for (int i = 0; corpus.size() < (1 << 16); ++i) corpus += "line " + std::to_string(i) + " of a generated corpus\n";
  write_file_atomic((tmp.path / "corpus.txt").string(), corpus);
  if (task == "lm") toml += "corpus = " + toml_quote((tmp.path / "corpus.txt").string()) + "\n";
  if (task == "text_cls") toml += "train = " + toml_quote((tmp.path / "text.tsv").string()) + "\ntest = " +
                                  toml_quote((tmp.path / "text.tsv").string()) + "\n";
  Config cfg = Config::from_string(toml, "<liandan config " + task + ">");
  Setup s = build(cfg);
  std::vector<Config::KeyInfo> keys = cfg.read_keys();
  std::set<std::string> have;
  for (auto& k : keys) have.insert(k.key);
  // The keys a task reads only under another choice of its own (image_cls's MLP and ViT, the SDE processes'), from
  // builds with that choice; a key both read keeps the default of the build above.
  struct Choice {
    std::string when, toml;
  };
  const std::string sde = "\n[sample]\nsampler = \"em:10\"\n";  // the default ddim:50 needs a discrete process
  const std::map<std::string, std::vector<Choice>> choices = {
      {"image_cls", {{"model.name = \"mlp\"", "[model]\nname = \"mlp\"\n"}, {"model.name = \"vit\"", "[model]\nname = \"vit\"\n"}}},
      {"toy2d", {{"diffusion.process = \"vp\"", "[diffusion]\nprocess = \"vp\"" + sde},
                 {"diffusion.process = \"ve\"", "[diffusion]\nprocess = \"ve\"" + sde}}},
      {"ddpm", {{"diffusion.process = \"vp\"", "[diffusion]\nprocess = \"vp\"" + sde},
                {"diffusion.process = \"ve\"", "[diffusion]\nprocess = \"ve\"" + sde}}}};
  if (auto it = choices.find(task); it != choices.end())
    for (const Choice& c : it->second) {
      Config v = Config::from_string(toml + c.toml, "<liandan config " + task + ">");
      Setup sv = build(v);
      for (auto& k : v.read_keys())
        if (have.insert(k.key).second) keys.push_back(k), keys.back().when = c.when;
    }
  // The keys of the other optimizers and schedules (read only when they are chosen), over the task's parameters.
  for (std::string variant : {"name = \"adam\"", "name = \"sgd\"", "name = \"amos\"", "schedule = \"cosine\"",
                              "schedule = \"step\"", "schedule = \"inverse_square\""}) {
    Config v = Config::from_string("task = \"x\"\n[optim]\n" + variant + "\n", "<optimizer keys>");
    RunSettings rs = read_settings(v);
    make_optimizer(v, s.task->param_groups());
    make_schedule(v, rs.steps);
    for (auto& k : v.read_keys())
      if (have.insert(k.key).second) keys.push_back(k), keys.back().when = "optim." + variant;
  }
  std::sort(keys.begin(), keys.end(), [](auto& a, auto& b) { return a.key < b.key; });
  return keys;
}

int print_config_schema(const std::string& task, bool as_json) {
  std::vector<Config::KeyInfo> keys = task_schema(task);
  const auto& meanings = key_meanings();
  auto meaning = [&](const std::string& k) {
    auto it = meanings.find(k);
    return it == meanings.end() ? std::string() : it->second;
  };
  if (as_json) {
    json out = json::array();
    for (auto& k : keys)
      out.push_back({{"key", k.key}, {"type", k.type}, {"default", k.default_value}, {"range", k.range},
                     {"when", k.when}, {"meaning", meaning(k.key)}});
    std::printf("%s\n", out.dump(1).c_str());
    return 0;
  }
  // Top-level keys first (in TOML, keys after a [table] header belong to that table), then table by table.
  std::map<std::string, std::vector<const Config::KeyInfo*>> tables;
  for (auto& k : keys) {
    auto dot = k.key.find('.');
    tables[dot == std::string::npos ? "" : k.key.substr(0, dot)].push_back(&k);
  }
  std::printf("# liandan config %s: every key the task reads, set to its default, with its type, the range checked and\n"
              "# its meaning. Save it as a file, change what you need, delete the rest: `liandan train FILE`.\n",
              task.c_str());
  for (auto& [table, ks] : tables) {
    if (!table.empty()) std::printf("\n[%s]\n", table.c_str());
    for (const Config::KeyInfo* k : ks) {
      std::string name = table.empty() ? k->key : k->key.substr(table.size() + 1);
      std::string value = k->range == "required" ? toml_quote(task) : k->default_value;
      // A key read only under another setting is commented out: this file as it stands must train.
      std::string line = (k->when.empty() ? "" : "# ") + name + " = " + value;
      std::string about = k->type + (k->range.empty() || k->range == "required" ? "" : " " + k->range) +
                          (k->range == "required" ? ", required" : "") +
                          (k->when.empty() ? "" : ", with " + k->when) + ": " + meaning(k->key);
      std::printf("%-34s # %s\n", line.c_str(), about.c_str());
    }
  }
  return 0;
}

// ---------------------------------------------------------------- the task registry

namespace {
std::map<std::string, std::pair<std::string, TaskFactory>>& registry() {
  static std::map<std::string, std::pair<std::string, TaskFactory>> r;
  return r;
}
}  // namespace

TaskRegistration::TaskRegistration(const std::string& name, const std::string& help, TaskFactory f) {
  registry()[name] = {help, std::move(f)};
}

std::unique_ptr<Task> make_task(const std::string& name, Config& cfg, const TaskContext& ctx) {
  auto it = registry().find(name);
  if (it == registry().end()) {
    std::string known;
    for (auto& [k, v] : registry()) known += (known.empty() ? "" : ", ") + k;
    LD_FAIL("config ", cfg.source(), ": unknown task '", name, "' (known: ", known, ")");
  }
  return it->second.second(cfg, ctx);
}

std::vector<std::pair<std::string, std::string>> task_list() {
  std::vector<std::pair<std::string, std::string>> out;
  for (auto& [k, v] : registry()) out.emplace_back(k, v.first);
  return out;
}

std::vector<optim::ParamGroup> Task::param_groups() {
  optim::ParamGroup decay{.name = "decay"}, no_decay{.name = "no_decay", .weight_decay = 0.0};
  for (auto& [n, p] : model().named_parameters()) (p.dim() >= 2 ? decay : no_decay).params.emplace_back(n, p);
  std::vector<optim::ParamGroup> g;
  if (!decay.params.empty()) g.push_back(decay);
  if (!no_decay.params.empty()) g.push_back(no_decay);
  return g;
}

}  // namespace liandan::apps
