// A check of core/cuda/mma.cuh on the device itself: each wrapper (mma.sync m16n8k16 bf16/f16 and m16n8k8 tf32,
// ldmatrix x4 and x4.trans, cvt.rna.tf32, cp.async) runs once on small integer matrices, with every fragment
// built from the PTX ISA's layouts by plain loads, and the host compares the results with its own products. The
// attention kernels are built on these layouts; where a GPU disagrees with them, this names the instruction (the
// attention tests would only show wrong numbers). On the emulated GPU it checks the emulator against the same
// table. cuda::check_tensor_core_layouts() (core/device.h); test_cuda and `liandan info` run it.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/cuda/common.cuh"
#include "core/cuda/kernels.h"
#include "core/cuda/mma.cuh"
#include "core/half.h"

namespace liandan::cuda_impl {
namespace {

// Inputs: A 16 × 16 and B 16 × 8 small integers (exact in bf16, f16 and tf32), row-major, as half bits (ah, bh)
// and f32 (af, bf). Outputs (per lane, 4 floats or registers each): d_bf16, d_f16 (A·B), d_tf32 (A[:, :8]·B[:8]),
// the ldmatrix registers (a tile of A, plain and transposed), the tf32 roundings of 4 values, a cp.async copy.
struct CheckOut {
  float d_bf16[32][4], d_f16[32][4], d_tf32[32][4];
  uint32_t ld_plain[32][4], ld_trans[32][4], tf32[4];
  float copied[4];
};

// Two halves of a 16-bit matrix (row-major, ld elements a row) as one register: (r, c) and (r, c+1), or down a
// column (r, c) and (r+1, c); the first in the low 16 bits.
__device__ uint32_t pair_row(const uint16_t* m, int ld, int r, int c) {
  return uint32_t(m[r * ld + c]) | uint32_t(m[r * ld + c + 1]) << 16;
}
__device__ uint32_t pair_col(const uint16_t* m, int ld, int r, int c) {
  return uint32_t(m[r * ld + c]) | uint32_t(m[(r + 1) * ld + c]) << 16;
}

// m16n8k16 with H operands: A (g, 2t) (g+8, 2t) (g, 2t+8) (g+8, 2t+8); B (2t, g) (2t+8, g).
template <class H>
__device__ void half_product(const uint16_t* a_bits, const uint16_t* b_bits, float (&out)[4], int g, int t) {
  const uint32_t a[4] = {pair_row(a_bits, 16, g, 2 * t), pair_row(a_bits, 16, g + 8, 2 * t),
                         pair_row(a_bits, 16, g, 2 * t + 8), pair_row(a_bits, 16, g + 8, 2 * t + 8)};
  float d[4] = {0, 0, 0, 0};
  ptx::mma_16816<H>(d, a, pair_col(b_bits, 8, 2 * t, g), pair_col(b_bits, 8, 2 * t + 8, g));
  for (int e = 0; e < 4; ++e) out[e] = d[e];
}

__global__ void tensor_core_check_kernel(const uint16_t* a_bf16, const uint16_t* b_bf16, const uint16_t* a_f16,
                                         const uint16_t* b_f16, const float* af, const float* bf, const float* round_in,
                                         CheckOut* out) {
  __shared__ __align__(16) uint16_t tile[16 * 16];
  __shared__ __align__(16) float landed[4];
  const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
  half_product<__nv_bfloat16>(a_bf16, b_bf16, out->d_bf16[lane], g, t);
  half_product<__half>(a_f16, b_f16, out->d_f16[lane], g, t);
  // m16n8k8 tf32: A (g, t) (g+8, t) (g, t+4) (g+8, t+4) of A's first 8 columns; B (t, g) (t+4, g).
  {
    const uint32_t a[4] = {ptx::to_tf32(af[g * 16 + t]), ptx::to_tf32(af[(g + 8) * 16 + t]),
                           ptx::to_tf32(af[g * 16 + t + 4]), ptx::to_tf32(af[(g + 8) * 16 + t + 4])};
    float d[4] = {0, 0, 0, 0};
    ptx::mma_1688_tf32(d, a, ptx::to_tf32(bf[t * 8 + g]), ptx::to_tf32(bf[(t + 4) * 8 + g]));
    for (int e = 0; e < 4; ++e) out->d_tf32[lane][e] = d[e];
  }
  // ldmatrix over A's bf16 bits staged in shared memory (16 × 16, rows 32 bytes apart).
  for (int i = lane; i < 256; i += 32) tile[i] = a_bf16[i];
  __syncwarp();
  uint32_t r[4];
  ptx::ldmatrix_x4<false>(r, ptx::ldmatrix_row<true>(tile, 16, 0, 0, lane));
  for (int e = 0; e < 4; ++e) out->ld_plain[lane][e] = r[e];
  ptx::ldmatrix_x4<true>(r, ptx::ldmatrix_row<true>(tile, 16, 0, 0, lane));
  for (int e = 0; e < 4; ++e) out->ld_trans[lane][e] = r[e];
  if (lane < 4) out->tf32[lane] = ptx::to_tf32(round_in[lane]);
  if (lane == 0) ptx::cp_async_16(landed, round_in);
  ptx::cp_async_wait_all();
  __syncwarp();
  if (lane < 4) out->copied[lane] = landed[lane];
}

// What the PTX ISA says each lane's registers hold, computed on the host.
std::string compare(const CheckOut& o, const std::vector<float>& A, const std::vector<float>& B,
                    const std::vector<uint16_t>& a_bits, const std::vector<float>& round_in) {
  std::string bad;
  auto note = [&](const std::string& what) {
    if (bad.find(what) == std::string::npos) bad += (bad.empty() ? "" : "; ") + what;
  };
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane & 3;
    for (int e = 0; e < 4; ++e) {
      const int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
      float full = 0, half_k = 0;
      for (int k = 0; k < 16; ++k) full += A[size_t(row * 16 + k)] * B[size_t(k * 8 + col)];
      for (int k = 0; k < 8; ++k) half_k += A[size_t(row * 16 + k)] * B[size_t(k * 8 + col)];
      if (o.d_bf16[lane][e] != full) note("mma.sync m16n8k16 bf16");
      if (o.d_f16[lane][e] != full) note("mma.sync m16n8k16 f16");
      if (o.d_tf32[lane][e] != half_k) note("mma.sync m16n8k8 tf32");
    }
    for (int i = 0; i < 4; ++i) {  // matrix i: rows 8·(i & 1).., cols 8·(i >> 1).. of the 16 × 16 tile
      const int r0 = 8 * (i & 1), c0 = 8 * (i >> 1);
      auto at = [&](int r, int c) { return uint32_t(a_bits[size_t((r0 + r) * 16 + c0 + c)]); };
      if (o.ld_plain[lane][i] != (at(g, 2 * t) | at(g, 2 * t + 1) << 16)) note("ldmatrix.x4");
      if (o.ld_trans[lane][i] != (at(2 * t, g) | at(2 * t + 1, g) << 16)) note("ldmatrix.x4.trans");
    }
  }
  for (int i = 0; i < 4; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &round_in[size_t(i)], 4);
    const uint32_t want = (bits + 0x1000u) & 0xFFFFE000u;  // finite inputs: nearest, ties away from zero
    if (o.tf32[i] != want) note("cvt.rna.tf32.f32");
    if (o.copied[i] != round_in[size_t(i)]) note("cp.async");
  }
  return bad;
}

}  // namespace

std::string check_tensor_core_layouts(cudaStream_t stream) {
  std::vector<float> A(256), B(128);
  std::vector<uint16_t> a_bf16(256), b_bf16(128), a_f16(256), b_f16(128);
  for (int i = 0; i < 256; ++i) A[size_t(i)] = float((i * 7) % 11) - 5.0f;  // distinct rows and columns, exact
  for (int i = 0; i < 128; ++i) B[size_t(i)] = float((i * 5) % 13) - 6.0f;
  for (int i = 0; i < 256; ++i) a_bf16[size_t(i)] = float_to_bf16(A[size_t(i)]), a_f16[size_t(i)] = float_to_f16(A[size_t(i)]);
  for (int i = 0; i < 128; ++i) b_bf16[size_t(i)] = float_to_bf16(B[size_t(i)]), b_f16[size_t(i)] = float_to_f16(B[size_t(i)]);
  // tf32 rounding cases: a tie (rounds away), just below a tie (down), negative tie, an exact value.
  std::vector<float> round_in(4);
  const uint32_t cases[4] = {0x3F801000u, 0x3F800FFFu, 0xBF803000u, 0x40400000u};
  std::memcpy(round_in.data(), cases, sizeof cases);
  // One device buffer for the inputs and the output.
  const size_t in_bytes = 2 * (256 + 128) * 2 + (256 + 128 + 4) * 4;
  void* dev = nullptr;
  LD_CUDA_CHECK(cudaMalloc(&dev, in_bytes + sizeof(CheckOut)));
  std::vector<unsigned char> host(in_bytes);
  unsigned char* p = host.data();
  auto put = [&](const void* src, size_t n) {
    std::memcpy(p, src, n);
    p += n;
  };
  put(a_bf16.data(), 512), put(b_bf16.data(), 256), put(a_f16.data(), 512), put(b_f16.data(), 256);
  put(A.data(), 1024), put(B.data(), 512), put(round_in.data(), 16);
  auto* d = static_cast<unsigned char*>(dev);
  LD_CUDA_CHECK(cudaMemcpyAsync(dev, host.data(), in_bytes, cudaMemcpyHostToDevice, stream));
  auto* out = reinterpret_cast<CheckOut*>(d + in_bytes);
  tensor_core_check_kernel<<<1, 32, 0, stream>>>(
      reinterpret_cast<const uint16_t*>(d), reinterpret_cast<const uint16_t*>(d + 512),
      reinterpret_cast<const uint16_t*>(d + 768), reinterpret_cast<const uint16_t*>(d + 1280),
      reinterpret_cast<const float*>(d + 1536), reinterpret_cast<const float*>(d + 2560),
      reinterpret_cast<const float*>(d + 3072), out);
  LD_CUDA_LAUNCHED("tensor_core_check");
  CheckOut o;
  LD_CUDA_CHECK(cudaMemcpyAsync(&o, out, sizeof o, cudaMemcpyDeviceToHost, stream));
  LD_CUDA_CHECK(cudaStreamSynchronize(stream));
  LD_CUDA_CHECK(cudaFree(dev));
  return compare(o, A, B, a_bf16, round_in);
}

}  // namespace liandan::cuda_impl
