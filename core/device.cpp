#include "core/device.h"

#include <atomic>
#include <cstdio>

#include "core/error.h"

namespace liandan {

DeviceBackend& device_backend(Device d) {
  LD_CHECK(!d.is_cpu(), "device_backend: the CPU has no backend table (ops run its kernels directly)");
  int n = cuda_impl::device_count(nullptr);  // every device allocation passes here: no string unless it fails
  if (n == 0) {
    std::string why;
    cuda_impl::device_count(&why);
    LD_FAIL("device ", d.str(), " is not available: ", why);
  }
  LD_CHECK(d.index >= 0 && d.index < n, "device ", d.str(), " does not exist: this machine has ", n,
           " CUDA device", n == 1 ? "" : "s");
  return *cuda_impl::backend(d.index);
}

void no_device_kernel(const char* op, Device d) {
  LD_FAIL("op '", op, "' has no kernel on ", d.str(), " yet; move its inputs to the CPU with .to(Device::cpu())");
}

namespace cuda {
namespace {
std::atomic<bool> g_tf32{false};
}
bool is_available() { return device_count() > 0; }
int device_count() { return cuda_impl::device_count(nullptr); }
std::string unavailable_reason() {
  std::string why;
  return cuda_impl::device_count(&why) > 0 ? "" : why;
}
void synchronize(int device) { device_backend(Device::cuda(device)).synchronize(); }
AllocatorStats memory_stats(int device) { return device_backend(Device::cuda(device)).allocator().stats(); }
void reset_peak_memory_stats(int device) { device_backend(Device::cuda(device)).allocator().reset_peak(); }
void empty_cache(int device) { device_backend(Device::cuda(device)).allocator().empty_cache(); }
EventTimer::EventTimer(int device) : backend_(&device_backend(Device::cuda(device))) {
  start_ = backend_->event_create();
  stop_ = backend_->event_create();
}
EventTimer::~EventTimer() {
  backend_->event_destroy(start_);
  backend_->event_destroy(stop_);
}
void EventTimer::start() {
  backend_->event_record(start_);
  started_ = true;
  stopped_ = false;
}
void EventTimer::stop() {
  LD_CHECK(started_, "cuda::EventTimer: stop() before start()");
  backend_->event_record(stop_);
  stopped_ = true;
}
double EventTimer::elapsed_ms() {
  LD_CHECK(stopped_, "cuda::EventTimer: elapsed_ms() before start() and stop()");
  return backend_->event_elapsed_ms(start_, stop_);
}
void profile_start(int device) { device_backend(Device::cuda(device)).profile_start(); }
std::string check_tensor_core_layouts(int device) {
  return device_backend(Device::cuda(device)).check_tensor_core_layouts();
}
std::vector<OpTime> profile_stop(int device) { return device_backend(Device::cuda(device)).profile_stop(); }
std::string profile_table(const std::vector<OpTime>& profile) {
  double total = 0;
  for (const OpTime& t : profile) total += t.ms;
  std::string out;
  char line[160];
  std::snprintf(line, sizeof line, "%-28s %8s %10s %7s\n", "op", "calls", "gpu ms", "share");
  out += line;
  for (const OpTime& t : profile) {
    std::snprintf(line, sizeof line, "%-28s %8lld %10.3f %6.1f%%\n", t.op.c_str(), static_cast<long long>(t.calls), t.ms,
                  total > 0 ? 100 * t.ms / total : 0.0);
    out += line;
  }
  std::snprintf(line, sizeof line, "%-28s %8s %10.3f\n", "total", "", total);
  return out + line;
}
void set_allow_tf32(bool on) { g_tf32 = on; }
bool allow_tf32() { return g_tf32; }
}  // namespace cuda

}  // namespace liandan
