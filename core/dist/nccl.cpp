// The NCCL backend: CUDA tensors reduced by NCCL on a stream of their own; CPU tensors and the bootstrap go to the
// MPI communicator underneath (compiled only when CMake found CUDA, nccl.h and libnccl).
//
// Start-up (the way llm.c and flashlight bootstrap NCCL): rank 0 makes an ncclUniqueId, MPI broadcasts its 128
// bytes, every rank calls ncclCommInitRank on cuda:(local_rank mod GPUs).
// An op: an event recorded on the tensor's compute stream makes the NCCL stream wait for the producer (backward's
// kernels that wrote the gradient), the collective is queued on the NCCL stream, and a second event marks its end.
// wait() makes the compute stream wait for that event — the host does not block, so the optimizer's kernels queue
// behind the reduction and a bucket's all-reduce overlaps the backward kernels queued after it. The tensor is held
// until the event has completed, so the caching allocator cannot hand its memory to another kernel too early.
// Watchdog: a thread polls the pending events; one older than the timeout (or an NCCL asynchronous error) prints
// the op and rank, calls ncclCommAbort (which unblocks the stream) and aborts every rank through MPI.
#include <cuda_runtime.h>
#include <nccl.h>

#include <atomic>
#include <cstdlib>
#include <chrono>
#include <cstring>
#include <list>
#include <mutex>
#include <sstream>
#include <thread>

#include "core/dist/backends.h"
#include "core/ops.h"

namespace liandan::cuda_impl {
cudaStream_t stream_of(const Tensor& t);  // the compute stream of t's device (core/cuda/backend.cu)
}

namespace liandan::dist::detail {

namespace {

using Clock = std::chrono::steady_clock;

#define LD_NCCL_CHECK(expr)                                                                     \
  do {                                                                                          \
    ncclResult_t r_ = (expr);                                                                   \
    LD_CHECK(r_ == ncclSuccess, "dist (nccl): ", #expr, " failed: ", ncclGetErrorString(r_)); \
  } while (0)
#define LD_CUDART_CHECK(expr)                                                                    \
  do {                                                                                           \
    cudaError_t e_ = (expr);                                                                     \
    LD_CHECK(e_ == cudaSuccess, "dist (nccl): ", #expr, " failed: ", cudaGetErrorString(e_)); \
  } while (0)

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::f32: return ncclFloat32;
    case DType::f64: return ncclFloat64;
    case DType::i64: return ncclInt64;
    case DType::bf16: return ncclBfloat16;
    case DType::f16: return ncclFloat16;
  }
  LD_FAIL("dist (nccl): unknown dtype");
}

struct NcclWork : Work::Impl {
  ~NcclWork() override {
    if (done) cudaEventDestroy(done);
  }
  cudaEvent_t done = nullptr;
  cudaStream_t compute = nullptr;
  Clock::time_point submitted;
  double finished_s = 0;
  void wait() override { LD_CUDART_CHECK(cudaStreamWaitEvent(compute, done, 0)); }
  bool completed() override { return cudaEventQuery(done) == cudaSuccess; }
  double seconds() override {
    if (finished_s == 0 && completed()) finished_s = std::chrono::duration<double>(Clock::now() - submitted).count();
    return finished_s;
  }
};

struct Pending {
  std::shared_ptr<NcclWork> work;  // its event outlives both the caller's Work and this entry
  Tensor a, b;                     // held until the event completes
  std::string what;
};

class NcclComm : public Communicator {
 public:
  NcclComm(std::shared_ptr<Communicator> mpi, double timeout_s) : mpi_(std::move(mpi)) {
    backend_ = "nccl";
    timeout_s_ = timeout_s;
    rank_ = mpi_->rank();
    world_ = mpi_->world_size();
    local_rank_ = mpi_->local_rank();
    int n = 0;
    LD_CUDART_CHECK(cudaGetDeviceCount(&n));
    LD_CHECK(n > 0, "dist (nccl): no GPU visible to rank ", rank_);
    device_ = local_rank_ % n;
    LD_CUDART_CHECK(cudaSetDevice(device_));
    ncclUniqueId id;
    std::memset(&id, 0, sizeof id);
    if (rank_ == 0) LD_NCCL_CHECK(ncclGetUniqueId(&id));
    static_assert(sizeof(ncclUniqueId) % sizeof(int64_t) == 0, "ncclUniqueId travels as i64 words");
    Tensor words = zeros({int64_t(sizeof id / sizeof(int64_t))}, DType::i64);
    std::memcpy(words.raw_data(), &id, sizeof id);
    mpi_->broadcast(words, 0).wait();
    std::memcpy(&id, words.raw_data(), sizeof id);
    LD_NCCL_CHECK(ncclCommInitRank(&comm_, world_, id, rank_));
    LD_CUDART_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    watchdog_ = std::thread([this] { watch(); });
  }

  ~NcclComm() override {
    stop_ = true;
    if (watchdog_.joinable()) watchdog_.join();
    cudaStreamSynchronize(stream_);
    {
      std::lock_guard<std::mutex> lock(mu_);
      pending_.clear();
    }
    ncclCommDestroy(comm_);
    cudaStreamDestroy(stream_);
  }

  Work all_reduce(const Tensor& t, ReduceOp op) override {
    if (t.device().is_cpu()) return mpi_->all_reduce(t, op);
    check(t, "all_reduce");
    return launch("all_reduce", t, Tensor(), [&] {
      return ncclAllReduce(t.device_data(), t.device_data(), size_t(t.numel()), nccl_type(t.dtype()),
                           op == ReduceOp::average ? ncclAvg : ncclSum, comm_, stream_);
    });
  }
  Work broadcast(const Tensor& t, int root) override {
    if (t.device().is_cpu()) return mpi_->broadcast(t, root);
    check(t, "broadcast");
    return launch("broadcast", t, Tensor(), [&] {
      return ncclBroadcast(t.device_data(), t.device_data(), size_t(t.numel()), nccl_type(t.dtype()), root, comm_,
                           stream_);
    });
  }
  Work reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op) override {
    if (out.device().is_cpu()) return mpi_->reduce_scatter(out, in, op);
    check(out, "reduce_scatter");
    check(in, "reduce_scatter");
    LD_CHECK(in.numel() == out.numel() * world_, "dist::reduce_scatter (nccl): input of ", in.numel(),
             " elements for an output of ", out.numel(), " in a world of ", world_);
    return launch("reduce_scatter", out, in, [&] {
      return ncclReduceScatter(in.device_data(), out.device_data(), size_t(out.numel()), nccl_type(out.dtype()),
                               op == ReduceOp::average ? ncclAvg : ncclSum, comm_, stream_);
    });
  }
  Work all_gather(const Tensor& out, const Tensor& in) override {
    if (out.device().is_cpu()) return mpi_->all_gather(out, in);
    check(out, "all_gather");
    check(in, "all_gather");
    LD_CHECK(out.numel() == in.numel() * world_, "dist::all_gather (nccl): output of ", out.numel(),
             " elements for an input of ", in.numel(), " in a world of ", world_);
    return launch("all_gather", out, in, [&] {
      return ncclAllGather(in.device_data(), out.device_data(), size_t(in.numel()), nccl_type(in.dtype()), comm_,
                           stream_);
    });
  }
  Work barrier() override {
    LD_CUDART_CHECK(cudaStreamSynchronize(stream_));
    return mpi_->barrier();
  }
  [[noreturn]] void abort(const std::string& why) override {
    ncclCommAbort(comm_);
    mpi_->abort(why);
    std::_Exit(1);  // (not reached)
  }

 private:
  void check(const Tensor& t, const char* op) const {
    LD_CHECK(t.defined() && t.is_contiguous(), "dist::", op, ": expected a defined contiguous tensor");
    LD_CHECK(t.device() == Device::cuda(device_), "dist::", op, " (nccl): tensor on ", t.device().str(), ", rank ",
             rank_, "'s NCCL communicator is on cuda:", device_);
  }

  template <class F>
  Work launch(const char* op, const Tensor& a, const Tensor& b, F&& call) {
    cudaStream_t compute = cuda_impl::stream_of(a);
    cudaEvent_t ready = nullptr, done = nullptr;
    LD_CUDART_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    LD_CUDART_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    LD_CUDART_CHECK(cudaEventRecord(ready, compute));
    LD_CUDART_CHECK(cudaStreamWaitEvent(stream_, ready, 0));
    cudaEventDestroy(ready);  // released once recorded work completes
    ncclResult_t r = call();
    LD_CHECK(r == ncclSuccess, "dist::", op, " (nccl): ", ncclGetErrorString(r));
    LD_CUDART_CHECK(cudaEventRecord(done, stream_));
    auto w = std::make_shared<NcclWork>();
    w->done = done;
    w->compute = compute;
    w->submitted = Clock::now();
    {
      std::lock_guard<std::mutex> lock(mu_);
      pending_.push_back({w, a, b, describe_op(op, ++seq_, a)});
    }
    return Work(w);
  }

  // Retires completed ops (drops their tensors) and aborts on a stuck one.
  void watch() {
    while (!stop_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      std::lock_guard<std::mutex> lock(mu_);
      for (auto it = pending_.begin(); it != pending_.end();) {
        if (cudaEventQuery(it->work->done) == cudaSuccess) {
          it = pending_.erase(it);
          continue;
        }
        double waited = std::chrono::duration<double>(Clock::now() - it->work->submitted).count();
        ncclResult_t async = ncclSuccess;
        ncclCommGetAsyncError(comm_, &async);
        if (waited > timeout_s_ || async != ncclSuccess) {
          std::ostringstream os;
          os << it->what << " (nccl, cuda:" << device_ << ") ";
          if (async != ncclSuccess) os << "failed: " << ncclGetErrorString(async);
          else os << "did not complete within " << timeout_s_ << " s: a peer rank died, hangs, or took another code path";
          abort(os.str());
        }
        ++it;
      }
    }
  }

  std::shared_ptr<Communicator> mpi_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  int device_ = 0;
  std::mutex mu_;
  std::list<Pending> pending_;
  uint64_t seq_ = 0;
  std::atomic<bool> stop_{false};
  std::thread watchdog_;
};

}  // namespace

std::shared_ptr<Communicator> make_nccl(std::shared_ptr<Communicator> mpi, double timeout_s) {
  return std::make_shared<NcclComm>(std::move(mpi), timeout_s);
}
bool nccl_built() { return true; }

}  // namespace liandan::dist::detail
