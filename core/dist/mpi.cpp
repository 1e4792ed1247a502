// The MPI backend (Open MPI): CPU tensors, non-blocking collectives.
//
// One communication thread per process owns MPI: it calls MPI_Init_thread (so MPI_THREAD_FUNNELED is all the
// library needs), posts each submitted op as a non-blocking collective (MPI_Iallreduce, MPI_Ibcast,
// MPI_Ireduce_scatter_block, MPI_Iallgather, MPI_Ibarrier) in submission order, and drives them with MPI_Test.
// Why a thread: Open MPI progresses a non-blocking collective only inside MPI calls, so without one a bucket's
// all-reduce would advance only when the training thread happened to call MPI; with it the reduction runs while
// backward computes. It polls with a short sleep between tests (microseconds while ops are in flight, a
// condition variable when idle), so on an oversubscribed machine it leaves the cores to the compute threads.
//
// The same thread is the watchdog: an op in flight longer than the timeout is reported (op, sequence number,
// seconds) and MPI_Abort makes every rank exit. Every rank sends rank 0 a small heartbeat (its number of
// submitted ops) twice a second on a duplicated communicator, so rank 0's report names the ranks that stopped
// answering (no heartbeat: dead or stopped) or that are behind (alive but not at this op: hung in compute or on
// another code path). The other ranks give rank 0 a few seconds to report first.
#include <mpi.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <future>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "core/dist/backends.h"
#include "core/ops.h"

namespace liandan::dist::detail {

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

enum class Kind { all_reduce, broadcast, reduce_scatter, all_gather, barrier };
const char* kind_name(Kind k) {
  switch (k) {
    case Kind::all_reduce: return "all_reduce";
    case Kind::broadcast: return "broadcast";
    case Kind::reduce_scatter: return "reduce_scatter";
    case Kind::all_gather: return "all_gather";
    case Kind::barrier: return "barrier";
  }
  return "?";
}

MPI_Datatype mpi_type(DType t, const char* op) {
  switch (t) {
    case DType::f32: return MPI_FLOAT;
    case DType::f64: return MPI_DOUBLE;
    case DType::i64: return MPI_INT64_T;
    default: LD_FAIL("dist::", op, " (mpi): dtype ", dtype_name(t), " is not supported on the MPI backend (f32, f64, i64)");
  }
}

struct Op : Work::Impl {
  Kind kind;
  Tensor a, b;  // the buffer (all_reduce, broadcast) or out (a) and in (b)
  ReduceOp rop = ReduceOp::sum;
  int root = 0;
  uint64_t seq = 0;
  double timeout_s = 300;
  MPI_Request req = MPI_REQUEST_NULL;
  Clock::time_point submitted, finished;

  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::string error;
  std::shared_ptr<std::atomic<int>> waiters;  // the communicator's count of threads blocked in wait()

  std::string describe() const { return describe_op(kind_name(kind), seq, a); }
  void complete(std::string err) {
    {
      std::lock_guard<std::mutex> lock(mu);
      error = std::move(err);
      finished = Clock::now();
      done = true;
    }
    cv.notify_all();
  }
  void wait() override {
    ++*waiters;  // while someone waits, the communication thread polls without sleeping
    struct Leave {
      std::atomic<int>& n;
      ~Leave() { --n; }
    } leave{*waiters};
    std::unique_lock<std::mutex> lock(mu);
    // The communication thread aborts the run on a timeout; this backstop only fires if that thread itself is
    // stuck (e.g. inside a broken MPI library).
    if (!cv.wait_for(lock, std::chrono::duration<double>(timeout_s + 60), [&] { return done; })) {
      std::fprintf(stderr, "liandan dist: %s: the communication thread did not finish or abort it in %.0f s; exiting\n",
                   describe().c_str(), timeout_s + 60);
      std::fflush(stderr);
      std::_Exit(1);
    }
    LD_CHECK(error.empty(), "dist::", kind_name(kind), " (mpi): ", error);
  }
  bool completed() override {
    std::lock_guard<std::mutex> lock(mu);
    return done;
  }
  double seconds() override {
    std::lock_guard<std::mutex> lock(mu);
    return done ? std::chrono::duration<double>(finished - submitted).count() : 0.0;
  }
};

// The average: sum / world. For a power-of-two world the product with the reciprocal is the same number (exact)
// and several times faster than a division.
template <class T>
void divide(const Tensor& t, int world) {
  T* p = t.data_ptr<T>();
  const int64_t n = t.numel();
  if ((world & (world - 1)) == 0) {
    const T inv = T(1) / T(world);
    for (int64_t i = 0; i < n; ++i) p[i] *= inv;
  } else {
    const T w = T(world);
    for (int64_t i = 0; i < n; ++i) p[i] /= w;
  }
}

constexpr int kHeartbeatTag = 7;
constexpr double kHeartbeatEvery = 0.5;  // seconds

class MpiComm : public Communicator {
 public:
  explicit MpiComm(double timeout_s) {
    backend_ = "mpi";
    timeout_s_ = timeout_s;
    std::promise<std::string> ready;
    auto started = ready.get_future();
    thread_ = std::thread([this, &ready] { main(ready); });
    std::string err = started.get();
    if (!err.empty()) {
      thread_.join();
      LD_FAIL("dist (mpi): ", err);
    }
  }

  ~MpiComm() override {
    if (std::uncaught_exceptions() > 0 && world_ > 1)
      abort("the communicator was destroyed while an exception was propagating (an error on this rank)");
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  Work all_reduce(const Tensor& t, ReduceOp op) override {
    check(t, "all_reduce");
    if (op == ReduceOp::average) LD_CHECK(t.dtype() != DType::i64, "dist::all_reduce: average of an i64 tensor");
    return submit(Kind::all_reduce, t, Tensor(), op, 0);
  }
  Work broadcast(const Tensor& t, int root) override {
    check(t, "broadcast");
    LD_CHECK(root >= 0 && root < world_, "dist::broadcast: root ", root, " out of range for a world of ", world_);
    return submit(Kind::broadcast, t, Tensor(), ReduceOp::sum, root);
  }
  Work reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op) override {
    check(out, "reduce_scatter");
    check(in, "reduce_scatter");
    LD_CHECK(in.numel() == out.numel() * world_ && in.dtype() == out.dtype(), "dist::reduce_scatter: input of ",
             in.numel(), " ", dtype_name(in.dtype()), " for an output of ", out.numel(), " ", dtype_name(out.dtype()),
             " in a world of ", world_, " (the input must be world x output, one dtype)");
    if (op == ReduceOp::average) LD_CHECK(out.dtype() != DType::i64, "dist::reduce_scatter: average of an i64 tensor");
    return submit(Kind::reduce_scatter, out, in, op, 0);
  }
  Work all_gather(const Tensor& out, const Tensor& in) override {
    check(out, "all_gather");
    check(in, "all_gather");
    LD_CHECK(out.numel() == in.numel() * world_ && in.dtype() == out.dtype(), "dist::all_gather: output of ",
             out.numel(), " ", dtype_name(out.dtype()), " for an input of ", in.numel(), " ", dtype_name(in.dtype()),
             " in a world of ", world_, " (the output must be world x input, one dtype)");
    return submit(Kind::all_gather, out, in, ReduceOp::sum, 0);
  }
  Work barrier() override { return submit(Kind::barrier, Tensor(), Tensor(), ReduceOp::sum, 0); }

  [[noreturn]] void abort(const std::string& why) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (abort_why_.empty()) abort_why_ = why;
    }
    cv_.notify_all();
    // The communication thread calls MPI_Abort, which ends this process; if it cannot, exit anyway.
    std::this_thread::sleep_for(std::chrono::seconds(20));
    std::_Exit(1);
  }

 private:
  void check(const Tensor& t, const char* op) const {
    LD_CHECK(t.defined() && t.is_contiguous(), "dist::", op, ": expected a defined contiguous tensor");
    LD_CHECK(t.device().is_cpu(), "dist::", op, ": tensor on ", t.device().str(),
             "; the MPI backend reduces CPU tensors (use the nccl backend for CUDA tensors)");
    mpi_type(t.dtype(), op);
    check_count(op, t.numel());
  }

  Work submit(Kind kind, const Tensor& a, const Tensor& b, ReduceOp rop, int root) {
    auto op = std::make_shared<Op>();
    op->kind = kind;
    op->a = a;
    op->b = b;
    op->rop = rop;
    op->root = root;
    op->timeout_s = timeout_s_;
    op->waiters = waiters_;
    op->submitted = Clock::now();
    {
      std::lock_guard<std::mutex> lock(mu_);
      op->seq = ++submitted_;
      queue_.push_back(op);
    }
    cv_.notify_all();
    return Work(op);
  }

  // ---- the communication thread
  void main(std::promise<std::string>& ready) {
    int inited = 0;
    MPI_Initialized(&inited);
    int provided = 0;
    if (!inited && MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
      ready.set_value("MPI_Init_thread failed");
      return;
    }
    MPI_Comm_dup(MPI_COMM_WORLD, &comm_);
    MPI_Comm_dup(MPI_COMM_WORLD, &ctl_);
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &world_);
    MPI_Comm local;
    MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local);
    MPI_Comm_rank(local, &local_rank_);
    MPI_Comm_free(&local);
    last_beat_.assign(size_t(world_), Clock::now());
    beat_seq_.assign(size_t(world_), 0);
    ready.set_value("");
    loop();
    if (beat_req_ != MPI_REQUEST_NULL) MPI_Wait(&beat_req_, MPI_STATUS_IGNORE);
    MPI_Comm_free(&ctl_);
    MPI_Comm_free(&comm_);
    MPI_Finalize();
  }

  void loop() {
    std::vector<std::shared_ptr<Op>> active;
    int idle_polls = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        if (active.empty() && queue_.empty() && !stop_ && abort_why_.empty())
          cv_.wait_for(lock, std::chrono::duration<double>(kHeartbeatEvery));
        if (!abort_why_.empty()) do_abort(abort_why_);
        while (!queue_.empty()) {
          auto op = std::move(queue_.front());
          queue_.pop_front();
          lock.unlock();
          start(*op);
          if (op->req == MPI_REQUEST_NULL) finish(*op, "");  // failed to post: reported in finish
          else active.push_back(std::move(op));
          lock.lock();
        }
        if (active.empty() && stop_) return;
      }
      bool progressed = false;
      for (size_t i = 0; i < active.size();) {
        int flag = 0;
        int rc = MPI_Test(&active[i]->req, &flag, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS || flag) {
          finish(*active[i], rc == MPI_SUCCESS ? "" : error_string(rc));
          active.erase(active.begin() + std::ptrdiff_t(i));
          progressed = true;
        } else {
          ++i;
        }
      }
      heartbeat();
      if (!active.empty()) watchdog(*active.front());
      // Polling: every MPI_Test advances a collective by a step (a ring all-reduce takes many), so the rate of
      // tests is the rate of progress. While the training thread waits in wait() its core is free: poll flat out
      // (25 MiB all-reduced in 12 ms on 2 ranks here, not 100 ms with sleeps). While it computes (backward), poll
      // after short sleeps, leaving it the core.
      idle_polls = progressed ? 0 : idle_polls + 1;
      if (!active.empty()) {
        if (waiters_->load() > 0 || idle_polls < 16) sched_yield();
        else std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
  }

  void start(Op& op) {
    int rc = MPI_SUCCESS;
    int n = op.a.defined() ? int(op.a.numel()) : 0;
    switch (op.kind) {
      case Kind::all_reduce:
        rc = MPI_Iallreduce(MPI_IN_PLACE, op.a.raw_data(), n, mpi_type(op.a.dtype(), "all_reduce"), MPI_SUM, comm_,
                            &op.req);
        break;
      case Kind::broadcast:
        rc = MPI_Ibcast(op.a.raw_data(), n, mpi_type(op.a.dtype(), "broadcast"), op.root, comm_, &op.req);
        break;
      case Kind::reduce_scatter:
        rc = MPI_Ireduce_scatter_block(op.b.raw_data(), op.a.raw_data(), n, mpi_type(op.a.dtype(), "reduce_scatter"),
                                       MPI_SUM, comm_, &op.req);
        break;
      case Kind::all_gather: {
        int m = int(op.b.numel());
        MPI_Datatype t = mpi_type(op.a.dtype(), "all_gather");
        rc = MPI_Iallgather(op.b.raw_data(), m, t, op.a.raw_data(), m, t, comm_, &op.req);
        break;
      }
      case Kind::barrier: rc = MPI_Ibarrier(comm_, &op.req); break;
    }
    if (rc != MPI_SUCCESS) {
      op.req = MPI_REQUEST_NULL;
      op.error = error_string(rc);
    }
  }

  void finish(Op& op, std::string err) {
    if (err.empty()) err = op.error;
    if (err.empty() && op.rop == ReduceOp::average &&
        (op.kind == Kind::all_reduce || op.kind == Kind::reduce_scatter)) {
      if (op.a.dtype() == DType::f32) divide<float>(op.a, world_);
      else divide<double>(op.a, world_);
    }
    if (op.a.defined()) op.a.bump_version();
    op.a = Tensor();  // the op no longer holds the buffers
    op.b = Tensor();
    op.complete(err);
  }

  static std::string error_string(int rc) {
    char buf[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, buf, &len);
    return std::string(buf, size_t(len));
  }

  // ---- faults
  void heartbeat() {
    if (world_ == 1) return;
    if (rank_ != 0) {
      if (since(beat_sent_) < kHeartbeatEvery) return;
      int flag = 1;
      if (beat_req_ != MPI_REQUEST_NULL) MPI_Test(&beat_req_, &flag, MPI_STATUS_IGNORE);
      if (!flag) return;
      {
        std::lock_guard<std::mutex> lock(mu_);
        beat_out_ = int64_t(submitted_);
      }
      MPI_Isend(&beat_out_, 1, MPI_INT64_T, 0, kHeartbeatTag, ctl_, &beat_req_);
      beat_sent_ = Clock::now();
      return;
    }
    for (;;) {
      int flag = 0;
      MPI_Status st;
      MPI_Iprobe(MPI_ANY_SOURCE, kHeartbeatTag, ctl_, &flag, &st);
      if (!flag) return;
      int64_t seq = 0;
      MPI_Recv(&seq, 1, MPI_INT64_T, st.MPI_SOURCE, kHeartbeatTag, ctl_, MPI_STATUS_IGNORE);
      last_beat_[size_t(st.MPI_SOURCE)] = Clock::now();
      beat_seq_[size_t(st.MPI_SOURCE)] = seq;
    }
  }

  void watchdog(const Op& op) {
    double waited = since(op.submitted);
    // Rank 0 can name the culprits; the others leave it a few seconds to do so.
    double limit = rank_ == 0 ? timeout_s_ : timeout_s_ + 3;
    if (waited < limit) return;
    std::ostringstream os;
    os << op.describe() << " did not complete within " << timeout_s_ << " s (waited " << waited
       << " s): a peer rank died, hangs, or took another code path";
    if (rank_ == 0) {
      for (int r = 1; r < world_; ++r) {
        double quiet = since(last_beat_[size_t(r)]);
        if (quiet > 4 * kHeartbeatEvery + 1)
          os << "; rank " << r << " sent no heartbeat for " << quiet << " s (dead or stopped)";
        else if (beat_seq_[size_t(r)] < int64_t(op.seq))
          os << "; rank " << r << " is alive but has submitted only " << beat_seq_[size_t(r)]
             << " collectives, not this #" << op.seq << " (hung in its own work or on another code path)";
      }
    }
    do_abort(os.str());
  }

  [[noreturn]] void do_abort(const std::string& why) {
    std::fprintf(stderr, "liandan dist: rank %d of %d: %s; aborting every rank (MPI_Abort)\n", rank_, world_,
                 why.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::_Exit(1);
  }

  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Op>> queue_;
  uint64_t submitted_ = 0;
  bool stop_ = false;
  std::shared_ptr<std::atomic<int>> waiters_ = std::make_shared<std::atomic<int>>(0);
  std::string abort_why_;

  // the communication thread's own
  MPI_Comm comm_ = MPI_COMM_NULL, ctl_ = MPI_COMM_NULL;
  MPI_Request beat_req_ = MPI_REQUEST_NULL;
  int64_t beat_out_ = 0;
  Clock::time_point beat_sent_{};
  std::vector<Clock::time_point> last_beat_;
  std::vector<int64_t> beat_seq_;
};

}  // namespace

std::shared_ptr<Communicator> make_mpi(double timeout_s) { return std::make_shared<MpiComm>(timeout_s); }
bool mpi_built() { return true; }

}  // namespace liandan::dist::detail
