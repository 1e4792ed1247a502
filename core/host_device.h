#pragma once
// LD_HOST_DEVICE marks a function that nvcc compiles for both the host and the device (core/philox.h,
// optim/amos_row.h: formulas the CPU and the CUDA kernels share word for word); plain inline elsewhere.
#if defined(__CUDACC__)
#define LD_HOST_DEVICE __host__ __device__
#else
#define LD_HOST_DEVICE
#endif

// LD_HOST_DEVICE, always inlined: per-element formulas called inside loops (core/ops/unary_ops.h,
// optim/adam_row.h), where an out-of-line call would keep the CPU loop from vectorizing.
#if defined(__CUDACC__)
#define LD_HOST_DEVICE_INLINE __host__ __device__ __forceinline__
#else
#define LD_HOST_DEVICE_INLINE inline __attribute__((always_inline))
#endif
