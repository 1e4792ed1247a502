// Process start-up fix for OpenBLAS's kernel choice.
//
// OpenBLAS 0.3.21 (Debian 12) does not recognise recent Intel CPUs (e.g. family 6 model 207) and
// falls back to its SSE3 "Prescott" kernels: GEMM then runs ~5x slower than with the AVX-512 kernels
// the CPU supports. liandan must be fast without environment tuning, so when the user has not set
// OPENBLAS_CORETYPE and OpenBLAS picked a pre-AVX2 core on a CPU with AVX-512 (or AVX2), this
// static initializer — which runs after OpenBLAS's load-time constructor and before main — sets
// OPENBLAS_CORETYPE and re-runs OpenBLAS's dynamic-arch selection (no BLAS call has happened yet).
// A user's own OPENBLAS_CORETYPE always wins. The symbols are weak: with a BLAS built without
// DYNAMIC_ARCH nothing happens. CMake links this object into every executable (-Wl,-u,...).
#include <cstdlib>
#include <cstring>

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
