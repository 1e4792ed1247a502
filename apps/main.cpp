// liandan: the command line. For now `train` runs the embedded default job (an MLP on generated
// spirals) and `info` prints the build and runtime configuration.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <cstdio>

#include "apps/demo_mlp.h"
#include "core/allocator.h"
#include "core/threads.h"

extern "C" char* openblas_get_config();

int main(int argc, char** argv) {
  CLI::App app{"liandan: a deep-learning training framework (RoPE, ZLPR, AdamW/Amos, diffusion)"};
  app.require_subcommand(1);

  liandan::apps::DemoOptions opt;
  bool check = false;
  int threads = 0;
  auto* train = app.add_subcommand("train", "Train a model (no config: the embedded default MLP demo)");
  train->add_option("--steps", opt.steps, "training steps")->capture_default_str();
  train->add_option("--batch", opt.batch, "batch size")->capture_default_str();
  train->add_option("--hidden", opt.hidden, "hidden width")->capture_default_str();
  train->add_option("--lr", opt.lr, "learning rate")->capture_default_str();
  train->add_option("--seed", opt.seed, "random seed")->capture_default_str();
  train->add_option("--threads", threads, "threads (0: OpenMP default)");
  train->add_flag("--check", check, "exit non-zero unless the loss falls and accuracy exceeds 90%");

  auto* info = app.add_subcommand("info", "Print versions, threads and the BLAS configuration");
  CLI11_PARSE(app, argc, argv);

  if (threads > 0) liandan::set_num_threads(threads);
  if (*info) {
    std::printf("liandan 0.1.0\nthreads: %d\nBLAS: %s\nCUDA: not built (CPU backend)\n", liandan::get_num_threads(),
                openblas_get_config());
    return 0;
  }
  try {
    spdlog::info("training the default MLP on 3-arm spirals ({} steps, batch {}, {} threads)", opt.steps, opt.batch,
                 liandan::get_num_threads());
    auto r = liandan::apps::run_demo_mlp(opt);
    auto st = liandan::cpu_allocator_stats();
    spdlog::info("done in {:.2f} s: loss {:.4f} -> {:.4f}, accuracy {:.1f}%, peak memory {:.1f} MiB", r.seconds,
                 r.first_loss, r.final_loss, 100 * r.final_accuracy, double(st.peak) / (1 << 20));
    if (check && !(r.final_loss < 0.5 * r.first_loss && r.final_accuracy > 0.9)) {
      spdlog::error("check failed: the loss did not fall enough or accuracy is at most 90%");
      return 1;
    }
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
  return 0;
}
