// bench_ops: liandan's side of bench/run. One process runs one workload and prints one JSON line.
//
//   bench_ops --list                             every workload, "NAME<TAB>CONFIG" per line
//   bench_ops --info                             threads and the OpenBLAS core in use (JSON)
//   bench_ops --workload NAME --config CONFIG    times it: {"name","config","ms","min_ms","iters","runs"}
//     [--threads N] [--runs R] [--min-run-s S] [--device cpu|cuda] [--precision f32|tf32|bf16]
//
// The gpu_* workloads (bench/run-gpu, issue #9) run on --device (cuda by default in bench/run-gpu; any
// config on the cpu for a quick check) in --precision: f32 (no TF32), tf32 (cuBLAS TF32 GEMMs) or bf16
// (the forward under ld::Autocast: bf16 GEMM operands, f32 weights and accumulation). Their bodies end with
// cuda::synchronize, so the time is finished GPU work, and their JSON line adds "params", "device" and
// "precision". A gpu_* workload accepts any config string (shapes are read from it).
//
// A workload is (name, config): the config string holds the shapes, and `dims(config)` reads its
// integers in order ("4096x256x768" -> 4096, 256, 768). bench/torch_ops.py holds the same
// (name, config) pairs for PyTorch; bench/run pairs them up. To add a workload, add one `reg`
// entry here and one `@workload` entry there with the same name and config strings.
//
// Timing (identical in torch_ops.py): warm up (>= 2 calls and >= 0.1 s); pick n calls per run so a
// run lasts >= min_run_s (from the warm-up's mean call time); do `runs` runs (fewer, but >= 3, when
// they would take over 2 s); report the median (and the min) of the per-call times, in ms.
#include <cblas.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

#include "core/cpu/gemm_bf16.h"
#include "core/device.h"
#include "core/ops.h"
#include "core/random.h"
#include "core/tensor.h"
#include "core/threads.h"
#include "diffusion/unet.h"
#include "losses/losses.h"
#include "nn/models.h"
#include "optim/adam.h"
#include "optim/amos.h"

extern "C" char* openblas_get_corename();
extern "C" char* openblas_get_config();
extern "C" int openblas_get_num_threads();

namespace {

using namespace liandan;
using Body = std::function<void()>;
using Dims = std::vector<int64_t>;

// ------------------------------------------------------------------------------------ registry
struct Workload {
  std::string name, config;
  std::function<Body(const Dims&)> setup;  // builds inputs, returns the timed body
};

// The device and precision of the gpu_* workloads (command line).
Device g_device = Device::cpu();
DType g_precision = DType::f32;  // f32, or bf16 (autocast); TF32 is a cuBLAS switch set in main
int64_t g_params = 0;            // parameters of the model a gpu_* setup built (reported in the JSON)

std::vector<Workload>& registry() {
  static std::vector<Workload> r;
  return r;
}

void reg(const std::string& name, const std::vector<std::string>& configs, std::function<Body(const Dims&)> setup) {
  for (auto& c : configs) registry().push_back({name, c, setup});
}

Dims dims(const std::string& config) {
  Dims d;
  for (size_t i = 0; i < config.size();) {
    if (std::isdigit(static_cast<unsigned char>(config[i]))) {
      size_t j = i;
      while (j < config.size() && std::isdigit(static_cast<unsigned char>(config[j]))) ++j;
      d.push_back(std::stoll(config.substr(i, j - i)));
      i = j;
    } else {
      ++i;
    }
  }
  return d;
}

Tensor rn(const Shape& s, bool rg = false) {
  Tensor t = randn(s);
  if (rg) t.requires_grad_(true);
  return t;
}

void clear_grads(std::initializer_list<const Tensor*> ts) {
  for (auto* t : ts) t->set_grad(Tensor());
}

// The GEMMs of roformer_lm's training step (d_model 256, d_ff 1024, 16 x 256 tokens): MxKxN, then op(A) op(B).
const std::vector<std::string> kLmGemmConfigs = {
    "4096x256x768nt", "4096x256x1024nt", "4096x1024x256nt", "4096x256x256nt",  // forward: x Wᵀ
    "4096x768x256nn", "4096x256x1024nn", "4096x1024x256nn",                     // dX = G W
    "256x4096x768tn", "1024x4096x256tn", "256x4096x1024tn",                     // dW = Xᵀ G
};

// The config of the workload being set up (a setup that needs more than its integers reads it).
std::string g_config;

const std::vector<std::string> kMatmulConfigs = {
    "64x64x64",    "128x128x128",    "256x256x256",  "512x512x512",
    "1024x1024x1024", "2048x2048x2048", "4096x256x768", "4096x768x256",
};

// ---- GPU workloads (issue #9): whole training steps at GPU scale, attention alone, and the GEMM ceiling.
void register_gpu() {
  auto sync = [] { if (!g_device.is_cpu()) cuda::synchronize(g_device.index); };
  // gpu_lm: config VxDxLxHxFxTxB; one AdamW training step of the RoFormer LM (nn/models.h): forward
  // (under autocast for bf16), cross-entropy via log_softmax + gather, backward, fused AdamW, grads dropped.
  reg("gpu_lm", {"256x768x12x12x3072x1024x16"}, [sync](const Dims& d) -> Body {
    nn::RoFormerLMConfig c;
    c.vocab_size = d[0], c.d_model = d[1], c.n_layers = d[2], c.n_heads = d[3], c.d_ff = d[4];
    auto lm = std::make_shared<nn::RoFormerLM>(c);
    lm->to(g_device);
    g_params = lm->num_parameters();
    Tensor x = randint(0, d[0], {d[6], d[5]}).to(g_device), t = randint(0, d[0], {d[6], d[5], 1}).to(g_device);
    auto opt = std::make_shared<optim::AdamW>(lm->named_parameters(), optim::AdamWOptions{.lr = 1e-4});
    return [=] {
      Tensor loss;
      {
        Autocast ac(g_precision);
        loss = -mean(gather(log_softmax(lm->forward(x), -1), -1, t));
      }
      loss.backward();
      opt->step();
      opt->zero_grad();
      sync();
    };
  });
  // gpu_unet: config BxCxHxW,chBASExM1xM2xM3,resN,gnG,attnR; the DDPM training step of unet_ddpm on the
  // device, plus the AdamW step.
  reg("gpu_unet", {"128x3x32x32,ch128x1x2x2,res2,gn32,attn16"}, [sync](const Dims& d) -> Body {
    diffusion::UNetConfig c;
    c.in_channels = d[1], c.image_size = d[2], c.base_channels = d[4], c.channel_mult = {d[5], d[6], d[7]};
    c.num_res_blocks = d[8], c.groups = d[9], c.attention_resolutions = {d[10]};
    auto net = std::make_shared<diffusion::UNet>(c);
    net->to(g_device);
    g_params = net->num_parameters();
    const int64_t B = d[0];
    TensorOptions o{DType::f32, g_device};
    Tensor x0 = randn({B, d[1], d[2], d[3]}, default_generator(), o);
    std::vector<double> ab(1000);
    for (int i = 0; i < 1000; ++i) ab[size_t(i)] = (i ? ab[size_t(i - 1)] : 1.0) * (1 - (1e-4 + (0.02 - 1e-4) * i / 999.0));
    Tensor abar = from_vector(ab, {1000}, DType::f32).to(g_device);
    auto opt = std::make_shared<optim::AdamW>(net->named_parameters(), optim::AdamWOptions{.lr = 1e-4});
    return [=] {
      Tensor t = randint(0, 1000, {B}), eps = randn(x0.shape(), default_generator(), o);
      Tensor a = index_select(abar, 0, t).view({B, 1, 1, 1});
      Tensor xt = sqrt(a) * x0 + sqrt(rsub(a, 1.0)) * eps;
      Tensor loss;
      {
        Autocast ac(g_precision);
        loss = losses::mse_loss(net->forward(xt, t.to(DType::f32).to(g_device)), eps);
      }
      loss.backward();
      opt->step();
      opt->zero_grad();
      sync();
    };
  });
  // gpu_attention: config BxHxTxD; causal softmax attention forward + backward (the fused tensor-core kernels: 3xTF32
  // in f32, bf16 operands under bf16 autocast).
  reg("gpu_attention", {"16x12x1024x64"}, [sync](const Dims& d) -> Body {
    TensorOptions o{DType::f32, g_device};
    Tensor q = randn({d[0], d[1], d[2], d[3]}, default_generator(), o).requires_grad_(),
           k = randn({d[0], d[1], d[2], d[3]}, default_generator(), o).requires_grad_(),
           v = randn({d[0], d[1], d[2], d[3]}, default_generator(), o).requires_grad_(),
           g = randn({d[0], d[1], d[2], d[3]}, default_generator(), o);
    return [=] {
      Tensor y;
      {
        Autocast ac(g_precision);
        y = scaled_dot_product_attention(q, k, v, {.causal = true});
      }
      y.backward(g);
      clear_grads({&q, &k, &v});
      sync();
    };
  });
  // gpu_gemm: config MxKxN; one GEMM, operands already in the precision's format (bf16: the f32 product of
  // bf16 operands): the ceiling the MFU figures are measured against.
  reg("gpu_gemm", {"8192x8192x8192"}, [sync](const Dims& d) -> Body {
    TensorOptions o{DType::f32, g_device};
    Tensor a = randn({d[0], d[1]}, default_generator(), o), b = randn({d[1], d[2]}, default_generator(), o);
    if (g_precision != DType::f32) {
      a = a.to(g_precision);
      b = b.to(g_precision);
    }
    return [=] {
      matmul(a, b);
      sync();
    };
  });
}

void register_all() {
  register_gpu();
  // ---- matmul: config MxKxN, [M,K] @ [K,N]
  reg("matmul", kMatmulConfigs, [](const Dims& d) -> Body {
    Tensor a = rn({d[0], d[1]}), b = rn({d[1], d[2]});
    return [=] { matmul(a, b); };
  });
  reg("matmul+bwd", kMatmulConfigs, [](const Dims& d) -> Body {
    Tensor a = rn({d[0], d[1]}, true), b = rn({d[1], d[2]}, true), g = rn({d[0], d[2]});
    return [=] {
      matmul(a, b).backward(g);
      clear_grads({&a, &b});
    };
  });
  // ---- raw cblas_sgemm on liandan-allocated buffers: the ceiling for matmul (no torch side)
  reg("sgemm_raw", kMatmulConfigs, [](const Dims& d) -> Body {
    int M = int(d[0]), K = int(d[1]), N = int(d[2]);
    Tensor a = rn({M, K}), b = rn({K, N}), c = empty({M, N});
    return [=] {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, a.data_ptr<float>(), K,
                  b.data_ptr<float>(), N, 0.0f, c.data_ptr<float>(), N);
    };
  });
  // forward C = A B, then dA = G B^T and dB = A^T G: the three GEMMs of matmul+bwd
  reg("sgemm_raw+bwd", kMatmulConfigs, [](const Dims& d) -> Body {
    int M = int(d[0]), K = int(d[1]), N = int(d[2]);
    Tensor a = rn({M, K}), b = rn({K, N}), g = rn({M, N}), c = empty({M, N}), ga = empty({M, K}), gb = empty({K, N});
    return [=] {
      const float *A = a.data_ptr<float>(), *B = b.data_ptr<float>(), *G = g.data_ptr<float>();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, K, B, N, 0.0f, c.data_ptr<float>(), N);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, K, N, 1.0f, G, N, B, N, 0.0f, ga.data_ptr<float>(), K);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, N, M, 1.0f, A, K, G, N, 0.0f, gb.data_ptr<float>(), N);
    };
  });
  // ---- batched matmul (attention scores): config BxMxKxN, [B,M,K] @ [B,K,N]
  reg("bmm", {"96x128x64x128"}, [](const Dims& d) -> Body {
    Tensor a = rn({d[0], d[1], d[2]}), b = rn({d[0], d[2], d[3]});
    return [=] { matmul(a, b); };
  });
  reg("bmm+bwd", {"96x128x64x128"}, [](const Dims& d) -> Body {
    Tensor a = rn({d[0], d[1], d[2]}, true), b = rn({d[0], d[2], d[3]}, true), g = rn({d[0], d[1], d[3]});
    return [=] {
      matmul(a, b).backward(g);
      clear_grads({&a, &b});
    };
  });
  // ---- softmax over the last dim: config RxC
  reg("softmax", {"4096x1024"}, [](const Dims& d) -> Body {
    Tensor x = rn({d[0], d[1]});
    return [=] { softmax(x, -1); };
  });
  reg("softmax+bwd", {"4096x1024"}, [](const Dims& d) -> Body {
    Tensor x = rn({d[0], d[1]}, true), g = rn({d[0], d[1]});
    return [=] {
      softmax(x, -1).backward(g);
      clear_grads({&x});
    };
  });
  // ---- layer_norm over the last dim with weight and bias: config RxC
  reg("layer_norm", {"4096x768"}, [](const Dims& d) -> Body {
    Tensor x = rn({d[0], d[1]}), w = rn({d[1]}), b = rn({d[1]});
    return [=] { layer_norm(x, {d[1]}, w, b, 1e-5); };
  });
  reg("layer_norm+bwd", {"4096x768"}, [](const Dims& d) -> Body {
    Tensor x = rn({d[0], d[1]}, true), w = rn({d[1]}, true), b = rn({d[1]}, true), g = rn({d[0], d[1]});
    return [=] {
      layer_norm(x, {d[1]}, w, b, 1e-5).backward(g);
      clear_grads({&x, &w, &b});
    };
  });
  // ---- gelu, exact erf form: config RxC
  reg("gelu", {"4096x3072"}, [](const Dims& d) -> Body {
    Tensor x = rn({d[0], d[1]});
    return [=] { gelu(x, GeluApprox::none); };
  });
  reg("gelu+bwd", {"4096x3072"}, [](const Dims& d) -> Body {
    Tensor x = rn({d[0], d[1]}, true), g = rn({d[0], d[1]});
    return [=] {
      gelu(x, GeluApprox::none).backward(g);
      clear_grads({&x});
    };
  });
  // ---- broadcasting add (bias add): config RxC+C, [R,C] + [C]
  reg("add_bcast", {"4096x768+768"}, [](const Dims& d) -> Body {
    Tensor x = rn({d[0], d[1]}), b = rn({d[2]});
    return [=] { add(x, b); };
  });
  reg("add_bcast+bwd", {"4096x768+768"}, [](const Dims& d) -> Body {
    Tensor x = rn({d[0], d[1]}, true), b = rn({d[2]}, true), g = rn({d[0], d[1]});
    return [=] {
      add(x, b).backward(g);
      clear_grads({&x, &b});
    };
  });
  // ---- conv2d with bias, stride 1: config xNxCxHxW,wOxCxKxK,padP
  const std::vector<std::string> conv_configs = {"x64x32x28x28,w32x32x3x3,pad1", "x64x1x28x28,w32x1x3x3,pad1"};
  reg("conv2d", conv_configs, [](const Dims& d) -> Body {
    Tensor x = rn({d[0], d[1], d[2], d[3]}), w = rn({d[4], d[5], d[6], d[7]}), b = rn({d[4]});
    int64_t pad = d[8];
    return [=] { conv2d(x, w, b, 1, pad); };
  });
  // The input needs a gradient unless it is the network's input (one channel).
  reg("conv2d+bwd", conv_configs, [](const Dims& d) -> Body {
    Tensor x = rn({d[0], d[1], d[2], d[3]}, d[1] > 1), w = rn({d[4], d[5], d[6], d[7]}, true), b = rn({d[4]}, true);
    Tensor g = rn({d[0], d[4], d[2] + 2 * d[8] - d[6] + 1, d[3] + 2 * d[8] - d[7] + 1});
    int64_t pad = d[8];
    return [=] {
      conv2d(x, w, b, 1, pad).backward(g);
      clear_grads({&x, &w, &b});
    };
  });
  // ---- per-op overhead: add of two tiny tensors, forward only: config N
  reg("add_tiny", {"1", "4"}, [](const Dims& d) -> Body {
    Tensor a = rn({d[0]}), b = rn({d[0]});
    return [=] { add(a, b); };
  });
  // ---- ZLPR multi-label loss, forward + backward, mean over the batch: config BxC, 10% positives
  reg("zlpr_loss", {"256x1000"}, [](const Dims& d) -> Body {
    Tensor x = rn({d[0], d[1]}, true), t = lt(rand({d[0], d[1]}), 0.1);
    return [=] {
      losses::zlpr(x, t).backward();
      clear_grads({&x});
    };
  });
  // the same from core ops (losses::zlpr_composite), liandan only: what the fused kernel saves
  reg("zlpr_loss_composite", {"256x1000"}, [](const Dims& d) -> Body {
    Tensor x = rn({d[0], d[1]}, true), t = lt(rand({d[0], d[1]}), 0.1);
    return [=] {
      losses::zlpr_composite(x, t).backward();
      clear_grads({&x});
    };
  });
  // ---- one SGD training step of an MLP with the ZLPR loss: config BxD0xD1xD2xD3 (784-1024-1024-10),
  // ReLU, torch.nn.Linear's init, 30% positive labels; forward, backward, p -= lr * grad, grads cleared.
  reg("mlp_zlpr", {"256x784x1024x1024x10"}, [](const Dims& d) -> Body {
    Tensor x = rn({d[0], d[1]}), t = lt(rand({d[0], d[4]}), 0.3);
    std::vector<Tensor> params;
    for (size_t l = 1; l < 4; ++l) {
      double k = 1.0 / std::sqrt(double(d[l]));  // U(-1/sqrt(in), 1/sqrt(in))
      Tensor w = add(mul(rand({d[l], d[l + 1]}), 2 * k), -k), b = add(mul(rand({d[l + 1]}), 2 * k), -k);
      params.push_back(w.requires_grad_());
      params.push_back(b.requires_grad_());
    }
    return [=] {
      Tensor h = x;
      for (size_t l = 0; l < 3; ++l) {
        h = add(matmul(h, params[2 * l]), params[2 * l + 1]);
        if (l < 2) h = relu(h);
      }
      losses::zlpr(h, t).backward();
      NoGradGuard ng;
      for (const Tensor& p : params) {
        Tensor(p).add_(p.grad(), -0.01);
        p.set_grad(Tensor());
      }
    };
  });
  // ---- RoFormer family (issue #3): whole training steps and attention layers (nn/models.h).
  // roformer_lm: config VxDxLxHxFxTxB; one SGD step of the pre-LN RoPE causal LM (forward, cross-entropy
  // via log_softmax + gather, backward, p -= lr * grad, grads cleared).
  // roformer_lm_bf16 (and vit2d_bf16, unet_ddpm_bf16 below): the same step with the forward and the loss under
  // ld::Autocast(bf16) — the trainer's precision = "bf16" — against torch.autocast("cpu", dtype=torch.bfloat16).
  for (DType prec : {DType::f32, DType::bf16})
    reg(prec == DType::f32 ? "roformer_lm" : "roformer_lm_bf16", {"256x256x4x4x1024x256x16"}, [prec](const Dims& d) -> Body {
      nn::RoFormerLMConfig c;
      c.vocab_size = d[0], c.d_model = d[1], c.n_layers = d[2], c.n_heads = d[3], c.d_ff = d[4];
      c.position = nn::PositionEncoding::rope1d;
      auto lm = std::make_shared<nn::RoFormerLM>(c);
      Tensor x = randint(0, d[0], {d[6], d[5]}), t = randint(0, d[0], {d[6], d[5], 1});
      std::vector<Tensor> params = lm->parameters();
      return [=] {
        Tensor loss;
        {
          Autocast ac(prec);
          loss = -mean(gather(log_softmax(lm->forward(x), -1), -1, t));
        }
        loss.backward();
        NoGradGuard ng;
        for (Tensor p : params) {
          p.add_(p.grad(), -0.01);
          p.set_grad(Tensor());
        }
      };
    });
  // ---- the LM's GEMMs (roformer_lm's shapes): config MxKxN + the transposes of op(A), op(B) (n/t), as the step
  // runs them: forward x Wᵀ (nt: QKV, fc1, fc2, o_proj/head), dX = G W (nn), dW = Xᵀ G (tn).
  // gemm_bf16: cpu::gemm_bf16 into a bf16 C (torch: bf16 matmul into a bf16 out=); gemm_f32: raw cblas_sgemm
  // (torch: f32 matmul). bench/run adds GFLOP/s and % of the machine's limit.
  for (const char* kind : {"gemm_bf16", "gemm_f32"})
    reg(kind, kLmGemmConfigs, [kind](const Dims& d) -> Body {
      const std::string& cfg = g_config;
      const bool ta = cfg[cfg.size() - 2] == 't', tb = cfg.back() == 't';
      const int64_t M = d[0], K = d[1], N = d[2];
      Tensor a = rn({ta ? K : M, ta ? M : K}), b = rn({tb ? N : K, tb ? K : N});
      const int64_t lda = a.size(1), ldb = b.size(1);
      if (kind[5] == 'b') {
        Tensor ah = a.to(DType::bf16), bh = b.to(DType::bf16), c = empty({M, N}, DType::bf16);
        return [=] {
          cpu::gemm_bf16(ta, tb, M, N, K, 1.0f, reinterpret_cast<const cpu::bf16_t*>(ah.data_ptr<liandan::bfloat16>()), lda,
                         reinterpret_cast<const cpu::bf16_t*>(bh.data_ptr<liandan::bfloat16>()), ldb, 0.0f,
                         reinterpret_cast<cpu::bf16_t*>(c.data_ptr<liandan::bfloat16>()), N);
        };
      }
      Tensor c = empty({M, N});
      return [=] {
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(M), int(N),
                    int(K), 1.0f, a.data_ptr<float>(), int(lda), b.data_ptr<float>(), int(ldb), 0.0f,
                    c.data_ptr<float>(), int(N));
      };
    });
  // ---- optimizers (issue #5): one step over the reference RoFormer LM's parameters (config VxDxLxHxF),
  // gradients fixed and random. adamw_step is torch.optim.AdamW's update; amos_step is factored Amos
  // (PyTorch has no Amos: its side is a straightforward per-tensor port, see torch_ops.py).
  for (const char* kind : {"adamw_step", "amos_step"})
    reg(kind, {"256x256x4x4x1024"}, [kind](const Dims& d) -> Body {
      nn::RoFormerLMConfig c;
      c.vocab_size = d[0], c.d_model = d[1], c.n_layers = d[2], c.n_heads = d[3], c.d_ff = d[4];
      auto lm = std::make_shared<nn::RoFormerLM>(c);
      auto params = lm->named_parameters();
      for (auto& [n, p] : params) p.set_grad(rn(p.shape()));
      std::shared_ptr<optim::Optimizer> opt;
      if (std::string(kind) == "adamw_step") opt = std::make_shared<optim::AdamW>(params, optim::AdamWOptions{});
      else opt = std::make_shared<optim::Amos>(params, optim::AmosOptions{.lr = 1e-3});
      return [=] { opt->step(); };
    });
  // vit2d: config BxSxCxPxDxLxHxFxK; one SGD step of the ViT with 2-D RoPE (base 100), mean pooling,
  // cross-entropy via log_softmax + gather.
  for (DType prec : {DType::f32, DType::bf16})
    reg(prec == DType::f32 ? "vit2d" : "vit2d_bf16", {"128x28x1x4x128x4x4x512x10"}, [prec](const Dims& d) -> Body {
      nn::ViTConfig c;
      c.image_size = d[1], c.channels = d[2], c.patch = d[3], c.d_model = d[4], c.n_layers = d[5];
      c.n_heads = d[6], c.d_ff = d[7], c.n_classes = d[8];
      c.position = nn::PositionEncoding::rope2d;
      auto vit = std::make_shared<nn::ViT>(c);
      Tensor x = rn({d[0], d[2], d[1], d[1]}), t = randint(0, d[8], {d[0], 1});
      std::vector<Tensor> params = vit->parameters();
      return [=] {
        Tensor loss;
        {
          Autocast ac(prec);
          loss = -mean(gather(log_softmax(vit->forward(x), -1), -1, t));
        }
        loss.backward();
        NoGradGuard ng;
        for (Tensor p : params) {
          p.add_(p.grad(), -0.01);
          p.set_grad(Tensor());
        }
      };
    });
  // linear_attn_T / softmax_attn_T: config BxTxDxH; one causal RoPE attention layer (q, k, v, o projections),
  // forward + backward into the input and the parameters.
  for (const char* kind : {"linear", "softmax"})
    for (int64_t T : {256, 1024, 4096}) {
      std::string name = std::string(kind) + "_attn_" + std::to_string(T);
      bool lin = kind[0] == 'l';
      reg(name, {"1x" + std::to_string(T) + "x256x4"}, [lin](const Dims& d) -> Body {
        nn::AttentionConfig c;
        c.kind = lin ? nn::AttentionKind::linear : nn::AttentionKind::softmax;
        c.position = nn::PositionEncoding::rope1d;
        c.causal = true;
        auto m = std::make_shared<nn::MultiheadAttention>(d[2], d[3], c);
        Tensor x = rn({d[0], d[1], d[2]}, true), g = rn({d[0], d[1], d[2]});
        std::vector<Tensor> params = m->parameters();
        return [=] {
          m->forward(x).backward(g);
          clear_grads({&x});
          for (const Tensor& p : params) p.set_grad(Tensor());
        };
      });
    }
  // ---- DDPM U-Net (issue #6, diffusion/unet.h): config BxCxHxW,chBASExM1xM2xM3,resN,gnG,attnR.
  // unet_ddpm: one training step without the optimizer: t ~ U{0..999}, eps ~ N(0, I), x_t from the linear beta
  // schedule, MSE(eps_theta(x_t, t), eps), backward into every parameter, grads cleared.
  // unet_sample: one network evaluation of a sampler step (no grad, eval mode); 50 DDIM steps = 50 calls.
  for (const char* kind : {"unet_ddpm", "unet_sample", "unet_ddpm_bf16"})
    reg(kind, {"64x1x28x28,ch32x1x2x4,res2,gn8,attn7"}, [kind](const Dims& d) -> Body {
      const DType prec = std::string(kind).find("bf16") != std::string::npos ? DType::bf16 : DType::f32;
      diffusion::UNetConfig c;
      c.in_channels = d[1], c.image_size = d[2], c.base_channels = d[4], c.channel_mult = {d[5], d[6], d[7]};
      c.num_res_blocks = d[8], c.groups = d[9], c.attention_resolutions = {d[10]};
      auto net = std::make_shared<diffusion::UNet>(c);
      const int64_t B = d[0];
      Tensor x0 = rn({B, d[1], d[2], d[3]});
      if (kind[5] == 's') {
        net->eval();
        Tensor t = full({B}, 500.0);
        return [=] {
          NoGradGuard ng;
          net->forward(x0, t);
        };
      }
      std::vector<double> ab(1000);
      for (int i = 0; i < 1000; ++i) ab[size_t(i)] = (i ? ab[size_t(i - 1)] : 1.0) * (1 - (1e-4 + (0.02 - 1e-4) * i / 999.0));
      Tensor abar = from_vector(ab, {1000}, DType::f32);
      std::vector<Tensor> params = net->parameters();
      return [=] {
        Tensor t = randint(0, 1000, {B}), eps = randn(x0.shape());
        Tensor a = index_select(abar, 0, t).view({B, 1, 1, 1});
        Tensor xt = sqrt(a) * x0 + sqrt(rsub(a, 1.0)) * eps;
        Tensor loss;
        {
          Autocast ac(prec);
          loss = losses::mse_loss(net->forward(xt, t.to(DType::f32)), eps);
        }
        loss.backward();
        for (const Tensor& p : params) p.set_grad(Tensor());
      };
    });
}

// ------------------------------------------------------------------------------------ timing
struct Timing {
  double median_ms, min_ms;
  int64_t iters;
  int runs;
};

Timing time_body(const Body& body, int runs, double min_run_s) {
  using clock = std::chrono::steady_clock;
  auto secs = [](clock::time_point a, clock::time_point b) { return std::chrono::duration<double>(b - a).count(); };
  // Warm-up: at least 2 calls and 0.1 s; the mean of the calls after the first sizes the runs.
  int64_t done = 0;
  double first = 0;
  auto w0 = clock::now();
  double elapsed = 0;
  while (done < 2 || elapsed < 0.1) {
    body();
    elapsed = secs(w0, clock::now());
    if (++done == 1) first = elapsed;
  }
  double per = std::max((elapsed - first) / double(done - 1), 1e-9);
  int64_t n = std::max<int64_t>(1, int64_t(std::ceil(min_run_s / per)));
  // Slow workloads (over ~2 s for all runs) get fewer runs, but at least 3.
  if (per * double(n) * runs > 2.0) runs = std::max(std::min(runs, 3), int(2.0 / (per * double(n))));
  std::vector<double> per_call;
  for (int r = 0; r < runs; ++r) {
    auto t0 = clock::now();
    for (int64_t i = 0; i < n; ++i) body();
    per_call.push_back(secs(t0, clock::now()) / double(n) * 1e3);
  }
  std::sort(per_call.begin(), per_call.end());
  size_t m = per_call.size();
  double med = m % 2 ? per_call[m / 2] : 0.5 * (per_call[m / 2 - 1] + per_call[m / 2]);
  return {med, per_call.front(), n, runs};
}

// Two bodies timed in alternation (run of A, run of B, ...) in one process, so that a comparison
// between them (matmul vs raw sgemm) is not skewed by process-to-process variance.
std::pair<Timing, Timing> time_pair(const Body& a, const Body& b, int runs, double min_run_s) {
  Timing ta = time_body(a, 1, min_run_s), tb = time_body(b, 1, min_run_s);  // warm-up and sizing
  using clock = std::chrono::steady_clock;
  std::vector<double> pa, pb;
  for (int r = 0; r < runs; ++r) {
    for (auto [body, n, out] : {std::tuple{&a, ta.iters, &pa}, std::tuple{&b, tb.iters, &pb}}) {
      auto t0 = clock::now();
      for (int64_t i = 0; i < n; ++i) (*body)();
      out->push_back(std::chrono::duration<double>(clock::now() - t0).count() / double(n) * 1e3);
    }
  }
  auto med = [](std::vector<double>& v) {
    std::sort(v.begin(), v.end());
    size_t m = v.size();
    return m % 2 ? v[m / 2] : 0.5 * (v[m / 2 - 1] + v[m / 2]);
  };
  return {Timing{med(pa), pa.front(), ta.iters, runs}, Timing{med(pb), pb.front(), tb.iters, runs}};
}

std::string json_str(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    o += c;
  }
  return o + "\"";
}

int usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s --list | --info | --workload NAME --config CONFIG [--pair NAME2] [--threads N] "
               "[--runs R] [--min-run-s S] [--device cpu|cuda] [--precision f32|tf32|bf16] [--profile]\n"
               "  --profile (cuda): after the timing, one more step under the op profiler; its table to stderr\n",
               argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  std::string mode, name, config, pair;
  std::string device = "cpu", precision = "f32";
  int threads = 0, runs = 7;
  double min_run_s = 0.05;
  bool profile = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) { std::fprintf(stderr, "bench_ops: %s needs a value\n", a.c_str()); std::exit(2); }
      return argv[++i];
    };
    if (a == "--list" || a == "--info") mode = a;
    else if (a == "--workload") { mode = "--workload"; name = next(); }
    else if (a == "--config") config = next();
    else if (a == "--pair") pair = next();
    else if (a == "--threads") threads = std::atoi(next().c_str());
    else if (a == "--runs") runs = std::max(1, std::atoi(next().c_str()));
    else if (a == "--min-run-s") min_run_s = std::atof(next().c_str());
    else if (a == "--device") device = next();
    else if (a == "--precision") precision = next();
    else if (a == "--profile") profile = true;
    else return usage(argv[0]);
  }
  if (threads > 0) set_num_threads(threads);
  if (device == "cuda") g_device = Device::cuda(0);
  else if (device != "cpu") return usage(argv[0]);
  if (precision == "bf16") g_precision = DType::bf16;
  else if (precision == "tf32") cuda::set_allow_tf32(true);
  else if (precision != "f32") return usage(argv[0]);

  if (mode == "--list") {
    for (auto& w : registry()) std::printf("%s\t%s\n", w.name.c_str(), w.config.c_str());
    return 0;
  }
  if (mode == "--info") {
    std::printf("{\"threads\": %d, \"openblas_threads\": %d, \"openblas_core\": %s, \"openblas_config\": %s, "
                "\"gemm_bf16\": %s}\n",
                get_num_threads(), openblas_get_num_threads(), json_str(openblas_get_corename()).c_str(),
                json_str(openblas_get_config()).c_str(), json_str(cpu::gemm_bf16_kernel()).c_str());
    return 0;
  }
  if (mode != "--workload") return usage(argv[0]);

  auto find = [&](const std::string& n) -> const Workload* {
    for (auto& w : registry())
      if (w.name == n && (config.empty() || w.config == config)) return &w;
    // A gpu_* workload takes any config (its shapes are read from the string).
    for (auto& w : registry())
      if (w.name == n && n.rfind("gpu_", 0) == 0) {
        static Workload custom;
        custom = w;
        custom.config = config;
        return &custom;
      }
    return nullptr;
  };
  const Workload* w = find(name);
  const Workload* w2 = pair.empty() ? nullptr : find(pair);
  bool found = w && (pair.empty() || w2);
  if (found) {
    try {
      manual_seed(0);
      g_config = w->config;
      Body body = w->setup(dims(w->config));
      if (w2) {
        Body body2 = w2->setup(dims(w2->config));
        auto [t, t2] = time_pair(body, body2, runs, min_run_s);
        std::printf("{\"name\": %s, \"config\": %s, \"ms\": %.6g, \"pair\": %s, \"pair_ms\": %.6g, \"runs\": %d, "
                    "\"threads\": %d}\n",
                    json_str(w->name).c_str(), json_str(w->config).c_str(), t.median_ms, json_str(w2->name).c_str(),
                    t2.median_ms, t.runs, get_num_threads());
      } else {
        Timing t = time_body(body, runs, min_run_s);
        std::string gpu;
        if (w->name.rfind("gpu_", 0) == 0)
          gpu = ", \"params\": " + std::to_string(g_params) + ", \"device\": " + json_str(device) +
                ", \"precision\": " + json_str(precision);
        std::printf("{\"name\": %s, \"config\": %s, \"ms\": %.6g, \"min_ms\": %.6g, \"iters\": %lld, \"runs\": %d, "
                    "\"threads\": %d%s}\n",
                    json_str(w->name).c_str(), json_str(w->config).c_str(), t.median_ms, t.min_ms,
                    static_cast<long long>(t.iters), t.runs, get_num_threads(), gpu.c_str());
        if (profile && !g_device.is_cpu()) {  // where the step's GPU time goes, op by op
          cuda::profile_start(g_device.index);
          body();
          std::fprintf(stderr, "%s [%s] %s: one step under the op profiler\n%s", w->name.c_str(), w->config.c_str(),
                       precision.c_str(), cuda::profile_table(cuda::profile_stop(g_device.index)).c_str());
        }
      }
      std::fflush(stdout);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench_ops: %s [%s]: %s\n", w->name.c_str(), w->config.c_str(), e.what());
      return 1;
    }
  }
  if (found) return 0;
  std::fprintf(stderr, "bench_ops: no workload %s [%s] (see --list)\n", name.c_str(), config.c_str());
  return 3;
}
