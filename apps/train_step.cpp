#include "apps/train_step.h"

#include <cmath>
#include <optional>

#include <spdlog/spdlog.h>

#include "core/error.h"
#include "core/ops.h"
#include "core/random.h"

namespace liandan::apps {

namespace {

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

}  // namespace

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


}  // namespace liandan::apps
