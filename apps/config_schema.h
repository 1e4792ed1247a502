#pragma once
// What a user asks of a config before training: `liandan train --dry-run` and `liandan config TASK`.
#include <string>
#include <vector>

#include "apps/config.h"

namespace liandan::apps {

// `liandan train --dry-run`: builds the task and the optimizer and prints the model, its parameter count, an estimate of
// the training memory (weights, gradients, optimizer state, EMA; activations not included) and the resolved config.
int dry_run(Config& cfg);

// Every key task `task` reads (run settings, optimizer and schedule included) with its type, the default its reader
// passes and the range the reader checks, found by building the task on a small generated data set: the keys come
// from the task itself, never from a list that could drift. For `liandan config TASK` and the config fuzzer.
std::vector<Config::KeyInfo> task_schema(const std::string& task);
// `liandan config TASK`: the schema as a commented TOML file (or JSON), with each key's meaning (apps/config_keys.h).
int print_config_schema(const std::string& task, bool json);

}  // namespace liandan::apps
