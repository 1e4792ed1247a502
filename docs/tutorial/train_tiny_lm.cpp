// The tutorial's complete training loop (docs/tutorial.md): a tiny RoFormer language model learns a few
// sentences byte by byte with AdamW, warm-up + cosine schedule and gradient clipping, is saved as
// safetensors, and continues a prompt. Exits non-zero if it did not learn (the test suite builds and runs it).
#include <cstdio>
#include <string>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/random.h"
#include "nn/models.h"
#include "optim/adam.h"
#include "optim/clip.h"
#include "optim/schedule.h"

using namespace liandan;

int main() {
  const std::string text =
      "Rotary position embedding rotates queries and keys by angles proportional to their positions, "
      "so attention scores depend only on relative positions. ";
  std::vector<int64_t> bytes(text.begin(), text.end());
  Tensor corpus = from_vector(bytes, {int64_t(bytes.size())});

  // 1. The model: parameters are created from a seeded generator, so every run is the same.
  Generator gen(0);
  nn::RoFormerLMConfig cfg;
  cfg.vocab_size = 256, cfg.d_model = 64, cfg.n_layers = 2, cfg.n_heads = 4, cfg.d_ff = 256;
  nn::RoFormerLM model(cfg, gen);
  std::printf("RoFormer LM with %lld parameters\n", (long long)model.num_parameters());

  // 2. The optimizer and the schedule, as in PyTorch.
  const int steps = 150;
  optim::AdamW opt(model.named_parameters(), {.lr = 3e-3, .weight_decay = 0.01});
  optim::Scheduler sched(opt, optim::warmup(20, optim::cosine(steps - 20)));

  // 3. The loop: a batch of random windows, forward, backward, clip, step.
  const int64_t B = 16, T = 48;
  double first = 0, last = 0;
  for (int step = 0; step < steps; ++step) {
    Tensor starts = randint(0, corpus.numel() - T - 1, {B}, gen);
    Tensor batch = empty({B, T + 1}, DType::i64);
    for (int64_t b = 0; b < B; ++b) batch.select(0, b).copy_(corpus.narrow(0, int64_t(starts.at({b})), T + 1));
    Tensor loss = model.loss(batch);  // mean next-token cross-entropy
    opt.zero_grad();
    loss.backward();
    optim::clip_grad_norm_(model.named_parameters(), 1.0);
    opt.step();
    sched.step();
    (step == 0 ? first : last) = loss.item();
    if (step % 50 == 0 || step == steps - 1) std::printf("step %3d  loss %.4f  lr %.2e\n", step, loss.item(), opt.param_groups()[0].lr);
  }

  // 4. Save (PyTorch reads it with safetensors.torch.load_file) and sample.
  nn::save(model, "tiny_lm.safetensors");
  std::string prompt = "Rotary ";
  Tensor p = from_vector(std::vector<int64_t>(prompt.begin(), prompt.end()), {1, int64_t(prompt.size())});
  Tensor out = model.generate(p, 60);  // greedy
  std::string s;
  for (double v : out.to_vector()) s += char(int(v));
  std::printf("continuation: %s\n", s.c_str());
  bool learned = last < 0.25 * first;
  std::printf("loss %.3f -> %.3f: %s\n", first, last, learned ? "learned" : "did NOT learn");
  return learned ? 0 : 1;
}
