// Built without NCCL (no CUDA toolkit or no nccl.h): CUDA tensors cannot be reduced across processes.
#include "core/dist/backends.h"

namespace liandan::dist::detail {

std::shared_ptr<Communicator> make_nccl(std::shared_ptr<Communicator>, double) {
  LD_FAIL("dist: liandan was built without NCCL (it needs the CUDA toolkit with nccl.h and libnccl, found by "
          "CMake like CUDA); use backend 'mpi' with CPU tensors");
}
bool nccl_built() { return false; }

}  // namespace liandan::dist::detail
