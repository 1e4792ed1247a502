#pragma once
// Element types. f32 is the default; f64 exists so gradients can be checked by finite
// differences; i64 holds indices (embedding, gather, argmax). bf16/f16 are storage formats: casts,
// copies and matmul inputs (mixed precision, core/autocast.h); other ops refuse them by name.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "core/half.h"

namespace liandan {

enum class DType : uint8_t { f32, f64, i64, bf16, f16 };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::bf16:
    case DType::f16: return 2;
    default: return 8;
  }
}
inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::i64: return "i64";
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
  }
  return "?";
}
inline bool is_half(DType t) { return t == DType::bf16 || t == DType::f16; }
inline bool is_floating(DType t) { return t == DType::f32 || t == DType::f64 || is_half(t); }

template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::f32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::f64; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::i64; };
template <> struct dtype_of<bfloat16> { static constexpr DType value = DType::bf16; };
template <> struct dtype_of<float16> { static constexpr DType value = DType::f16; };

enum class DeviceType : uint8_t { CPU, CUDA };
struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  static Device cpu() { return {}; }
  static Device cuda(int i = 0) { return {DeviceType::CUDA, i}; }
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
};

}  // namespace liandan

// Runs BODY with `scalar_t` bound to the C++ type of a floating dtype; other dtypes are an
// error naming the op.
#define LD_DISPATCH_FLOAT(DT, OPNAME, ...)                                              \
  [&] {                                                                                  \
    switch (DT) {                                                                        \
      case ::liandan::DType::f32: { using scalar_t = float; return __VA_ARGS__(); }      \
      case ::liandan::DType::f64: { using scalar_t = double; return __VA_ARGS__(); }     \
      default: LD_FAIL(OPNAME, ": expected a floating dtype (f32 or f64), got ",          \
                       ::liandan::dtype_name(DT));                                       \
    }                                                                                    \
  }()

#define LD_DISPATCH_ALL(DT, OPNAME, ...)                                                 \
  [&] {                                                                                  \
    switch (DT) {                                                                        \
      case ::liandan::DType::f32: { using scalar_t = float; return __VA_ARGS__(); }      \
      case ::liandan::DType::f64: { using scalar_t = double; return __VA_ARGS__(); }     \
      case ::liandan::DType::i64: { using scalar_t = int64_t; return __VA_ARGS__(); }    \
      case ::liandan::DType::bf16: { using scalar_t = ::liandan::bfloat16; return __VA_ARGS__(); } \
      case ::liandan::DType::f16: { using scalar_t = ::liandan::float16; return __VA_ARGS__(); } \
    }                                                                                    \
    LD_FAIL(OPNAME, ": unknown dtype");                                                  \
  }()
