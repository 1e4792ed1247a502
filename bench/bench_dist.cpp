// bench_dist: liandan's side of bench/run-dist (issue #22). One training step of the `roformer_lm` or `vit2d`
// row of bench_ops (same shapes, same global batch, same loss) with AdamW, timed either in one process or in
// data parallel under mpirun, and printed as one JSON line (by rank 0).
//
//   bench_dist --workload roformer_lm|vit2d [--config CONFIG] [--steps N] [--warmup W] [--threads T]
//              [--bucket-mib M]
//   bench_dist --list                 the workloads, "NAME<TAB>CONFIG" per line
//   bench_dist --info                 the OpenBLAS core in use (JSON; bench/run-dist gives torch the same)
//
//   OMP_NUM_THREADS=2 bench_dist --workload roformer_lm                      1 process x 2 threads, no DDP
//   mpirun -np 2 --bind-to none -x OMP_NUM_THREADS=1 bench_dist --workload roformer_lm
//                                                                            2 processes x 1 thread, DDP
//
// A step: forward on this rank's rows of the global batch (rank r of N takes rows [r·B/N, (r+1)·B/N) of the
// one batch every rank draws from the same seed), the rows' loss (-mean log p(target), as bench_ops), backward
// (DDP's buckets start their all-reduce in here as they fill), ddp.finish_gradient_sync() (waits for the rest,
// copies the averages into .grad), AdamW (torch.optim.AdamW's defaults: lr 1e-3, weight decay 1e-2), the
// gradients dropped. In one process the same step without DDP.
//
// Timing: `warmup` steps untimed, then `steps` steps timed one by one on every rank; rank 0 reports the median
// (and min) step, the median of the step's parts (forward+backward, finish_gradient_sync, optimizer) and of
// DDP's last_sync(): all_reduce_ms (submission to completion, summed over the buckets: the communication),
// wait_ms (the time finish_gradient_sync took: what backward did not hide, plus the copy back into .grad) and
// the buckets started inside backward. grad_bytes is the payload all-reduced per step; wire_bytes_per_rank is
// what a ring all-reduce sends from each rank, 2(N-1)/N · grad_bytes.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/dist/comm.h"
#include "core/ops.h"
#include "core/random.h"
#include "core/tensor.h"
#include "core/threads.h"
#include "nn/models.h"
#include "nn/parallel.h"
#include "optim/adam.h"

extern "C" char* openblas_get_corename();

namespace {

using namespace liandan;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t m = v.size();
  return m % 2 ? v[m / 2] : 0.5 * (v[m / 2 - 1] + v[m / 2]);
}

std::vector<int64_t> dims(const std::string& config) {
  std::vector<int64_t> d;
  for (size_t i = 0; i < config.size();) {
    size_t j = i;
    while (j < config.size() && config[j] >= '0' && config[j] <= '9') ++j;
    if (j > i) d.push_back(std::stoll(config.substr(i, j - i)));
    i = j > i ? j : i + 1;
  }
  return d;
}

// The model, its global batch (inputs, targets: row 0 is the batch dimension) and the loss of a slice.
struct Workload {
  std::shared_ptr<nn::Module> model;
  Tensor x, t;
  std::function<Tensor(const Tensor&)> forward;
};

// The rows of bench_ops.cpp (and torch_ops.py): the same names, configs and model settings.
const std::vector<std::pair<std::string, std::string>> kWorkloads = {
    {"roformer_lm", "256x256x4x4x1024x256x16"},  // VxDxLxHxFxTxB
    {"vit2d", "128x28x1x4x128x4x4x512x10"},      // BxSxCxPxDxLxHxFxK
};

Workload make(const std::string& name, const std::vector<int64_t>& d) {
  Generator data(1);  // the same global batch on every rank
  Workload w;
  if (name == "roformer_lm") {
    LD_CHECK(d.size() == 7, "bench_dist: roformer_lm's config is VxDxLxHxFxTxB, got ", d.size(), " numbers");
    nn::RoFormerLMConfig c;
    c.vocab_size = d[0], c.d_model = d[1], c.n_layers = d[2], c.n_heads = d[3], c.d_ff = d[4];
    c.position = nn::PositionEncoding::rope1d;
    auto lm = std::make_shared<nn::RoFormerLM>(c);
    w.model = lm;
    w.x = randint(0, d[0], {d[6], d[5]}, data);
    w.t = randint(0, d[0], {d[6], d[5], 1}, data);
    w.forward = [lm](const Tensor& x) { return lm->forward(x); };
  } else if (name == "vit2d") {
    LD_CHECK(d.size() == 9, "bench_dist: vit2d's config is BxSxCxPxDxLxHxFxK, got ", d.size(), " numbers");
    nn::ViTConfig c;
    c.image_size = d[1], c.channels = d[2], c.patch = d[3], c.d_model = d[4], c.n_layers = d[5];
    c.n_heads = d[6], c.d_ff = d[7], c.n_classes = d[8];
    c.position = nn::PositionEncoding::rope2d;
    auto vit = std::make_shared<nn::ViT>(c);
    w.model = vit;
    w.x = randn({d[0], d[2], d[1], d[1]}, data);
    w.t = randint(0, d[8], {d[0], 1}, data);
    w.forward = [vit](const Tensor& x) { return vit->forward(x); };
  } else {
    LD_FAIL("bench_dist: --workload must be roformer_lm or vit2d, got '", name, "'");
  }
  return w;
}

int usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s --workload roformer_lm|vit2d [--config CONFIG] [--steps N] [--warmup W] [--threads T] "
               "[--bucket-mib M]\n       %s --list\n",
               argv0, argv0);
  return 2;
}

int run(int argc, char** argv) {
  std::string name, config;
  int steps = 10, warmup = 2, threads = 0;
  double bucket_mib = 25;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      LD_CHECK(i + 1 < argc, "bench_dist: ", a, " needs a value");
      return argv[++i];
    };
    if (a == "--list") {
      for (auto& [n, c] : kWorkloads) std::printf("%s\t%s\n", n.c_str(), c.c_str());
      return 0;
    } else if (a == "--info") {
      std::printf("{\"threads\": %d, \"openblas_core\": \"%s\"}\n", get_num_threads(), openblas_get_corename());
      return 0;
    } else if (a == "--workload") name = next();
    else if (a == "--config") config = next();
    else if (a == "--steps") steps = std::stoi(next());
    else if (a == "--warmup") warmup = std::stoi(next());
    else if (a == "--threads") threads = std::stoi(next());
    else if (a == "--bucket-mib") bucket_mib = std::stod(next());
    else return usage(argv[0]);
  }
  if (name.empty() || steps < 1 || warmup < 0 || bucket_mib <= 0) return usage(argv[0]);
  if (config.empty())
    for (auto& [n, c] : kWorkloads)
      if (n == name) config = c;
  if (threads > 0) set_num_threads(threads);

  auto comm = dist::init_from_env();
  const int rank = comm->rank(), world = comm->world_size();
  manual_seed(0);
  Workload w = make(name, dims(config));
  const int64_t batch = w.x.size(0);
  LD_CHECK(batch % world == 0, "bench_dist: the global batch ", batch, " is not divisible by ", world, " ranks");
  const int64_t rows = batch / world;
  Tensor x = w.x.narrow(0, rank * rows, rows).contiguous(), t = w.t.narrow(0, rank * rows, rows).contiguous();

  std::unique_ptr<nn::DistributedDataParallel> ddp;
  if (world > 1)
    ddp = std::make_unique<nn::DistributedDataParallel>(
        w.model, comm, nn::DDPOptions{.bucket_bytes = int64_t(bucket_mib * (1 << 20))});
  auto named = w.model->named_parameters();
  optim::AdamW opt(named, optim::AdamWOptions{});
  std::vector<Tensor> params;
  int64_t numel = 0, grad_bytes = 0;
  for (auto& [n, p] : named) {
    params.push_back(p);
    numel += p.numel();
    grad_bytes += p.numel() * int64_t(dtype_size(p.dtype()));
  }

  std::vector<double> step_ms, fwd_bwd_ms, sync_ms, opt_ms, reduce_ms, wait_ms, early;
  // An exception on one rank aborts every rank (the others would wait in their next all-reduce).
  dist::run_guarded(*comm, [&] {
  for (int s = 0; s < warmup + steps; ++s) {
    auto t0 = Clock::now();
    (-mean(gather(log_softmax(w.forward(x), -1), -1, t))).backward();
    double fb = ms_since(t0);
    auto t1 = Clock::now();
    if (ddp) ddp->finish_gradient_sync();
    double sy = ms_since(t1);
    auto t2 = Clock::now();
    opt.step();
    for (Tensor& p : params) p.set_grad(Tensor());
    double op = ms_since(t2);
    double total = ms_since(t0);
    if (s < warmup) continue;
    step_ms.push_back(total), fwd_bwd_ms.push_back(fb), sync_ms.push_back(sy), opt_ms.push_back(op);
    if (ddp) {
      const auto& st = ddp->last_sync();
      reduce_ms.push_back(st.all_reduce_s * 1e3);
      wait_ms.push_back(st.wait_s * 1e3);
      early.push_back(double(st.buckets_started_in_backward));
    }
  }
  return 0;
  });
  if (rank != 0) return 0;
  auto num = [](const std::vector<double>& v) -> std::string {
    if (v.empty()) return "null";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.6g", median(v));
    return buf;
  };
  const int64_t buckets = ddp ? int64_t(ddp->buckets().size()) : 0;
  const double wire = world > 1 ? 2.0 * (world - 1) / world * double(grad_bytes) : 0.0;
  std::printf(
      "{\"name\": \"%s\", \"config\": \"%s\", \"procs\": %d, \"threads\": %d, \"ms\": %s, \"min_ms\": %.6g, "
      "\"steps\": %d, \"fwd_bwd_ms\": %s, \"sync_ms\": %s, \"opt_ms\": %s, \"all_reduce_ms\": %s, \"wait_ms\": %s, "
      "\"buckets\": %lld, \"buckets_started_in_backward\": %s, \"bucket_mib\": %g, \"params\": %lld, "
      "\"grad_bytes\": %lld, \"wire_bytes_per_rank\": %.0f, \"backend\": \"%s\"}\n",
      name.c_str(), config.c_str(), world, get_num_threads(), num(step_ms).c_str(),
      *std::min_element(step_ms.begin(), step_ms.end()), steps, num(fwd_bwd_ms).c_str(), num(sync_ms).c_str(),
      num(opt_ms).c_str(), num(reduce_ms).c_str(), num(wait_ms).c_str(), static_cast<long long>(buckets),
      num(early).c_str(), bucket_mib, static_cast<long long>(numel), static_cast<long long>(grad_bytes),
      wire, comm->backend().c_str());
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_dist: %s\n", e.what());
    return 1;
  }
}
