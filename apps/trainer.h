#pragma once
// The generic training loop behind `liandan train` and `liandan resume`: read from `main` down,
//   make_task → make_optimizer/scheduler/EMA → for each step: micro-batches' train_loss().backward(),
//   non-finite check, clipping, opt.step(), schedule, EMA → log / evaluate / checkpoint → samples,
//   plot, summary.
//
// The run directory:
//   config.toml        the resolved configuration (every key, defaults included)
//   metrics.jsonl      one JSON object per logged step ({"step","loss","lr",...}) or evaluation ({"eval":...})
//   checkpoints/       ckpt-<step>.safetensors (the last `keep_checkpoints`), last.safetensors, best.safetensors
//   samples/           the task's outputs (generated text, sample grids)
//   curves.png         training and held-out losses; metrics.png: the other held-out metrics (accuracy, F1)
//   summary.json       final metrics, wall time, parameter count, status
//
// A checkpoint holds the model ("model.*"), optimizer ("optim.*"), EMA ("ema.*") and, in its metadata,
// the step, the config, the task's data/RNG state, the default generator's state and the best metric, so
// `liandan resume RUN_DIR` continues bit-identically. Files are written atomically (temp + fsync + rename):
// a killed run always leaves the last complete checkpoint.
#include <string>
#include <vector>

#include "apps/config.h"

namespace liandan::apps {

struct TrainOptions {
  std::string run_dir;         // empty: runs/<config name>
  bool resume = false;         // continue from run_dir/checkpoints/last.safetensors
  int64_t die_after_step = -1;  // testing: SIGKILL this process right after that step (crash simulation)
};

// Runs (or resumes) training; returns the process exit status (0 ok). Throws liandan::Error on bad input.
int train(Config& cfg, const TrainOptions& opt);

// `liandan sample RUN_DIR`: loads a checkpoint and writes the task's samples.
int sample(const std::string& run_dir, const std::string& which, const std::vector<std::string>& sets);
// `liandan eval RUN_DIR`: evaluates a checkpoint and prints the metrics.
int evaluate(const std::string& run_dir, const std::string& which, const std::vector<std::string>& sets);
// `liandan bench [config]`: times training steps of a config (no checkpoints, no run directory).
int bench(Config& cfg, int64_t steps);

}  // namespace liandan::apps
