// The kernel registry (core/dispatch.h): a slot runs the kernel registered for a device's type, an empty slot is
// an Error naming the op and the device (with or without a GPU), and a second, different registration for one
// device is refused. (That the CUDA kernels of optim/ and losses/ survive the link is checked in test_cuda, on
// the emulated GPU and on a real one.)
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "core/dispatch.h"
#include "core/ops.h"
#include "losses/kernels.h"
#include "op_test_helpers.h"
#include "optim/kernels.h"

using namespace liandan;
using liandan::testing::error_of;

namespace {

LD_DECLARE_KERNEL(scale_sum, double(const std::vector<double>& xs, double scale));
LD_DEFINE_KERNEL(scale_sum);

double scale_sum_cpu(const std::vector<double>& xs, double scale) {
  double s = 0;
  for (double x : xs) s += x * scale;
  return s;
}
double scale_sum_other(const std::vector<double>&, double) { return -1; }

LD_REGISTER_KERNEL(scale_sum, CPU, scale_sum_cpu);

}  // namespace

TEST_CASE("kernel registry: a registered kernel runs with its arguments; the slot knows its name and devices") {
  CHECK(std::string(scale_sum.name()) == "scale_sum");
  CHECK(scale_sum.has(DeviceType::CPU));
  CHECK(!scale_sum.has(DeviceType::CUDA));
  CHECK(scale_sum(Device::cpu(), std::vector<double>{1, 2, 3.5}, 2.0) == 13.0);
}

TEST_CASE("kernel registry: an empty slot is an Error naming the op and the device, before any device is touched") {
  std::string msg = error_of([] { scale_sum(Device::cuda(1), std::vector<double>{1}, 1.0); });
  CHECK(msg == "op 'scale_sum' has no kernel on cuda:1 yet; move its inputs to the CPU with .to(Device::cpu())");
  // A labelled call (ops sharing a slot: kernels::unary for "exp", "softplus", ...) names its label instead.
  CHECK(error_of([] { scale_sum.labelled("exp", " backward", Device::cuda(0), std::vector<double>{1}, 1.0); }) ==
        "op 'exp' has no kernel on cuda:0 yet; move its inputs to the CPU with .to(Device::cpu())");
  CHECK(scale_sum.labelled("scaled", "", Device::cpu(), std::vector<double>{2, 4}, 0.25) == 1.5);
  // The layers' slots run their CPU code directly (the fused passes), so their CPU entries stay empty, and a call
  // for the CPU says so by the op's name.
  CHECK(!optim::adam_step.has(DeviceType::CPU));
  CHECK(error_of([] { optim::adam_step(Device::cpu(), std::vector<optim::AdamTensor>{}); })
            .find("op 'adam_step' has no kernel on cpu") != std::string::npos);
  CHECK(std::string(losses::zlpr_rows.name()) == "zlpr_rows");
}

TEST_CASE("kernel registry: a second, different kernel for one device is refused; the same one again is not") {
  CHECK_NOTHROW(scale_sum.set(DeviceType::CPU, scale_sum_cpu));
  CHECK(error_of([] { scale_sum.set(DeviceType::CPU, scale_sum_other); }) ==
        "kernel 'scale_sum' is registered twice for cpu devices");
  CHECK(scale_sum(Device::cpu(), std::vector<double>{4}, 0.5) == 2.0);
}
