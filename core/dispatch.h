#pragma once
// The kernel registry: an op's device kernels live in slots that the files implementing them fill, instead of
// in one central table (DeviceBackend) that every op and every layer above the core must extend. A slot is
// declared beside the op's CPU code, defined once in that layer, and filled per DeviceType by a static
// registration in the device's kernel file (optim/adam.cu fills optim::adam_step for CUDA):
//
//   // optim/kernels.h                        // optim/adam.cpp                 // optim/adam.cu
//   LD_DECLARE_KERNEL(adam_step,              LD_DEFINE_KERNEL(adam_step);      LD_KERNEL_FILE(optim_adam);
//       void(const std::vector<AdamTensor>&));                                 LD_REGISTER_KERNEL(adam_step, CUDA,
//                                                                                                 adam_step_cuda);
//   adam_step(device, list);   // calls the device's kernel, or an Error naming the op and the device
//
// So a layer's device kernels sit next to its CPU code, and core/ never includes from the layers above it.
// This header is included by .cu files too: it stays C++17 (nvcc compiles the kernels as C++17).
//
// Linking: a registration is a static constructor, and the linker takes an object file out of a static
// library only when something refers to one of its symbols — nothing refers to a file that only registers.
// LD_KERNEL_FILE(layer_stem) defines the symbol liandan_kernels_<layer>_<stem>, and CMakeLists.txt links the
// layer's library with -Wl,-u,<that symbol> for each of its .cu files, so every registering object is kept
// (the emulated GPU's test binaries link the objects directly). A kernel that did not get registered is still
// an Error at its first call, never a crash, and the device tests call every slot.
#include <cstddef>
#include <utility>

#include "core/device.h"
#include "core/error.h"

namespace liandan {

inline constexpr int kDeviceTypes = 2;  // DeviceType::CPU, DeviceType::CUDA

// Brackets one registered kernel's call on a non-CPU device through its backend (DeviceBackend::op_begin):
// the device becomes current and, while the profiler runs, the call is timed under the op's name.
class KernelScope {
 public:
  KernelScope(Device d, const char* op, const char* suffix = "")
      : backend_(device_backend(d)), token_(backend_.op_begin(op, suffix)) {}
  ~KernelScope() { backend_.op_end(token_); }
  KernelScope(const KernelScope&) = delete;
  KernelScope& operator=(const KernelScope&) = delete;

 private:
  DeviceBackend& backend_;
  void* token_;
};

template <class Signature>
class KernelSlot;

// One op's kernels, one function pointer per DeviceType. constexpr-constructible, so a slot defined with
// LD_DEFINE_KERNEL is constant-initialized: registrations running in other files' static constructors find it
// ready whatever the order in which the linker placed those files.
template <class R, class... Args>
class KernelSlot<R(Args...)> {
 public:
  using Fn = R (*)(Args...);
  constexpr explicit KernelSlot(const char* name) : name_(name) {}
  KernelSlot(const KernelSlot&) = delete;
  KernelSlot& operator=(const KernelSlot&) = delete;

  const char* name() const { return name_; }
  bool has(DeviceType t) const { return fns_[size_t(t)] != nullptr; }

  // Called by LD_REGISTER_KERNEL. Two registrations for one device are a build mistake (two files define the
  // kernel): refused rather than one silently winning by link order.
  void set(DeviceType t, Fn fn) {
    LD_CHECK(fns_[size_t(t)] == nullptr || fns_[size_t(t)] == fn, "kernel '", name_, "' is registered twice for ",
             Device{t, 0}.str(), " devices");
    fns_[size_t(t)] = fn;
  }

  // Runs d's kernel: on the CPU directly, elsewhere inside a KernelScope. An empty slot is the Error
  // no_device_kernel gives ("op 'adam_step' has no kernel on cuda:0 yet; ..."), checked before the device is
  // touched, so it is the same with or without a GPU.
  template <class... A>
  R operator()(Device d, A&&... args) const {
    return labelled(name_, "", d, std::forward<A>(args)...);
  }
  // The same, profiled (and named in the error) as `label` + `suffix` instead of the slot's name: the ops that
  // share one slot ("exp" and "softplus backward" in kernels::unary / unary_backward) stay apart in a GPU profile.
  template <class... A>
  R labelled(const char* label, const char* suffix, Device d, A&&... args) const {
    Fn fn = fns_[size_t(d.type)];
    if (!fn) no_device_kernel(label, d);
    if (d.is_cpu()) return fn(std::forward<A>(args)...);
    KernelScope scope(d, label, suffix);
    return fn(std::forward<A>(args)...);
  }

 private:
  const char* name_;
  Fn fns_[kDeviceTypes] = {};
};

}  // namespace liandan

#define LD_DISPATCH_CONCAT_(a, b) a##b
#define LD_DISPATCH_CONCAT(a, b) LD_DISPATCH_CONCAT_(a, b)

// In a header of the op's layer: `LD_DECLARE_KERNEL(name, R(Args...))` declares the slot `name`.
#define LD_DECLARE_KERNEL(name, ...) extern ::liandan::KernelSlot<__VA_ARGS__> name

// In one .cpp of that layer, in the same namespace: the slot's definition; its name is the op's name in errors
// and in the GPU profile. (constinit checks the constant initialization the registrations rely on.)
#define LD_DEFINE_KERNEL(name) constinit decltype(name) name{#name}

// In a device's kernel file: fills slot `name` for DeviceType::TYPE (CPU or CUDA) with the function `fn`.
#define LD_REGISTER_KERNEL(name, TYPE, fn)                                               \
  [[maybe_unused]] static const bool LD_DISPATCH_CONCAT(ld_kernel_registered_, __LINE__) = \
      ((name).set(::liandan::DeviceType::TYPE, (fn)), true)

// Once in each registering .cu outside core/cuda/, at namespace scope: the anchor symbol that keeps the file
// in a link (see above); CMakeLists.txt reads `id` from the file (by convention <layer>_<file stem>, e.g.
// optim_adam for optim/adam.cu).
#define LD_KERNEL_FILE(id) extern "C" char liandan_kernels_##id; char liandan_kernels_##id = 0
