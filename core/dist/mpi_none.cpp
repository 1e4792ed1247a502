// Built without MPI (CMake did not find it): the single-process backend still works; asking for MPI says how
// to get it.
#include "core/dist/backends.h"

namespace liandan::dist::detail {

std::shared_ptr<Communicator> make_mpi(double) {
  LD_FAIL("dist: liandan was built without MPI (CMake's FindMPI found none): install Open MPI (Debian "
          "openmpi-bin, libopenmpi-dev; scripts/install-deps) and configure again");
}
bool mpi_built() { return false; }

}  // namespace liandan::dist::detail
