#pragma once
// Tile-level building blocks of the tensor-core kernels (attention.cu, conv.cu): shared-memory tiles of H rows
// (bf16/f16, or f32 for 3xTF32) padded against bank conflicts, the block's shared memory carved into them, the
// two-buffer loop that streams tiles through them, and the warp's product of two tiles, s = A·Bᵀ, on mma.sync
// (core/cuda/mma.cuh) with its result left in C fragments.
#include "core/cuda/mma.cuh"

namespace liandan::cuda_impl::tiles {

// The half format of the operands: bf16 or f16 (autocast's), rounded to nearest even.
template <class H> __device__ H to_half(float x);
template <> __device__ inline __nv_bfloat16 to_half<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <> __device__ inline __half to_half<__half>(float x) { return __float2half_rn(x); }
template <> __device__ inline float to_half<float>(float x) { return x; }  // the 3xTF32 path keeps f32 tiles

// Shared tiles hold kD + 8 halves a row: the 8 rows an ldmatrix phase reads then start in 8 distinct 16-byte bank
// groups (kD halves a row would put them all in the same ones for kD = 64 and 128). f32 tiles (3xTF32) hold kD + 4
// floats: a fragment load's 32 lanes (8 rows × 4 columns) then hit 32 distinct banks.
template <int kD, class H> __host__ __device__ constexpr int padded() { return kD + (sizeof(H) == 2 ? 8 : 4); }

// Carves the block's dynamic shared memory into 32-byte-aligned arrays (ldmatrix and 16-byte stores need 16).
struct Carve {
  unsigned char* p;
  template <class T> __device__ T* take(int64_t n) {
    T* out = reinterpret_cast<T*>(p);
    p += (n * int64_t(sizeof(T)) + 31) / 32 * 32;
    return out;
  }
};

// The loop over a kernel's streamed tiles (keys, or queries in the dK/dV kernel): x0 = first, first + step, … < end.
// stage_tile(x0, buf) fills buffer buf with tile x0; body(x0, buf) computes on it. Two buffers where shared memory
// allows (kStages = 2): the next tile's copies (cp.async where the rows allow) are issued before the current tile's
// products, so they overlap, and one block barrier per tile both publishes a tile and retires the buffer it reuses.
template <int kStages, class StageTile, class Body>
__device__ void stream_tiles(int64_t first, int64_t end, int64_t step, StageTile stage_tile, Body body) {
  if (kStages == 2 && first < end) stage_tile(first, 0);
  int buf = 0;
  for (int64_t x0 = first; x0 < end; x0 += step, buf = kStages == 2 ? buf ^ 1 : 0) {
    if (kStages == 1) {
      __syncthreads();  // every warp is done with the previous tile
      stage_tile(x0, 0);
    }
    ptx::cp_async_wait_all();
    __syncthreads();  // the tile is in (and, with two buffers, every warp is done with the other one)
    if (kStages == 2 && x0 + step < end) stage_tile(x0 + step, buf ^ 1);
    body(x0, buf);
  }
  ptx::cp_async_wait_all();  // (no copy outlives the kernel, even when the loop ran no tile)
}

// Clears a warp's accumulator (or score) fragments.
template <int kM, int kCols>
__device__ void zero(float (&acc)[kM][kCols][4]) {
#pragma unroll
  for (int mt = 0; mt < kM; ++mt)
#pragma unroll
    for (int c = 0; c < kCols; ++c)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][c][e] = 0.0f;
}

// s = A·Bᵀ (kAccumulate: s += A·Bᵀ) for the warp's rows: A's rows a_row0 + 16·mt.. and B's kN rows (both shared tiles of kD columns):
// scores Q·Kᵀ, their transpose K·Qᵀ, dO·Vᵀ, V·dOᵀ. Half tiles: per 16 columns of the head dim the warp loads its A
// fragments, then two 8-row n-tiles of B per ldmatrix. f32 tiles: per 8 columns, fragments split into 3xTF32 pairs.
template <class H, int kD, int kM, int kN, bool kAccumulate = false>
__device__ void gemm_nt(float (&s)[kM][kN / 8][4], const H* A, int a_row0, const H* B, int lane) {
  constexpr int kLd = padded<kD, H>();
  if (!kAccumulate) zero(s);
  if constexpr (std::is_same_v<H, float>) {
    const int g = lane >> 2, t = lane & 3, brow = (g >> 1) + 4 * (g & 1);  // B's row for C column g (see column())
#pragma unroll
    for (int kk = 0; kk < kD; kk += 8) {
      uint32_t ab[kM][4], as[kM][4];
#pragma unroll
      for (int mt = 0; mt < kM; ++mt) {
        const float* a = A + (a_row0 + 16 * mt + g) * kLd + kk + t;
        const float x[4] = {a[0], a[8 * kLd], a[4], a[8 * kLd + 4]};
        ptx::split_tf32(x, ab[mt], as[mt]);
      }
#pragma unroll
      for (int nt = 0; nt < kN / 8; ++nt) {
        const float* b = B + (8 * nt + brow) * kLd + kk + t;
        ptx::Tf32Pair b0 = ptx::split_tf32(b[0]), b1 = ptx::split_tf32(b[4]);
#pragma unroll
        for (int mt = 0; mt < kM; ++mt) ptx::mma_1688_3xtf32(s[mt][nt], ab[mt], as[mt], b0, b1);
      }
    }
  } else {
#pragma unroll
    for (int kk = 0; kk < kD; kk += 16) {
      uint32_t af[kM][4];
#pragma unroll
      for (int mt = 0; mt < kM; ++mt)
        ptx::ldmatrix_x4<false>(af[mt], ptx::ldmatrix_row<true>(A, kLd, a_row0 + 16 * mt, kk, lane));
#pragma unroll
      for (int nt = 0; nt < kN / 8; nt += 2) {
        uint32_t bf[4];
        ptx::ldmatrix_x4<false>(bf, ptx::ldmatrix_row<false>(B, kLd, 8 * nt, kk, lane));
#pragma unroll
        for (int mt = 0; mt < kM; ++mt) {
          ptx::mma_16816<H>(s[mt][nt], af[mt], bf[0], bf[1]);
          ptx::mma_16816<H>(s[mt][nt + 1], af[mt], bf[2], bf[3]);
        }
      }
    }
  }
}

}  // namespace liandan::cuda_impl::tiles
