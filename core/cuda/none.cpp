// The CUDA entry points of a build without the CUDA toolkit: no devices, and a reason that says so.
#include "core/device.h"

namespace liandan::cuda_impl {

int device_count(std::string* why_not) {
  if (why_not) *why_not = "this liandan was built without CUDA (no nvcc was found when CMake configured it)";
  return 0;
}

DeviceBackend* backend(int) { return nullptr; }  // never reached: device_backend() checks device_count first

}  // namespace liandan::cuda_impl
