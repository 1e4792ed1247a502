#pragma once
// The embedded default job: an MLP classifier trained on a generated 3-arm spiral data set.
#include <cstdint>

namespace liandan::apps {

struct DemoOptions {
  int64_t steps = 600;
  int64_t batch = 256;
  int64_t hidden = 128;
  double lr = 0.1;
  double momentum = 0.9;
  uint64_t seed = 0;
  int64_t log_every = 50;
};

struct DemoResult {
  double first_loss = 0, final_loss = 0, final_accuracy = 0, seconds = 0;
};

DemoResult run_demo_mlp(const DemoOptions& opt);

}  // namespace liandan::apps
