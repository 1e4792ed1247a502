#pragma once
// Warp-level tensor-core instructions as PTX (sm_80+): mma.sync m16n8k16 with bf16/f16 operands and f32
// accumulators, m16n8k8 with tf32 operands (and f32 products from three of them), ldmatrix (x4, optionally
// transposed) to load their operands from shared memory, and cp.async to fill it. Unlike WMMA,
// the fragment layouts are specified (PTX ISA, "Matrix Fragments for mma.m16n8k16"), so a kernel can keep an
// accumulator in registers and apply row-wise math to it, and reuse a C fragment as the next product's A operand
// (FlashAttention-2's P·V). With lane = 4·g + t (g = lane / 4, t = lane % 4):
//   A (16 × 16, row-major, 4 registers of two halves, the lower column in the low bits):
//     a[0] = (row g, cols 2t, 2t+1)  a[1] = (row g+8, cols 2t, 2t+1)  a[2] = (row g, cols 2t+8, 2t+9)  a[3] = (row g+8, …)
//   B (16 × 8, 2 registers): b0 = (rows 2t, 2t+1; col g)  b1 = (rows 2t+8, 2t+9; col g)
//   C, D (16 × 8, 4 floats): (row g; cols 2t, 2t+1), (row g+8; cols 2t, 2t+1)
// ldmatrix.x4: lanes 8i..8i+7 give the addresses of the 8 rows (8 halves, 16 bytes, 16-byte aligned) of matrix i;
// register i receives matrix i's (row g; cols 2t, 2t+1), or transposed its (rows 2t, 2t+1; col g).
// On the emulated GPU (tests/cuda_emulation/emu.h) the same functions run the emulator's implementation of these
// layouts, so the kernels built on them are tested everywhere; the PTX itself runs only on a GPU.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace liandan::cuda_impl::ptx {

// d += A·B (H: __nv_bfloat16 or __half).
template <class H>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(LIANDAN_CUDA_EMULATOR)
  ::emu::mma_m16n8k16(std::is_same_v<H, __nv_bfloat16>, d, a, b0, b1);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same_v<H, __nv_bfloat16>)
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();  // built only for sm_80 and later; an older device never launches these kernels
#endif
}

// d += A·B with tf32 operands (m16n8k8): f32 registers of which the tensor cores read the top 19 bits. Layouts
// (PTX ISA, "Matrix Fragments for mma.m16n8k8", .tf32): a[0] = (row g, col t), a[1] = (row g+8, col t),
// a[2] = (row g, col t+4), a[3] = (row g+8, col t+4); b0 = (row t, col g), b1 = (row t+4, col g); C, D as above.
__device__ __forceinline__ void mma_1688_tf32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(LIANDAN_CUDA_EMULATOR)
  ::emu::mma_m16n8k8_tf32(d, a, b0, b1);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();
#endif
}

// x rounded to tf32 (nearest, ties away from zero), as f32 bits.
__device__ __forceinline__ uint32_t to_tf32(float x) {
#if defined(LIANDAN_CUDA_EMULATOR)
  return ::emu::cvt_rna_tf32(x);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint32_t out;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(out) : "f"(x));
  return out;
#else
  __trap();
  return 0;
#endif
}

// 3xTF32 (CUTLASS's "fast f32"): x = big + small, both tf32, and a·b ≈ small_a·big_b + big_a·small_b + big_a·big_b
// (the small·small term, ~2⁻²² relative, dropped; the small terms first, while the sum is small): f32 accuracy at
// three tensor-core products.
struct Tf32Pair {
  uint32_t big, small;
};
__device__ __forceinline__ Tf32Pair split_tf32(float x) {
  uint32_t big = to_tf32(x);
  return {big, to_tf32(x - __uint_as_float(big))};
}
// An A fragment's four values split (big[r] + small[r] = x[r]).
__device__ __forceinline__ void split_tf32(const float (&x)[4], uint32_t (&big)[4], uint32_t (&small)[4]) {
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    Tf32Pair p = split_tf32(x[r]);
    big[r] = p.big, small[r] = p.small;
  }
}
__device__ __forceinline__ void mma_1688_3xtf32(float (&d)[4], const uint32_t (&a_big)[4],
                                                const uint32_t (&a_small)[4], Tf32Pair b0, Tf32Pair b1) {
  mma_1688_tf32(d, a_small, b0.big, b1.big);
  mma_1688_tf32(d, a_big, b0.small, b1.small);
  mma_1688_tf32(d, a_big, b0.big, b1.big);
}

// The four 8 × 8 matrices whose row `row` this lane addresses (see above), as fragments.
template <bool kTrans>
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
#if defined(LIANDAN_CUDA_EMULATOR)
  ::emu::ldmatrix_x4(r, row, kTrans);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(row));
  if constexpr (kTrans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr) : "memory");
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr) : "memory");
#else
  __trap();
#endif
}

// Two floats rounded to H (nearest even) and packed as one A/B register, lo in the low 16 bits.
template <class H>
__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
#if defined(LIANDAN_CUDA_EMULATOR)
  if constexpr (std::is_same_v<H, __nv_bfloat16>)
    return uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(lo))) |
           uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(hi))) << 16;
  else
    return uint32_t(__half_as_ushort(__float2half_rn(lo))) | uint32_t(__half_as_ushort(__float2half_rn(hi))) << 16;
#else
  uint32_t out;
  if constexpr (std::is_same_v<H, __nv_bfloat16>) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x = lo: the low half
    memcpy(&out, &v, sizeof(out));
  } else {
    __half2 v = __floats2half2_rn(lo, hi);
    memcpy(&out, &v, sizeof(out));
  }
  return out;
#endif
}

// cp.async (sm_80+): 16 bytes global → shared without passing through registers, so a tile's loads overlap the
// work before cp_async_wait_all (which waits for every copy this thread issued). The emulator copies at once.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem) {
#if defined(LIANDAN_CUDA_EMULATOR)
  memcpy(smem, gmem, 16);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(addr), "l"(gmem) : "memory");
#else
  __trap();
#endif
}
__device__ __forceinline__ void cp_async_wait_all() {
#if !defined(LIANDAN_CUDA_EMULATOR) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

// The lane's row address for ldmatrix_x4 over a 16 × 16 block of a row-major shared tile (ld elements a row) at
// (row0, col0). kRowsFirst: matrices 0-3 = (rows 0-7, cols 0-7), (rows 8-15, cols 0-7), (rows 0-7, cols 8-15),
// (rows 8-15, cols 8-15) — an A operand, or a transposed B operand along rows; otherwise (rows 0-7, cols 0-7),
// (rows 0-7, cols 8-15), (rows 8-15, cols 0-7), (rows 8-15, cols 8-15) — two B operands (n 0-7, n 8-15) of a
// tile stored n-major (Kᵀ's rows).
template <bool kRowsFirst, class H>
__device__ __forceinline__ const H* ldmatrix_row(const H* tile, int ld, int row0, int col0, int lane) {
  int hi_row = kRowsFirst ? (lane >> 3) & 1 : lane >> 4, hi_col = kRowsFirst ? lane >> 4 : (lane >> 3) & 1;
  return tile + (row0 + (lane & 7) + 8 * hi_row) * ld + col0 + 8 * hi_col;
}

}  // namespace liandan::cuda_impl::ptx
