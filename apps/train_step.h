#pragma once
// One optimizer step of a built run (apps/setup.h), the one `train` and `bench` both take: the micro-batches' (or, in
// deterministic mode, this rank's chunks') forward and backward, the gradient sync, the non-finite checks, clipping,
// the (scaled or ZeRO-sharded) optimizer step, the schedule and the EMA.
#include <cmath>
#include <cstdint>

#include "apps/setup.h"
#include "optim/clip.h"

namespace liandan::apps {

struct StepResult {
  double loss = std::nan("");     // mean over the micro-batches
  double grad_norm = std::nan("");  // before clipping, when clip_norm is on
  double lr = 0;                   // the learning rate the step used
};

// One optimizer step: `accumulate` micro-batches' forward and backward, the non-finite checks, clipping, the
// (scaled) optimizer step, the schedule and the EMA. `step` is the number of the step being taken (for errors).
StepResult train_step(Setup& s, optim::GradAccumulation& acc, const optim::NamedParams& named, int64_t step);

}  // namespace liandan::apps
