#pragma once
// LD_HOST_DEVICE marks a function that nvcc compiles for both the host and the device (core/philox.h,
// optim/amos_row.h: formulas the CPU and the CUDA kernels share word for word); plain inline elsewhere.
#if defined(__CUDACC__)
#define LD_HOST_DEVICE __host__ __device__
#else
#define LD_HOST_DEVICE
#endif
