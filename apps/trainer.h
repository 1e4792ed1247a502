#pragma once
// The generic training loop behind `liandan train` and `liandan resume`: read from `main` down,
//   build (apps/setup.h: settings, task, DDP/ZeRO, optimizer, schedule, EMA) → for each step train_step
//   (apps/train_step.h: micro-batches' or chunks' train_loss().backward(), gradient sync, non-finite checks,
//   clipping, opt.step(), schedule, EMA) → log / evaluate / checkpoint → samples, plots, summary.
//
// The run directory:
//   config.toml        the resolved configuration (every key, defaults included)
//   metrics.jsonl      one JSON object per logged step ({"step","loss","lr",...}) or evaluation ({"eval":...})
//   checkpoints/       ckpt-<step>.safetensors (the last `keep_checkpoints`), last.safetensors, best.safetensors
//   samples/           the task's outputs (generated text, sample grids)
//   curves.png         training loss (raw and smoothed) and held-out losses, in nats; metrics.png: fractions
//                      (accuracy, F1); metrics-<unit>.png: bits, evaluations, distances (apps/history.h)
//   tensorboard/       event files, with [log] tensorboard = true
//   summary.json       final metrics, wall time, parameter count, status
//
// A checkpoint holds the model ("model.*"), optimizer ("optim.*"), EMA ("ema.*") and, in its metadata,
// the step, the config, the task's data/RNG state, the default generator's state and the best metric, so
// `liandan resume RUN_DIR` continues bit-identically. Files are written atomically (temp + fsync + rename,
// core/fileio.h) and checkpoints carry checksums: a killed run always leaves the last complete checkpoint.
// SIGINT/SIGTERM/SIGHUP finish the step and write a checkpoint first (apps/run_dir.h); checkpoints/ is
// apps/checkpoint.h.
#include <string>
#include <vector>

#include "apps/config.h"

namespace liandan::apps {

struct TrainOptions {
  std::string run_dir;          // empty: runs/<config name>
  bool resume = false;          // continue from run_dir/checkpoints/<checkpoint>.safetensors
  std::string checkpoint = "last";  // resume from: last (falls back to the newest readable ckpt-N), best, ckpt-N
  bool overwrite = false;       // train into a directory that holds a run: replace it (else an error)
  int64_t die_after_step = 0;   // testing: SIGKILL this process right after that step (> 0; crash simulation)
};

// Runs (or resumes) training; returns the process exit status: 0 completed, 2 failed (NaN, bad data), 128 + the
// signal when SIGINT/SIGTERM/SIGHUP stopped it (after writing a checkpoint at the step it finished). Throws
// liandan::Error on bad input. Holds RUN_DIR/.lock while it runs: a second train/resume there is refused.
int train(Config& cfg, const TrainOptions& opt);

// The config of a run directory: its config.toml, or — when that is missing, empty or damaged — the config
// stored in the checkpoint `which` (every checkpoint holds it), with a warning.
Config run_config(const std::string& run_dir, const std::string& which);

// `liandan sample RUN_DIR`: loads a checkpoint and writes the task's samples.
int sample(const std::string& run_dir, const std::string& which, const std::vector<std::string>& sets);
// `liandan eval RUN_DIR`: evaluates a checkpoint and prints the metrics.
int evaluate(const std::string& run_dir, const std::string& which, const std::vector<std::string>& sets);
// `liandan bench [config]`: times training steps of a config (no checkpoints, no run directory).
int bench(Config& cfg, int64_t steps);

}  // namespace liandan::apps
