#pragma once
// Mixed precision, torch.autocast's way. Inside an `Autocast` scope, matmul rounds f32 operands to bf16
// (or f16) and multiplies them with f32 accumulation into an f32 result: on a GPU that is cuBLAS's bf16
// tensor-core GEMM; on the CPU bf16 runs cpu::gemm_bf16 (AVX512-BF16 vdpbf16ps where the CPU has it, else the
// f32 sgemm of the widened operands — products of two bf16 values are exact in f32), f16 the widened sgemm. The
// results agree with the GPU's within f32 summation error (the order of the sums differs), not bit for bit. The
// ops built on matmul follow: nn::Linear; conv2d, which takes its composite (unfold + matmul) form under autocast;
// and attention, whose CPU form under bf16 is the fused kernel with bf16 GEMMs (QKᵀ, PV and the backward's). Parameters
// stay f32 ("master weights"); gradients come back through the casts, rounded to the half format on the
// way, as in PyTorch. Where a block's consumers have half kernels its large activations stay half, as in
// PyTorch: autocast_matmul (the product rounded to bf16 by the GEMM) and bias_act (bias + GELU in one pass)
// keep a FeedForward's hidden layer and softmax attention's q, k, v, output and their gradients in bf16
// (nn::Linear::forward_act). Norms, softmax, losses, the residual stream and the optimizer stay in f32.
//
//   { ld::Autocast ac(DType::bf16);  loss = model.forward(x); }   // forward in mixed precision
//   loss.backward(); opt.step();                                 // backward follows the forward's dtypes
//
// f16's range ends at 65504, so small gradients underflow and large ones overflow: train with f16 behind
// an optim::GradScaler (optim/grad_scaler.h). bf16 has f32's range and needs no scaling.
#include "core/dtype.h"

namespace liandan {

// The half format matmul uses in this thread, or f32 when autocast is off.
DType autocast_dtype();
inline bool autocast_enabled() { return autocast_dtype() != DType::f32; }
// The format a GEMM takes an operand of dtype t in: the autocast format for f32 (t itself when autocast is off),
// t for everything else (f64 stays f64). Producers that feed a GEMM write this directly (conv2d's columns, a norm
// before a projection), instead of writing f32 for the GEMM's cast to read again.
inline DType autocast_operand_dtype(DType t) { return t == DType::f32 ? autocast_dtype() : t; }

// Sets the thread's autocast format for a scope (bf16 or f16; f32 turns autocast off) and restores the
// previous one at its end. Scopes nest.
class Autocast {
 public:
  explicit Autocast(DType half);
  ~Autocast();
  Autocast(const Autocast&) = delete;
  Autocast& operator=(const Autocast&) = delete;

 private:
  DType prev_;
};

}  // namespace liandan
