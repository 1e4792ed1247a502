#include "apps/run_settings.h"

#include <cmath>
#include <string>

#include <spdlog/spdlog.h>

#include "core/error.h"
#include "core/threads.h"
#include "optim/adam.h"
#include "optim/amos.h"
#include "optim/sgd.h"

namespace liandan::apps {

namespace {

// "cpu", "cuda" (= cuda:0) or "cuda:N".
Device parse_device(const std::string& s, const std::string& source) {
  if (s == "cpu") return Device::cpu();
  if (s == "cuda") return Device::cuda(0);
  if (s.rfind("cuda:", 0) == 0 && s.size() > 5 && s.size() <= 9 && s.find_first_not_of("0123456789", 5) == std::string::npos)
    return Device::cuda(std::stoi(s.substr(5)));  // at most 4 digits: no overflow
  LD_FAIL("config ", source, ": 'device' must be \"cpu\", \"cuda\" or \"cuda:N\", got \"", s, "\"");
}

// "f32" (no autocast), "bf16" or "f16" (mixed precision: half GEMM inputs, f32 weights and everything else).
DType parse_precision(const std::string& s, const std::string& source) {
  if (s == "f32") return DType::f32;
  if (s == "bf16") return DType::bf16;
  if (s == "f16") return DType::f16;
  LD_FAIL("config ", source, ": 'precision' must be \"f32\", \"bf16\" or \"f16\", got \"", s, "\"");
}

}  // namespace

std::unique_ptr<optim::Optimizer> make_optimizer(Config& cfg, std::vector<optim::ParamGroup> groups) {
  std::string name = cfg.get<std::string>("optim.name", "adamw");
  optim::Strategy st{.per_tensor_lr = cfg.get<bool>("optim.per_tensor_lr", false),
                     .tie_weight_decay = cfg.get<bool>("optim.tie_weight_decay", false),
                     .q = cfg.get<double>("optim.q", 1.0)};
  if (name == "adamw" || name == "adam") {
    optim::AdamOptions o{.lr = cfg.get<double>("optim.lr", 1e-3),
                         .beta1 = cfg.get<double>("optim.beta1", 0.9),
                         .beta2 = cfg.get<double>("optim.beta2", 0.999),
                         .eps = cfg.get<double>("optim.eps", 1e-8),
                         .weight_decay = cfg.get<double>("optim.weight_decay", name == "adamw" ? 1e-2 : 0.0),
                         .amsgrad = cfg.get<bool>("optim.amsgrad", false),
                         .strategy = st};
    if (name == "adam") return std::make_unique<optim::Adam>(std::move(groups), o);
    optim::AdamWOptions w{o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, o.amsgrad, o.strategy};
    return std::make_unique<optim::AdamW>(std::move(groups), w);
  }
  if (name == "sgd")
    return std::make_unique<optim::SGD>(std::move(groups),
                                        optim::SGDOptions{.lr = cfg.get<double>("optim.lr", 1e-2),
                                                          .momentum = cfg.get<double>("optim.momentum", 0.0),
                                                          .nesterov = cfg.get<bool>("optim.nesterov", false),
                                                          .weight_decay = cfg.get<double>("optim.weight_decay", 0.0),
                                                          .strategy = st});
  if (name == "amos") {
    // Amos's weight decay is adaptive (γ); its extra L2 λ is optim.extra_l2 (default 0). optim.weight_decay
    // is read so that --set optim.name=amos works on an AdamW config, but it does not apply.
    double wd = cfg.get<double>("optim.weight_decay", 0.0);
    if (wd != 0) spdlog::warn("Amos: optim.weight_decay = {} is ignored (Amos decays adaptively; optim.extra_l2 adds L2)", wd);
    double eta_factor = cfg.get<double>("optim.eta_factor", 1.0);
    LD_CHECK(std::isfinite(eta_factor) && eta_factor > 0, "config ", cfg.source(),
             ": 'optim.eta_factor' must be a number > 0 (it scales Amos's expected weight scale), got ", eta_factor);
    for (auto& g : groups) g.weight_decay = optim::kDefault;
    optim::AmosOptions o{.lr = cfg.get<double>("optim.lr", 1e-2),
                         .beta = cfg.get<double>("optim.beta", 0.999),
                         .c_coef = cfg.get<double>("optim.c_coef", 0.25),
                         .d_coef = cfg.get<double>("optim.d_coef", 0.25),
                         .extra_l2 = cfg.get<double>("optim.extra_l2", 0.0),
                         .momentum = cfg.get<double>("optim.momentum", 0.0),
                         .clip_value = cfg.get<double>("optim.clip_value", 0.0),
                         .finetune_rate = cfg.get<double>("optim.finetune_rate", 1.0),
                         .init_b = cfg.get<double>("optim.init_b", 0.0),
                         .factored = cfg.get<bool>("optim.factored", true)};
    // η̃ of matrices: their init RMS times optim.eta_factor (√6 gives jestimator's √(2/fan_in) for
    // PyTorch-style U(±1/√fan_in) inits); vectors keep 0.5.
    if (eta_factor != 1.0)
      o.eta = [eta_factor](const std::string&, const Tensor& p) { return p.dim() >= 2 ? eta_factor * optim::init_scale(p) : 0.5; };
    return std::make_unique<optim::Amos>(std::move(groups), o);
  }
  LD_FAIL("config ", cfg.source(), ": optim.name must be one of adamw, adam, sgd, amos; got '", name, "'");
}

optim::Schedule make_schedule(Config& cfg, int64_t steps) {
  std::string name = cfg.get<std::string>("optim.schedule", "constant");
  int64_t warm = cfg.get<int64_t>("optim.warmup", 0);
  LD_CHECK(warm >= 0, "config ", cfg.source(), ": 'optim.warmup' must be >= 0 steps, got ", warm);
  int64_t rest = std::max<int64_t>(1, steps - warm);
  optim::Schedule s;
  if (name == "constant") s = optim::constant_schedule();
  else if (name == "cosine") s = optim::cosine(rest, cfg.get<double>("optim.min_factor", 0.0));
  else if (name == "linear") s = optim::linear_decay(rest, cfg.get<double>("optim.min_factor", 0.0));
  else if (name == "step") s = optim::step_decay(cfg.get<int64_t>("optim.step_size", 1000), cfg.get<double>("optim.gamma", 0.1));
  else if (name == "inverse_square") s = optim::inverse_square(cfg.get<double>("optim.half_life", double(rest)));
  else if (name == "inverse_time") s = optim::inverse_time(cfg.get<double>("optim.half_life", double(rest)));
  else
    LD_FAIL("config ", cfg.source(), ": optim.schedule must be one of constant, cosine, linear, step, inverse_square, ",
            "inverse_time; got '", name, "'");
  return warm > 0 ? optim::warmup(warm, s) : s;
}


RunSettings read_settings(Config& cfg) {
  RunSettings r;
  r.task = cfg.require<std::string>("task");
  r.seed = uint64_t(cfg.get<int64_t>("seed", 0));
  r.steps = cfg.get<int64_t>("steps", 1000);
  r.threads = cfg.get<int64_t>("threads", 0);
  r.log_every = cfg.get<int64_t>("log_every", 50);
  r.eval_every = cfg.get<int64_t>("eval_every", 500);
  r.checkpoint_every = cfg.get<int64_t>("checkpoint_every", 500);
  r.keep_checkpoints = cfg.get<int64_t>("keep_checkpoints", 3);
  r.accumulate = cfg.get<int64_t>("optim.accumulate", 1);
  r.clip_norm = cfg.get<double>("optim.clip_norm", 0.0);
  r.clip_value = cfg.get<std::string>("optim.name", "adamw") == "amos" ? 0.0 : cfg.get<double>("optim.clip_value", 0.0);
  r.ema_decay = cfg.get<double>("ema.decay", 0.0);
  r.ema_warmup = cfg.get<bool>("ema.warmup", false);
  r.data_dir = cfg.get<std::string>("data_dir", "data");
  r.log_tensorboard = cfg.get<bool>("log.tensorboard", false);
  r.device = parse_device(cfg.get<std::string>("device", "cpu"), cfg.source());
  r.precision = parse_precision(cfg.get<std::string>("precision", "f32"), cfg.source());
  r.dist_backend = cfg.get<std::string>("dist.backend", "auto");
  // 4 MiB, not PyTorch's 25: on 2 CPU ranks the LM's gradients fit one 25 MiB bucket, which cannot start before
  // backward ends; 4 MiB buckets hid 98 % of the all-reduce behind backward (docs/distributed.md, Benchmark).
  r.dist_bucket_mb = cfg.get<int64_t>("dist.bucket_mb", 4);
  r.dist_timeout = cfg.get<double>("dist.timeout", 300.0);
  r.dist_find_unused = cfg.get<bool>("dist.find_unused_parameters", false);
  r.dist_zero = cfg.get<bool>("dist.zero", false);
  r.dist_deterministic = cfg.get<bool>("dist.deterministic", false);
  r.dist_chunks = cfg.get<int64_t>("dist.chunks", 4);  // used in deterministic mode only
  LD_CHECK(r.dist_chunks >= 1 && r.dist_chunks <= 65536 && (r.dist_chunks & (r.dist_chunks - 1)) == 0, "config ",
           cfg.source(), ": 'dist.chunks' must be a power of two in [1, 65536] (the chunks are the leaves of a ",
           "balanced binary reduction tree), got ", r.dist_chunks);
  if (r.dist_deterministic)
    LD_CHECK(r.accumulate == 1, "config ", cfg.source(), ": 'dist.deterministic' with 'optim.accumulate' = ",
             r.accumulate, " is not supported: the chunks already accumulate; set dist.chunks (a power of two) instead");
  LD_CHECK(r.dist_backend == "auto" || r.dist_backend == "single" || r.dist_backend == "mpi" || r.dist_backend == "nccl",
           "config ", cfg.source(), ": 'dist.backend' must be auto, single, mpi or nccl, got \"", r.dist_backend, "\"");
  LD_CHECK(r.dist_bucket_mb >= 1 && r.dist_bucket_mb <= 4096, "config ", cfg.source(),
           ": 'dist.bucket_mb' must lie in [1, 4096] MiB, got ", r.dist_bucket_mb);
  LD_CHECK(std::isfinite(r.dist_timeout) && r.dist_timeout > 0, "config ", cfg.source(),
           ": 'dist.timeout' must be > 0 seconds, got ", r.dist_timeout);
  LD_CHECK(r.steps >= 1, "config ", cfg.source(), ": 'steps' must be >= 1, got ", r.steps);
  for (auto [k, v] : {std::pair{"log_every", r.log_every}, {"eval_every", r.eval_every},
                      {"checkpoint_every", r.checkpoint_every}, {"optim.accumulate", r.accumulate}})
    LD_CHECK(v >= 1, "config ", cfg.source(), ": '", k, "' must be >= 1, got ", v);
  LD_CHECK(r.accumulate <= 65536, "config ", cfg.source(), ": 'optim.accumulate' must be at most 65536 micro-batches ",
           "per step, got ", r.accumulate);
  LD_CHECK(r.ema_decay >= 0 && r.ema_decay < 1, "config ", cfg.source(), ": 'ema.decay' must lie in [0, 1), got ",
           r.ema_decay);
  LD_CHECK(r.threads >= 0 && r.threads <= 4096, "config ", cfg.source(), ": 'threads' must be 0 (all cores) or a ",
           "thread count, got ", r.threads);
  LD_CHECK(r.keep_checkpoints >= 1, "config ", cfg.source(), ": 'keep_checkpoints' must be >= 1, got ",
           r.keep_checkpoints);
  for (auto [k, v] : {std::pair{"optim.clip_norm", r.clip_norm}, {"optim.clip_value", r.clip_value}})
    LD_CHECK(std::isfinite(v) && v >= 0, "config ", cfg.source(), ": '", k, "' must be >= 0 (0: off), got ", v);
  if (r.threads > 0) set_num_threads(int(r.threads));
  return r;
}

}  // namespace liandan::apps
