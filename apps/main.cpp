// liandan: the command line.
//   liandan train [CONFIG.toml] [--set key=value ...] [--run-dir DIR] [--overwrite]
//                                                        train (no config: the embedded default, configs/default.toml)
//   liandan resume RUN_DIR [--checkpoint last|best|ckpt-N] [--set steps=N ...]
//                                                        continue a run from a checkpoint, bit-identically
//   liandan sample RUN_DIR [--checkpoint last|best|ckpt-N] [--seed N] [--prompt TEXT] [--sampler S --steps N]
//                                                        write the task's samples (text, image grids, predictions)
//   liandan eval RUN_DIR [--checkpoint last|best|ckpt-N]    held-out metrics of a checkpoint
//   liandan bench [CONFIG.toml] [--steps N]              time training steps of a config
//   liandan report RUN_DIR... [--metrics a,b]            Markdown table of finished runs (mean ± std over seeds)
//   liandan board [RUNS...] [--port N] [--host H]         live view of runs in the browser (apps/board.h)
//   liandan data digits DIR [--size S] [--train N] ...   a small generated labelled image set (docs/data.md)
//   liandan tokenizer train CORPUS --vocab N [--out F]   learn a byte-level BPE (apps/tokenizer_cmd.h)
//   liandan tokenizer encode FILE TEXT                   a BPE file's ids and tokens of TEXT
//   liandan config TASK [--json]                         every key of a task: type, default, range, meaning
//   liandan train CONFIG --dry-run                       the model, its parameter count and memory; trains nothing
//   liandan info                                         versions, threads, BLAS, CUDA, tasks
// Everything else — tasks, the training loop, checkpoints — is in apps/trainer.cpp and apps/tasks/.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdio>
#include <limits>

#include "apps/board.h"
#include "apps/config_schema.h"
#include "apps/config.h"
#include "apps/report.h"
#include "apps/default_config.h"  // generated from configs/default.toml (kDefaultConfig)
#include "apps/task.h"
#include "apps/tokenizer_cmd.h"
#include "apps/trainer.h"
#include "core/data/image_set.h"
#include "core/device.h"
#include "core/fileio.h"
#include "core/threads.h"

extern "C" char* openblas_get_config();

using namespace liandan::apps;

namespace {

Config load_config(const std::string& path, const std::vector<std::string>& sets) {
  // read_regular_file: a FIFO or a directory given as the config is an error, not a hang.
  Config c = path.empty() ? Config::from_string(kDefaultConfig, "<default: configs/default.toml>")
                          : Config::from_string(liandan::read_regular_file(path), path);
  for (auto& s : sets) c.set(s);
  return c;
}

void add_sets(CLI::App* cmd, std::vector<std::string>& sets) {
  cmd->add_option("--set", sets, "override a config key: --set optim.lr=3e-4 (repeatable; values are TOML)")
      ->take_all()
      ->allow_extra_args(false);
}

int info() {
  using namespace liandan;
  std::string cuda_line = cuda::is_available()
                              ? std::to_string(cuda::device_count()) + " device(s); cuda:0 = " +
                                    device_backend(Device::cuda(0)).describe()
                              : cuda::unavailable_reason();
  if (cuda::is_available()) {  // the tensor-core instructions the attention kernels use, against their documented layouts
    std::string bad = cuda::check_tensor_core_layouts();
    cuda_line += bad.empty() ? "\ntensor cores: mma.sync, ldmatrix, cp.async layouts as documented"
                             : "\ntensor cores: MISMATCH in " + bad;
  }
  std::printf("liandan 0.1.0\nthreads: %d\nBLAS: %s\nCUDA: %s\ntasks:\n", get_num_threads(), openblas_get_config(),
              cuda_line.c_str());
  for (auto& [name, help] : task_list()) std::printf("  %-12s %s\n", name.c_str(), help.c_str());
  return 0;
}

// `liandan data digits`: 10 classes of digit glyphs (core/data/image_set.h synthetic_digits) as gzipped IDX
// files DIR/{train,t10k}-{images,labels}-*.gz, or with --folder as PNG class folders DIR/{train,test}/<digit>/.
int make_digits(const std::string& dir, int64_t size, int64_t n_train, int64_t n_test, int64_t channels, bool folder,
                uint64_t seed) {
  using namespace liandan;
  Generator g(seed);
  data::ImageSet train = data::synthetic_digits(n_train, size, channels, g);
  data::ImageSet test = data::synthetic_digits(n_test, size, channels, g);
  if (folder) {
    data::write_image_folder(train, dir + "/train");
    data::write_image_folder(test, dir + "/test");
    std::printf("%s/train, %s/test: %lld + %lld PNGs %lldx%lld in 10 class folders\n", dir.c_str(), dir.c_str(),
                (long long)n_train, (long long)n_test, (long long)size, (long long)size);
  } else {
    std::string a = data::write_idx_image_set(train, dir, "train"), b = data::write_idx_image_set(test, dir, "t10k");
    std::printf("%s\n%s\n(labels next to them): %lld + %lld images %lldx%lldx%lld\n", a.c_str(), b.c_str(),
                (long long)n_train, (long long)n_test, (long long)channels, (long long)size, (long long)size);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"liandan: a deep-learning training framework (RoPE, ZLPR, AdamW/Amos, diffusion)"};
  app.require_subcommand(1);
  int threads = 0;
  app.add_option("--threads", threads, "threads (0: the OpenMP default; a config's `threads` also sets it)")
      ->check(CLI::Range(0, 4096));

  std::string config_path, run_dir, checkpoint = "last";
  std::vector<std::string> sets;
  int64_t die_after = 0, bench_steps = 20;
  bool overwrite = false;
  // A checkpoint name: last, best or ckpt-N (the trainer says which exist when the file is missing).
  auto checkpoint_name = CLI::Validator(
      [](std::string& s) -> std::string {
        bool numbered = s.size() > 5 && s.size() <= 23 && s.rfind("ckpt-", 0) == 0 &&
                        s.find_first_not_of("0123456789", 5) == std::string::npos;
        return s == "last" || s == "best" || numbered ? "" : "must be last, best or ckpt-N, got '" + s + "'";
      },
      "last|best|ckpt-N");

  auto* train = app.add_subcommand("train", "Train a model from a TOML config (no config: the embedded default)");
  train->add_option("config", config_path, "config file (configs/*.toml)")->check(CLI::ExistingFile);
  add_sets(train, sets);
  train->add_option("--run-dir", run_dir, "run directory (default: runs/<config name>)");
  train->add_flag("--overwrite", overwrite, "replace the run that RUN_DIR already holds (default: refuse)");
  bool dry_run = false;
  train->add_flag("--dry-run", dry_run, "build the task and model, print the parameter count, a memory estimate and the "
                                        "resolved config; train nothing, write nothing");
  train->add_option("--die-after-step", die_after, "testing: SIGKILL the process after this step")->group("");

  auto* resume = app.add_subcommand("resume", "Continue a run from its last checkpoint (bit-identical to an uninterrupted run)");
  resume->add_option("run_dir", run_dir, "run directory")->required()->check(CLI::ExistingDirectory);
  resume->add_option("--checkpoint", checkpoint, "last (default; falls back to the newest readable), best or ckpt-N")
      ->check(checkpoint_name);
  add_sets(resume, sets);

  auto* sample = app.add_subcommand("sample", "Write a checkpoint's samples (generated text, image grids) into RUN_DIR/samples");
  sample->add_option("run_dir", run_dir, "run directory")->required()->check(CLI::ExistingDirectory);
  sample->add_option("--checkpoint", checkpoint, "last (default), best or ckpt-N")->check(checkpoint_name);
  add_sets(sample, sets);
  // Shorthands for the task's sample.* keys (a key the run's task does not read is refused as unknown).
  std::string sample_prompt, sample_sampler;
  int64_t sample_seed = -1, sample_steps = 0;
  sample->add_option("--seed", sample_seed, "sampling seed (lm: sample.seed)")->check(CLI::NonNegativeNumber);
  sample->add_option("--prompt", sample_prompt, "text to continue (lm: sample.prompt)");
  sample->add_option("--sampler", sample_sampler, "ddpm/toy2d sampler: ddpm, ddim, pc, ode_heun, ... (sample.sampler)");
  sample->add_option("--steps", sample_steps, "sampler steps (with --sampler)")->check(CLI::Range(1, 1000000));

  auto* eval = app.add_subcommand("eval", "Print a checkpoint's held-out metrics");
  eval->add_option("run_dir", run_dir, "run directory")->required()->check(CLI::ExistingDirectory);
  eval->add_option("--checkpoint", checkpoint, "last (default), best or ckpt-N")->check(checkpoint_name);
  add_sets(eval, sets);

  auto* bench = app.add_subcommand("bench", "Time training steps of a config (for PyTorch side by side: bench/run)");
  bench->add_option("config", config_path, "config file")->check(CLI::ExistingFile);
  bench->add_option("--steps", bench_steps, "timed steps")->capture_default_str()->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  add_sets(bench, sets);

  std::vector<std::string> report_dirs, report_metrics;
  auto* report_cmd = app.add_subcommand("report", "Markdown table of finished runs, mean ± std over seeds (<variant>-s<seed>)");
  report_cmd->add_option("run_dirs", report_dirs, "run directories")->required();
  report_cmd->add_option("--metrics", report_metrics, "metrics to show (default: all)")->delimiter(',');
  std::string report_plot;
  report_cmd->add_option("--plot", report_plot, "also write a PNG of every variant's training-loss curve");

  std::vector<std::string> board_dirs{"runs"};
  std::string board_host = "127.0.0.1";
  int board_port = 6060;
  auto* board_cmd = app.add_subcommand("board", "Live view of runs in the browser (curves, config differences, samples)");
  board_cmd->add_option("runs", board_dirs, "run directories or folders of them (default: runs)");
  board_cmd->add_option("--host", board_host, "address to listen on")->capture_default_str();
  board_cmd->add_option("--port", board_port, "port (0: any free one)")->capture_default_str()->check(CLI::Range(0, 65535));
  auto* data_cmd = app.add_subcommand("data", "Write a small generated data set (for examples and tests)");
  data_cmd->require_subcommand(1);
  auto* digits_cmd = data_cmd->add_subcommand("digits", "10 classes of noisy digit glyphs as gzipped IDX files or PNG folders");
  std::string digits_dir;
  int64_t digits_size = 12, digits_train = 2000, digits_test = 500, digits_channels = 1, digits_seed = 0;
  bool digits_folder = false;
  digits_cmd->add_option("dir", digits_dir, "output folder")->required();
  digits_cmd->add_option("--size", digits_size, "image size")->capture_default_str()->check(CLI::Range(8, 1024));
  digits_cmd->add_option("--train", digits_train, "training images")->capture_default_str()->check(CLI::Range(1, 10000000));
  digits_cmd->add_option("--test", digits_test, "test images")->capture_default_str()->check(CLI::Range(1, 10000000));
  digits_cmd->add_option("--channels", digits_channels, "1 (gray) or 3 (tinted colour)")->capture_default_str()->check(CLI::IsMember({1, 3}));
  digits_cmd->add_option("--seed", digits_seed, "random seed")->capture_default_str()->check(CLI::NonNegativeNumber);
  digits_cmd->add_flag("--folder", digits_folder, "PNG class folders (ImageFolder) instead of IDX files");
  auto* tok_cmd = app.add_subcommand("tokenizer", "Byte-level BPE tokenizers (data.tokenizer of lm and text_cls)");
  tok_cmd->require_subcommand(1);
  std::string tok_corpus, tok_out = "tokenizer.json", tok_file, tok_text;
  int64_t tok_vocab = 0, tok_min_freq = 2;
  auto* tok_train = tok_cmd->add_subcommand("train", "Learn a BPE from a text file or folder, save it as JSON");
  tok_train->add_option("corpus", tok_corpus, "text file or folder of text files")->required()->check(CLI::ExistingPath);
  tok_train->add_option("--vocab", tok_vocab, "vocabulary size (256 bytes + merges)")->required()
      ->check(CLI::Range(int64_t(256), int64_t(1) << 22));
  tok_train->add_option("--out", tok_out, "output JSON file")->capture_default_str();
  tok_train->add_option("--min-frequency", tok_min_freq, "stop when no pair occurs this often")
      ->capture_default_str()->check(CLI::Range(int64_t(1), std::numeric_limits<int64_t>::max()));
  auto* tok_encode = tok_cmd->add_subcommand("encode", "Print a BPE file's ids and tokens of TEXT");
  tok_encode->add_option("file", tok_file, "BPE JSON file (liandan tokenizer train)")->required();
  tok_encode->add_option("text", tok_text, "text to encode")->required();
  std::string config_task;
  bool config_json = false;
  auto* config_cmd = app.add_subcommand("config", "Print every key a task reads: type, default, range and meaning, as a TOML file to start from");
  config_cmd->add_option("task", config_task, "task name (`liandan info` lists them)")->required();
  config_cmd->add_flag("--json", config_json, "one JSON array instead of TOML");
  auto* info_cmd = app.add_subcommand("info", "Print versions, threads, BLAS, CUDA and the tasks");
  CLI11_PARSE(app, argc, argv);
  // A file-size limit (ulimit -f) then fails the write with EFBIG, which is reported and keeps the last good
  // files, instead of killing the process mid-write.
  ::signal(SIGXFSZ, SIG_IGN);

  if (threads > 0) liandan::set_num_threads(threads);
  try {
    if (*info_cmd) return info();
    if (*config_cmd) return liandan::apps::print_config_schema(config_task, config_json);
    if (*tok_train) return liandan::apps::tokenizer_train(tok_corpus, tok_vocab, tok_out, tok_min_freq);
    if (*tok_encode) return liandan::apps::tokenizer_encode(tok_file, tok_text);
    if (*digits_cmd)
      return make_digits(digits_dir, digits_size, digits_train, digits_test, digits_channels, digits_folder,
                         uint64_t(digits_seed));
    if (*board_cmd) return liandan::apps::board(board_dirs, board_host, board_port);
    if (*report_cmd) return liandan::apps::report(report_dirs, report_metrics, report_plot);
    if (*train) {
      Config cfg = load_config(config_path, sets);
      if (dry_run) return liandan::apps::dry_run(cfg);
      return liandan::apps::train(cfg, {.run_dir = run_dir, .overwrite = overwrite, .die_after_step = die_after});
    }
    if (*resume) {
      Config cfg = run_config(run_dir, checkpoint);
      for (auto& s : sets) cfg.set(s);
      return liandan::apps::train(cfg, {.run_dir = run_dir, .resume = true, .checkpoint = checkpoint});
    }
    if (*sample) {
      if (sample_seed >= 0) sets.push_back("sample.seed=" + std::to_string(sample_seed));
      if (!sample->get_option("--prompt")->empty()) sets.push_back("sample.prompt=" + liandan::apps::toml_quote(sample_prompt));
      if (!sample_sampler.empty())
        sets.push_back("sample.sampler=" + liandan::apps::toml_quote(sample_sampler + (sample_steps ? ":" + std::to_string(sample_steps) : "")));
      else if (sample_steps) throw liandan::Error("sample: --steps needs --sampler (e.g. --sampler ddim --steps 20)");
      return liandan::apps::sample(run_dir, checkpoint, sets);
    }
    if (*eval) return liandan::apps::evaluate(run_dir, checkpoint, sets);
    if (*bench) {
      Config cfg = load_config(config_path, sets);
      return liandan::apps::bench(cfg, bench_steps);
    }
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
  return 0;
}
