#include "core/dist/comm.h"

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <sstream>

#include "core/autograd.h"
#include "core/dist/backends.h"
#include "core/ops.h"

#ifndef LIANDAN_CODE_VERSION
#define LIANDAN_CODE_VERSION "unknown"
#endif

namespace liandan::dist {

namespace {

bool get_int(const char* name, int* out) {
  const char* s = std::getenv(name);
  if (!s || !*s) return false;
  char* end = nullptr;
  long v = std::strtol(s, &end, 10);
  LD_CHECK(end && *end == 0 && v >= 0 && v < INT_MAX, "dist: environment variable ", name, "='", s,
           "' is not a non-negative integer");
  *out = int(v);
  return true;
}

}  // namespace

Environment environment() {
  Environment mpi, torch;
  bool has_mpi = get_int("OMPI_COMM_WORLD_RANK", &mpi.rank) && get_int("OMPI_COMM_WORLD_SIZE", &mpi.world_size);
  if (has_mpi) {
    mpi.launcher = "mpirun";
    if (!get_int("OMPI_COMM_WORLD_LOCAL_RANK", &mpi.local_rank)) mpi.local_rank = mpi.rank;
  }
  bool has_torch = get_int("RANK", &torch.rank) && get_int("WORLD_SIZE", &torch.world_size);
  if (has_torch) {
    torch.launcher = "torchrun";
    if (!get_int("LOCAL_RANK", &torch.local_rank)) torch.local_rank = torch.rank;
  }
  if (has_mpi && has_torch)
    LD_CHECK(mpi.rank == torch.rank && mpi.world_size == torch.world_size, "dist: mpirun says rank ", mpi.rank,
             " of ", mpi.world_size, " (OMPI_COMM_WORLD_RANK/SIZE) but RANK/WORLD_SIZE say ", torch.rank, " of ",
             torch.world_size, "; unset RANK and WORLD_SIZE or make them agree");
  Environment e = has_mpi ? mpi : has_torch ? torch : Environment{};
  LD_CHECK(e.world_size >= 1 && e.rank < e.world_size, "dist: rank ", e.rank, " is not below the world size ",
           e.world_size, " (", e.launcher, " variables)");
  return e;
}

namespace detail {

void check_count(const char* op, int64_t n) {
  LD_CHECK(n <= INT_MAX, "dist::", op, ": ", n, " elements in one call; the engines count in int (at most ",
           INT_MAX, "): split the tensor");
}

std::string describe_op(const char* op, uint64_t seq, const Tensor& t) {
  std::ostringstream os;
  os << op << " #" << seq;
  if (t.defined()) os << " (" << t.numel() << " " << dtype_name(t.dtype()) << ")";
  return os.str();
}

namespace {

// World size 1: every collective is the identity (or a copy), complete at once.
class SingleComm : public Communicator {
 public:
  explicit SingleComm(double timeout_s) {
    backend_ = "single";
    timeout_s_ = timeout_s;
  }
  Work all_reduce(const Tensor& t, ReduceOp) override {
    check(t, "all_reduce");
    return Work();
  }
  Work broadcast(const Tensor& t, int root) override {
    check(t, "broadcast");
    LD_CHECK(root == 0, "dist::broadcast: root ", root, " out of range for a world of 1");
    return Work();
  }
  Work reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp) override {
    check(out, "reduce_scatter");
    check(in, "reduce_scatter");
    LD_CHECK(in.numel() == out.numel(), "dist::reduce_scatter: input of ", in.numel(), " elements for an output of ",
             out.numel(), " in a world of 1");
    copy(out, in);
    return Work();
  }
  Work all_gather(const Tensor& out, const Tensor& in) override {
    check(out, "all_gather");
    check(in, "all_gather");
    LD_CHECK(in.numel() == out.numel(), "dist::all_gather: output of ", out.numel(), " elements for an input of ",
             in.numel(), " in a world of 1");
    copy(out, in);
    return Work();
  }
  Work barrier() override { return Work(); }
  [[noreturn]] void abort(const std::string& why) override {
    std::fprintf(stderr, "liandan dist: rank 0 of 1: %s\n", why.c_str());
    std::fflush(stderr);
    std::_Exit(1);
  }

 private:
  static void check(const Tensor& t, const char* op) {
    LD_CHECK(t.defined() && t.is_contiguous(), "dist::", op, ": expected a defined contiguous tensor");
  }
  static void copy(const Tensor& out, const Tensor& in) {
    if (out.impl()->storage == in.impl()->storage && out.offset() == in.offset()) return;
    NoGradGuard ng;
    Tensor(out).copy_(in.reshape(out.shape()));
  }
};

}  // namespace

std::shared_ptr<Communicator> make_single(double timeout_s) { return std::make_shared<SingleComm>(timeout_s); }

}  // namespace detail

namespace {

double resolve_timeout(double t) {
  if (t > 0) return t;
  if (const char* s = std::getenv("LIANDAN_DIST_TIMEOUT"); s && *s) {
    double v = std::strtod(s, nullptr);
    LD_CHECK(v > 0, "dist: LIANDAN_DIST_TIMEOUT='", s, "' must be a positive number of seconds");
    return v;
  }
  return 300;
}

std::mutex g_mu;
std::weak_ptr<Communicator> g_comm;
std::string g_backend;
bool g_created = false;

}  // namespace

bool mpi_available() { return detail::mpi_built(); }
bool nccl_available() { return detail::nccl_built(); }

std::shared_ptr<Communicator> init(const InitOptions& opt) {
  std::lock_guard<std::mutex> lock(g_mu);
  Environment env = environment();
  std::string backend = opt.backend;
  LD_CHECK(backend == "auto" || backend == "single" || backend == "mpi" || backend == "nccl",
           "dist::init: unknown backend '", backend, "' (auto, single, mpi, nccl)");
  if (backend == "auto") backend = env.world_size > 1 ? "mpi" : "single";
  if (auto c = g_comm.lock()) {
    LD_CHECK(backend == g_backend, "dist::init: the process already has a '", g_backend,
             "' communicator; asked for '", backend, "'");
    return c;
  }
  LD_CHECK(!(g_created && backend != "single"), "dist::init: MPI was finalized when this process's last communicator "
           "was destroyed and cannot start again; keep the communicator alive for the whole run");
  LD_CHECK(!(backend == "single" && env.world_size > 1), "dist::init: the launcher (", env.launcher,
           ") started ", env.world_size, " processes but the backend is 'single'");
  LD_CHECK(!(env.launcher == "torchrun" && env.world_size > 1 && backend != "single"),
           "dist::init: RANK/WORLD_SIZE say rank ", env.rank, " of ", env.world_size,
           " but the process was not started by mpirun: liandan's collectives run on Open MPI, so launch with "
           "`mpirun -np ", env.world_size, " ...` (RANK/WORLD_SIZE/LOCAL_RANK are honoured when they agree with it)");
  double timeout = resolve_timeout(opt.timeout_s);
  std::shared_ptr<Communicator> c;
  if (backend == "single") {
    c = detail::make_single(timeout);
  } else {
    c = detail::make_mpi(timeout);
    if (backend == "nccl") c = detail::make_nccl(c, timeout);
    g_created = true;
  }
  if (env.launcher != "none")
    LD_CHECK(c->rank() == env.rank && c->world_size() == env.world_size, "dist::init: MPI says rank ", c->rank(),
             " of ", c->world_size(), ", the ", env.launcher, " variables say ", env.rank, " of ", env.world_size);
  g_comm = c;
  g_backend = backend;
  try {
    check_same_config(*c, opt.config);
  } catch (const std::exception& e) {
    // Printed here: with several ranks, unwinding past the communicator aborts the run (see MpiComm's destructor).
    std::fprintf(stderr, "liandan dist: rank %d of %d: %s\n", c->rank(), c->world_size(), e.what());
    std::fflush(stderr);
    throw;
  }
  return c;
}

std::shared_ptr<Communicator> single_process() { return detail::make_single(resolve_timeout(0)); }

std::string code_version() { return std::string("liandan ") + LIANDAN_CODE_VERSION; }

uint64_t fnv1a(const std::string& text) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

void check_same_config(Communicator& comm, const std::string& config, const std::string& what) {
  if (comm.world_size() == 1) return;
  // The hash travels as two 32-bit halves in i64s (any bit pattern survives).
  uint64_t h = fnv1a(code_version() + "\n" + config);
  Tensor mine = from_vector(std::vector<int64_t>{int64_t(h >> 32), int64_t(h & 0xffffffffu)}, {2});
  Tensor all = zeros({2 * int64_t(comm.world_size())}, DType::i64);
  comm.all_gather(all, mine).wait();
  const int64_t* a = all.data_ptr<int64_t>();
  auto hash_of = [&](int r) { return (uint64_t(a[2 * r]) << 32) | uint64_t(a[2 * r + 1]); };
  int first_bad = -1;
  for (int r = 0; r < comm.world_size() && first_bad < 0; ++r)
    if (hash_of(r) != hash_of(0)) first_bad = r;
  if (first_bad < 0) return;
  std::ostringstream os;
  os << "dist: the ranks were started with different " << what << "s or code versions (the hash of the code version '"
     << code_version() << "' and the " << what << " must match on every rank): rank " << first_bad
     << " differs from rank 0; hashes by rank:";
  for (int r = 0; r < comm.world_size(); ++r) os << " " << r << "=" << std::hex << hash_of(r) << std::dec;
  LD_FAIL(os.str());
}

int run_guarded(Communicator& comm, const std::function<int()>& fn) {
  try {
    return fn();
  } catch (const std::exception& e) {
    if (comm.world_size() == 1) throw;
    comm.abort(std::string("error: ") + e.what());
  }
  return 1;  // (abort does not return)
}

}  // namespace liandan::dist
