#pragma once
// The losses' device kernels: their registry slots (core/dispatch.h), defined beside the CPU kernels
// (losses/zlpr.cpp) and filled for CUDA by losses/zlpr.cu. Included by that .cu file: C++17.
#include <cstdint>

#include "core/dispatch.h"
#include "core/tensor.h"

namespace liandan::losses {

// ZLPR over `rows` rows of C contiguous logits s with targets t (s's dtype and shape): the loss per row into
// loss [rows] and dL/ds into grad (undefined: no gradient), as the fused CPU kernel of losses/zlpr.cpp; soft
// targets use the eps masking fix. A target outside {0, 1} (hard) or [0, 1] (soft) makes the i64 scalar `bad`
// (zeroed by the caller) non-zero; the caller reads it back and reports the entry.
LD_DECLARE_KERNEL(zlpr_rows, void(const Tensor& s, const Tensor& t, const Tensor& loss, const Tensor& grad,
                                  int64_t rows, int64_t C, bool soft, double eps, const Tensor& bad));

}  // namespace liandan::losses
