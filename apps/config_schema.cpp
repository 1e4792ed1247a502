#include "apps/config_schema.h"

#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "apps/config_keys.h"
#include "apps/run_settings.h"
#include "apps/setup.h"
#include "core/allocator.h"
#include "core/data/image_set.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/random.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace liandan::apps {

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

}  // namespace liandan::apps
