#pragma once
// The meaning of every config key any task or the trainer reads: what `liandan config TASK` prints beside each
// key's type and default (both taken from the task itself, apps/trainer.h task_schema), and the list a config's
// keys are checked against before a task loads its data (a typo is refused at once, not as "data not found").
// tests/test_config_schema.cpp keeps the table complete: every key read in apps/ has a line here.
#include <map>
#include <string>
#include <vector>

#include "apps/config.h"

namespace liandan::apps {

// key ("optim.lr") -> one line.
const std::map<std::string, std::string>& key_meanings();

// Refuses, before the task is built, a given key that no task and not the trainer reads, naming the closest known
// key. Keys some other task reads pass here and are refused after the build (Config::check_all_used).
void check_known_keys(const Config& cfg);

}  // namespace liandan::apps
