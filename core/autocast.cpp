#include "core/autocast.h"

#include "core/error.h"

namespace liandan {

namespace {
thread_local DType g_autocast = DType::f32;  // per thread, like grad mode
}

DType autocast_dtype() { return g_autocast; }

Autocast::Autocast(DType half) : prev_(g_autocast) {
  LD_CHECK(half == DType::bf16 || half == DType::f16 || half == DType::f32,
           "Autocast: the format must be bf16 or f16 (f32 turns autocast off), got ", dtype_name(half));
  g_autocast = half;
}

Autocast::~Autocast() { g_autocast = prev_; }

}  // namespace liandan
