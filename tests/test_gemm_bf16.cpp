// cpu::gemm_bf16 (core/cpu/gemm_bf16.h): the bf16 GEMM behind the CPU's bf16 autocast. Both paths — the
// AVX512-BF16 kernel where the CPU has it, and the f32 fallback (forced here as LIANDAN_CPU_BF16=0 would) — on every
// transpose, ragged sizes (not multiples of the kernel's 14 x 32 tile, odd K), padded leading dims, alpha and beta:
//   exact on small-integer operands (every partial sum representable: a dropped or misplaced term shows);
//   on random operands within the f32 accumulation bound |C - C64| <= (K + 4) 2^-24 (|alpha| sum |a b| + |beta C|)
//     of the f64 product of the same bf16 values, K up to 4099 (several K blocks);
//   the bf16 result equal to the f32 result rounded; bit-identical on 1, 2 and 3 threads; padding never written.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/cpu/gemm_bf16.h"
#include "core/random.h"
#include "op_test_helpers.h"
#include "process.h"

using namespace liandan;
using cpu::bf16_t;

namespace {

struct Case {
  int64_t M, N, K;
  bool ta, tb;
  int64_t pad;  // extra elements per row of A, B and C
  float alpha, beta;
};

struct Operands {
  std::vector<bf16_t> A, B;
  std::vector<float> C0;
  int64_t lda, ldb, ldc;
};

// Random operands (normal, or small integers when `integers`), already bf16.
Operands make(const Case& c, Generator& gen, bool integers) {
  Operands o;
  o.lda = (c.ta ? c.M : c.K) + c.pad;
  o.ldb = (c.tb ? c.K : c.N) + c.pad;
  o.ldc = c.N + c.pad;
  auto fill = [&](int64_t n) {
    std::vector<double> v = randn({std::max<int64_t>(n, 1)}, gen).to_vector();
    std::vector<bf16_t> out(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) out[size_t(i)] = float_to_bf16(integers ? float(std::lround(2 * v[size_t(i)])) : float(v[size_t(i)]));
    return out;
  };
  o.A = fill((c.ta ? c.K : c.M) * o.lda);
  o.B = fill((c.tb ? c.N : c.K) * o.ldb);
  std::vector<bf16_t> c0 = fill(c.M * o.ldc);
  for (bf16_t h : c0) o.C0.push_back(bf16_to_float(h));  // bf16 values, so the bf16-output run starts equal
  return o;
}

double a_at(const Case& c, const Operands& o, int64_t i, int64_t k) {
  return bf16_to_float(c.ta ? o.A[size_t(k * o.lda + i)] : o.A[size_t(i * o.lda + k)]);
}
double b_at(const Case& c, const Operands& o, int64_t k, int64_t j) {
  return bf16_to_float(c.tb ? o.B[size_t(j * o.ldb + k)] : o.B[size_t(k * o.ldb + j)]);
}

std::vector<float> run_f32(const Case& c, const Operands& o) {
  std::vector<float> C = o.C0;
  cpu::gemm_bf16(c.ta, c.tb, c.M, c.N, c.K, c.alpha, o.A.data(), o.lda, o.B.data(), o.ldb, c.beta, C.data(), o.ldc);
  return C;
}

std::vector<bf16_t> run_bf16(const Case& c, const Operands& o) {
  std::vector<bf16_t> C;
  for (float f : o.C0) C.push_back(float_to_bf16(f));
  cpu::gemm_bf16(c.ta, c.tb, c.M, c.N, c.K, c.alpha, o.A.data(), o.lda, o.B.data(), o.ldb, c.beta, C.data(), o.ldc);
  return C;
}

// Elements outside the f32 accumulation bound of the f64 product (exact: must be exactly equal), and padding
// columns that were written.
int64_t bad_elements(const Case& c, const Operands& o, const std::vector<float>& C, bool exact) {
  const double u = std::ldexp(1.0, -24);
  int64_t bad = 0;
  for (int64_t i = 0; i < c.M; ++i) {
    for (int64_t j = 0; j < c.N; ++j) {
      double dot = 0, mag = 0;
      for (int64_t k = 0; k < c.K; ++k) {
        const double p = a_at(c, o, i, k) * b_at(c, o, k, j);
        dot += p;
        mag += std::fabs(p);
      }
      const double c0 = o.C0[size_t(i * o.ldc + j)];
      const double ref = double(c.alpha) * dot + double(c.beta) * c0;
      const double bound = double(c.K + 4) * u * (std::fabs(double(c.alpha)) * mag + std::fabs(double(c.beta) * c0));
      const double err = std::fabs(double(C[size_t(i * o.ldc + j)]) - ref);
      if (exact ? err != 0 : err > bound) ++bad;
    }
    for (int64_t j = c.N; j < o.ldc; ++j) bad += C[size_t(i * o.ldc + j)] != o.C0[size_t(i * o.ldc + j)];
  }
  return bad;
}

std::vector<Case> cases() {
  std::vector<Case> v;
  for (int t = 0; t < 4; ++t) {
    const bool ta = t & 1, tb = t & 2;
    v.push_back({37, 45, 33, ta, tb, 3, 1.0f, 0.0f});      // ragged everything, odd K
    v.push_back({14, 32, 2, ta, tb, 0, 0.5f, 1.0f});       // one exact tile
    v.push_back({130, 300, 517, ta, tb, 5, -1.5f, 0.25f}); // several tiles, two K blocks (512 + 5)
    v.push_back({1, 7, 1, ta, tb, 1, 2.0f, -1.0f});        // one row, one K
  }
  v.push_back({23, 41, 4099, false, false, 2, 1.0f, 0.5f});  // long K: 9 K blocks of f32 accumulation
  v.push_back({19, 35, 4096, true, true, 0, 1.0f, 0.0f});
  return v;
}

// Restores the detected path at the end of a test.
struct FallbackGuard {
  explicit FallbackGuard(bool on) : prev(cpu::gemm_bf16_force_fallback(on)) {}
  ~FallbackGuard() { cpu::gemm_bf16_force_fallback(prev); }
  bool prev;
};

void check_path(bool fallback) {
  FallbackGuard fg(fallback);
  CHECK(std::string(cpu::gemm_bf16_kernel()) == (fallback || !cpu::gemm_bf16_native() ? "f32-sgemm" : "avx512bf16"));
  Generator gen(24);
  const bool small = testing::small_mode();
  for (const Case& c : cases()) {
    if (small && c.K > 1000 && c.ta) continue;  // ASan pass: one long-K case is enough
    CAPTURE(c.M);
    CAPTURE(c.N);
    CAPTURE(c.K);
    CAPTURE(c.ta);
    CAPTURE(c.tb);
    for (bool integers : {true, false}) {
      CAPTURE(integers);
      Operands o = make(c, gen, integers);
      std::vector<float> C = run_f32(c, o);
      // Integers: |2 randn| rounded is < 16, so every partial sum of up to 4099 products is an integer < 2^20.
      // alpha and beta are powers of two or 1.5/0.25 multiples: the epilogue is exact too.
      CHECK(bad_elements(c, o, C, integers) == 0);
      // The bf16 result is the f32 one rounded to nearest even (C0 holds bf16 values: both runs start equal).
      std::vector<bf16_t> H = run_bf16(c, o);
      int64_t mismatched = 0;
      for (int64_t i = 0; i < c.M; ++i)
        for (int64_t j = 0; j < o.ldc; ++j) {
          const size_t e = size_t(i * o.ldc + j);
          mismatched += H[e] != (j < c.N ? float_to_bf16(C[e]) : float_to_bf16(o.C0[e]));
        }
      CHECK(mismatched == 0);
    }
  }
}

}  // namespace

TEST_CASE("gemm_bf16: the detected kernel, against the f64 product of the bf16 operands, every transpose") {
  MESSAGE("gemm_bf16 kernel on this CPU: " << std::string(cpu::gemm_bf16_kernel()));
  check_path(false);
}

TEST_CASE("gemm_bf16: the f32 fallback (a CPU without AVX512-BF16), the same bounds") { check_path(true); }

TEST_CASE("gemm_bf16: bit-identical on 1, 2 and 3 threads, f32 and bf16 results") {
  Generator gen(25);
  // Tall enough for many tiles (rows are split by the thread count), two column tiles, two K blocks.
  const int64_t M = testing::small_mode() ? 150 : 600;
  for (int t = 0; t < 4; ++t) {
    Case c{M, 300, 700, bool(t & 1), bool(t & 2), 1, 1.0f, 0.5f};
    CAPTURE(c.ta);
    CAPTURE(c.tb);
    Operands o = make(c, gen, false);
    auto at = [&](int threads) {
      testing::ThreadsGuard tg(threads);
      return std::make_pair(run_f32(c, o), run_bf16(c, o));
    };
    auto r1 = at(1), r2 = at(2), r3 = at(3);
    CHECK(r1.first == r2.first);
    CHECK(r1.first == r3.first);
    CHECK(r1.second == r2.second);
    CHECK(r1.second == r3.second);
  }
}

TEST_CASE("gemm_bf16: K = 0 gives beta C (C not read when beta is 0); M or N = 0 writes nothing") {
  std::vector<bf16_t> A(4, float_to_bf16(1.0f)), B(4, float_to_bf16(1.0f));
  for (bool fallback : {false, true}) {
    FallbackGuard fg(fallback);
    std::vector<float> C = {1.0f, 2.0f, NAN, 4.0f};
    cpu::gemm_bf16(false, false, 2, 2, 0, 1.0f, A.data(), 1, B.data(), 2, 0.0f, C.data(), 2);
    CHECK(C == std::vector<float>{0, 0, 0, 0});
    C = {1.0f, 2.0f, 3.0f, 4.0f};
    cpu::gemm_bf16(false, false, 2, 2, 0, 1.0f, A.data(), 1, B.data(), 2, 0.5f, C.data(), 2);
    CHECK(C == std::vector<float>{0.5f, 1.0f, 1.5f, 2.0f});
    cpu::gemm_bf16(false, false, 0, 2, 2, 1.0f, A.data(), 2, B.data(), 2, 0.0f, C.data(), 2);
    cpu::gemm_bf16(false, false, 2, 0, 2, 1.0f, A.data(), 2, B.data(), 2, 0.0f, C.data(), 2);
    CHECK(C == std::vector<float>{0.5f, 1.0f, 1.5f, 2.0f});
    // beta = 0 does not read C: a NaN there does not leak into the product
    C = {NAN, NAN, NAN, NAN};
    cpu::gemm_bf16(false, false, 2, 2, 2, 1.0f, A.data(), 2, B.data(), 2, 0.0f, C.data(), 2);
    CHECK(C == std::vector<float>{2, 2, 2, 2});
  }
}

extern "C" const char* liandan_omp_wait_setting();  // core/runtime.cpp

TEST_CASE("OpenMP wait policy: GOMP_SPINCOUNT=1000 at start-up unless the user chose one") {
  auto get = [](const char* n) { return std::string(std::getenv(n) ? std::getenv(n) : "-"); };
  if (std::getenv("LIANDAN_WAIT_PROBE")) {  // the child below: report what libgomp was started with
    MESSAGE("probe GOMP_SPINCOUNT=" << get("GOMP_SPINCOUNT") << " OMP_WAIT_POLICY=" << get("OMP_WAIT_POLICY")
                                    << " applied=" << std::string(liandan_omp_wait_setting() ? "yes" : "no"));
    return;
  }
  // This process (started by CTest or by hand, with or without the variables).
  const char* applied = liandan_omp_wait_setting();
  if (applied) CHECK(std::string(applied) == "1000");
  else CHECK((get("GOMP_SPINCOUNT") != "-" || get("OMP_WAIT_POLICY") != "-"));
  // This test binary started without either variable gets the bounded spin (the preinit re-exec: same process, the
  // variable in its environment from the start); started with OMP_WAIT_POLICY it keeps the user's choice.
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  auto probe = [&](std::vector<std::string> set) {
    std::vector<std::string> args = {"-u", "GOMP_SPINCOUNT", "-u", "OMP_WAIT_POLICY", "-u", "LIANDAN_OMP_WAIT",
                                     "LIANDAN_WAIT_PROBE=1"};
    for (auto& s : set) args.push_back(s);
    for (const char* a : {"-tc=OpenMP wait policy*", "-s"}) args.push_back(a);
    args.insert(args.end() - 2, self);
    testing::ProcessResult r = testing::run_process("/usr/bin/env", args, 60);
    CHECK(r.exit_code == 0);
    return r.output;
  };
  CHECK(probe({}).find("probe GOMP_SPINCOUNT=1000 OMP_WAIT_POLICY=- applied=yes") != std::string::npos);
  CHECK(probe({"OMP_WAIT_POLICY=ACTIVE"}).find("probe GOMP_SPINCOUNT=- OMP_WAIT_POLICY=ACTIVE applied=no") !=
        std::string::npos);
  CHECK(probe({"GOMP_SPINCOUNT=77"}).find("probe GOMP_SPINCOUNT=77 OMP_WAIT_POLICY=- applied=no") != std::string::npos);
}
