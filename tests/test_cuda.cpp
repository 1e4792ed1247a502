// The device layer and the CUDA backend (issue #9).
// - Always: the caching allocator (with a fake "device" memory: reuse, no growth over 1,000 steps, stream
//   separation, an out-of-memory error naming the request and the state), and the clear error for a device
//   that is not there.
// - With a GPU (skipped otherwise, reported by doctest as "skipped"): every kernel against the CPU result
//   (relative error ≤ 1e-5 in f32, 1e-12 in f64, 3e-4 with TF32), gradients through device ops, determinism
//   of sums, the allocator over 1,000 training steps, and errors for CPU access to device memory and for OOM.
// - test_cuda_emulated (CMakeLists.txt) is this file against an emulated GPU (tests/cuda_emulation/emu.h): the
//   CUDA kernels compiled for the CPU, so their logic is tested on every machine.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/ops.h"
#include "core/ops/composite.h"
#include "core/ops/elementwise_kernels.h"
#include "op_test_helpers.h"
#include "core/random.h"
#include "diffusion/mlp_denoiser.h"
#include "diffusion/samplers.h"
#include "diffusion/unet.h"
#include "nn/layers.h"
#include "nn/models.h"
#include "losses/kernels.h"
#include "losses/losses.h"
#include "optim/adam.h"
#include "optim/amos.h"
#include "optim/clip.h"
#include "optim/ema.h"
#include "optim/grad_scaler.h"
#include "optim/kernels.h"
#include "optim/sgd.h"

using namespace liandan;
using liandan::testing::error_of;

// Kernels launched so far on the emulated GPU (tests/cuda_emulation/emu.h); null in a binary without it.
extern "C" size_t liandan_emulated_launches() __attribute__((weak));

namespace {

// ---- a fake device memory with a capacity, for the allocator tests
struct FakeMemory {
  size_t capacity, used = 0;
  int live_blocks = 0;
  static void* alloc(size_t bytes, void* ctx) {
    auto* m = static_cast<FakeMemory*>(ctx);
    if (m->used + bytes > m->capacity) return nullptr;
    m->used += bytes;
    m->live_blocks++;
    return std::malloc(bytes);
  }
  static void free(void* p, size_t bytes, void* ctx) {
    auto* m = static_cast<FakeMemory*>(ctx);
    m->used -= bytes;
    m->live_blocks--;
    std::free(p);
  }
  RawAllocator raw() { return {alloc, free, this}; }
};

}  // namespace

TEST_CASE("caching allocator: blocks are reused, and 1,000 steps do not grow the memory") {
  FakeMemory mem{size_t(1) << 30};
  CachingAllocator a("fake:0", mem.raw(), SIZE_MAX);
  size_t after_first = 0;
  for (int step = 0; step < 1000; ++step) {
    // one "training step": a few activations of different sizes, freed in another order
    std::vector<std::pair<void*, size_t>> live;
    for (size_t bytes : {size_t(1000), size_t(4096), size_t(123457), size_t(1) << 20, size_t(77)})
      live.push_back({a.allocate(bytes), bytes});
    for (size_t i = live.size(); i-- > 0;) a.deallocate(live[(i * 3) % live.size()].first, live[(i * 3) % live.size()].second);
    if (step == 0) after_first = mem.used;
    REQUIRE(mem.used == after_first);  // no growth
  }
  AllocatorStats s = a.stats();
  CHECK(s.current == 0);
  CHECK(s.n_alloc == 5000);
  CHECK(s.n_os_alloc == 5);  // only the first step reached the "device"
  CHECK(s.peak >= (size_t(1) << 20) + 123457);
  CHECK(s.cached == mem.used);
  a.empty_cache();
  CHECK(mem.used == 0);
  CHECK(mem.live_blocks == 0);
  CHECK(a.stats().cached == 0);
}

TEST_CASE("caching allocator: a block freed on one stream is not handed to another") {
  FakeMemory mem{size_t(1) << 20};
  CachingAllocator a("fake:0", mem.raw(), SIZE_MAX);
  int s1 = 0, s2 = 0;  // two distinct "streams"
  void* p = a.allocate(4096, &s1);
  a.deallocate(p, 4096, &s1);
  void* q = a.allocate(4096, &s2);
  CHECK(q != p);
  void* r = a.allocate(4096, &s1);
  CHECK(r == p);
  a.deallocate(q, 4096, &s2);
  a.deallocate(r, 4096, &s1);
  a.empty_cache();
  CHECK(mem.used == 0);
}

TEST_CASE("caching allocator: out of memory frees the cache and retries, then names the request and the state") {
  FakeMemory mem{size_t(10) << 20};
  CachingAllocator a("fake:0", mem.raw(), SIZE_MAX);
  void* big = a.allocate(size_t(6) << 20);
  a.deallocate(big, size_t(6) << 20);  // cached: the 8 MiB bin still holds the fake memory
  void* other = a.allocate(size_t(7) << 20);  // does not fit beside the cached block: the cache is emptied
  CHECK(other != nullptr);
  CHECK(a.stats().cached == 0);
  std::string msg = error_of([&] { a.allocate(size_t(5) << 20); });
  CHECK(msg.find("fake:0") != std::string::npos);
  CHECK(msg.find("out of memory allocating 5.0 MiB (5242880 bytes)") != std::string::npos);
  CHECK(msg.find("current=" + std::to_string(CachingAllocator::bin_size(size_t(7) << 20))) != std::string::npos);
  a.deallocate(other, size_t(7) << 20);
  a.empty_cache();
  CHECK(mem.used == 0);
}

TEST_CASE("Module::to(Device::cpu()) on a CPU model changes nothing") {
  Generator gen(8);
  nn::Linear fc(3, 2, true, gen);
  Tensor w = fc.weight;
  std::vector<double> before = w.to_vector();
  fc.to(Device::cpu());
  CHECK(fc.weight.same(w));
  CHECK(fc.weight.to_vector() == before);
}

TEST_CASE("a CUDA tensor without a GPU is a clear error") {
  if (cuda::is_available()) return;
  std::string msg = error_of([] { zeros({2, 3}, Device::cuda()); });
  CHECK(msg.find("device cuda:0 is not available") != std::string::npos);
  CHECK(msg == "device cuda:0 is not available: " + cuda::unavailable_reason());
  CHECK(!cuda::unavailable_reason().empty());
  CHECK(cuda::device_count() == 0);
  CHECK(error_of([] { ones({2}).to(Device::cuda()); }).find("not available") != std::string::npos);
}

// ================================================================ with a GPU

namespace {

const bool kGpu = cuda::is_available();
const Device kCuda = Device::cuda(0);

// max |got − want| / max |want| (NaNs in the same places): the error relative to the tensor's scale. A GPU sums
// in another order than the CPU, which shows in the last bits of the large elements; relative to each element,
// an element near 0 (a gradient, a log-softmax of a likely class) would make that look like a large error.
double max_rel_err(const Tensor& got, const Tensor& want) {
  std::vector<double> g = got.to_vector(), w = want.to_vector();
  REQUIRE(g.size() == w.size());
  double m = 0, scale = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    REQUIRE(std::isnan(g[i]) == std::isnan(w[i]));
    if (std::isnan(w[i]) || g[i] == w[i]) continue;
    m = std::max(m, std::abs(g[i] - w[i]));
  }
  for (double v : w)
    if (std::isfinite(v)) scale = std::max(scale, std::abs(v));
  return m / std::max(scale, 1e-30);
}

double tol(DType dt) { return dt == DType::f64 ? 1e-12 : 1e-5; }

// Every parameter's gradient in the GPU copy of a model matches the CPU model's (relative to its scale).
void check_same_grads(const nn::Module& cpu_model, const nn::Module& gpu_model) {
  auto pc = cpu_model.named_parameters(), pg = gpu_model.named_parameters();
  REQUIRE(pc.size() == pg.size());
  for (size_t i = 0; i < pc.size(); ++i) {
    CAPTURE(pc[i].first);
    CHECK(max(abs(sub(pg[i].second.grad().cpu(), pc[i].second.grad()))).item() <=
          1e-4 * std::max(1.0, max(abs(pc[i].second.grad())).item()));
  }
}

// A conv under autocast, on the CPU in its reference form: the half-operand composite (unfold + GEMM), what a GPU's
// autocast conv computes. (The CPU's own conv2d keeps 3x3/1x1 stride-1 convolutions on its direct f32 kernels under
// autocast, core/ops/conv.cpp: faster there, and no comparison for the GPU's half arithmetic.)
Tensor autocast_conv2d(const Tensor& x, const Tensor& w, const Tensor& b, int64_t stride, int64_t pad) {
  return x.device().is_cpu() ? composite::conv2d(x, w, b, stride, pad, 1) : conv2d(x, w, b, stride, pad);
}

// f on CPU leaves and on GPU copies of `inputs` (i64 inputs are passed as they are, on the CPU: ops move
// indices themselves): outputs and every input gradient agree within `tolerance` (relative).
void check_op_on_gpu(const std::vector<Tensor>& inputs, const std::function<Tensor(const std::vector<Tensor>&)>& f,
                     double tolerance, double grad_tolerance = -1) {
  if (grad_tolerance < 0) grad_tolerance = tolerance * 10;
  std::vector<Tensor> xc, xg;
  for (const Tensor& x : inputs) {
    bool fl = x.dtype() != DType::i64;
    xc.push_back(fl ? x.detach().requires_grad_() : x);
    xg.push_back(fl ? x.detach().to(kCuda).requires_grad_() : x);
  }
  Tensor yc = f(xc), yg = f(xg);
  REQUIRE(yg.device() == kCuda);
  CHECK(max_rel_err(yg, yc) <= tolerance);
  Generator gw(5);
  // (a half output is widened first: the CPU has no half elementwise kernels)
  DType wt = is_half(yc.dtype()) ? DType::f32 : yc.dtype();
  Tensor w = randn(yc.shape(), gw, wt);
  sum(mul(yc.to(wt), w)).backward();
  sum(mul(yg.to(wt), w.to(kCuda))).backward();
  for (size_t i = 0; i < xc.size(); ++i) {
    if (!xc[i].requires_grad() || !xc[i].grad().defined()) continue;
    CAPTURE(i);
    REQUIRE(xg[i].grad().defined());
    CHECK(max_rel_err(xg[i].grad(), xc[i].grad()) <= grad_tolerance);
  }
}

}  // namespace

TEST_CASE("cuda: copies to and from the device are exact; views, dtype casts and fills run on the device" *
          doctest::skip(!kGpu)) {
  Generator gen(1);
  Tensor x = randn({3, 4, 5}, gen, DType::f64);
  Tensor d = x.to(kCuda);
  CHECK(d.device() == kCuda);
  CHECK(d.to_vector() == x.to_vector());
  CHECK(d.permute({2, 0, 1}).contiguous().cpu().to_vector() == x.permute({2, 0, 1}).contiguous().to_vector());
  CHECK(d.to(DType::f32).cpu().to_vector() == x.to(DType::f32).to_vector());
  Tensor f = zeros({4, 5}, kCuda);
  f.narrow(0, 1, 2).fill_(2.5);
  CHECK(f.cpu().sum().item() == doctest::Approx(2.5 * 10));
  CHECK(d.at({2, 3, 4}) == x.at({2, 3, 4}));
  CHECK(d.str().find("device=cuda:0") != std::string::npos);
  Tensor back = zeros({3, 4, 5}, DType::f64);
  back.copy_(d);
  CHECK(back.to_vector() == x.to_vector());
  // add_ into a strided view, in place on the device (a broadcast operand, and alpha), as on the CPU
  Tensor hc = x.clone(), hd = x.to(kCuda), o = randn({4, 1}, gen, DType::f64);
  hc.slice(2, 1, 5, 2).add_(o);
  hd.slice(2, 1, 5, 2).add_(o.to(kCuda));
  hc.select(0, 1).add_(x.select(0, 2), -0.5);
  hd.select(0, 1).add_(d.select(0, 2), -0.5);
  CHECK(hd.cpu().to_vector() == hc.to_vector());
}

TEST_CASE("cuda: host-to-device copies through pinned staging take their snapshot at once; events time GPU work" *
          doctest::skip(!kGpu)) {
  // More copies than staging buffers, each source overwritten right after its copy was queued.
  std::vector<Tensor> on_gpu;
  Tensor host = empty({3000}, DType::f32);
  for (int i = 0; i < 11; ++i) {
    host.fill_(double(i));
    on_gpu.push_back(host.to(kCuda));
    host.fill_(-1.0);
  }
  for (int i = 0; i < 11; ++i) CHECK(max(abs(add(on_gpu[size_t(i)].cpu(), -double(i)))).item() == 0);
  cuda::EventTimer t;
  CHECK(error_of([&] { t.elapsed_ms(); }).find("before start() and stop()") != std::string::npos);
  Generator g(3);
  Tensor a = randn({256, 256}, g).to(kCuda);
  t.start();
  Tensor c = matmul(a, a);
  t.stop();
  double ms = t.elapsed_ms();
  CHECK(std::isfinite(ms));
  CHECK(ms >= 0);
  CHECK(max_rel_err(c, matmul(a.cpu(), a.cpu())) <= 1e-5);
  // The op profiler counts each kernel-table call by op name, with GPU time from events.
  cuda::profile_start();
  Tensor d = exp(matmul(a, c));
  d = exp(add(d, d));
  std::vector<OpTime> prof = cuda::profile_stop();
  auto calls = [&](const std::string& op) {
    for (const OpTime& o : prof)
      if (o.op == op) return o.calls;
    return int64_t(0);
  };
  CHECK(calls("gemm f32") == 1);
  CHECK(calls("exp") == 2);
  CHECK(calls("add") == 1);
  for (const OpTime& o : prof) CHECK((std::isfinite(o.ms) && o.ms >= 0));
  CHECK(cuda::profile_table(prof).find("gemm f32") != std::string::npos);
  cuda::profile_start();  // a new profile starts empty
  CHECK(cuda::profile_stop().empty());
}

TEST_CASE("cuda: unary ops and their derivatives match the CPU" * doctest::skip(!kGpu)) {
  for (DType dt : {DType::f32, DType::f64}) {
    Generator gen(2);
    Tensor x = randn({7, 33}, gen, dt);
    Tensor xpos = add(abs(x), 0.1);
    struct Case { const char* name; std::function<Tensor(const Tensor&)> f; bool positive; };
    std::vector<Case> cases = {
        {"neg", [](const Tensor& t) { return neg(t); }, false},
        {"exp", [](const Tensor& t) { return exp(t); }, false},
        {"log", [](const Tensor& t) { return log(t); }, true},
        {"log1p", [](const Tensor& t) { return log1p(t); }, true},
        {"sqrt", [](const Tensor& t) { return sqrt(t); }, true},
        {"rsqrt", [](const Tensor& t) { return rsqrt(t); }, true},
        {"abs", [](const Tensor& t) { return abs(t); }, false},
        {"sin", [](const Tensor& t) { return sin(t); }, false},
        {"cos", [](const Tensor& t) { return cos(t); }, false},
        {"square", [](const Tensor& t) { return square(t); }, false},
        {"tanh", [](const Tensor& t) { return tanh(t); }, false},
        {"sigmoid", [](const Tensor& t) { return sigmoid(t); }, false},
        {"relu", [](const Tensor& t) { return relu(t); }, false},
        {"gelu", [](const Tensor& t) { return gelu(t); }, false},
        {"gelu_tanh", [](const Tensor& t) { return gelu(t, GeluApprox::tanh); }, false},
        {"silu", [](const Tensor& t) { return silu(t); }, false},
        {"elu", [](const Tensor& t) { return elu(t, 0.7); }, false},
        {"softplus", [](const Tensor& t) { return softplus(t, 2.0, 3.0); }, false},
        {"softsign", [](const Tensor& t) { return softsign(t); }, false},
        {"clamp", [](const Tensor& t) { return clamp(t, -0.5, 0.8); }, false},
        {"add_scalar", [](const Tensor& t) { return add(t, 1.5); }, false},
        {"mul_scalar", [](const Tensor& t) { return mul(t, -2.5); }, false},
        {"rsub", [](const Tensor& t) { return rsub(t, 3.0); }, false},
        {"rdiv", [](const Tensor& t) { return rdiv(t, 3.0); }, true},
        {"pow_scalar", [](const Tensor& t) { return pow(t, 1.7); }, true},
    };
    for (auto& c : cases) {
      CAPTURE(c.name);
      CAPTURE(std::string(dtype_name(dt)));
      Tensor xc = (c.positive ? xpos : x).detach().requires_grad_();
      Tensor xg = xc.detach().to(kCuda).requires_grad_();
      Tensor yc = c.f(xc), yg = c.f(xg);
      CHECK(yg.device() == kCuda);
      CHECK(max_rel_err(yg, yc) <= tol(dt) * 10);
      Tensor w = randn(yc.shape(), gen, dt);
      sum(mul(yc, w)).backward();
      sum(mul(yg, w.to(kCuda))).backward();
      CHECK(xg.grad().device() == kCuda);
      CHECK(max_rel_err(xg.grad(), xc.grad()) <= tol(dt) * 10);
    }
  }
}

TEST_CASE("cuda: binary ops broadcast over strided inputs, forward and backward, as on the CPU" * doctest::skip(!kGpu)) {
  for (DType dt : {DType::f32, DType::f64}) {
    Generator gen(3);
    Tensor a = randn({5, 1, 6}, gen, dt), b0 = randn({6, 4}, gen, dt);
    Tensor b = b0.t();  // [4, 6], a strided view
    for (const char* name : {"add", "sub", "mul", "div", "maximum", "minimum", "pow"}) {
      CAPTURE(name);
      auto f = [&](const Tensor& u, const Tensor& v) {
        std::string n = name;
        if (n == "add") return add(u, v);
        if (n == "sub") return sub(u, v);
        if (n == "mul") return mul(u, v);
        if (n == "div") return div(u, v);
        if (n == "maximum") return maximum(u, v);
        if (n == "minimum") return minimum(u, v);
        return pow(add(abs(u), 0.5), v);
      };
      Tensor ac = a.detach().requires_grad_(), bc = b0.detach().requires_grad_();
      Tensor ag = a.detach().to(kCuda).requires_grad_(), bg = b0.detach().to(kCuda).requires_grad_();
      Tensor yc = f(ac, bc.t()), yg = f(ag, bg.t());
      CHECK(yg.shape() == Shape{5, 4, 6});
      CHECK(max_rel_err(yg, yc) <= tol(dt) * 10);
      sum(square(yc)).backward();
      sum(square(yg)).backward();
      CHECK(max_rel_err(ag.grad(), ac.grad()) <= tol(dt) * 100);
      CHECK(max_rel_err(bg.grad(), bc.grad()) <= tol(dt) * 100);
    }
    CHECK(max_rel_err(gt(a.to(kCuda), b.to(kCuda)), gt(a, b)) == 0);
  }
}

TEST_CASE("cuda: sums are deterministic and match the CPU" * doctest::skip(!kGpu)) {
  Generator gen(4);
  Tensor x = randn({64, 300, 17}, gen);
  Tensor d = x.to(kCuda);
  for (Shape dims : {Shape{}, Shape{0}, Shape{1}, Shape{2}, Shape{0, 2}, Shape{1, 2}}) {
    CAPTURE(shape_str(dims));
    Tensor s1 = sum(d, dims), s2 = sum(d, dims);
    CHECK(s1.to_vector() == s2.to_vector());  // bit-identical run to run
    CHECK(max_rel_err(s1, sum(x, dims)) <= 1e-5);
  }
  CHECK(mean(d).item() == doctest::Approx(mean(x).item()).epsilon(1e-6));
}

TEST_CASE("cuda: softmax and log_softmax along every dim, forward and backward, match the CPU" * doctest::skip(!kGpu)) {
  for (DType dt : {DType::f32, DType::f64}) {
    Generator gen(10);
    Tensor x = mul(randn({6, 70, 9}, gen, dt), 4.0);
    for (int64_t dim : {0, 1, 2}) {
      for (bool log : {false, true}) {
        CAPTURE(dim);
        CAPTURE(log);
        Tensor xc = x.detach().requires_grad_(), xg = x.to(kCuda).requires_grad_();
        Tensor yc = log ? log_softmax(xc, dim) : softmax(xc, dim), yg = log ? log_softmax(xg, dim) : softmax(xg, dim);
        CHECK(max_rel_err(yg, yc) <= tol(dt) * 10);
        Tensor w = randn(x.shape(), gen, dt);
        sum(mul(yc, w)).backward();
        sum(mul(yg, w.to(kCuda))).backward();
        CHECK(max_rel_err(xg.grad(), xc.grad()) <= tol(dt) * 100);
      }
    }
    // a row of -inf gives NaN, as on the CPU and in torch
    Tensor ninf = full({2, 3}, -INFINITY, dt);
    CHECK(std::isnan(softmax(ninf.to(kCuda), 1).at({0, 0})));
  }
}

TEST_CASE("cuda: matmul through cuBLAS matches the CPU (f32, f64, TF32; batched, broadcast, transposed)" *
          doctest::skip(!kGpu)) {
  Generator gen(5);
  struct Case { Shape a, b; bool ta, tb; };
  for (Case c : {Case{{37, 53}, {53, 29}, false, false}, Case{{4, 37, 53}, {53, 29}, false, false},
                 Case{{3, 1, 16, 8}, {5, 8, 12}, false, false}, Case{{53, 37}, {29, 53}, true, true}}) {
    for (DType dt : {DType::f32, DType::f64}) {
      Tensor a = randn(c.a, gen, dt), b = randn(c.b, gen, dt);
      Tensor ua = c.ta ? a.t() : a, ub = c.tb ? b.t() : b;
      Tensor want = matmul(ua, ub);
      Tensor ga = a.to(kCuda), gb = b.to(kCuda);
      Tensor got = matmul(c.ta ? ga.t() : ga, c.tb ? gb.t() : gb);
      CHECK(max_rel_err(got, want) <= (dt == DType::f64 ? 1e-11 : 1e-4));
      if (dt == DType::f32) {
        cuda::set_allow_tf32(true);
        Tensor t32 = matmul(c.ta ? ga.t() : ga, c.tb ? gb.t() : gb);
        cuda::set_allow_tf32(false);
        // TF32 has a 10-bit mantissa: compare against the scale of the products, not elementwise
        double scale = std::sqrt(double(ua.size(-1)));
        CHECK(max(abs(sub(t32.cpu(), want))).item() <= 3e-3 * scale);
      }
    }
  }
}

TEST_CASE("cuda: a small MLP trains on the GPU with the CPU's gradients, and the allocator does not grow" *
          doctest::skip(!kGpu)) {
  Generator gen(6);
  Tensor X = randn({64, 16}, gen), Y = randn({64, 4}, gen);
  Tensor W1 = mul(randn({16, 32}, gen), 0.25), W2 = mul(randn({32, 4}, gen), 0.2);
  auto grads = [&](Device dev) {
    Tensor w1 = W1.detach().to(dev).requires_grad_(), w2 = W2.detach().to(dev).requires_grad_();
    Tensor h = tanh(matmul(X.to(dev), w1));
    Tensor loss = mean(square(sub(matmul(h, w2), Y.to(dev))));
    loss.backward();
    return std::vector<Tensor>{loss, w1.grad(), w2.grad()};
  };
  auto c = grads(Device::cpu()), g = grads(kCuda);
  for (int i = 0; i < 3; ++i) CHECK(max_rel_err(g[i], c[i]) <= 1e-4);

  // 1,000 SGD steps: the allocator's live bytes return to the same value and it stops asking cudaMalloc.
  Tensor w1 = W1.detach().to(kCuda).requires_grad_(), w2 = W2.detach().to(kCuda).requires_grad_();
  Tensor xd = X.to(kCuda), yd = Y.to(kCuda);
  double first_loss = 0, last_loss = 0;
  size_t live_after_10 = 0;
  uint64_t os_after_10 = 0;
  for (int step = 0; step < 1000; ++step) {
    Tensor loss = mean(square(sub(matmul(tanh(matmul(xd, w1)), w2), yd)));
    loss.backward();
    {
      NoGradGuard ng;
      w1.add_(w1.grad(), -0.05);
      w2.add_(w2.grad(), -0.05);
    }
    w1.set_grad(Tensor());
    w2.set_grad(Tensor());
    if (step == 0) first_loss = loss.item();
    if (step == 999) last_loss = loss.item();
    if (step == 10) {
      live_after_10 = cuda::memory_stats().current;
      os_after_10 = cuda::memory_stats().n_os_alloc;
    }
    if (step > 10) REQUIRE(cuda::memory_stats().current == live_after_10);
  }
  CHECK(cuda::memory_stats().n_os_alloc == os_after_10);
  CHECK(last_loss < 0.5 * first_loss);
}

TEST_CASE("cuda: Module::to(Device) moves a model in place; the same code then trains it on the GPU" *
          doctest::skip(!kGpu)) {
  Generator gen(7);
  nn::Linear cpu_fc(12, 5, true, gen);
  Generator gen2(7);
  nn::Linear gpu_fc(12, 5, true, gen2);
  Tensor w_handle = gpu_fc.weight;
  gpu_fc.to(kCuda);
  CHECK(w_handle.device() == kCuda);  // the member handles stay valid
  for (auto& [name, p] : gpu_fc.named_parameters()) CHECK(p.device() == kCuda);
  Tensor x = randn({9, 12}, gen);
  Tensor yc = cpu_fc.forward(x), yg = gpu_fc.forward(x.to(kCuda));
  CHECK(max_rel_err(yg, yc) <= 1e-5);
  sum(square(yc)).backward();
  sum(square(yg)).backward();
  CHECK(max_rel_err(gpu_fc.weight.grad(), cpu_fc.weight.grad()) <= 1e-4);
  CHECK(max_rel_err(gpu_fc.bias.grad(), cpu_fc.bias.grad()) <= 1e-4);
  gpu_fc.to(Device::cpu());
  CHECK(gpu_fc.weight.device() == Device::cpu());
  CHECK(max_rel_err(gpu_fc.weight, cpu_fc.weight) == 0);
}

// Registry kernels (core/dispatch.h) are registered from core/cuda/elementwise.cu, optim/*.cu and losses/*.cu:
// static constructors that a static library would let the linker drop without the anchors CMakeLists.txt links in.
// Checked in every build, GPU or not: a CUDA build has them all (also where no GPU is present, as on the machines
// that build the device pack), a build without CUDA none.
TEST_CASE("cuda: the registry's kernels (elementwise, optim/, losses/) are registered in a CUDA build (their files were linked)") {
  const bool cuda_build = cuda::is_available() || cuda::unavailable_reason().find("built without CUDA") == std::string::npos;
  CAPTURE(cuda::unavailable_reason());
  for (bool has : {kernels::unary.has(DeviceType::CUDA), kernels::unary_backward.has(DeviceType::CUDA),
                   kernels::binary.has(DeviceType::CUDA), kernels::binary_backward.has(DeviceType::CUDA),
                   kernels::where.has(DeviceType::CUDA), kernels::foreach_axpby.has(DeviceType::CUDA),
                   kernels::bias_act.has(DeviceType::CUDA), kernels::bias_act_backward.has(DeviceType::CUDA),
                   optim::adam_step.has(DeviceType::CUDA), optim::amos_step.has(DeviceType::CUDA),
                   losses::zlpr_rows.has(DeviceType::CUDA)})
    CHECK(has == cuda_build);
}

TEST_CASE("cuda: the fused AdamW kernel follows the CPU's AdamW (with and without amsgrad)" * doctest::skip(!kGpu)) {
  for (bool amsgrad : {false, true}) {
    for (DType dt : {DType::f32, DType::f64}) {
      Generator gen(9);
      Tensor w0 = randn({33, 17}, gen, dt);
      Tensor pc = w0.clone().requires_grad_(), pg = w0.to(kCuda).requires_grad_();
      optim::AdamWOptions o;
      o.lr = 0.01;
      o.weight_decay = 0.1;
      o.amsgrad = amsgrad;
      optim::AdamW oc({{"w", pc}}, o), og({{"w", pg}}, o);
      for (int step = 0; step < 20; ++step) {
        Tensor target = randn({33, 17}, gen, dt);
        sum(square(sub(pc, target))).backward();
        sum(square(sub(pg, target.to(kCuda)))).backward();
        oc.step();
        og.step();
        oc.zero_grad();
        og.zero_grad();
      }
      CAPTURE(amsgrad);
      CHECK(max_rel_err(pg, pc) <= (dt == DType::f64 ? 1e-12 : 1e-5));
      CHECK(max_rel_err(og.state_dict()[0].second, oc.state_dict()[0].second) <= (dt == DType::f64 ? 1e-12 : 1e-5));
    }
  }
}

// Many parameters of mixed shapes in two groups (more than one kernel's list of 32, tensors of several blocks), some
// without a gradient at some steps (their bias corrections then differ): the multi-tensor kernels against the
// CPU's fused passes.
TEST_CASE("cuda: the multi-tensor AdamW and Amos kernels follow the CPU over many parameters" * doctest::skip(!kGpu)) {
  const std::vector<Shape> shapes = {{1}, {5}, {3, 7}, {70, 130}, {2, 3, 4, 5}, {33}, {4, 1}, {9000}};
  for (DType dt : {DType::f32, DType::f64}) {
    for (int which = 0; which < 7; ++which) {  // AdamW, +amsgrad, Amos, +momentum/clip, full slots; per-tensor lr
      if (dt == DType::f64 && which >= 5) continue;
      CAPTURE(std::string(dtype_name(dt)));
      CAPTURE(which);
      Generator gen(17);
      std::vector<Tensor> cpu, gpu;
      for (int i = 0; i < 42; ++i) {
        Shape shape = shapes[size_t(i) % shapes.size()];
        if (which == 4 && shape.size() * shape[0] > 64) shape = {3, 11};  // full-shape slots: a warp per element
        Tensor w = mul(randn(shape, gen, dt), 0.1 * (1 + i % 3));
        cpu.push_back(w.clone().requires_grad_());
        gpu.push_back(w.to(kCuda).requires_grad_());
      }
      auto groups = [&](const std::vector<Tensor>& ps) {
        optim::NamedParams a, b;
        for (size_t i = 0; i < ps.size(); ++i) (i % 4 == 3 ? b : a).emplace_back("p" + std::to_string(i), ps[i]);
        return std::vector<optim::ParamGroup>{{.name = "main", .params = a}, {.name = "slow", .params = b, .lr = 0.003, .weight_decay = 0.0}};
      };
      auto make = [&](const std::vector<Tensor>& ps) -> std::unique_ptr<optim::Optimizer> {
        if (which < 2) return std::make_unique<optim::AdamW>(groups(ps), optim::AdamWOptions{.lr = 0.01, .weight_decay = 0.1, .amsgrad = which == 1});
        // The per-tensor-lr strategy in tensor ops, the directions' norms batched at the end of the step.
        if (which == 5) return std::make_unique<optim::AdamW>(groups(ps), optim::AdamWOptions{.lr = 0.01, .strategy = {.per_tensor_lr = true}});
        if (which == 6)
          return std::make_unique<optim::SGD>(groups(ps), optim::SGDOptions{.lr = 0.01, .momentum = 0.9, .strategy = {.per_tensor_lr = true, .tie_weight_decay = true}});
        optim::AmosOptions o{.lr = 0.05};
        if (which == 3) o.momentum = 0.9, o.clip_value = 0.5;
        if (which == 4) o.factored = false;
        return std::make_unique<optim::Amos>(groups(ps), o);
      };
      auto oc = make(cpu), og = make(gpu);
      Generator gg(18);
      for (int step = 0; step < 4; ++step) {
        for (size_t i = 0; i < cpu.size(); ++i) {
          if ((i + size_t(step)) % 5 == 0) {  // no gradient this step
            cpu[i].set_grad(Tensor());
            gpu[i].set_grad(Tensor());
            continue;
          }
          Tensor gr = randn(cpu[i].shape(), gg, dt);
          cpu[i].set_grad(gr);
          gpu[i].set_grad(gr.to(kCuda));
        }
        size_t due = 0;
        for (const Tensor& p : gpu) due += p.grad().defined();
        size_t launches = liandan_emulated_launches ? liandan_emulated_launches() : 0;
        oc->step();
        og->step();
        // One launch per 32 parameters: the whole model, not a launch per tensor (from step 2: every state exists).
        if (liandan_emulated_launches && step >= 2 && which < 5)
          CHECK(liandan_emulated_launches() - launches == (due + 31) / 32);
      }
      double worst = 0;
      for (size_t i = 0; i < cpu.size(); ++i) worst = std::max(worst, max_rel_err(gpu[i], cpu[i]));
      CHECK(worst <= tol(dt));
      auto sc = oc->state_dict(), sg = og->state_dict();
      REQUIRE(sc.size() == sg.size());
      double worst_state = 0;
      for (size_t i = 0; i < sc.size(); ++i) worst_state = std::max(worst_state, max_rel_err(sg[i].second, sc[i].second));
      CHECK(worst_state <= tol(dt));
    }
  }
}

// Gradient norms and the non-finite scans over many parameters (f32 and f64, several lists of 32, tensors of several
// chunks, an empty one): one multi-tensor reduction and one copy back, with the CPU's values and names.
TEST_CASE("cuda: grad_norm, clip_grad_norm_ and the non-finite scans reduce all parameters at once, as on the CPU" *
          doctest::skip(!kGpu)) {
  Generator gen(23);
  optim::NamedParams cpu, gpu;
  for (int i = 0; i < 45; ++i) {
    Shape shape = i % 9 == 4 ? Shape{70, 130} : i == 7 ? Shape{0} : Shape{3, i + 1};
    DType dt = i % 4 == 1 ? DType::f64 : DType::f32;
    Tensor p = randn(shape, gen, dt), g = mul(randn(shape, gen, dt), 0.01 * (i % 5 + 1));
    cpu.emplace_back("p" + std::to_string(i), p.clone());
    gpu.emplace_back("p" + std::to_string(i), p.to(kCuda));
    cpu.back().second.set_grad(g);
    gpu.back().second.set_grad(g.to(kCuda));
  }
  double want = optim::grad_norm(cpu);
  size_t launches = liandan_emulated_launches ? liandan_emulated_launches() : 0;
  double got = optim::grad_norm(gpu);
  if (liandan_emulated_launches)  // a fill, then 2 launches per list of 32 per dtype: 34 f32 and 11 f64 tensors
    CHECK(liandan_emulated_launches() - launches == 1 + 2 * 2 + 2 * 1);
  CHECK(std::abs(got - want) <= 1e-12 * want);
  CHECK(std::abs(optim::clip_grad_norm_(gpu, 0.5) - want) <= 1e-12 * want);
  optim::clip_grad_norm_(cpu, 0.5);
  CHECK(std::abs(optim::grad_norm(gpu) - optim::grad_norm(cpu)) <= 1e-6);
  CHECK(!optim::first_nonfinite_grad(gpu));
  CHECK(!optim::first_nonfinite_param(gpu));
  // EMA of all parameters and GradScaler's unscaling: one multi-tensor pass (y ← a·y + b·x) per dtype and list of 32.
  {
    optim::NamedParams cpu32, gpu32;
    for (size_t i = 0; i < cpu.size(); ++i)
      if (cpu[i].second.dtype() == DType::f32) cpu32.push_back(cpu[i]), gpu32.push_back(gpu[i]);
    optim::EMA ec(cpu32, 0.9, true), eg(gpu32, 0.9, true);
    for (int k = 0; k < 3; ++k) {
      for (size_t i = 0; i < cpu32.size(); ++i) {
        Tensor(cpu32[i].second).copy_(add(cpu32[i].second, 0.5));
        Tensor(gpu32[i].second).copy_(add(gpu32[i].second, 0.5));
      }
      ec.update();
      size_t launches = liandan_emulated_launches ? liandan_emulated_launches() : 0;
      eg.update();
      if (liandan_emulated_launches) CHECK(liandan_emulated_launches() - launches == (cpu32.size() - 1 + 31) / 32);  // p7: empty
    }
    for (size_t i = 0; i < cpu32.size(); ++i) CHECK(max_rel_err(eg.state_dict()[i].second, ec.state_dict()[i].second) <= 1e-6);
    optim::SGD oc(cpu32, {.lr = 0.1}), og(gpu32, {.lr = 0.1});
    optim::GradScaler sc, sg;
    sc.unscale_(oc);
    sg.unscale_(og);
    CHECK(!sg.found_inf());
    for (size_t i = 0; i < cpu32.size(); ++i) CHECK(max_rel_err(gpu32[i].second.grad(), cpu32[i].second.grad()) == 0);
  }
  for (int which : {40, 13}) {  // a NaN gradient, an Inf parameter: each named
    std::vector<double> v = gpu[size_t(which)].second.to_vector();
    v[v.size() / 2] = which == 40 ? std::nan("") : INFINITY;
    Tensor bad = from_vector(v, gpu[size_t(which)].second.shape(), gpu[size_t(which)].second.dtype()).to(kCuda);
    if (which == 40) gpu[size_t(which)].second.set_grad(bad);
    else gpu[size_t(which)].second.copy_(bad);
  }
  CHECK(optim::first_nonfinite_grad(gpu) == std::optional<std::string>("p40"));
  CHECK(optim::first_nonfinite_param(gpu) == std::optional<std::string>("p13"));
  CHECK(std::isnan(optim::grad_norm(gpu)));
}

TEST_CASE("cuda: the RoFormer LM (softmax and linear attention) has the CPU's loss and gradients, and trains" *
          doctest::skip(!kGpu)) {
  for (nn::AttentionKind kind : {nn::AttentionKind::softmax, nn::AttentionKind::linear}) {
    nn::RoFormerLMConfig cfg{.vocab_size = 32, .d_model = 32, .n_layers = 2, .n_heads = 2, .d_ff = 64, .kind = kind};
    Generator g1(11), g2(11), data(12);
    nn::RoFormerLM cpu_lm(cfg, g1), gpu_lm(cfg, g2);
    gpu_lm.to(kCuda);
    Tensor tokens = randint(0, 32, {4, 17}, data);
    Tensor lc = cpu_lm.loss(tokens), lg = gpu_lm.loss(tokens.to(kCuda));
    CHECK(lg.device() == kCuda);
    CHECK(std::abs(lg.item() - lc.item()) <= 1e-5 * std::abs(lc.item()));
    lc.backward();
    lg.backward();
    check_same_grads(cpu_lm, gpu_lm);
    optim::AdamW opt(gpu_lm.named_parameters(), {.lr = 3e-3});
    double first = 0, last = 0;
    for (int step = 0; step < 30; ++step) {
      opt.zero_grad();
      Tensor l = gpu_lm.loss(tokens.to(kCuda));
      l.backward();
      opt.step();
      if (step == 0) first = l.item();
      last = l.item();
    }
    CHECK(last < first - 0.5);  // memorizes the 4 sequences
  }
}

namespace {
// The op profile of a steady-state training step (the second of two) under `precision`: loss() in autocast,
// backward, the optimizer's step. calls(op) is how often a kernel-table op ran in it.
struct StepProfile {
  std::vector<OpTime> prof;
  StepProfile(optim::Optimizer& opt, DType precision, const std::function<Tensor()>& loss) {
    for (int step = 0; step < 2; ++step) {
      if (step == 1) cuda::profile_start();
      opt.zero_grad();
      {
        Autocast ac(precision);
        loss().backward();
      }
      opt.step();
      if (step == 1) prof = cuda::profile_stop();
    }
  }
  int64_t operator()(const std::string& op) const {
    for (const OpTime& o : prof)
      if (o.op == op) return o.calls;
    return 0;
  }
  std::string table() const { return cuda::profile_table(prof); }
};
}  // namespace

TEST_CASE("cuda: a RoFormer LM training step's kernel calls: no activation-sized copies around attention" *
          doctest::skip(!kGpu)) {
  // Counted on a steady-state step (the second), f32 and bf16 autocast, with the op profiler. The head split of
  // the fused QKV projection and the head merge of the attention output are views the attention kernels read and
  // write in place; the copies that remain are counted here so that a new one fails a test, not a benchmark.
  nn::RoFormerLMConfig cfg{.vocab_size = 32, .d_model = 32, .n_layers = 2, .n_heads = 2, .d_ff = 64};
  Generator g1(11), data(12);
  nn::RoFormerLM lm(cfg, g1);
  lm.to(kCuda);
  Tensor tokens = randint(0, 32, {4, 17}, data).to(kCuda);
  optim::AdamW opt(lm.named_parameters(), {.lr = 3e-3});
  for (DType precision : {DType::f32, DType::bf16}) {
    CAPTURE(std::string(dtype_name(precision)));
    StepProfile calls(opt, precision, [&] { return lm.loss(tokens); });
    INFO(calls.table());
    CHECK(calls("attention_forward") == 2);
    CHECK(calls("attention_backward") == 2);
    CHECK(calls("rope") == 0);  // RoPE inside the attention kernels: no rotated copies of q and k, forward or back
    // Before: 49 copies (f32), 112 (bf16), 7 fills, 21 adds — a zero-filled [B, T, 3, H, D] gradient per q/k/v
    // head summed up, copies of v, of the head merge and of the output gradient in every layer, and under autocast
    // f32 GEMM results rounded by casts. Now per layer one stack of the three head gradients (3 copies), the QKV
    // weights' cat (6, parameter-sized) and the weight gradients' split views cloned into .grad; the rest are the
    // embedding's and the loss's index tensors, and under autocast the GEMMs' casts of f32 operands (f32 → bf16)
    // and of their gradients (bf16 → f32) — the QKV and FFN-hidden activations are bf16 already (autocast_matmul,
    // bias_act), as are the attention's inputs, output and gradients; the biases and residual adds ride on bias_act.
    // (Under autocast the layer norms write the bf16 operands of the QKV, fc1 and lm_head GEMMs and read their
    // bf16 gradients: 70 → 60.)
    CHECK(calls("copy_strided") <= (precision == DType::f32 ? 41 : 60));
    CHECK(calls("fill") <= 3);  // the backward's seed (ones), the zeroed gradients of the embedding and of the gather
    // the embedding and the loss's target pick are indexing kernels, not one-hot GEMMs
    CHECK(calls("index_select") == 1);
    CHECK(calls("index_select backward") == 1);
    CHECK(calls("gather") == 1);
    CHECK(calls(precision == DType::f32 ? "gemm f32" : "gemm bf16") == 27);  // 9 GEMMs, 3 each (forward, dA, dB)
    CHECK(calls("gemm f32") == (precision == DType::f32 ? 27 : 0));
    CHECK(calls("add") <= (precision == DType::f32 ? 17 : 5));
    if (precision == DType::bf16) {
      // per layer on the GEMMs' bf16 outputs: the QKV bias; o_proj's bias + the residual add; fc1's bias + GELU;
      // fc2's bias + the residual add — one pass each, forward and backward
      CHECK(calls("bias_act") == 8);
      CHECK(calls("bias_act backward") == 8);
      CHECK(calls("gelu") == 0);
    }
  }
}

TEST_CASE("cuda: where, max/min with indices, cumsum, logsumexp and scatter_add match the CPU" * doctest::skip(!kGpu)) {
  for (DType dt : {DType::f32, DType::f64}) {
    CAPTURE(std::string(dtype_name(dt)));
    Generator g(41);
    Tensor x = randn({5, 7, 9}, g, dt), y = randn({7, 1}, g, dt);
    Tensor c = gt(randn({5, 1, 9}, g, dt), 0.0);
    check_op_on_gpu({c, x, y}, [](auto& t) { return where(t[0], t[1], t[2]); }, tol(dt));
    for (int64_t d : {0, 1, 2}) {
      CAPTURE(d);
      check_op_on_gpu({x}, [d](auto& t) { return max(t[0], d).first; }, 0);
      check_op_on_gpu({x}, [d](auto& t) { return min(t[0], d, true).first; }, 0);
      CHECK(argmax(x.to(kCuda), d).cpu().to_vector() == argmax(x, d).to_vector());
      check_op_on_gpu({x}, [d](auto& t) { return cumsum(t[0], d); }, 0);  // the CPU's order: bit-identical
      check_op_on_gpu({x}, [d](auto& t) { return logsumexp(t[0], {d}); }, tol(dt) * 10);
    }
    check_op_on_gpu({x}, [](auto& t) { return max(t[0]); }, 0);
    Tensor idx = randint(0, 7, {5, 4, 9}, g), src = randn({5, 4, 9}, g, dt);
    check_op_on_gpu({x, src}, [&](auto& t) { return scatter_add(t[0], 1, idx, t[1]); }, tol(dt) * 10);
  }
}

TEST_CASE("cuda: embedding, index_select, gather and scatter_add are indexing kernels with the CPU's exact results" *
          doctest::skip(!kGpu)) {
  // Each sum adds the same terms in the same order as the CPU (no atomics, no one-hot GEMM): bit-identical values
  // and gradients, duplicates included; strided and transposed inputs.
  for (DType dt : {DType::f32, DType::f64}) {
    CAPTURE(std::string(dtype_name(dt)));
    Generator g(51);
    Tensor w = randn({300, 24}, g, dt), tok = randint(0, 40, {6, 33}, g);  // 198 tokens over 40 rows: repeats
    check_op_on_gpu({w}, [&](auto& t) { return embedding(t[0], tok); }, 0, 0);
    Tensor x = randn({6, 9, 11}, g, dt);
    Tensor sel = from_vector(std::vector<int64_t>{3, 0, 3, 5, 3}, {5});  // < 6: every dim of the [11, 9, 6] view
    for (int64_t d : {0, 1, 2}) {
      CAPTURE(d);
      check_op_on_gpu({x}, [&](auto& t) { return index_select(t[0].transpose(0, 2), d, sel); }, 0, 0);
    }
    Tensor gi = randint(0, 9, {6, 4, 11}, g);  // gather along dim 1 with a smaller index
    check_op_on_gpu({x}, [&](auto& t) { return gather(t[0], 1, gi); }, 0, 0);
    Tensor tgt = randint(0, 11, {6, 9, 1}, g);  // a loss's target pick along the last dim
    check_op_on_gpu({x}, [&](auto& t) { return gather(t[0], -1, tgt); }, 0, 0);
    Tensor src = randn({6, 4, 11}, g, dt);
    check_op_on_gpu({x, src}, [&](auto& t) { return scatter_add(t[0].transpose(1, 2).transpose(1, 2), 1, gi, t[1]); },
                    0, 0);
  }
  Generator g(52);
  Tensor w = randn({10, 4}, g).to(kCuda);
  CHECK(error_of([&] { embedding(w, from_vector(std::vector<int64_t>{0, 10}, {2})); }) ==
        "embedding: index 10 out of range [0, 10)");
}

TEST_CASE("cuda: fused layer_norm / rms_norm / group_norm (+SiLU) and RoPE kernels match the CPU, forward and backward" * doctest::skip(!kGpu)) {
  for (DType dt : {DType::f32, DType::f64}) {
    CAPTURE(std::string(dtype_name(dt)));
    Generator g(45);
    Tensor x = add(mul(randn({3, 300, 48}, g, dt), 2.0), 0.7), w = randn({48}, g, dt), b = randn({48}, g, dt);
    check_op_on_gpu({x, w, b}, [](auto& t) { return layer_norm(t[0], {48}, t[1], t[2]); }, tol(dt) * 10);
    check_op_on_gpu({x}, [](auto& t) { return layer_norm(t[0], {48}, Tensor(), Tensor()); }, tol(dt) * 10);
    check_op_on_gpu({x, w}, [](auto& t) { return rms_norm(t[0], {48}, t[1]); }, tol(dt) * 10);
    Tensor w2 = randn({300, 48}, g, dt);
    check_op_on_gpu({x, w2}, [](auto& t) { return rms_norm(t[0], {300, 48}, t[1]); }, tol(dt) * 10);  // long rows
    if (dt == DType::f32)  // half outputs (a GEMM's operand under autocast) and half gradients, rounded alike
      for (DType h : {DType::bf16, DType::f16}) {
        check_op_on_gpu({x, w, b}, [h](auto& t) { return layer_norm(t[0], {48}, t[1], t[2], 1e-5, h); }, 4e-3, 1e-4);
        check_op_on_gpu({x, w}, [h](auto& t) { return rms_norm(t[0], {48}, t[1], 1e-6, h); }, 4e-3, 1e-4);
        Tensor im = randn({3, 16, 9, 7}, g, dt), iw = randn({16}, g, dt), ib = randn({16}, g, dt);
        check_op_on_gpu({im, iw, ib}, [h](auto& t) { return group_norm_silu(t[0], 4, t[1], t[2], 1e-5, h); }, 4e-3,
                        1e-4);
      }
    // group_norm (+ SiLU): [N, C, H, W] in 4 groups, with and without affine parameters.
    Tensor img = add(mul(randn({3, 16, 9, 7}, g, dt), 1.5), 0.3), gw = randn({16}, g, dt), gb = randn({16}, g, dt);
    check_op_on_gpu({img, gw, gb}, [](auto& t) { return group_norm(t[0], 4, t[1], t[2]); }, tol(dt) * 10);
    check_op_on_gpu({img, gw, gb}, [](auto& t) { return group_norm_silu(t[0], 4, t[1], t[2]); }, tol(dt) * 10);
    check_op_on_gpu({img}, [](auto& t) { return group_norm(t[0], 8, Tensor(), Tensor()); }, tol(dt) * 10);
    // RoPE: both pairings, partial rotary (2P < D), tables broadcast over batch and heads, learned tables.
    Tensor q = randn({2, 3, 17, 16}, g, dt);
    Tensor ang = mul(rand({17, 6}, g, dt), 20.0);
    for (RopePairing pr : {RopePairing::interleaved, RopePairing::half}) {
      check_op_on_gpu({q, cos(ang), sin(ang)}, [pr](auto& t) { return rope(t[0], t[1], t[2], pr); }, tol(dt) * 10);
      Tensor per_batch = mul(rand({2, 1, 17, 8}, g, dt), 5.0);
      check_op_on_gpu({q, cos(per_batch), sin(per_batch)}, [pr](auto& t) { return rope(t[0], t[1], t[2], pr); },
                      tol(dt) * 10);
      // Strided rows read in place: heads split out of a fused [B, T, 3, H, D] projection, as the LM does.
      Tensor qkv = randn({2, 17, 3, 3, 16}, g, dt);
      check_op_on_gpu({qkv, cos(ang), sin(ang)}, [pr](auto& t) {
        Tensor qh = t[0].select(2, 1).permute({0, 2, 1, 3});  // [B, H, T, D], rows 3·3·16 apart
        return rope(qh, t[1], t[2], pr);
      }, tol(dt) * 10);
    }
  }
}

namespace {
// One attention comparison: q, k, v of the case's shapes (dtype dt), causal and/or a key mask (batch 0 keeps a
// prefix of the keys; the last batch sees none, so its rows give 0), the op run on both sides under `half`
// autocast (f32: none).
struct AttentionCase { int64_t B, H, Tq, Tk, D, Dv; bool causal, mask, fused_qkv = false; };

void check_attention_on_gpu(const AttentionCase& c, DType dt, DType half, uint64_t seed, double tolerance,
                            double grad_tolerance = -1) {
  CAPTURE(std::string(dtype_name(dt)));
  CAPTURE(std::string(dtype_name(half)));
  CAPTURE(c.Tq);
  CAPTURE(c.D);
  Generator g(seed);
  auto rn = [&](const Shape& s) { return randn(s, g, is_half(dt) ? DType::f32 : dt).to(dt); };
  Tensor q = rn({c.B, c.H, c.Tq, c.D}), k = rn({c.B, c.H, c.Tk, c.D}), v = rn({c.B, c.H, c.Tk, c.Dv});
  AttentionOptions opt{.causal = c.causal};
  if (c.mask) {
    std::vector<double> m(size_t(c.B * c.Tk), 0.0);
    for (int64_t j = 0; j < c.Tk / 2; ++j) m[size_t(j)] = 1.0;
    opt.key_valid = from_vector(m, {c.B, c.Tk});
  }
  if (c.fused_qkv) {  // q, k, v: strided [B, H, T, D] views of one [B, T, 3, H, D] tensor (a fused projection)
    REQUIRE((c.Tq == c.Tk && c.D == c.Dv));
    check_op_on_gpu({rn({c.B, c.Tq, 3, c.H, c.D})}, [&](auto& t) {
      AttentionOptions o = opt;
      if (o.key_valid.defined()) o.key_valid = o.key_valid.to(t[0].device());
      std::vector<Tensor> p = unbind(t[0], 2);
      Autocast ac(half);
      Tensor out = scaled_dot_product_attention(p[0].permute({0, 2, 1, 3}), p[1].permute({0, 2, 1, 3}),
                                                p[2].permute({0, 2, 1, 3}), o);
      if (!out.device().is_cpu()) CHECK(out.permute({0, 2, 1, 3}).is_contiguous());  // written as [B, T, H, D] rows
      return out;
    }, tolerance, grad_tolerance);
    return;
  }
  check_op_on_gpu({q, k, v}, [&](auto& t) {
    AttentionOptions o = opt;
    if (o.key_valid.defined()) o.key_valid = o.key_valid.to(t[0].device());
    Autocast ac(half);
    return scaled_dot_product_attention(t[0], t[1], t[2], o);
  }, tolerance, grad_tolerance);
}
}  // namespace

TEST_CASE("cuda: the tensor-core instructions (mma.sync, ldmatrix, cvt.rna.tf32, cp.async) follow the PTX ISA's layouts" *
          doctest::skip(!kGpu)) {
  // On a GPU: the hardware against the documented fragment layouts the attention kernels rely on (a mismatch is named
  // here, where the attention cases would only show wrong numbers). On the emulated GPU: the emulator against them.
  CHECK(cuda::check_tensor_core_layouts() == "");
}

TEST_CASE("cuda: fused (flash-style) attention matches the CPU kernel: masks, KV offset, head dims, long rows" *
          doctest::skip(!kGpu)) {
  for (DType dt : {DType::f32, DType::f64})
    for (AttentionCase c : {AttentionCase{2, 3, 33, 33, 16, 16, true, false}, AttentionCase{2, 2, 20, 70, 64, 64, true, false},
                            AttentionCase{2, 2, 70, 70, 100, 40, false, true}, AttentionCase{1, 2, 300, 300, 64, 64, true, true},
                            AttentionCase{1, 1, 9, 9, 160, 8, true, false},  // D 160 > 128: the composite
                            AttentionCase{2, 3, 40, 40, 32, 32, true, true, true}})
      check_attention_on_gpu(c, dt, DType::f32, 46, dt == DType::f64 ? 1e-11 : 2e-5);
}

TEST_CASE("cuda: under bf16 / f16 autocast, the tensor-core attention kernel follows the CPU's autocast composite" *
          doctest::skip(!kGpu)) {
  // Half operands on both sides; the kernel and the composite round different intermediates (P·V vs softmax(S)·V,
  // Di = Σ dO·O vs Σ P·dP), so they agree to the half format's precision, not bit for bit. Measured on the emulated
  // GPU (bf16): outputs ≤ 2.8e-3, gradients ≤ 6.1e-3 of their scale.
  for (DType half : {DType::bf16, DType::f16})
    for (AttentionCase c : {AttentionCase{2, 3, 33, 33, 16, 16, true, false}, AttentionCase{2, 2, 20, 70, 64, 64, true, false},
                            AttentionCase{2, 2, 70, 70, 100, 40, false, true}, AttentionCase{1, 2, 150, 150, 64, 64, true, true},
                            AttentionCase{2, 3, 70, 70, 32, 32, true, true, true}})
      check_attention_on_gpu(c, DType::f32, half, 47, 5e-3, 1.5e-2);
}

TEST_CASE("cuda: bf16 / f16 q, k, v (half activations) run the tensor-core kernel in and out of their format" *
          doctest::skip(!kGpu)) {
  // CPU: the autocast composite on the inputs' f32 values, rounded back; GPU: the kernel reads and writes the half
  // format (outputs and input gradients rounded once). Agreement to the half format's precision.
  for (DType half : {DType::bf16, DType::f16})
    for (AttentionCase c : {AttentionCase{2, 3, 33, 33, 16, 16, true, false}, AttentionCase{2, 2, 70, 70, 100, 40, false, true},
                            AttentionCase{2, 3, 70, 70, 32, 32, true, true, true}})
      check_attention_on_gpu(c, half, DType::f32, 48, 1e-2, 2e-2);
}

TEST_CASE("cuda: attention with RoPE inside (fused into the kernels' staging and stores) matches RoPE then attention" *
          doctest::skip(!kGpu)) {
  // The CPU runs the op's composite (rope on q at positions Tk − Tq.., rope on k, attention); the GPU rotates the Q
  // and K tiles as it stages them and dQ, dK back as it stores them. f32 (3xTF32), bf16 autocast on f32 rows, bf16
  // rows; interleaved and split-half pairs; partial rotary (2P < D); a KV offset (Tq < Tk) with a causal mask and
  // padding; q, k, v as strided heads of a fused QKV; row widths that take the vectorized and the scalar staging.
  struct RopeCase { AttentionCase c; int64_t pairs; RopePairing pairing; };
  const RopeCase cases[] = {
      {{2, 3, 40, 40, 32, 32, true, true, true}, 16, RopePairing::interleaved},
      {{2, 2, 20, 70, 64, 64, true, false}, 32, RopePairing::half},
      {{1, 2, 70, 70, 64, 64, false, true}, 24, RopePairing::interleaved},  // partial: dims 48..63 pass through
      {{2, 2, 33, 33, 40, 40, true, false}, 16, RopePairing::half},          // D 40 (padded to 64): scalar staging
      {{1, 2, 30, 30, 32, 32, true, false}, 12, RopePairing::half},          // P % 8 != 0: refused, composite
  };
  Generator g(50);
  for (DType dt : {DType::f32, DType::bf16})
    for (DType half : {DType::f32, DType::bf16}) {
      if (dt == DType::bf16 && half != DType::f32) continue;
      CAPTURE(std::string(dtype_name(dt)));
      CAPTURE(std::string(dtype_name(half)));
      for (const RopeCase& rc : cases) {
        const AttentionCase& c = rc.c;
        CAPTURE(c.D);
        CAPTURE(rc.pairs);
        Tensor ang = mul(rand({c.Tk, rc.pairs}, g, DType::f64), 40.0);  // any angles: the kernels read tables
        AttentionOptions opt{.causal = c.causal};
        opt.rope_cos = cos(ang).to(DType::f32);
        opt.rope_sin = sin(ang).to(DType::f32);
        opt.rope_pairing = rc.pairing;
        if (c.mask) {
          std::vector<double> m(size_t(c.B * c.Tk), 1.0);
          for (int64_t j = c.Tk / 2; j < c.Tk; ++j) m[size_t(j)] = 0.0;  // batch 0 sees the first half of its keys
          opt.key_valid = from_vector(m, {c.B, c.Tk});
        }
        auto rn = [&](const Shape& s) { return randn(s, g).to(dt); };
        const double t = dt == DType::f32 && half == DType::f32 ? 2e-5 : 1e-2, gt_ = t == 2e-5 ? 2e-4 : 2e-2;
        auto run = [&](const Tensor& q, const Tensor& k, const Tensor& v) {
          AttentionOptions o = opt;
          if (o.key_valid.defined()) o.key_valid = o.key_valid.to(q.device());
          Autocast ac(half);
          return scaled_dot_product_attention(q, k, v, o);
        };
        if (c.fused_qkv) {
          check_op_on_gpu({rn({c.B, c.Tq, 3, c.H, c.D})}, [&](auto& x) {
            std::vector<Tensor> p = unbind(x[0], 2);
            return run(p[0].permute({0, 2, 1, 3}), p[1].permute({0, 2, 1, 3}), p[2].permute({0, 2, 1, 3}));
          }, t, gt_);
        } else {
          check_op_on_gpu({rn({c.B, c.H, c.Tq, c.D}), rn({c.B, c.H, c.Tk, c.D}), rn({c.B, c.H, c.Tk, c.Dv})},
                          [&](auto& x) { return run(x[0], x[1], x[2]); }, t, gt_);
        }
      }
    }
  // The fused path runs the kernels without a rope op; the refused one (P % 8 != 0 split halves) two rope ops.
  Tensor q = randn({1, 2, 30, 32}, g).to(kCuda), ang = rand({30, 16}, g, DType::f64);
  for (int64_t pairs : {16, 12}) {
    AttentionOptions o{.causal = true};
    o.rope_cos = cos(ang.narrow(1, 0, pairs)).to(DType::f32);
    o.rope_sin = sin(ang.narrow(1, 0, pairs)).to(DType::f32);
    o.rope_pairing = RopePairing::half;
    cuda::profile_start();
    scaled_dot_product_attention(q, q, q, o);
    std::vector<OpTime> prof = cuda::profile_stop();
    int64_t ropes = 0;
    for (const OpTime& op : prof) ropes += op.op == "rope" ? op.calls : 0;
    CHECK(ropes == (pairs == 16 ? 0 : 2));
  }
}

TEST_CASE("cuda: bias_act (bias + GELU / identity, fused) and RoPE on half rows match the CPU" * doctest::skip(!kGpu)) {
  Generator g(49);
  for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
    CAPTURE(std::string(dtype_name(dt)));
    DType bt = is_half(dt) ? DType::f32 : dt;
    // 600 rows: three 256-row chunks of the bias gradient's partial sums; 45 columns: a partial 32-column block
    Tensor h = randn({600, 45}, g, bt).to(dt), b = randn({45}, g, bt);
    double t = dt == DType::bf16 ? 1e-2 : tol(dt);
    for (BiasActivation act : {BiasActivation::none, BiasActivation::gelu, BiasActivation::gelu_tanh})
      check_op_on_gpu({h, b}, [&](auto& x) { return bias_act(x[0], x[1], act); }, t, dt == DType::bf16 ? 2e-2 : t * 10);
    // with a residual in the bias's dtype (the output and its gradient take that dtype)
    Tensor r = randn({600, 45}, g, bt);
    check_op_on_gpu({h, b, r}, [&](auto& x) { return bias_act(x[0], x[1], BiasActivation::gelu, x[2]); },
                    dt == DType::bf16 ? 1e-5 : t, dt == DType::bf16 ? 2e-2 : t * 10);
  }
  Tensor x = randn({2, 3, 9, 16}, g).to(DType::bf16);
  auto [c, s] = rope_cos_sin(rope_angles_1d(arange(0.0, 9.0, 1.0, DType::f64), 16, 10000.0), DType::f32);
  Tensor yc = rope(x, c, s), yg = rope(x.to(kCuda), c.to(kCuda), s.to(kCuda));
  CHECK(yg.dtype() == DType::bf16);
  CHECK(max_rel_err(yg, yc) <= 8e-3);  // the same f32 rotation; FMA contraction may move a rounding by one bf16 ulp
}

TEST_CASE("cuda: ZLPR (hard, soft, sparse), the n×m losses and BCE match the CPU; Amos and SGD steps too" *
          doctest::skip(!kGpu)) {
  for (DType dt : {DType::f32, DType::f64}) {
    CAPTURE(std::string(dtype_name(dt)));
    Generator g(42);
    Tensor s = mul(randn({6, 10}, g, dt), 3.0);
    Tensor hard = gt(randn({6, 10}, g, dt), 0.5), soft = rand({6, 10}, g, dt);
    check_op_on_gpu({s}, [&](auto& t) { return losses::zlpr(t[0], hard); }, tol(dt) * 10);
    check_op_on_gpu({s}, [&](auto& t) { return losses::zlpr_soft(t[0], soft, losses::Reduction::none); }, tol(dt) * 10);
    check_op_on_gpu({s}, [&](auto& t) { return losses::binary_cross_entropy_with_logits(t[0], soft); }, tol(dt) * 10);
    Tensor pos = randint(0, 10, {6, 3}, g);
    check_op_on_gpu({s}, [&](auto& t) { return losses::sparse_zlpr(t[0], pos); }, tol(dt) * 10);
    Tensor s3 = randn({4, 3, 10}, g, dt);
    Tensor seq = randint(0, 10, {4, 3}, g);
    check_op_on_gpu({s3}, [&](auto& t) { return losses::nxm_loss1(t[0], seq); }, tol(dt) * 10);
    check_op_on_gpu({s3}, [&](auto& t) { return losses::nxm_loss3(t[0], seq); }, tol(dt) * 10);
    // The fused row kernel (a warp per row) over rows longer than a warp and a row count that is not a multiple of
    // a block's 8 rows, with masked logits (−1e12), soft targets at the eps edges and exact 0/1 targets; against the
    // CPU's fused kernel and against the composite on the GPU.
    Tensor wide = mul(randn({13, 75}, g, dt), 4.0);
    std::vector<double> wv = wide.to_vector();
    for (size_t k = 0; k < wv.size(); k += 7) wv[k] = -1e12;
    wide = from_vector(wv, {13, 75}, dt);
    std::vector<double> sv = rand({13, 75}, g, dt).to_vector();
    for (size_t k = 0; k < sv.size(); k += 5) sv[k] = k % 2 ? 1.0 : 0.0;
    sv[3] = 1e-9;
    sv[4] = 1 - 1e-9;
    Tensor soft_wide = from_vector(sv, {13, 75}, dt), hard_wide = gt(randn({13, 75}, g, dt), 0.0);
    check_op_on_gpu({wide}, [&](auto& t) { return losses::zlpr(t[0], hard_wide, losses::Reduction::none); }, tol(dt) * 10);
    check_op_on_gpu({wide}, [&](auto& t) { return losses::zlpr_soft(t[0], soft_wide, losses::Reduction::none, 1e-6); },
                    tol(dt) * 10);
    for (bool soft_case : {false, true}) {
      Tensor tw = soft_case ? soft_wide : hard_wide;
      Tensor xf = wide.to(kCuda).requires_grad_(), xr = wide.to(kCuda).requires_grad_();
      Tensor fused = soft_case ? losses::zlpr_soft(xf, tw, losses::Reduction::sum, 1e-6) : losses::zlpr(xf, tw, losses::Reduction::sum);
      Tensor ref = soft_case ? losses::zlpr_soft_composite(xr, tw, losses::Reduction::sum, 1e-6)
                             : losses::zlpr_composite(xr, tw, losses::Reduction::sum);
      fused.backward();
      ref.backward();
      CAPTURE(soft_case);
      CHECK(max_rel_err(fused, ref) <= tol(dt) * 10);
      CHECK(max_rel_err(xf.grad(), xr.grad()) <= tol(dt) * 10);
    }
  }
  // Bad targets found by the device kernel are reported with their index, as on the CPU.
  Tensor sg = zeros({3, 40}).to(kCuda);
  std::vector<double> bad(120, 0.0);
  bad[2 * 40 + 33] = 0.5;
  CHECK(error_of([&] { losses::zlpr(sg, from_vector(bad, {3, 40})); }).find("got 0.5 at index [2, 33]") != std::string::npos);
  bad[2 * 40 + 33] = 1.5;
  CHECK(error_of([&] { losses::zlpr_soft(sg, from_vector(bad, {3, 40})); }).find("soft targets must be in [0, 1], got 1.5 at index [2, 33]") !=
        std::string::npos);
  // The tensor-op forms on the device (Amos with fused = false, SGD, AdamW with the per-tensor-lr strategy): five
  // steps as on the CPU.
  for (int which : {0, 1, 2, 3}) {
    CAPTURE(which);
    Generator g1(43), g2(43);
    Tensor pc = randn({8, 6}, g1).requires_grad_(), pg = randn({8, 6}, g2).to(kCuda).requires_grad_();
    auto make = [&](Tensor p) -> std::unique_ptr<optim::Optimizer> {
      if (which == 0) return std::make_unique<optim::Amos>(std::vector<Tensor>{p}, optim::AmosOptions{.lr = 0.05, .fused = false});
      if (which == 1) return std::make_unique<optim::Amos>(std::vector<Tensor>{p}, optim::AmosOptions{.lr = 0.05, .momentum = 0.9, .fused = false});
      if (which == 2)
        return std::make_unique<optim::SGD>(std::vector<Tensor>{p}, optim::SGDOptions{.lr = 0.1, .momentum = 0.9, .nesterov = true});
      optim::AdamWOptions o{.lr = 0.01};  // per-tensor lr: the tensor-op form on the GPU
      o.strategy = {.per_tensor_lr = true, .tie_weight_decay = true};
      return std::make_unique<optim::AdamW>(std::vector<Tensor>{p}, o);
    };
    auto oc = make(pc), og = make(pg);
    Generator gg(44);
    for (int step = 0; step < 5; ++step) {
      Tensor gr = randn({8, 6}, gg);
      pc.set_grad(gr);
      pg.set_grad(gr.to(kCuda));
      oc->step();
      og->step();
    }
    CHECK(max_rel_err(pg, pc) <= 1e-5);
  }
}

TEST_CASE("cuda: rand/randn drawn on the GPU are the CPU's numbers for the same seed and offset" * doctest::skip(!kGpu)) {
  for (DType dt : {DType::f32, DType::f64}) {
    CAPTURE(std::string(dtype_name(dt)));
    Generator gc(77), gg(77);
    for (int64_t n : {1, 2, 5, 4099, 100001}) {
      CAPTURE(n);
      Tensor uc = rand({n}, gc, dt), ug = rand({n}, gg, {dt, kCuda});
      CHECK(ug.device() == kCuda);
      CHECK(ug.cpu().to_vector() == uc.to_vector());  // integer Philox, exact scaling, one fma: bit-identical
      Tensor ac = empty({n}, dt), ag = empty({n}, {dt, kCuda});
      fill_uniform_(ac, -0.37, 0.91, gc);
      fill_uniform_(ag, -0.37, 0.91, gg);
      CHECK(ag.cpu().to_vector() == ac.to_vector());
      Tensor nc = randn({n}, gc, dt), ng = randn({n}, gg, {dt, kCuda});
      // Box-Muller in double through each device's log/sin/cos (within an ulp or two of each other): f32 values
      // agree unless a double lands within an ulp of an f32 rounding boundary (~1e-9 per element).
      auto a = ng.cpu().to_vector(), b = nc.to_vector();
      size_t differ = 0;
      for (size_t i = 0; i < a.size(); ++i)
        differ += dt == DType::f32 ? a[i] != b[i] : std::abs(a[i] - b[i]) > 4e-16 * std::max(1.0, std::abs(b[i]));
      CHECK(differ == 0);
      CHECK(gc.offset() == gg.offset());
    }
  }
}

TEST_CASE("cuda: bf16/f16 casts are bit-identical to the CPU's; autocast GEMMs and the LM follow the CPU's autocast" *
          doctest::skip(!kGpu)) {
  Generator g(21);
  Tensor x = mul(randn({4, 300}, g), 1000.0);
  for (DType h : {DType::bf16, DType::f16}) {
    CAPTURE(std::string(dtype_name(h)));
    CHECK(x.to(kCuda).to(h).cpu().to_vector() == x.to(h).to_vector());                     // f32 -> half
    CHECK(x.to(DType::f64).to(kCuda).to(h).cpu().to_vector() == x.to(DType::f64).to(h).to_vector());  // f64 -> half
    CHECK(x.to(h).to(kCuda).to(DType::f32).cpu().to_vector() == x.to(h).to(DType::f32).to_vector());  // widening
    CHECK(full({3}, 0.1, {h, kCuda}).cpu().to_vector() == full({3}, 0.1, h).to_vector());
    // A half GEMM on tensor cores: the same rounded operands, f32 accumulation (order may differ).
    Tensor a = randn({3, 40, 64}, g), b = randn({64, 24}, g);
    Tensor cc, cg;
    {
      Autocast ac(h);
      cc = matmul(a, b);
      cg = matmul(a.to(kCuda), b.to(kCuda));
    }
    CHECK(cg.dtype() == DType::f32);
    CHECK(max(abs(sub(cg.cpu(), cc))).item() <= 1e-5 * max(abs(cc)).item());
  }
  // The RoFormer LM under bf16 autocast: GPU vs the CPU's emulation of the same arithmetic.
  nn::RoFormerLMConfig cfg{.vocab_size = 32, .d_model = 64, .n_layers = 2, .n_heads = 2, .d_ff = 128};
  Generator g1(22), g2(22), data(23);
  nn::RoFormerLM cpu_lm(cfg, g1), gpu_lm(cfg, g2);
  gpu_lm.to(kCuda);
  Tensor tokens = randint(0, 32, {4, 33}, data);
  Tensor lc, lg;
  {
    Autocast ac(DType::bf16);
    lc = cpu_lm.loss(tokens);
    lg = gpu_lm.loss(tokens.to(kCuda));
  }
  CHECK(std::abs(lg.item() - lc.item()) <= 1e-2 * std::abs(lc.item()));
  lc.backward();
  lg.backward();
  auto pc = cpu_lm.named_parameters(), pg = gpu_lm.named_parameters();
  for (size_t i = 0; i < pc.size(); ++i) {
    CAPTURE(pc[i].first);
    CHECK(pg[i].second.grad().dtype() == DType::f32);
    // q, k, v and the FFN's hidden activation are bf16 tensors under autocast (as PyTorch's), so their gradients
    // are rounded to bf16 too; the GPU's fused attention and the CPU's composite round different intermediates
    // (P·V vs softmax(S)·V), and that compounds over 2 layers: measured on the emulated GPU ≤ 1.9e-2 of a
    // parameter gradient's scale (the attention projections'), ≤ 1e-2 elsewhere.
    CHECK(max(abs(sub(pg[i].second.grad().cpu(), pc[i].second.grad()))).item() <=
          3e-2 * std::max(1e-3, max(abs(pc[i].second.grad())).item()));
  }
}

TEST_CASE("cuda: a small U-Net (convs, group norms, attention, upsampling) has the CPU's loss and gradients" *
          doctest::skip(!kGpu)) {
  diffusion::UNetConfig cfg;
  cfg.base_channels = 8;
  cfg.channel_mult = {1, 2};
  cfg.num_res_blocks = 1;
  cfg.groups = 4;
  cfg.image_size = 8;
  cfg.attention_resolutions = {4};
  Generator g1(13), g2(13), data(14);
  diffusion::UNet cpu_net(cfg, g1), gpu_net(cfg, g2);
  {  // random weights everywhere (the zero-initialised output conv would leave most gradients 0)
    NoGradGuard ng;
    Generator gp(15);
    auto pc0 = cpu_net.named_parameters(), pg0 = gpu_net.named_parameters();
    for (size_t i = 0; i < pc0.size(); ++i) {
      Tensor r = mul(randn(pc0[i].second.shape(), gp), 0.2);
      pc0[i].second.copy_(r);
      pg0[i].second.copy_(r);
    }
  }
  gpu_net.to(kCuda);
  Tensor x = randn({3, 1, 8, 8}, data), t = from_vector(std::vector<double>{5, 250, 999}, {3}), eps = randn({3, 1, 8, 8}, data);
  Tensor lc = mean(square(sub(cpu_net.forward(x, t), eps)));
  Tensor lg = mean(square(sub(gpu_net.forward(x.to(kCuda), t.to(kCuda)), eps.to(kCuda))));
  CHECK(std::abs(lg.item() - lc.item()) <= 1e-5 * std::abs(lc.item()) + 1e-7);
  lc.backward();
  lg.backward();
  check_same_grads(cpu_net, gpu_net);
}

TEST_CASE("cuda: DDIM, predictor-corrector and RK45 ODE sampling on the GPU follow the CPU (same draws)" *
          doctest::skip(!kGpu)) {
  using namespace diffusion;
  Generator init(16);
  auto net = std::make_shared<MLPDenoiser>(MLPDenoiserConfig{.dim = 2, .hidden = 32, .blocks = 2}, init);
  {  // non-zero output layer, so the samples depend on the network
    NoGradGuard ng;
    net->out_proj->weight.copy_(mul(randn(net->out_proj->weight.shape(), init), 0.1));
  }
  auto gnet = std::make_shared<MLPDenoiser>(MLPDenoiserConfig{.dim = 2, .hidden = 32, .blocks = 2}, init);
  gnet->load_state_dict(net->state_dict());
  gnet->to(kCuda);
  ModuleDenoiser<MLPDenoiser> dc(net), dg(gnet);
  DiscreteSchedule sched = DiscreteSchedule::linear(1000);
  Generator a(17), b(17);
  Tensor xc = ddim_sample(dc, sched, {64, 2}, 20, a, DDIMOptions{.eta = 0.5});
  Tensor xg = ddim_sample(dg, sched, {64, 2}, 20, b, DDIMOptions{.eta = 0.5, .device = kCuda});
  CHECK(xg.device() == kCuda);
  // Relative to the samples' scale (an untrained random denoiser: up to ~10³). The GPU's f32 GEMMs sum in another
  // order (~1e-7 relative per evaluation) and the samplers amplify it: on the CPU alone, scaling the weights by
  // 1 + 1e-7 moves the RK45 samples by 1.3e-5 of their scale. A wrong draw or path is an O(1) difference.
  CHECK(max_rel_err(xg.cpu(), xc) <= 1e-4);
  VPSDE sde;
  ModuleDenoiser<MLPDenoiser> sc(net, Prediction::eps, 999.0), sg(gnet, Prediction::eps, 999.0);
  Generator c(18), d(18);
  Tensor pc_c = pc_sample(sc, sde, {64, 2}, 50, c), pc_g = pc_sample(sg, sde, {64, 2}, 50, d, SDEOptions{.device = kCuda});
  CHECK(max_rel_err(pc_g.cpu(), pc_c) <= 1e-4);
  Generator e(19), f(19);
  ODEResult oc = pf_ode_sample(sc, sde, {64, 2}, 0, e), og = pf_ode_sample(sg, sde, {64, 2}, 0, f, ODEOptions{.device = kCuda});
  CHECK(std::abs(og.nfe - oc.nfe) <= oc.nfe / 10);  // step acceptance may flip on rounding; the path is the same ODE
  CHECK(max_rel_err(og.x.cpu(), oc.x) <= 1e-4);
}

TEST_CASE("cuda: errors — CPU access to device memory, a device mismatch, out of memory — are clear, not crashes" *
          doctest::skip(!kGpu)) {
  Tensor d = ones({2, 3}, kCuda);
  CHECK(error_of([&] { add(d, ones({2, 3})); }).find("device mismatch") != std::string::npos);
  CHECK(error_of([&] { d.data_ptr<float>(); }).find("is on cuda:0") != std::string::npos);
  std::string oom = error_of([] { empty({int64_t(1) << 48}, kCuda); });  // 1 PiB of f32
  CHECK(oom.find("out of memory allocating 1.0 PiB (1125899906842624 bytes)") != std::string::npos);
  CHECK(oom.find("MiB free of") != std::string::npos);
  CHECK(ones({2}, kCuda).sum().item() == 2.0);  // the device still works after the failed allocation
}

TEST_CASE("cuda: conv2d (im2col + cuBLAS) and unfold match the CPU: strides, padding, groups, 1x1, views, autocast" *
          doctest::skip(!kGpu)) {
  struct Cfg {
    int64_t N, C, H, W, O, kh, kw, stride, pad, groups;
  };
  // (the last two: 8 and 12 images of 16x16 pixels, so the weight gradient runs as 2 and 3 image chunks)
  const std::vector<Cfg> cfgs = {{2, 3, 9, 7, 5, 3, 3, 1, 1, 1}, {3, 4, 8, 8, 6, 3, 3, 2, 1, 1},
                                 {2, 6, 5, 6, 4, 1, 1, 1, 0, 1}, {2, 4, 7, 7, 4, 3, 2, 2, 0, 2},
                                 {1, 2, 4, 4, 3, 5, 5, 1, 2, 1}, {5, 3, 6, 6, 2, 1, 1, 2, 0, 1},
                                 {8, 3, 16, 16, 4, 3, 3, 1, 1, 1}, {12, 2, 16, 16, 3, 3, 3, 1, 1, 1}};
  for (DType dt : {DType::f32, DType::f64}) {
    CAPTURE(std::string(dtype_name(dt)));
    Generator g(51);
    for (const Cfg& c : cfgs) {
      INFO("N ", c.N, " C ", c.C, " kernel ", c.kh, "x", c.kw, " stride ", c.stride, " pad ", c.pad, " groups ", c.groups);
      Tensor x = randn({c.N, c.C, c.H, c.W}, g, dt), w = randn({c.O, c.C / c.groups, c.kh, c.kw}, g, dt),
             b = randn({c.O}, g, dt);
      check_op_on_gpu({x, w, b}, [&](auto& t) { return conv2d(t[0], t[1], t[2], c.stride, c.pad, c.groups); }, tol(dt));
      check_op_on_gpu({x, w}, [&](auto& t) { return conv2d(t[0], t[1], Tensor(), c.stride, c.pad, c.groups); }, tol(dt));
      // unfold is a copy and its backward sums in the CPU's order: bit-identical
      check_op_on_gpu({x}, [&](auto& t) { return unfold(t[0], c.kh, c.kw, c.stride, c.pad); }, 0, 0);
    }
    // a strided input (a transposed view), read in place by im2col
    Tensor x = randn({2, 5, 6, 3}, g, dt), w = randn({4, 3, 3, 3}, g, dt), b = randn({4}, g, dt);
    check_op_on_gpu({x, w, b}, [](auto& t) { return conv2d(t[0].transpose(1, 3), t[1], t[2], 1, 1); }, tol(dt));
    check_op_on_gpu({x}, [](auto& t) { return unfold(t[0].transpose(1, 3), 2, 3, 1, 1); }, 0, 0);
  }
  Generator g(52);
  Tensor x = randn({4, 6, 8, 8}, g), w = randn({5, 6, 3, 3}, g), b = randn({5}, g);
  for (DType h : {DType::bf16, DType::f16}) {
    CAPTURE(std::string(dtype_name(h)));
    // half columns: the same roundings on both sides, the backward's half column gradient summed in f32 in order
    check_op_on_gpu({x}, [h](auto& t) { return unfold(t[0], 3, 3, 2, 1, h); }, 0, 0);
    // under autocast: the same rounded operands, f32 accumulation in another order; the GPU keeps the weight
    // gradient in f32, where the CPU's composite rounds it to the half format (as PyTorch's) — within 1e-2
    check_op_on_gpu({x, w}, [h](auto& t) {
      Autocast ac(h);
      return autocast_conv2d(t[0], t[1], Tensor(), 1, 1);
    }, 1e-5, 1e-2);
    // with a bias: the GPU adds it inside the GEMM (a row of ones), so it is rounded to the half format as in
    // PyTorch's autocast convolution, where the CPU's composite adds it in f32 after the GEMM
    check_op_on_gpu({x, w, b}, [h](auto& t) {
      Autocast ac(h);
      return autocast_conv2d(t[0], t[1], t[2], 1, 1);
    }, 4e-3, 1e-2);
  }
  // an empty batch: an empty output (the composite: no zero-size GEMM reaches cuBLAS)
  Tensor e = conv2d(zeros({0, 6, 8, 8}, {DType::f32, kCuda}), w.to(kCuda), b.to(kCuda), 1, 1);
  CHECK(e.shape() == Shape{0, 5, 8, 8});
  CHECK(error_of([] { unfold(zeros({2, 3, 4}), 3, 3); }).find("unfold: expected input [N, C, H, W], got [2, 3, 4]") !=
        std::string::npos);
}

TEST_CASE("cuda: conv2d under autocast runs as an implicit GEMM on tensor cores and matches the CPU's autocast conv" *
          doctest::skip(!kGpu)) {
  // Forward, dW/db (pixel chunks) and dx (the forward kernel on dy with flipped weights where stride 1, else
  // GEMM + col2im) on every path of the gathers: channels that are and are not multiples of 8 (the weights' 16-byte
  // copies or element loads), several 64-channel and 128-pixel tiles, k tiles crossing channels, strides 1 and 2,
  // padding 0-2, 1x1 / 3x3 / 5x5 / 3x2 kernels, f32 and bf16 images, a strided view. The CPU runs the autocast
  // composite (unfold + GEMM): the same rounded operands, another summation order; its bias is added in f32 after
  // the GEMM where the GPU rounds it to the half format (PyTorch's autocast conv) — hence 4e-3 with a bias.
  struct Cfg {
    int64_t N, C, H, W, O, kh, kw, stride, pad;
  };
  const Cfg cfgs[] = {{2, 3, 9, 7, 5, 3, 3, 1, 1},    {3, 16, 8, 8, 70, 3, 3, 1, 1},  {2, 8, 11, 10, 9, 3, 3, 2, 1},
                      {2, 24, 6, 6, 8, 1, 1, 1, 0},   {1, 5, 9, 9, 4, 5, 5, 1, 2},    {2, 4, 7, 7, 6, 3, 2, 1, 0},
                      {8, 8, 16, 16, 16, 3, 3, 1, 1}, {2, 40, 5, 5, 130, 3, 3, 1, 0}};
  Generator g(53);
  for (DType h : {DType::bf16, DType::f16})
    for (const Cfg& c : cfgs) {
      CAPTURE(std::string(dtype_name(h)));
      INFO("N ", c.N, " C ", c.C, " O ", c.O, " kernel ", c.kh, "x", c.kw, " stride ", c.stride, " pad ", c.pad);
      Tensor x = randn({c.N, c.C, c.H, c.W}, g), w = mul(randn({c.O, c.C, c.kh, c.kw}, g), 0.3), b = randn({c.O}, g);
      check_op_on_gpu({x, w, b}, [&](auto& t) {
        Autocast ac(h);
        return autocast_conv2d(t[0], t[1], t[2], c.stride, c.pad);
      }, 4e-3, 1e-2);
      check_op_on_gpu({x, w}, [&](auto& t) {
        Autocast ac(h);
        return autocast_conv2d(t[0], t[1], Tensor(), c.stride, c.pad);
      }, 1e-5, 1e-2);
    }
  // half images (a GroupNorm's bf16 output) and a strided view, read in place by the gathers
  Tensor x = randn({3, 12, 10, 12}, g), w = randn({20, 12, 3, 3}, g), b = randn({20}, g);
  check_op_on_gpu({x, w, b}, [](auto& t) {
    Autocast ac(DType::bf16);
    return autocast_conv2d(t[0].to(DType::bf16), t[1], t[2], 1, 1);
  }, 4e-3, 1e-2);
  check_op_on_gpu({x.permute({0, 1, 3, 2}).contiguous(), w, b}, [](auto& t) {
    Autocast ac(DType::bf16);
    return autocast_conv2d(t[0].transpose(2, 3), t[1], t[2], 1, 1);
  }, 4e-3, 1e-2);
  // the implicit kernels ran: no column matrix
  cuda::profile_start();
  {
    Autocast ac(DType::bf16);
    Tensor xg = x.to(kCuda).requires_grad_(), wg = w.to(kCuda).requires_grad_();
    sum(conv2d(xg, wg, b.to(kCuda), 1, 1)).backward();
  }
  std::vector<OpTime> prof = cuda::profile_stop();
  auto calls = [&](const std::string& op) {
    int64_t n = 0;
    for (const OpTime& o : prof) n += o.op == op ? o.calls : 0;
    return n;
  };
  CHECK(calls("conv_implicit") == 2);  // the forward and dx
  CHECK(calls("conv_implicit_weight_grad") == 1);
  CHECK(calls("im2col") + calls("col2im") == 0);
}

TEST_CASE("cuda: a U-Net training step's kernel calls: a conv is one im2col, GEMMs and one col2im (f32), an implicit GEMM (bf16)" *
          doctest::skip(!kGpu)) {
  // Counted on a steady-state AdamW step (the second) with the op profiler, f32 and bf16 autocast, so that a new
  // activation-sized pass fails a test, not a benchmark. 2 levels, 1 ResBlock each (+ 2 on the up path), attention
  // at 4x4: 25 convolutions (21 3x3, 4 1x1 skips), 21 group norms, 4 attention blocks.
  diffusion::UNetConfig c;
  c.in_channels = 3, c.image_size = 8, c.base_channels = 16, c.channel_mult = {1, 2};
  c.num_res_blocks = 1, c.groups = 4, c.attention_resolutions = {4};
  Generator g(3);
  diffusion::UNet net(c, g);
  net.to(kCuda);
  optim::AdamW opt(net.named_parameters(), {.lr = 1e-4});
  Tensor x = randn({2, 3, 8, 8}, g).to(kCuda), t = from_vector(std::vector<double>{3, 7}, {2}, DType::f32).to(kCuda);
  for (DType precision : {DType::f32, DType::bf16}) {
    CAPTURE(std::string(dtype_name(precision)));
    StepProfile calls(opt, precision, [&] { return losses::mse_loss(net.forward(x, t), x); });
    INFO(calls.table());
    // Before unfold and the device conv: 394 copies (f32) / 612 (bf16), 262 adds, 45 fills, 104 sums — per 3x3
    // convolution a padded copy, 9 window copies and a stack, and back a zero-filled gradient, 9 window adds and
    // per-image weight-gradient partials summed over the batch. Now a conv is one im2col (its columns in the
    // GEMM's format), one batched GEMM, and back one transposing copy of dy (the GEMM operand's cast under
    // autocast), two GEMMs and one col2im; the 4 1x1 skips of the composite-free path take an im2col too.
    if (precision == DType::f32) {
      CHECK(calls("im2col") == 25);
      CHECK(calls("col2im") == 24);  // conv_in's input needs no gradient
      // The 17 biases ride in the GEMMs (a ones row in the columns, the bias as a weight column): no bias pass over
      // the output, no bias reduction over dy — instead per biased conv a zeroed [O, K + pad] weight matrix (a fill)
      // with the weight and the bias copied in, and dW and db copied out of the GEMM's [O, K + pad] result:
      // parameter-sized copies for activation-sized passes.
      CHECK(calls("fill") <= 18);  // those weight matrices, and the backward's seed
      CHECK(calls("gemm f32") <= 127);
    } else {
      // Under autocast every conv is an implicit GEMM (no columns written): 25 forwards, 23 dx (the stride-2
      // downsampling conv's dx takes a GEMM + col2im), 25 weight gradients with db from the ones row; the bias is
      // added in the forward's epilogue. No transposed dy copy, no weight-matrix fill.
      CHECK(calls("im2col") == 0);
      CHECK(calls("col2im") == 1);
      CHECK(calls("conv_implicit") == 48);
      CHECK(calls("conv_implicit_weight_grad") == 25);
      CHECK(calls("fill") <= 1);
      CHECK(calls("gemm bf16") <= 54);  // the attention projections, time embeddings, the one dx GEMM
    }
    // (a ResBlock adds conv1's bias and the time embedding in one pass; under autocast an attention block's
    // tokens are transposed by the projection's cast; the implicit dx reads the forward's half weights flipped in
    // place: no flip copy, no index tensor sent per step)
    CHECK(calls("copy_strided") <= (precision == DType::f32 ? 210 : 266));
    if (precision == DType::bf16) CHECK(calls("index_select") == 0);
    CHECK(calls("add") <= (precision == DType::f32 ? 69 : 65));
    CHECK(calls("sum_run") <= (precision == DType::f32 ? 37 : 33));
  }
}
