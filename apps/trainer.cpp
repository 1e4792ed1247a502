#include "apps/trainer.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>

#include <spdlog/spdlog.h>

#include "apps/checkpoint.h"
#include "apps/history.h"
#include "apps/run_dir.h"
#include "apps/setup.h"
#include "apps/train_step.h"
#include "core/dist/comm.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/ops.h"
#include "core/random.h"
#include "core/threads.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace liandan::apps {

namespace {

void write_json_atomic(const fs::path& path, const json& j) { write_file_atomic(path.string(), j.dump(2) + "\n"); }

std::string default_run_dir(const Config& cfg, const std::string& task) {
  std::string stem = cfg.source() == "<default>" ? "default" : fs::path(cfg.source()).stem().string();
  return (fs::path("runs") / stem).string();
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

}  // namespace liandan::apps
