// diffusion::UNet: shapes for 28x28 and 32x32, the parameter count of the benchmark network (equal to
// the PyTorch twin in bench/torch_ops.py), the time embedding's closed form, an f64 gradcheck of a tiny
// U-Net (input and parameters of every kind of layer), determinism (seeds, threads, eval-mode dropout)
// and the error messages for bad inputs.
#include <doctest/doctest.h>

#include <cmath>

#include "core/gradcheck.h"
#include "core/ops.h"
#include "diffusion/unet.h"
#include "op_test_helpers.h"

using namespace liandan;
using namespace liandan::testing;
using diffusion::UNet;
using diffusion::UNetConfig;

namespace {

// The benchmark's network (bench unet_ddpm): 32/64/128 channels, 2 res blocks per level, GroupNorm(8),
// attention at 7x7 and in the middle.
UNetConfig bench_config() {
  UNetConfig c;
  c.in_channels = 1;
  c.base_channels = 32;
  c.channel_mult = {1, 2, 4};
  c.num_res_blocks = 2;
  c.groups = 8;
  c.image_size = 28;
  c.attention_resolutions = {7};
  return c;
}

// A U-Net small enough for finite differences: 1-channel 8x8 images, channels 4/8, one res block per
// level, GroupNorm(2), attention at 4x4 (level 1) and in the middle, 2 heads.
UNetConfig tiny_config() {
  UNetConfig c;
  c.in_channels = 1;
  c.base_channels = 4;
  c.channel_mult = {1, 2};
  c.num_res_blocks = 1;
  c.groups = 2;
  c.image_size = 8;
  c.attention_resolutions = {4};
  c.attention_heads = 2;
  return c;
}

}  // namespace

TEST_CASE("UNet output shape for 28x28 and 32x32 images, with conv or average-pool downsampling") {
  Generator gen(1);
  for (int64_t size : {28, 32}) {
    for (auto kind : {diffusion::DownsampleKind::conv, diffusion::DownsampleKind::avg_pool}) {
      CAPTURE(size);
      UNetConfig c;
      c.in_channels = 3;
      c.base_channels = 16;
      c.channel_mult = {1, 2, 2};
      c.image_size = size;
      c.attention_resolutions = {size / 4};
      c.downsample = kind;
      UNet net(c, gen);
      CHECK(net.down[2]->attn.size() == 2);  // attention at the lowest level only
      CHECK(net.down[0]->attn.empty());
      Tensor x = randn({2, 3, size, size}, gen);
      Tensor y = net.forward(x, from_vector(std::vector<float>{10.f, 999.f}, {2}));
      CHECK(y.shape() == Shape{2, 3, size, size});
      CHECK(y.dtype() == DType::f32);
      bool finite = true;
      for (double v : y.to_vector()) finite = finite && std::isfinite(v);
      CHECK(finite);
    }
  }
}

TEST_CASE("UNet parameter count of the benchmark network equals the PyTorch twin's") {
  UNet net(bench_config());
  // sum(p.numel() for p in UNet().parameters()) of bench/torch_ops.py's network
  CHECK(net.num_parameters() == 3'939'393);
  // structure: 3 down levels of 2 blocks, 3 up levels of 3 blocks (skip concatenations)
  REQUIRE(net.down.size() == 3);
  REQUIRE(net.up.size() == 3);
  CHECK(net.up[0]->res.size() == 3);
  CHECK(net.up[0]->res[0]->in_ch == 128 + 128);
  CHECK(net.up[2]->res[2]->in_ch == 32 + 32);
  CHECK(net.down[1]->res[0]->skip != nullptr);  // 32 -> 64 needs the 1x1 skip conv
  CHECK(net.down[1]->res[1]->skip == nullptr);
  CHECK(net.down[2]->resample == nullptr);       // no downsampling after the last level
  CHECK(net.up[2]->resample == nullptr);         // nor upsampling after level 0
}

TEST_CASE("timestep_embedding: sin/cos halves with DDPM's frequencies") {
  Tensor t = from_vector(std::vector<double>{0.0, 1.0, 250.5}, {3}, DType::f64);
  Tensor e = diffusion::timestep_embedding(t, 8);
  REQUIRE(e.shape() == Shape{3, 8});
  for (int64_t b = 0; b < 3; ++b)
    for (int64_t i = 0; i < 4; ++i) {
      double w = std::pow(10000.0, -double(i) / 3.0), a = t.at({b}) * w;
      CHECK(e.at({b, i}) == doctest::Approx(std::sin(a)).epsilon(1e-12));
      CHECK(e.at({b, 4 + i}) == doctest::Approx(std::cos(a)).epsilon(1e-12));
    }
  CHECK_THROWS_WITH_AS(diffusion::timestep_embedding(t, 7), doctest::Contains("even"), liandan::Error);
}

TEST_CASE("UNet f64 gradcheck of a tiny network: input and parameters of every layer kind") {
  Generator gen(2);
  UNet net(tiny_config(), gen);
  net.to(DType::f64);
  Tensor x = rnd({2, 1, 8, 8}, gen);
  Tensor t = from_vector(std::vector<double>{3.0, 700.0}, {2}, DType::f64);
  auto f = [&](const std::vector<Tensor>& in) { return net.forward(in[0], t); };
  LD_GRADCHECK(f, {x});
  // The parameters are perturbed in place through their storage, so f reads them from the module.
  std::vector<Tensor> params = {
      net.conv_in->weight,                     // first conv
      net.temb_fc1->bias,                      // time MLP
      net.down[0]->res[0]->temb_proj->weight,  // time projection in a ResBlock
      net.down[0]->res[0]->norm2->weight,      // GroupNorm affine
      net.down[0]->resample->bias,             // stride-2 conv
      net.down[1]->res[0]->skip->bias,         // 1x1 skip conv (4 -> 8 channels)
      net.down[1]->attn[0]->attn->k_proj->bias,    // attention at 4x4 (keys: through the softmax)
      net.mid_attn->attn->o_proj->bias,        // middle attention
      net.up[1]->res[1]->conv2->bias,          // up path after a skip concatenation
      net.up[0]->resample->bias,               // conv after upsampling
      net.norm_out->bias,
      net.conv_out->weight,
  };
  for (size_t k = 0; k < params.size(); ++k) {
    CAPTURE(k);
    std::vector<Tensor> in = {x.detach(), params[k]};
    LD_GRADCHECK([&](const std::vector<Tensor>& v) { return net.forward(v[0], t); }, in);
  }
}

TEST_CASE("UNet: the output depends on the timestep and every layer gets a gradient") {
  Generator gen(3);
  UNet net(tiny_config(), gen);
  Tensor x = randn({2, 1, 8, 8}, gen);
  Tensor y1 = net.forward(x, from_vector(std::vector<float>{1.f, 1.f}, {2}));
  Tensor y2 = net.forward(x, from_vector(std::vector<float>{1.f, 500.f}, {2}));
  CHECK(max_abs_diff(y1.narrow(0, 0, 1), y2.narrow(0, 0, 1)) == 0.0);  // images are independent
  CHECK(max_abs_diff(y1.narrow(0, 1, 1), y2.narrow(0, 1, 1)) > 1e-4);
  mean(square(y2)).backward();
  for (auto& [name, p] : net.named_parameters()) {
    CAPTURE(name);
    REQUIRE(p.grad().defined());
    double s = 0;
    for (double v : p.grad().to_vector()) s += std::fabs(v);
    CHECK(s > 0);
  }
}

TEST_CASE("UNet is deterministic: same seed same network, bit-identical on 1 and 2 threads") {
  UNetConfig c = tiny_config();
  c.base_channels = 16;
  c.groups = 4;
  c.image_size = 16;
  c.attention_resolutions = {8};
  c.dropout = 0.1;
  Generator g1(7), g2(7), gx(8);
  UNet a(c, g1), b(c, g2);
  auto sa = a.state_dict(), sb = b.state_dict();
  REQUIRE(sa.size() == sb.size());
  for (size_t i = 0; i < sa.size(); ++i) CHECK(sa[i].second.to_vector() == sb[i].second.to_vector());
  Tensor x = randn({3, 1, 16, 16}, gx), t = from_vector(std::vector<float>{0.f, 17.f, 999.f}, {3});
  // eval mode: dropout is off, repeated calls agree
  a.eval();
  CHECK(a.forward(x, t).to_vector() == a.forward(x, t).to_vector());
  // train mode with dropout draws fresh masks
  a.train();
  CHECK(a.forward(x, t).to_vector() != a.forward(x, t).to_vector());
  a.eval();
  // On 1 and on 2 threads, one image: liandan's own kernels (conv2d, attention, norms, reductions) split work in
  // ways that depend only on the shapes, but a matmul above OpenBLAS's threading threshold (2^18 multiply-adds) is
  // split by OpenBLAS over the threads, and some of its kernels (Haswell's) round edge tiles differently — so the
  // attention block's projections are kept below it here (64 tokens x 32 -> 96 channels).
  Tensor x1 = x.narrow(0, 0, 1).contiguous(), t1 = t.narrow(0, 2, 1).contiguous();
  auto run = [&](int threads) {
    ThreadsGuard tg(threads);
    a.zero_grad();
    Tensor xl = leaf(x1.clone());
    Tensor y = a.forward(xl, t1);
    mean(square(y)).backward();
    std::vector<std::vector<double>> r = {y.to_vector(), xl.grad().to_vector()};
    for (auto& p : a.parameters()) r.push_back(p.grad().to_vector());
    return r;
  };
  auto r1 = run(1), r2 = run(2);
  REQUIRE(r1.size() == r2.size());
  for (size_t k = 0; k < r1.size(); ++k) {
    CAPTURE(k);
    CHECK(r1[k] == r2[k]);
  }
}

TEST_CASE("UNet errors name the shapes") {
  Generator gen(4);
  UNet net(tiny_config(), gen);
  Tensor t2 = zeros({2});
  CHECK_THROWS_WITH_AS(net.forward(zeros({2, 3, 8, 8}), t2), doctest::Contains("[2, 3, 8, 8]"), liandan::Error);
  CHECK_THROWS_WITH_AS(net.forward(zeros({2, 3, 8, 8}), t2), doctest::Contains("[B, 1, H, W]"), liandan::Error);
  CHECK_THROWS_WITH_AS(net.forward(zeros({2, 8, 8}), t2), doctest::Contains("[2, 8, 8]"), liandan::Error);
  CHECK_THROWS_WITH_AS(net.forward(zeros({2, 1, 7, 8}), t2), doctest::Contains("multiples of 2^(levels - 1) = 2"),
                       liandan::Error);
  CHECK_THROWS_WITH_AS(net.forward(zeros({2, 1, 8, 8}), zeros({3})), doctest::Contains("expected t [2]"),
                       liandan::Error);
  CHECK_THROWS_WITH_AS(net.forward(zeros({2, 1, 8, 8}), zeros({2, 1})), doctest::Contains("[2, 1]"), liandan::Error);
  UNetConfig bad = tiny_config();
  bad.groups = 3;
  CHECK_THROWS_WITH_AS(UNet(bad, gen), doctest::Contains("groups = 3"), liandan::Error);
  bad = tiny_config();
  bad.channel_mult = {};
  CHECK_THROWS_WITH_AS(UNet(bad, gen), doctest::Contains("UNet"), liandan::Error);
}
