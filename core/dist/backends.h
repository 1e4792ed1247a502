#pragma once
// The backends behind dist::init (internal to core/dist): each lives in its own file, compiled only when
// CMake found its engine (mpi.cpp with MPI, nccl.cpp with CUDA and nccl.h); the *_none.cpp stand-ins
// otherwise answer with an Error that says how to build it.
#include <memory>
#include <string>

#include "core/dist/comm.h"

namespace liandan::dist::detail {

std::shared_ptr<Communicator> make_single(double timeout_s);
// Initializes MPI (once per process) on the communicator's own thread.
std::shared_ptr<Communicator> make_mpi(double timeout_s);
// NCCL for CUDA tensors on cuda:local_rank, bootstrapped over `mpi` (which keeps serving CPU tensors).
std::shared_ptr<Communicator> make_nccl(std::shared_ptr<Communicator> mpi, double timeout_s);
bool mpi_built();
bool nccl_built();

// Elements per MPI call are an int; names the op and the size otherwise.
void check_count(const char* op, int64_t n);
// "all_reduce #12 (4096 f32)"
std::string describe_op(const char* op, uint64_t seq, const Tensor& t);

}  // namespace liandan::dist::detail
