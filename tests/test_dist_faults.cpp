// Faults of a distributed run, end to end: mpirun starts test_dist's "dist worker" case on 2 ranks and rank 1 is
// killed with SIGKILL, hangs in its own work, stops (SIGSTOP), throws, or starts with another config. Every time
// the run must end — every rank exiting, mpirun non-zero — well within the watchdog's bounds, with a message that
// names the rank and the cause, never a silent hang.
#include <doctest/doctest.h>

#include <string>

#include "core/dist/comm.h"
#include "process.h"

using namespace liandan;

#ifdef LIANDAN_MPIEXEC
namespace {

testing::ProcessResult run_worker(const std::string& mode) {
  std::vector<std::string> args{"-np", "2", "--oversubscribe", "--bind-to", "none", LIANDAN_DIST_WORKER,
                                "--no-skip", "-tc=dist worker*"};
  std::vector<std::string> env{"LIANDAN_DIST_WORKER=" + mode, "LIANDAN_DIST_TIMEOUT=3", "OMP_NUM_THREADS=1",
                               "OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1",
                               "OMPI_MCA_btl_vader_single_copy_mechanism=none",
                               "ASAN_OPTIONS=detect_leaks=0"};  // Open MPI's unnamed allocations (CMakeLists.txt)
  testing::ProcessResult r = testing::run_process(LIANDAN_MPIEXEC, args, 60, env);
  INFO("mode ", mode, ": exit ", r.exit_code, " after ", r.seconds, " s; output:\n", r.output);
  CHECK_FALSE(r.timed_out);
  CHECK(r.exit_code != 0);
  CHECK(r.seconds < 30);
  return r;
}

bool has(const testing::ProcessResult& r, const std::string& s) { return r.output.find(s) != std::string::npos; }

}  // namespace

TEST_CASE("a rank killed with SIGKILL mid-run ends the run, naming it") {
  auto r = run_worker("kill");
  INFO(r.output);
  CHECK((has(r, "rank 1") && has(r, "signal 9")));
}

TEST_CASE("a rank that hangs in its own work: the watchdog aborts every rank, rank 0 names it") {
  auto r = run_worker("hang");
  INFO(r.output);
  CHECK(has(r, "did not complete within 3 s"));
  CHECK(has(r, "rank 1 is alive but has submitted only"));
}

TEST_CASE("a stopped rank (SIGSTOP): no heartbeat, the watchdog aborts every rank, rank 0 names it") {
  auto r = run_worker("stop");
  INFO(r.output);
  CHECK(has(r, "rank 1 sent no heartbeat"));
}

TEST_CASE("an exception on one rank aborts every rank with its message") {
  auto r = run_worker("throw");
  INFO(r.output);
  CHECK(has(r, "rank 1 of 2: error: injected failure at step 20"));
}

TEST_CASE("ranks started with different configs are refused at start-up") {
  auto r = run_worker("config");
  INFO(r.output);
  CHECK(has(r, "different configs or code versions"));
}
#else
TEST_CASE("built without MPI: the distributed fault tests need mpirun") { CHECK_FALSE(dist::mpi_available()); }
#endif
