#include "apps/task.h"

#include <map>

namespace liandan::apps {

namespace {
std::map<std::string, std::pair<std::string, TaskFactory>>& registry() {
  static std::map<std::string, std::pair<std::string, TaskFactory>> r;
  return r;
}
}  // namespace

TaskRegistration::TaskRegistration(const std::string& name, const std::string& help, TaskFactory f) {
  registry()[name] = {help, std::move(f)};
}

std::unique_ptr<Task> make_task(const std::string& name, Config& cfg, const TaskContext& ctx) {
  auto it = registry().find(name);
  if (it == registry().end()) {
    std::string known;
    for (auto& [k, v] : registry()) known += (known.empty() ? "" : ", ") + k;
    LD_FAIL("config ", cfg.source(), ": unknown task '", name, "' (known: ", known, ")");
  }
  return it->second.second(cfg, ctx);
}

std::vector<std::pair<std::string, std::string>> task_list() {
  std::vector<std::pair<std::string, std::string>> out;
  for (auto& [k, v] : registry()) out.emplace_back(k, v.first);
  return out;
}

std::vector<optim::ParamGroup> Task::param_groups() {
  optim::ParamGroup decay{.name = "decay"}, no_decay{.name = "no_decay", .weight_decay = 0.0};
  for (auto& [n, p] : model().named_parameters()) (p.dim() >= 2 ? decay : no_decay).params.emplace_back(n, p);
  std::vector<optim::ParamGroup> g;
  if (!decay.params.empty()) g.push_back(decay);
  if (!no_decay.params.empty()) g.push_back(no_decay);
  return g;
}

}  // namespace liandan::apps
