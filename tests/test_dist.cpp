// Data-parallel training (core/dist, nn/parallel, optim/zero, core/data/sampler). CTest runs this binary alone
// (world 1: the single-process backend) and under `mpirun -np 2` and `-np 4` (the MPI backend); every case
// compares what the ranks computed together with what one process computes alone on the whole global batch,
// which each rank recomputes locally as the reference. The "dist worker" cases are the programs
// test_dist_faults.cpp starts under mpirun to kill, hang or misconfigure a rank (skipped otherwise).
#include <doctest/doctest.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <set>
#include <thread>

#include "core/data/loader.h"
#include "core/data/sampler.h"
#include "core/device.h"
#include "core/dist/backends.h"
#include "core/dist/comm.h"
#include "core/ops.h"
#include "diffusion/unet.h"
#include "losses/losses.h"
#include "nn/layers.h"
#include "nn/models.h"
#include "nn/parallel.h"
#include "optim/adam.h"
#include "optim/amos.h"
#include "optim/clip.h"
#include "optim/zero.h"

using namespace liandan;
using losses::cross_entropy;
using losses::mse_loss;

namespace {

// One communicator per process (MPI starts once); finalized at exit.
const std::shared_ptr<dist::Communicator>& comm() {
  static std::shared_ptr<dist::Communicator> c = dist::init_from_env();
  return c;
}
int64_t rank() { return comm()->rank(); }
int64_t world() { return comm()->world_size(); }

double max_rel_diff(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  REQUIRE(a.size() == b.size());
  double diff = 0, scale = 1e-300;
  for (size_t i = 0; i < a.size(); ++i) {
    std::vector<double> x = a[i].to_vector(), y = b[i].to_vector();
    REQUIRE(x.size() == y.size());
    for (size_t k = 0; k < x.size(); ++k) {
      diff = std::max(diff, std::abs(x[k] - y[k]));
      scale = std::max(scale, std::abs(y[k]));
    }
  }
  return diff / scale;
}

bool bit_equal(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].to_vector() != b[i].to_vector()) return false;
  return true;
}

std::vector<Tensor> grads(nn::Module& m) {
  std::vector<Tensor> out;
  for (auto& p : m.parameters()) out.push_back(p.grad().defined() ? p.grad().clone() : zeros_like(p));
  return out;
}
std::vector<Tensor> values(nn::Module& m) {
  std::vector<Tensor> out;
  for (auto& p : m.parameters()) out.push_back(p.clone());
  return out;
}

std::shared_ptr<nn::Sequential> mlp(uint64_t seed, DType dt) {
  Generator g(seed);
  auto m = std::make_shared<nn::Sequential>();
  m->push_back(std::make_shared<nn::Linear>(5, 16, true, g));
  m->push_back(std::make_shared<nn::GELU>());
  m->push_back(std::make_shared<nn::Linear>(16, 3, true, g));
  m->to(dt);
  return m;
}

// A model, a loss over rows [b, e) of a global batch, and the batch size: the DDP gradient over the ranks'
// slices must equal one process's gradient over all rows. Rank r ≠ 0 builds its model from another seed, so the
// test also checks that DDP starts every rank from rank 0's weights.
template <class Make, class Loss>
void check_ddp_gradient(Make make, Loss loss, int64_t batch, double tol, int64_t bucket_bytes = 4096) {
  REQUIRE(batch % world() == 0);
  auto reference = make(0);
  loss(*reference, 0, batch).backward();
  auto model = make(uint64_t(rank()) * 1000);
  nn::DistributedDataParallel ddp(model, comm(), {.bucket_bytes = bucket_bytes});
  CHECK(max_rel_diff(values(*model), values(*reference)) == 0);
  int64_t b = batch / world();
  loss(*model, rank() * b, b).backward();
  ddp.finish_gradient_sync();
  double d = max_rel_diff(grads(*model), grads(*reference));
  INFO("relative gradient difference ", d, " over ", ddp.buckets().size(), " buckets");
  CHECK(d <= tol);
  CHECK(ddp.buckets().size() > 1);
  // Every bucket's all-reduce started inside backward (the overlap), none waited for finish.
  CHECK(ddp.last_sync().buckets_started_in_backward == int64_t(ddp.buckets().size()));
}

Tensor rows(const Tensor& x, int64_t b, int64_t n) { return x.narrow(0, b, n); }

}  // namespace

TEST_CASE("post-accumulate-grad hook: once per backward, after the leaf's last contribution, while backward goes on") {
  Tensor w = from_vector(std::vector<double>{1, 2}, {2}, DType::f64).requires_grad_();
  Tensor late = from_vector(std::vector<double>{1, 1}, {2}, DType::f64).requires_grad_();
  Tensor unused = zeros({2}, DType::f64).requires_grad_();
  std::vector<std::vector<double>> seen;
  std::vector<std::string> order;
  bool late_grad_when_w_ready = true;
  int unused_calls = 0;
  {
    HookHandle hw = register_post_accumulate_grad_hook(w, [&](const Tensor& leaf) {
      seen.push_back(leaf.grad().to_vector());
      order.push_back("w");
      late_grad_when_w_ready = late.grad().defined();
    });
    HookHandle hl = register_post_accumulate_grad_hook(late, [&](const Tensor&) { order.push_back("late"); });
    HookHandle hu = register_post_accumulate_grad_hook(unused, [&](const Tensor&) { ++unused_calls; });
    // w is used three times and last in the forward, so backward finishes with it first; `late` waits for
    // the exp's backward: d/dw = 2w + 3 = {5, 7}.
    Tensor h = mul(exp(mul(late, 0.5)), 1.0);
    sum(add(h, add(mul(w, w), mul(w, 3.0)))).backward();
    REQUIRE(seen.size() == 1);
    CHECK(seen[0] == std::vector<double>{5, 7});
    CHECK(order == std::vector<std::string>{"w", "late"});
    CHECK_FALSE(late_grad_when_w_ready);  // the hook ran while backward still had `late` ahead
    sum(w).backward();                    // accumulates into .grad: the hook sees {6, 8}
    REQUIRE(seen.size() == 2);
    CHECK(seen[1] == std::vector<double>{6, 8});
    CHECK(unused_calls == 0);
    sum(w).backward();
    w.backward(ones({2}, DType::f64));  // a leaf as the root itself
    CHECK(seen.size() == 4);
  }
  sum(w).backward();
  CHECK(seen.size() == 4);  // the hook went with its handle
}

TEST_CASE("collectives: all_reduce, broadcast, reduce_scatter, all_gather, barrier") {
  const int64_t w = world(), r = rank();
  MESSAGE("backend ", comm()->backend(), ", rank ", r, " of ", w);
  // Several ops in flight at once, waited for in another order than submitted.
  Tensor a = full({5}, double(r + 1), DType::f32), b = full({3}, double(r + 1), DType::f64);
  Tensor c = from_vector(std::vector<int64_t>{r, 10 * r}, {2});
  Tensor bc = full({4}, r == w - 1 ? 7.5 : -1.0, DType::f64);
  dist::Work wa = comm()->all_reduce(a, dist::ReduceOp::sum);
  dist::Work wb = comm()->all_reduce(b, dist::ReduceOp::average);
  dist::Work wc = comm()->all_reduce(c);
  dist::Work wbc = comm()->broadcast(bc, int(w - 1));
  wbc.wait();
  wc.wait();
  wb.wait();
  wa.wait();
  double total = double(w * (w + 1) / 2);
  CHECK(a.to_vector() == std::vector<double>(5, total));
  CHECK(b.to_vector() == std::vector<double>(3, total / double(w)));
  CHECK(c.to_vector() == std::vector<double>{total - double(w), 10 * (total - double(w))});
  CHECK(bc.to_vector() == std::vector<double>(4, 7.5));
  // reduce_scatter: block k of every rank's input holds k + rank; rank r receives Σ_ranks (r + rank).
  Tensor in = empty({3 * w}, DType::f64);
  for (int64_t k = 0; k < w; ++k) in.narrow(0, 3 * k, 3).fill_(double(k + r));
  Tensor out = empty({3}, DType::f64);
  comm()->reduce_scatter(out, in, dist::ReduceOp::sum).wait();
  CHECK(out.to_vector() == std::vector<double>(3, double(w * r) + total - double(w)));
  Tensor gathered = empty({2 * w}, DType::f32);
  comm()->all_gather(gathered, full({2}, double(r), DType::f32)).wait();
  for (int64_t k = 0; k < w; ++k) CHECK(gathered.at({2 * k + 1}) == double(k));
  comm()->barrier().wait();
  CHECK_THROWS_WITH_AS(comm()->all_reduce(zeros({4, 4}).t()), doctest::Contains("contiguous"), Error);
  if (w > 1) {
    CHECK(comm()->backend() == "mpi");
    CHECK_THROWS_WITH_AS(comm()->all_reduce(zeros({2}, DType::i64), dist::ReduceOp::average),
                         doctest::Contains("i64"), Error);
  }
}

TEST_CASE("environment: mpirun and torchrun variables") {
  dist::Environment e = dist::environment();
  CHECK(e.rank == rank());
  CHECK(e.world_size == world());
  CHECK(e.launcher == (world() > 1 ? "mpirun" : e.launcher));
  if (world() == 1 && !std::getenv("OMPI_COMM_WORLD_SIZE")) {
    ::setenv("RANK", "1", 1);
    ::setenv("WORLD_SIZE", "4", 1);
    ::setenv("LOCAL_RANK", "1", 1);
    dist::Environment t = dist::environment();
    CHECK(t.rank == 1);
    CHECK(t.world_size == 4);
    CHECK(t.local_rank == 1);
    CHECK(t.launcher == "torchrun");
    ::setenv("RANK", "4", 1);
    CHECK_THROWS_WITH_AS(dist::environment(), doctest::Contains("world size"), Error);
    ::unsetenv("RANK");
    ::unsetenv("WORLD_SIZE");
    ::unsetenv("LOCAL_RANK");
  }
}

TEST_CASE("DDP: MLP gradient equals the one-process gradient of the whole batch (f64 and f32)") {
  Generator g(11);
  const int64_t B = 8;
  for (DType dt : {DType::f64, DType::f32}) {
    Tensor x = randn({B, 5}, g, dt), y = randn({B, 3}, g, dt);
    check_ddp_gradient([&](uint64_t s) { return mlp(1 + s, dt); },
                       [&](nn::Sequential& m, int64_t b, int64_t n) { return mse_loss(m.forward(rows(x, b, n)), rows(y, b, n)); },
                       B, dt == DType::f64 ? 1e-12 : 1e-5, 256);
  }
}

TEST_CASE("DDP: RoFormer LM gradient equals the one-process gradient (f64)") {
  nn::RoFormerLMConfig c;
  c.vocab_size = 11;
  c.d_model = 8;
  c.n_layers = 1;
  c.n_heads = 2;
  c.d_ff = 16;
  Generator g(12);
  Tensor tokens = randint(0, 11, {4, 7}, g);
  check_ddp_gradient(
      [&](uint64_t s) {
        Generator gi(2 + s);
        auto m = std::make_shared<nn::RoFormerLM>(c, gi);
        m->to(DType::f64);
        return m;
      },
      [&](nn::RoFormerLM& m, int64_t b, int64_t n) { return m.loss(rows(tokens, b, n)); }, 4, 1e-12);
}

TEST_CASE("DDP: ViT gradient equals the one-process gradient (f64)") {
  nn::ViTConfig c;
  c.image_size = 8;
  c.patch = 4;
  c.d_model = 8;
  c.n_layers = 1;
  c.n_heads = 2;
  c.d_ff = 16;
  c.n_classes = 3;
  Generator g(13);
  Tensor img = randn({4, 1, 8, 8}, g, DType::f64);
  Tensor labels = randint(0, 3, {4}, g);
  check_ddp_gradient(
      [&](uint64_t s) {
        Generator gi(3 + s);
        auto m = std::make_shared<nn::ViT>(c, gi);
        m->to(DType::f64);
        return m;
      },
      [&](nn::ViT& m, int64_t b, int64_t n) { return cross_entropy(m.forward(rows(img, b, n)), rows(labels, b, n)); },
      4, 1e-12);
}

TEST_CASE("DDP: U-Net gradient equals the one-process gradient (f64)") {
  diffusion::UNetConfig c;
  c.base_channels = 4;
  c.channel_mult = {1, 2};
  c.num_res_blocks = 1;
  c.groups = 2;
  c.image_size = 8;
  c.attention_resolutions = {4};
  Generator g(14);
  Tensor x = randn({4, 1, 8, 8}, g, DType::f64), eps = randn({4, 1, 8, 8}, g, DType::f64);
  Tensor t = from_vector(std::vector<double>{3, 100, 250, 999}, {4}, DType::f64);
  check_ddp_gradient(
      [&](uint64_t s) {
        Generator gi(4 + s);
        auto m = std::make_shared<diffusion::UNet>(c, gi);
        m->to(DType::f64);
        return m;
      },
      [&](diffusion::UNet& m, int64_t b, int64_t n) { return mse_loss(m.forward(rows(x, b, n), rows(t, b, n)), rows(eps, b, n)); },
      4, 1e-12, 16384);
}

TEST_CASE("DDP: no_sync accumulation equals one large batch") {
  Generator g(15);
  const int64_t B = 8 * world();  // 2 micro-batches of 4 per rank
  Tensor x = randn({B, 5}, g, DType::f64), y = randn({B, 3}, g, DType::f64);
  auto reference = mlp(5, DType::f64);
  mse_loss(reference->forward(x), y).backward();
  auto model = mlp(5, DType::f64);
  nn::DistributedDataParallel ddp(*model, comm(), {.bucket_bytes = 512});  // (a module owned elsewhere)
  int64_t base = rank() * 8;
  {
    auto guard = ddp.no_sync();
    (mse_loss(model->forward(rows(x, base, 4)), rows(y, base, 4)) * 0.5).backward();
    ddp.finish_gradient_sync();  // inside no_sync: nothing to do
  }
  (mse_loss(model->forward(rows(x, base + 4, 4)), rows(y, base + 4, 4)) * 0.5).backward();
  ddp.finish_gradient_sync();
  CHECK(max_rel_diff(grads(*model), grads(*reference)) <= 1e-12);
  // A second backward before finish is refused (it would be reduced twice or never).
  model->zero_grad();
  mse_loss(model->forward(rows(x, base, 4)), rows(y, base, 4)).backward();
  CHECK_THROWS_WITH_AS(mse_loss(model->forward(rows(x, base, 4)), rows(y, base, 4)).backward(),
                       doctest::Contains("second gradient"), Error);
}

TEST_CASE("DDP: a parameter without a gradient is an error naming it unless find_unused_parameters") {
  Generator g(16);
  Tensor x = randn({2 * world(), 5}, g);
  auto model = mlp(6, DType::f32);
  auto first = model->at<nn::Linear>(0);
  {
    nn::DistributedDataParallel ddp(model, comm(), {.bucket_bytes = 128});
    sum(first->forward(rows(x, 2 * rank(), 2))).backward();  // layer 2 unused
    CHECK_THROWS_WITH_AS(ddp.finish_gradient_sync(), doctest::Contains("'2.weight' got no gradient"), Error);
  }
  model->zero_grad();
  nn::DistributedDataParallel ddp(model, comm(), {.bucket_bytes = 128, .find_unused_parameters = true});
  sum(first->forward(rows(x, 2 * rank(), 2))).backward();
  ddp.finish_gradient_sync();
  CHECK(first->weight.grad().defined());
  CHECK_FALSE(model->at<nn::Linear>(2)->weight.grad().defined());  // no rank used it: no gradient, as alone
}

namespace {

// 20 AdamW steps in deterministic mode over `comm`, global batch 16 in 8 chunks of 2; returns the weights.
template <class Make, class Loss>
std::vector<Tensor> deterministic_run(const std::shared_ptr<dist::Communicator>& c, Make make, Loss chunk_loss) {
  auto model = make();
  nn::DistributedDataParallel ddp(model, c, {.deterministic = true});
  optim::AdamW opt(model->named_parameters(), {.lr = 1e-2, .weight_decay = 0.1});
  const int64_t chunks = 8, per_rank = ddp.chunks_per_rank(chunks);
  for (int step = 0; step < 20; ++step) {
    opt.zero_grad();
    for (int64_t k = 0; k < per_rank; ++k) {
      chunk_loss(*model, step, c->rank() * per_rank + k).backward();
      ddp.accumulate_chunk();
    }
    ddp.finish_gradient_sync();
    opt.step();
  }
  return values(*model);
}

}  // namespace

TEST_CASE("deterministic mode: 20 AdamW steps bit-identical to one process") {
  if (world() != 1 && (world() & (world() - 1)) != 0) return;  // powers of two only
  SUBCASE("MLP (f32)") {
    auto make = [] { return mlp(7, DType::f32); };
    auto loss = [](nn::Sequential& m, int step, int64_t chunk) {
      Generator g(100 + uint64_t(step));  // the global batch of the step, the same on every rank
      Tensor x = randn({16, 5}, g), y = randn({16, 3}, g);
      return mse_loss(m.forward(rows(x, 2 * chunk, 2)), rows(y, 2 * chunk, 2));
    };
    std::vector<Tensor> mine = deterministic_run(comm(), make, loss);
    std::vector<Tensor> alone = deterministic_run(dist::single_process(), make, loss);
    CHECK(bit_equal(mine, alone));
    CHECK(max_rel_diff(mine, values(*make())) > 1e-3);  // the weights did move
  }
  SUBCASE("RoFormer LM (f32)") {
    nn::RoFormerLMConfig c;
    c.vocab_size = 13;
    c.d_model = 8;
    c.n_layers = 1;
    c.n_heads = 2;
    c.d_ff = 16;
    auto make = [&] {
      Generator g(8);
      return std::make_shared<nn::RoFormerLM>(c, g);
    };
    auto loss = [](nn::RoFormerLM& m, int step, int64_t chunk) {
      Generator g(200 + uint64_t(step));
      return m.loss(rows(randint(0, 13, {16, 6}, g), 2 * chunk, 2));
    };
    CHECK(bit_equal(deterministic_run(comm(), make, loss), deterministic_run(dist::single_process(), make, loss)));
  }
}

TEST_CASE("ZeRO-1 equals unsharded AdamW (with clipping over the global norm), and its state dict is AdamW's") {
  Generator g(17);
  const int64_t B = 4 * world();
  auto groups_of = [](nn::Module& m) {
    std::vector<optim::ParamGroup> gs{{.name = "decay"}, {.name = "no_decay", .weight_decay = 0.0}};
    for (auto& [n, p] : m.named_parameters()) gs[p.dim() >= 2 ? 0 : 1].params.emplace_back(n, p);
    return gs;
  };
  auto adamw = [](std::vector<optim::ParamGroup> gs) {
    return std::make_unique<optim::AdamW>(std::move(gs), optim::AdamWOptions{.lr = 1e-2, .weight_decay = 0.1});
  };
  for (double clip : {0.0, 0.05}) {
    auto reference = mlp(9, DType::f64);
    auto model = mlp(9, DType::f64);  // 147 parameters: not divisible by 2 or 4 (padding)
    auto ref_opt = adamw(groups_of(*reference));
    optim::ZeroRedundancyOptimizer opt(groups_of(*model), comm(), adamw, {.clip_norm = clip});
    for (int step = 0; step < 5; ++step) {
      Tensor x = randn({B, 5}, g, DType::f64), y = randn({B, 3}, g, DType::f64);
      ref_opt->zero_grad();
      mse_loss(reference->forward(x), y).backward();
      if (clip > 0) optim::clip_grad_norm_(reference->named_parameters(), clip);
      ref_opt->step();
      opt.zero_grad();
      mse_loss(model->forward(rows(x, 4 * rank(), 4)), rows(y, 4 * rank(), 4)).backward();
      opt.step();
    }
    CHECK(max_rel_diff(values(*model), values(*reference)) <= 1e-12);
    // The gathered state dict has AdamW's keys and shapes and (to rounding) its values.
    NamedTensors mine = opt.state_dict(), theirs = ref_opt->state_dict();
    REQUIRE(mine.size() == theirs.size());
    for (size_t i = 0; i < mine.size(); ++i) {
      CHECK(mine[i].first == theirs[i].first);
      CHECK(mine[i].second.shape() == theirs[i].second.shape());
      CHECK(max_rel_diff({mine[i].second}, {theirs[i].second}) <= 1e-9);
    }
    // A fresh sharded optimizer resumes from the unsharded state dict.
    optim::ZeroRedundancyOptimizer resumed(groups_of(*model), comm(), adamw, {.clip_norm = clip});
    resumed.load_state_dict(theirs);
    NamedTensors back = resumed.state_dict();
    for (size_t i = 0; i < back.size(); ++i) CHECK(max_rel_diff({back[i].second}, {theirs[i].second}) == 0);
  }
  auto amos = [](std::vector<optim::ParamGroup> gs) -> std::unique_ptr<optim::Optimizer> {
    return std::make_unique<optim::Amos>(std::move(gs));
  };
  CHECK_THROWS_WITH_AS(optim::ZeroRedundancyOptimizer(groups_of(*mlp(1, DType::f32)), comm(), amos),
                       doctest::Contains("keep it replicated"), Error);
}

TEST_CASE("DistributedSampler: every rank a disjoint share, together exactly one process's batches; resumable") {
  const int64_t n = 37, B = 8;
  data::DistributedSampler s(n, {.global_batch = B, .rank = rank(), .world_size = world(), .seed = 5});
  data::LoaderOptions one{.batch_size = B, .seed = 5, .prefetch = false};
  auto ds = std::make_shared<data::TensorDataset>(data::Batch{{{"i", arange(n, DType::i64)}}});
  data::DataLoader alone(ds, one);
  data::LoaderOptions sharded = one;
  sharded.shard_rank = rank();
  sharded.shard_count = world();
  data::DataLoader mine(ds, sharded);
  CHECK(s.local_batch() == B / world());
  for (int64_t step = 0; step < 10; ++step) {  // across the epoch boundary (4 batches per epoch)
    int64_t e = s.epoch(), p = s.position();
    std::vector<int64_t> idx = s.next();
    CHECK(mine.next()["i"].to_vector() == Tensor(from_vector(idx, {int64_t(idx.size())})).to_vector());
    Tensor all = empty({B}, DType::i64);
    comm()->all_gather(all, from_vector(idx, {int64_t(idx.size())})).wait();
    std::vector<double> global = all.to_vector();
    std::vector<int64_t> expect = alone.batch_indices(e, p);
    CHECK(global == std::vector<double>(expect.begin(), expect.end()));
    CHECK(std::set<double>(global.begin(), global.end()).size() == size_t(B));  // disjoint
  }
  std::vector<int64_t> st = s.state();
  data::DistributedSampler resumed(n, {.global_batch = B, .rank = rank(), .world_size = world(), .seed = 0});
  resumed.set_state(st);
  CHECK(resumed.next() == s.next());
  CHECK_THROWS_WITH_AS(data::DistributedSampler(n, {.global_batch = B + 1, .world_size = 2}),
                       doctest::Contains("multiple of the world size"), Error);
}

TEST_CASE("config hash: ranks with different configs are refused, equal ones pass") {
  dist::check_same_config(*comm(), "steps = 10\n");  // the same text everywhere: passes
  CHECK(dist::fnv1a("a") != dist::fnv1a("b"));
  if (world() == 1) return;
  CHECK_THROWS_WITH_AS(dist::check_same_config(*comm(), "seed = " + std::to_string(rank() % 2)),
                       doctest::Contains("different configs or code versions"), Error);
}

// ---- NCCL (a CUDA build with nccl.h; a GPU per rank): reported as skipped otherwise
const bool kNccl = dist::nccl_available() && cuda::is_available();

TEST_CASE("NCCL backend: collectives on CUDA tensors, and a DDP gradient on the GPU" * doctest::skip(!kNccl)) {
  if (world() > cuda::device_count()) {
    MESSAGE("NCCL needs a GPU per rank: ", world(), " ranks, ", cuda::device_count(), " GPUs");
    return;
  }
  auto nccl = dist::detail::make_nccl(comm(), 60);
  CHECK(nccl->backend() == "nccl");
  Device d = Device::cuda(int(comm()->local_rank()));
  const double total = double(world() * (world() + 1) / 2);
  Tensor a = full({1000}, double(rank() + 1)).to(d), b = full({8}, double(rank() + 1), DType::f64).to(d);
  dist::Work wa = nccl->all_reduce(a), wb = nccl->all_reduce(b, dist::ReduceOp::average);
  wa.wait();
  wb.wait();
  CHECK(a.cpu().to_vector() == std::vector<double>(1000, total));
  CHECK(b.cpu().to_vector() == std::vector<double>(8, total / double(world())));
  Tensor gathered = empty({2 * world()}, {DType::f32, d});
  nccl->all_gather(gathered, full({2}, double(rank())).to(d)).wait();
  CHECK(gathered.cpu().at({2 * world() - 1}) == double(world() - 1));
  Tensor out = empty({3}, {DType::f32, d});
  nccl->reduce_scatter(out, full({3 * world()}, 1.0).to(d), dist::ReduceOp::sum).wait();
  CHECK(out.cpu().to_vector() == std::vector<double>(3, double(world())));
  Tensor cpu = full({2}, double(rank()));
  nccl->broadcast(cpu, 0).wait();  // CPU tensors go to MPI underneath
  CHECK(cpu.to_vector() == std::vector<double>(2, 0.0));
  // DDP with the gradients on the GPU against one CPU process on the whole batch (f32: rounding).
  Generator g(18);
  const int64_t B = 4 * world();
  Tensor x = randn({B, 5}, g), y = randn({B, 3}, g);
  auto reference = mlp(3, DType::f32);
  mse_loss(reference->forward(x), y).backward();
  auto model = mlp(3, DType::f32);
  model->to(d);
  nn::DistributedDataParallel ddp(model, nccl, {.bucket_bytes = 256});
  mse_loss(model->forward(rows(x, 4 * rank(), 4).to(d)), rows(y, 4 * rank(), 4).to(d)).backward();
  ddp.finish_gradient_sync();
  std::vector<Tensor> got;
  for (Tensor& t : grads(*model)) got.push_back(t.cpu());
  CHECK(max_rel_diff(got, grads(*reference)) <= 1e-5);
}

// ---- the programs test_dist_faults.cpp runs under mpirun (skipped in the normal suite)

TEST_CASE("dist worker: a training loop whose rank 1 dies, hangs, stops, throws or starts with another config" *
          doctest::skip()) {
  std::string mode = std::getenv("LIANDAN_DIST_WORKER") ? std::getenv("LIANDAN_DIST_WORKER") : "";
  std::shared_ptr<dist::Communicator> c =
      mode == "config" ? dist::init({.config = "lr = " + std::to_string(dist::environment().rank)}) : comm();
  int code = dist::run_guarded(*c, [&] {
    auto model = mlp(1, DType::f32);
    nn::DistributedDataParallel ddp(model, c);
    Generator g(uint64_t(c->rank()));
    for (int step = 0; step < 2000; ++step) {
      if (c->rank() == 1 && step == 20) {
        if (mode == "kill") ::raise(SIGKILL);
        if (mode == "stop") ::raise(SIGSTOP);
        if (mode == "hang") std::this_thread::sleep_for(std::chrono::hours(1));
        if (mode == "throw") LD_FAIL("injected failure at step ", step);
      }
      model->zero_grad();
      mse_loss(model->forward(randn({4, 5}, g)), randn({4, 3}, g)).backward();
      ddp.finish_gradient_sync();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return 0;
  });
  CHECK(code == 0);
}

// ---- measurements for docs/distributed.md (skipped in the suite): mpirun -np 2 build/test_dist --no-skip -tc='dist timing*'
TEST_CASE("dist timing: all-reduce of one bucket, and a DDP step's overlap" * doctest::skip()) {
  for (int64_t mib : {1, 4, 25}) {
    Tensor t = ones({mib << 18}, DType::f32);  // mib MiB of f32
    comm()->all_reduce(t).wait();              // warm-up
    const int reps = 10;
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) comm()->all_reduce(t, dist::ReduceOp::average).wait();
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / reps;
    MESSAGE("rank ", rank(), " of ", world(), ": all_reduce of ", mib, " MiB f32: ", ms, " ms (",
            double(mib) / 1024.0 / (ms / 1000.0), " GiB/s of bucket)");
  }
  nn::RoFormerLMConfig c;  // the default LM of configs/default.toml's size class: 0.86 M parameters
  c.d_model = 128;
  c.n_layers = 4;
  c.n_heads = 4;
  c.d_ff = 512;
  auto lm = std::make_shared<nn::RoFormerLM>(c);
  nn::DistributedDataParallel ddp(lm, comm(), {.bucket_bytes = 1 << 20});
  Generator g(1);
  Tensor tokens = randint(0, 256, {16 / world(), 128}, g);
  double total = 0, wait = 0;
  for (int step = 0; step < 6; ++step) {
    lm->zero_grad();
    auto t0 = std::chrono::steady_clock::now();
    lm->loss(tokens).backward();
    ddp.finish_gradient_sync();
    if (step == 0) continue;
    total += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    wait += ddp.last_sync().wait_s * 1000;
  }
  MESSAGE("rank ", rank(), ": LM d128 x4 (", lm->num_parameters(), " parameters, ", ddp.buckets().size(),
          " buckets of 1 MiB), batch 16/", world(), " x 128: forward+backward+sync ", total / 5, " ms, of it waiting in "
          "finish_gradient_sync ", wait / 5, " ms; all-reduce time (submission to completion, summed over buckets) ",
          ddp.last_sync().all_reduce_s * 1000, " ms; buckets started during backward ",
          ddp.last_sync().buckets_started_in_backward);
  // Deterministic mode on the same global batch: 8 chunks of 2 sequences, one backward each.
  auto lm2 = std::make_shared<nn::RoFormerLM>(c);
  nn::DistributedDataParallel det(lm2, comm(), {.deterministic = true});
  Tensor all = randint(0, 256, {16, 128}, g);
  const int64_t per_rank = det.chunks_per_rank(8);
  double det_total = 0, det_wait = 0;
  for (int step = 0; step < 6; ++step) {
    lm2->zero_grad();
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t k = 0; k < per_rank; ++k) {
      lm2->loss(all.narrow(0, 2 * (rank() * per_rank + k), 2)).backward();
      det.accumulate_chunk();
    }
    det.finish_gradient_sync();
    if (step == 0) continue;
    det_total += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    det_wait += det.last_sync().wait_s * 1000;
  }
  MESSAGE("rank ", rank(), ": the same step in deterministic mode (8 chunks of 2): ", det_total / 5,
          " ms, of it in finish_gradient_sync (all-gather + tree) ", det_wait / 5, " ms");
  CHECK(total > 0);
}
