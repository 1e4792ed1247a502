#pragma once
// Collective communication between the processes of a data-parallel run, on proven engines: Open MPI for CPU
// tensors (non-blocking MPI_Iallreduce & co. driven by one communication thread per process), NCCL for CUDA
// tensors (its unique id broadcast over MPI), and a single-process backend (world size 1) so every code path
// runs without mpirun.
//
//   auto comm = dist::init_from_env();           // rank / world from mpirun (or torchrun-style variables)
//   dist::Work w = comm->all_reduce(grads, dist::ReduceOp::average);
//   ...                                          // overlap: compute while the reduction runs
//   w.wait();
//
// Every op is collective: all ranks call the same ops in the same order (ops run in submission order). A
// tensor handed to an op must not be read or written until its Work is waited for.
//
// Faults. A collective that has not completed after `timeout_s` (a peer died, hangs, or took another code
// path) prints a message naming this rank, the op and how long it waited — rank 0 also names the ranks that
// stopped answering — and calls MPI_Abort, so every rank exits non-zero in bounded time instead of hanging.
// run_guarded() turns an exception on one rank into the same abort, with the exception's message.
// check_same_config() refuses ranks started with different configs or code versions.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/tensor.h"

namespace liandan::dist {

enum class ReduceOp { sum, average };

// A collective in flight. A default-constructed Work is complete.
class Work {
 public:
  struct Impl {
    virtual ~Impl() = default;
    virtual void wait() = 0;       // blocks; rethrows the op's error as a liandan::Error
    virtual bool completed() = 0;  // non-blocking
    virtual double seconds() = 0;  // submission to completion (0 until complete)
  };
  Work() = default;
  explicit Work(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  // Returns once the op's result is in its tensors (NCCL: once the compute stream is ordered after it).
  void wait() const {
    if (impl_) impl_->wait();
  }
  bool completed() const { return !impl_ || impl_->completed(); }
  double seconds() const { return impl_ ? impl_->seconds() : 0.0; }

 private:
  std::shared_ptr<Impl> impl_;
};

// Where this process sits, from the launcher's environment.
struct Environment {
  int rank = 0, world_size = 1, local_rank = 0;
  std::string launcher = "none";  // "mpirun" (OMPI_COMM_WORLD_*), "torchrun" (RANK/WORLD_SIZE), "none"
};
// OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK, else RANK / WORLD_SIZE / LOCAL_RANK, else a single process.
// When both sets are present they must agree (an Error naming the variables otherwise).
Environment environment();

class Communicator {
 public:
  virtual ~Communicator() = default;
  int rank() const { return rank_; }
  int world_size() const { return world_; }
  int local_rank() const { return local_rank_; }  // picks the GPU (cuda:local_rank) on a multi-GPU node
  const std::string& backend() const { return backend_; }  // "single", "mpi", "nccl"
  double timeout_s() const { return timeout_s_; }

  // In place over a contiguous tensor (f32, f64, i64; bf16/f16 on NCCL). average: the sum divided by the
  // world size (floating dtypes only).
  virtual Work all_reduce(const Tensor& t, ReduceOp op = ReduceOp::sum) = 0;
  // Rank `root`'s values into t on every rank.
  virtual Work broadcast(const Tensor& t, int root = 0) = 0;
  // in: world·n elements (rank r's block is [r·n, (r+1)·n)); out: n elements, rank r gets the reduction of
  // every rank's block r.
  virtual Work reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op = ReduceOp::sum) = 0;
  // in: n elements; out: world·n elements, rank r's in at [r·n, (r+1)·n).
  virtual Work all_gather(const Tensor& out, const Tensor& in) = 0;
  virtual Work barrier() = 0;
  // Prints `why` with this rank and makes every rank of the run exit non-zero (MPI_Abort). Never returns.
  [[noreturn]] virtual void abort(const std::string& why) = 0;

 protected:
  int rank_ = 0, world_ = 1, local_rank_ = 0;
  std::string backend_ = "single";
  double timeout_s_ = 300;
};

struct InitOptions {
  // "auto": "mpi" when the launcher started several processes (and "nccl" on top of it with device = cuda),
  // else "single". "single" | "mpi" | "nccl" force one ("mpi"/"nccl" under a world of 1 work too).
  std::string backend = "auto";
  // The watchdog's limit for one collective; 0 takes LIANDAN_DIST_TIMEOUT (seconds) or 300.
  double timeout_s = 0;
  // Text that must be identical on every rank (e.g. the resolved config): hashed with the code version and
  // compared at start-up (check_same_config). Empty: only the code version is compared.
  std::string config;
};

// The process's communicator. MPI can be initialized once per process, so the first call creates it and
// later calls return the same one (their options must agree); it is finalized when the last reference goes.
std::shared_ptr<Communicator> init(const InitOptions& opt = {});
inline std::shared_ptr<Communicator> init_from_env(const InitOptions& opt = {}) { return init(opt); }
// A world-1 communicator that never touches MPI (references and tests; independent of init()'s).
std::shared_ptr<Communicator> single_process();

// Whether this build has the MPI / NCCL backends.
bool mpi_available();
bool nccl_available();

// The code version every rank must share: the project version and the git commit the build was configured at.
std::string code_version();
// 64-bit FNV-1a of `text` (stable across machines and builds).
uint64_t fnv1a(const std::string& text);
// Gathers hash(code_version() + config) from every rank; a mismatch is an Error on every rank listing each
// rank's hash, the first rank that differs from rank 0 and `what` (e.g. "config runs/x/config.toml").
void check_same_config(Communicator& comm, const std::string& config, const std::string& what = "config");

// Runs fn; an exception on this rank is printed with the rank and, when the world is larger than 1, aborts
// every rank (the others would otherwise wait in their next collective until the timeout). Returns fn's value.
int run_guarded(Communicator& comm, const std::function<int()>& fn);

}  // namespace liandan::dist
