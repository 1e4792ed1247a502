#include "apps/setup.h"

#include <cmath>
#include <optional>

#include <spdlog/spdlog.h>

#include "apps/config_keys.h"
#include "core/allocator.h"
#include "core/device.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/random.h"
#include "core/threads.h"


namespace liandan::apps {

namespace {

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

}  // namespace

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

Tensor train_loss(Setup& s) {
  Autocast ac(s.rs.precision);
  return s.task->train_loss();
}

std::string optimizer_name(const Setup& s) {
  if (!s.zero) return s.opt->type_name();
  return fmt::format("{} (ZeRO-1, state sharded over {} processes)", s.optimizer().type_name(), s.comm->world_size());
}

NamedTensors checkpoint_tensors(const Setup& s) {
  NamedTensors t = prefixed("model.", s.task->model().state_dict());
  for (auto& kv : prefixed("optim.", s.zero ? s.zero->state_dict() : s.opt->state_dict())) t.push_back(kv);
  if (s.ema)
    for (auto& kv : s.ema->state_dict()) t.push_back(kv);
  if (s.scaler->enabled())
    for (auto& kv : s.scaler->state_dict()) t.push_back(kv);
  return t;
}

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


}  // namespace liandan::apps
