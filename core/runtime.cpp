// Process start-up: OpenBLAS's kernel choice, and OpenMP's wait policy (the end of this file).
//
// OpenBLAS 0.3.21 (Debian 12) does not recognise recent Intel CPUs (e.g. family 6 model 207) and
// falls back to its SSE3 "Prescott" kernels: GEMM then runs ~5x slower than with the AVX-512 kernels
// the CPU supports. liandan must be fast without environment tuning, so when the user has not set
// OPENBLAS_CORETYPE and OpenBLAS picked a pre-AVX2 core on a CPU with AVX-512 (or AVX2), this
// static initializer — which runs after OpenBLAS's load-time constructor and before main — sets
// OPENBLAS_CORETYPE and re-runs OpenBLAS's dynamic-arch selection (no BLAS call has happened yet).
// A user's own OPENBLAS_CORETYPE always wins. The symbols are weak: with a BLAS built without
// DYNAMIC_ARCH nothing happens. CMake links this object into every executable (-Wl,-u,...).
#include <unistd.h>

#include <cstdlib>
#include <cstring>

// The spin count liandan gives libgomp when the user set neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT (see the end of
// this file).
#define LIANDAN_GOMP_SPINCOUNT "1000"

extern "C" {
__attribute__((weak)) extern void* gotoblas;
__attribute__((weak)) void gotoblas_dynamic_init(void);
__attribute__((weak)) char* gotoblas_corename(void);
}

extern "C" const char* liandan_blas_core_fix() {
  static const char* applied = [] () -> const char* {
    if (std::getenv("OPENBLAS_CORETYPE") || !gotoblas_dynamic_init || !gotoblas_corename || !&gotoblas) return nullptr;
    const char* core = gotoblas_corename();
    bool old = !std::strcmp(core, "Prescott") || !std::strcmp(core, "Core2") || !std::strcmp(core, "Nehalem") ||
               !std::strcmp(core, "Penryn") || !std::strcmp(core, "Dunnington") || !std::strcmp(core, "Unknown");
    if (!old) return nullptr;
    __builtin_cpu_init();
    const char* want = nullptr;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
      want = "SkylakeX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      want = "Haswell";
    if (!want) return nullptr;
    setenv("OPENBLAS_CORETYPE", want, 0);
    gotoblas = nullptr;  // makes gotoblas_dynamic_init select again, now from the environment
    gotoblas_dynamic_init();
    return want;
  }();
  return applied;
}

namespace {
const char* const kApplied = liandan_blas_core_fix();
}

// ---- OpenMP's wait policy: a bounded spin, then sleep
// libgomp's threads spin at every barrier and between parallel regions before they sleep — by default (no
// OMP_WAIT_POLICY) for 300,000 spins, milliseconds on this hardware. On a busy machine (a data-loader thread, a
// second run, a compile) those spins take the cores the work needs: liandan's ops ran 2-6x slower next to other
// processes, where PyTorch (run with OMP_WAIT_POLICY=PASSIVE) kept its speed. So unless the user has chosen
// (OMP_WAIT_POLICY or GOMP_SPINCOUNT set), liandan runs with GOMP_SPINCOUNT=LIANDAN_GOMP_SPINCOUNT: a waiting thread
// gives its core back within microseconds, and back-to-back parallel regions of one op still find it awake
// (measured idle and busy: docs/benchmarks.md, "Busy machine").
// libgomp reads its environment in its own load-time constructor, before any code of the program runs, and glibc
// restores the process's initial environment after the executable's .preinit_array functions, so a setenv() there
// is lost. The only way in is the environment at exec time: the executable's preinit function (it runs before
// every shared library's initializer: nothing has started yet) execs the program again, same argv, with the
// variable added (and LIANDAN_OMP_WAIT=set, which marks it as liandan's). If that exec fails, the program carries
// on with libgomp's default. (The object is linked into every executable: -Wl,-u,liandan_blas_core_fix.)
namespace {
bool has_env(char** envp, const char* name) {
  const size_t n = std::strlen(name);
  for (char** e = envp; e && *e; ++e)
    if (std::strncmp(*e, name, n) == 0 && (*e)[n] == '=') return true;
  return false;
}

void preinit_wait_policy(int, char** argv, char** envp) {
  if (!argv || !argv[0] || has_env(envp, "OMP_WAIT_POLICY") || has_env(envp, "GOMP_SPINCOUNT")) return;
  size_t n = 0;
  while (envp && envp[n]) ++n;
  char** env = static_cast<char**>(std::malloc((n + 3) * sizeof(char*)));
  if (!env) return;
  for (size_t i = 0; i < n; ++i) env[i] = envp[i];
  env[n] = const_cast<char*>("GOMP_SPINCOUNT=" LIANDAN_GOMP_SPINCOUNT);
  env[n + 1] = const_cast<char*>("LIANDAN_OMP_WAIT=set");
  env[n + 2] = nullptr;
  execve("/proc/self/exe", argv, env);
  std::free(env);  // exec failed (no /proc): libgomp's default wait policy
}
__attribute__((section(".preinit_array"), used)) void (*const kPreinitWaitPolicy)(int, char**, char**) =
    preinit_wait_policy;
}  // namespace

// The spin count liandan set for this process, or nullptr when the user's environment chose the wait policy.
extern "C" const char* liandan_omp_wait_setting() {
  const char* mark = std::getenv("LIANDAN_OMP_WAIT");
  const char* spin = std::getenv("GOMP_SPINCOUNT");
  return mark && std::strcmp(mark, "set") == 0 && spin && std::strcmp(spin, LIANDAN_GOMP_SPINCOUNT) == 0 ? spin
                                                                                                          : nullptr;
}
