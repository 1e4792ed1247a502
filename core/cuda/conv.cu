// im2col and its adjoint on CUDA (core/ops/conv.cpp: unfold, and conv2d on a GPU = im2col + cuBLAS GEMMs).
// The columns are [N, K, L] with any (n, k) strides: unfold's [N, K, L], or conv2d's [K, N·L] (one GEMM over
// all images for the weight gradient).
// im2col: a block row per column-matrix row (n, c, i, j), its threads over the L = Ho·Wo columns, so the writes
// are coalesced and the index arithmetic per element is one division by Wo; the input may be a strided view and
// the columns a half format (the GEMM operand's cast done in the same pass).
// col2im: a thread per input pixel sums the column entries of the windows that cover it, in window order (i, j)
// — the CPU's col2im order, so the two agree bit for bit — with no atomics and no zero-fill of dx.
// conv_implicit / conv_implicit_weight_grad: the same GEMMs with half (bf16/f16) operands on tensor cores, reading
// the columns straight from the image as they stage each tile (implicit GEMM), so no column matrix is written.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstring>

#include "core/cuda/common.cuh"
#include "core/cuda/kernels.h"
#include "core/cuda/tiles.cuh"

namespace liandan::cuda_impl {
namespace {

// Block shape for rows of `len` elements: x threads over a row (a multiple of a warp, at most kThreads), y rows.
dim3 row_block(int64_t len) {
  int64_t x = std::min<int64_t>(kThreads, (len + 31) / 32 * 32);
  return dim3(unsigned(x), unsigned(kThreads / x));
}
unsigned row_grid(int64_t rows, dim3 block) {
  int64_t g = (rows + block.y - 1) / block.y;
  LD_CHECK(g < (int64_t(1) << 31), "im2col/col2im on CUDA: ", rows, " rows are too many");
  return unsigned(g);
}

// Strides of x in elements: (n, c, y, x).
struct Strides4 {
  int64_t n, c, y, x;
};

// col's strides in elements: (n, k); its columns are contiguous.
struct ColStrides {
  int64_t n, k;
};

// V consecutive columns per thread (V·sizeof(D) = 16 bytes: one vector store instead of V scalar ones — im2col
// writes k² times what it reads) when the rows allow it: Wo and the row starts multiples of V; else V = 1.
template <class X, class D, int V>
__global__ void im2col_kernel(const X* x, Strides4 xs, D* col, ColStrides cs, ConvShape s, int64_t rows) {
  int64_t r = blockIdx.x * int64_t(blockDim.y) + threadIdx.y;
  if (r >= rows) return;
  int64_t K = s.C * s.kh * s.kw, Kt = K + s.extra_rows, k = r % Kt, n = r / Kt;
  int L = int(s.Ho * s.Wo), Wo = int(s.Wo);
  D* out = col + n * cs.n + k * cs.k;
  int64_t c = k / (s.kh * s.kw), i = (k / s.kw) % s.kh, j = k % s.kw;
  const X* xc = k < K ? x + n * xs.n + c * xs.c : x;
  for (int l0 = threadIdx.x * V; l0 < L; l0 += blockDim.x * V) {
    int oy = l0 / Wo, ox0 = l0 - oy * Wo;  // V columns in one output row (Wo % V == 0)
    int64_t iy = oy * s.stride - s.pad + i;
    D v[V];
#pragma unroll
    for (int e = 0; e < V; ++e) {
      int64_t ix = (ox0 + e) * s.stride - s.pad + j;
      if (k >= K) v[e] = narrow<D>(k == K ? 1.0f : 0.0f);  // the bias's row of ones, then zeros
      else v[e] = iy >= 0 && iy < s.H && ix >= 0 && ix < s.W ? narrow<D>(widen(xc[iy * xs.y + ix * xs.x]))
                                                             : narrow<D>(0.0f);
    }
    if constexpr (V == 1) {
      out[l0] = v[0];
    } else {
      uint4 packed;
      memcpy(&packed, v, sizeof(packed));
      *reinterpret_cast<uint4*>(out + l0) = packed;
    }
  }
}

// dx [N, C, H, W] (contiguous) from col [N, C·kh·kw, Ho·Wo]; A: the accumulation type.
template <class D, class X, class A>
__global__ void col2im_kernel(const D* col, ColStrides cs, X* dx, ConvShape s, int64_t planes) {
  int64_t plane = blockIdx.x * int64_t(blockDim.y) + threadIdx.y;  // (n, c)
  if (plane >= planes) return;
  int64_t n = plane / s.C, c = plane % s.C;
  const D* cp = col + n * cs.n + c * s.kh * s.kw * cs.k;  // the rows (c, i, j) of plane (n, c)
  X* out = dx + plane * s.H * s.W;
  int HW = int(s.H * s.W), W = int(s.W);
  for (int p = threadIdx.x; p < HW; p += blockDim.x) {
    int iy = p / W, ix = p - iy * W;
    A acc = 0;
    for (int64_t i = 0; i < s.kh; ++i) {
      int64_t ty = iy + s.pad - i;
      if (ty < 0 || ty % s.stride != 0 || ty / s.stride >= s.Ho) continue;
      for (int64_t j = 0; j < s.kw; ++j) {
        int64_t tx = ix + s.pad - j;
        if (tx < 0 || tx % s.stride != 0 || tx / s.stride >= s.Wo) continue;
        acc += A(widen(cp[(i * s.kw + j) * cs.k + (ty / s.stride) * s.Wo + tx / s.stride]));
      }
    }
    out[p] = narrow<X>(acc);
  }
}

ColStrides col_strides(const Tensor& col, const char* op) {
  LD_CHECK(col.dim() == 3 && col.strides()[2] == 1, op, " on CUDA: the columns [N, K, L] must be contiguous along L, ",
           "got strides ", shape_str(col.strides()));
  return {col.strides()[0], col.strides()[1]};
}


// ---------------------------------------------------------------- implicit GEMM on tensor cores (bf16 / f16)
// C[m][n] = Σ_k A(m, k)·B(n, k) with A and B gathered a [rows × 32] tile at a time into shared memory in the half
// format H (the GEMM operand's rounding) and multiplied on mma.sync (tiles::gemm_nt), f32 accumulators in registers.
// A block computes 64 × 128 of C with 4 warps of 32 × 64; the k tiles stream through two buffers (tiles::stream_tiles:
// the next tile's gathers are issued before the current tile's MMAs, one barrier a tile). blockIdx.z takes the
// k range [z·k_chunk, (z+1)·k_chunk): the weight gradient's pixel chunks, summed afterwards in chunk order
// (deterministic). The loaders say what A and B are:
//   forward   A = W [O, K] rows (MatrixRows), B = output pixels' columns of im2col(x) (PixelColumns), C → y (ImageOut)
//   dx        the same on dy with the flipped, transposed weight (stride 1: dx = conv(dy, W'), padding kh − 1 − pad)
//   dW        A = dy's channel rows over pixels (ChannelRows), B = im2col(x)'s rows over pixels (ColumnRows, with the
//             bias's row of ones), C → part[z] (PartialOut)
namespace ig {
using namespace tiles;
constexpr int kBM = 64, kBN = 128, kBK = 32, kBlock = 128;
template <class H> __host__ __device__ constexpr int ld() { return padded<kBK, H>(); }
template <class H> constexpr size_t shared_bytes() { return 2 * size_t(kBM + kBN) * ld<H>() * sizeof(H) + 4 * 32; }

// Walks the columns k = (c·kh + i)·kw + j of im2col(x) in order, keeping the element offset c·sc + i·sy + j·sx of
// (c, i, j) — one division at the start, increments after (the gathers' index arithmetic).
struct WindowWalk {
  int64_t k, K, off;
  int c, i, j;
  __device__ WindowWalk(int64_t k0, const ConvShape& s, const Strides4& xs) : k(k0), K(s.C * s.kh * s.kw) {
    int64_t kk = min(k0, K), area = s.kh * s.kw;
    c = int(kk / area);
    i = int(kk % area / s.kw);
    j = int(kk % s.kw);
    off = c * xs.c + i * xs.y + j * xs.x;
  }
  __device__ void next(const ConvShape& s, const Strides4& xs) {
    ++k;
    off += xs.x;
    if (++j == s.kw) {
      j = 0;
      off += xs.y - s.kw * xs.x;
      if (++i == s.kh) i = 0, ++c, off += xs.c - s.kh * xs.y;
    }
  }
};

// The image element under window position (i, j) of an output pixel whose window starts at (y0, x0) (`base`: its
// offset there), as f32; 0 in the padding. Past K: the bias's row of ones at k = K where the shape has extra rows.
template <class X>
__device__ float column_value(const X* x, const ConvShape& s, const WindowWalk& w, int64_t base, int64_t y0, int64_t x0) {
  if (w.k >= w.K) return w.k == w.K && s.extra_rows > 0 ? 1.0f : 0.0f;
  int64_t iy = y0 + w.i, ix = x0 + w.j;
  return iy >= 0 && iy < s.H && ix >= 0 && ix < s.W ? float(widen(x[base + w.off])) : 0.0f;
}

// Output pixel p = n·L + oy·Wo + ox of the shape: the offset of its window's corner in x and the corner (y0, x0).
struct PixelWindow {
  int64_t base, y0, x0;
  __device__ PixelWindow(int64_t p, const ConvShape& s, const Strides4& xs) {
    int64_t L = s.Ho * s.Wo, n = p / L, l = p % L;
    y0 = l / s.Wo * s.stride - s.pad;
    x0 = l % s.Wo * s.stride - s.pad;
    base = n * xs.n + y0 * xs.y + x0 * xs.x;
  }
};

// A: rows m of a contiguous [M, K] H matrix (the weights), columns k < k_end; cp.async 16 bytes at a time where K
// allows, else element by element.
template <class H>
struct MatrixRows {
  const H* a;
  int64_t M, K;
  template <int kRows> __device__ void load(H* t, int64_t m0, int64_t k0, int64_t k_end) const {
    if (K % 8 == 0 && reinterpret_cast<uintptr_t>(a) % 16 == 0) {
      for (int e = threadIdx.x; e < kRows * (kBK / 8); e += blockDim.x) {
        int r = e / (kBK / 8), c = e % (kBK / 8) * 8;
        int64_t m = m0 + r, k = k0 + c;
        if (m < M && k < k_end) ptx::cp_async_16(t + r * ld<H>() + c, a + m * K + k);
        else *reinterpret_cast<uint4*>(t + r * ld<H>() + c) = uint4{0u, 0u, 0u, 0u};
      }
      return;
    }
    for (int e = threadIdx.x; e < kRows * kBK; e += blockDim.x) {
      int r = e / kBK, c = e % kBK;
      int64_t m = m0 + r, k = k0 + c;
      t[r * ld<H>() + c] = m < M && k < k_end ? a[m * K + k] : to_half<H>(0.0f);
    }
  }
};

// A for dx (the adjoint of a stride-1 convolution with weights w [O, C·kh·kw], run as a convolution of dy): row
// m = input channel c, column k = (o, r) → w[o, c, kh·kw − 1 − r], the weights flipped and transposed in place of a
// copy. Each thread keeps one column of the tile (one division a tile) and walks its rows.
template <class H>
struct FlippedRows {
  const H* w;
  int64_t M, area;  // M = C rows; area = kh·kw
  template <int kRows> __device__ void load(H* t, int64_t m0, int64_t k0, int64_t k_end) const {
    const int col = threadIdx.x % kBK;
    const int64_t k = k0 + col, o = k / area, r = k % area;
    const H* src = w + o * M * area + (area - 1 - r);
    for (int row = threadIdx.x / kBK; row < kRows; row += blockDim.x / kBK) {
      const int64_t m = m0 + row;
      t[row * ld<H>() + col] = m < M && k < k_end ? src[m * area] : to_half<H>(0.0f);
    }
  }
};

// B for the forward: row p = an output pixel, columns k of im2col(x) — a thread per pixel (kRows = the block's
// threads) walks its 32 columns and stores them 8 at a time (16 bytes: conflict-free rows of 80 bytes).
template <class H, class X>
struct PixelColumns {
  const X* x;
  Strides4 xs;
  ConvShape s;
  int64_t P;  // pixels: N·Ho·Wo
  template <int kRows> __device__ void load(H* t, int64_t p0, int64_t k0, int64_t) const {
    const int r = threadIdx.x;
    const int64_t p = p0 + r;
    PixelWindow pw(min(p, P - 1), s, xs);
    WindowWalk w(k0, s, xs);
#pragma unroll
    for (int c8 = 0; c8 < kBK; c8 += 8) {
      H h[8];
#pragma unroll
      for (int e = 0; e < 8; ++e, w.next(s, xs))
        h[e] = to_half<H>(p < P ? column_value(x, s, w, pw.base, pw.y0, pw.x0) : 0.0f);
      uint4 packed;  // one 16-byte shared store (a memcpy to an address not known to be aligned may go by bytes)
      memcpy(&packed, h, sizeof(packed));
      *reinterpret_cast<uint4*>(t + r * ld<H>() + c8) = packed;
    }
  }
};

// A for the weight gradient: row m = output channel, columns = pixels p < p_end of dy [N, M, L] (contiguous, f32 or
// half): a lane per pixel (coalesced), a warp per row.
template <class H, class Y>
struct ChannelRows {
  const Y* dy;
  int64_t M, L;
  template <int kRows> __device__ void load(H* t, int64_t m0, int64_t p0, int64_t p_end) const {
    const int lane = threadIdx.x & 31;
    const int64_t p = p0 + lane, n = p / L, l = p % L;
    for (int r = threadIdx.x / 32; r < kRows; r += blockDim.x / 32) {
      const int64_t m = m0 + r;
      t[r * ld<H>() + lane] = to_half<H>(p < p_end && m < M ? float(widen(dy[(n * M + m) * L + l])) : 0.0f);
    }
  }
};

// B for the weight gradient: row k of im2col(x) (with the bias's ones row), columns = pixels p < p_end: a lane per
// pixel, each warp walking kRows / 4 consecutive rows.
template <class H, class X>
struct ColumnRows {
  const X* x;
  Strides4 xs;
  ConvShape s;
  template <int kRows> __device__ void load(H* t, int64_t k0, int64_t p0, int64_t p_end) const {
    constexpr int kPerWarp = kRows / (kBlock / 32);
    const int lane = threadIdx.x & 31, r0 = threadIdx.x / 32 * kPerWarp;
    const int64_t p = p0 + lane;
    PixelWindow pw(min(p, p_end - 1), s, xs);
    WindowWalk w(k0 + r0, s, xs);
    for (int r = r0; r < r0 + kPerWarp; ++r, w.next(s, xs))
      t[r * ld<H>() + lane] = to_half<H>(p < p_end ? column_value(x, s, w, pw.base, pw.y0, pw.x0) : 0.0f);
  }
};

// The warp's 32 × 64 accumulators, element by element: f(m, n, value) for the C fragment's rows and columns.
template <class F>
__device__ void for_each_result(const float (&acc)[2][8][4], int64_t m_base, int64_t n_base, int lane, F f) {
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) f(m_base + 16 * mt + g + 8 * (e >> 1), n_base + 8 * nt + 2 * t + (e & 1), acc[mt][nt][e]);
}

// C[m][p] (+ bias[m] rounded to H, as the GEMM form's bias row) into y [N, M, L] (contiguous).
template <class Out, class H>
struct ImageOut {
  Out* y;
  const float* bias;  // or null
  int64_t M, L, P;
  __device__ void operator()(const float (&acc)[2][8][4], int64_t m_base, int64_t n_base, int lane) const {
    for_each_result(acc, m_base, n_base, lane, [&](int64_t m, int64_t p, float v) {
      if (m < M && p < P) y[(p / L * M + m) * L + p % L] = narrow<Out>(bias ? v + float(widen(to_half<H>(bias[m]))) : v);
    });
  }
};

// C[m][k] into part[z] [M, N] (f32).
struct PartialOut {
  float* part;
  int64_t M, N;
  __device__ void operator()(const float (&acc)[2][8][4], int64_t m_base, int64_t n_base, int lane) const {
    float* out = part + blockIdx.z * M * N;
    for_each_result(acc, m_base, n_base, lane, [&](int64_t m, int64_t k, float v) {
      if (m < M && k < N) out[m * N + k] = v;
    });
  }
};

template <class H, class ALoad, class BLoad, class Epilogue>
__global__ void __launch_bounds__(kBlock) igemm_kernel(ALoad A, BLoad B, Epilogue out, int64_t k_len, int64_t k_chunk) {
  extern __shared__ unsigned char smem[];
  Carve cv{smem};
  H *As[2], *Bs[2];
  for (int b = 0; b < 2; ++b) As[b] = cv.take<H>(kBM * ld<H>()), Bs[b] = cv.take<H>(kBN * ld<H>());
  const int w = threadIdx.x / 32, lane = threadIdx.x & 31, wm = w & 1, wn = w >> 1;
  const int64_t m0 = int64_t(blockIdx.y) * kBM, n0 = int64_t(blockIdx.x) * kBN;
  const int64_t kb = int64_t(blockIdx.z) * k_chunk, ke = min(k_len, kb + k_chunk);
  float acc[2][8][4];
  zero(acc);
  stream_tiles<2>(kb, ke, kBK,
                  [&](int64_t k0, int b) {
                    A.template load<kBM>(As[b], m0, k0, ke);
                    B.template load<kBN>(Bs[b], n0, k0, ke);
                  },
                  [&](int64_t, int b) { gemm_nt<H, kBK, 2, 64, true>(acc, As[b], 32 * wm, Bs[b] + 64 * wn * ld<H>(), lane); });
  out(acc, m0 + 32 * wm, n0 + 64 * wn, lane);
}

template <class H, class ALoad, class BLoad, class Epilogue>
void launch(const ALoad& a, const BLoad& b, const Epilogue& out, int64_t M, int64_t N, int64_t k_len, int64_t chunks,
            cudaStream_t stream) {
  LD_CHECK((M + kBM - 1) / kBM <= 65535 && chunks <= 65535 && (N + kBN - 1) / kBN < (int64_t(1) << 31),
           "conv2d on CUDA (implicit GEMM): a ", M, " x ", N, " product is too large for the grid");
  dim3 grid(unsigned((N + kBN - 1) / kBN), unsigned((M + kBM - 1) / kBM), unsigned(chunks));
  igemm_kernel<H, ALoad, BLoad, Epilogue><<<grid, kBlock, shared_bytes<H>(), stream>>>(a, b, out, k_len,
                                                                                       (k_len + chunks - 1) / chunks);
}

// f(H) for the half format of `dt`; false for any other dtype.
template <class F>
bool with_half(DType dt, F&& f) {
  if (dt == DType::bf16) f(__nv_bfloat16{});
  else if (dt == DType::f16) f(__half{});
  else return false;
  return true;
}
// f(T) for T = float or H, the element types the gathers and stores take (an activation or gradient in f32, or
// already in the operand format); false for others.
template <class H, class F>
bool with_f32_or(DType dt, F&& f) {
  if (dt == DType::f32) f(float{});
  else if (dt == (std::is_same_v<H, __half> ? DType::f16 : DType::bf16)) f(H{});
  else return false;
  return true;
}
}  // namespace ig
}  // namespace

void im2col(const Tensor& x, const Tensor& col, const ConvShape& s) {
  int64_t rows = s.N * (s.C * s.kh * s.kw + s.extra_rows);
  if (rows == 0 || s.Ho * s.Wo == 0) return;
  LD_CHECK(s.Ho * s.Wo < (int64_t(1) << 31) && s.H * s.W < (int64_t(1) << 31), "im2col on CUDA: image too large");
  Strides4 xs{x.strides()[0], x.strides()[1], x.strides()[2], x.strides()[3]};
  ColStrides cs = col_strides(col, "im2col");
  with_float_type(x.dtype(), "im2col", [&](auto xt) {
    with_float_type(col.dtype(), "im2col", [&](auto dt) {
      using X = decltype(xt);
      using D = decltype(dt);
      constexpr int kV = 16 / int(sizeof(D));
      D* out = static_cast<D*>(col.device_data());
      bool vec = s.Wo % kV == 0 && cs.n % kV == 0 && cs.k % kV == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0;
      const X* px = static_cast<const X*>(x.device_data());
      if (vec) {
        dim3 block = row_block(s.Ho * s.Wo / kV);
        im2col_kernel<X, D, kV><<<row_grid(rows, block), block, 0, stream_of(col)>>>(px, xs, out, cs, s, rows);
      } else {
        dim3 block = row_block(s.Ho * s.Wo);
        im2col_kernel<X, D, 1><<<row_grid(rows, block), block, 0, stream_of(col)>>>(px, xs, out, cs, s, rows);
      }
    });
  });
  LD_CUDA_LAUNCHED("im2col");
}

void col2im(const Tensor& col, const Tensor& dx, const ConvShape& s) {
  int64_t planes = s.N * s.C;
  if (planes == 0 || s.H * s.W == 0) return;
  dim3 block = row_block(s.H * s.W);
  with_float_type(col.dtype(), "col2im", [&](auto ct) {
    with_float_type(dx.dtype(), "col2im", [&](auto xt) {
      using D = decltype(ct);
      using X = decltype(xt);
      using A = std::conditional_t<std::is_same_v<X, double>, double, float>;
      col2im_kernel<D, X, A><<<row_grid(planes, block), block, 0, stream_of(dx)>>>(
          static_cast<const D*>(col.device_data()), col_strides(col, "col2im"), static_cast<X*>(dx.device_data()), s,
          planes);
    });
  });
  LD_CUDA_LAUNCHED("col2im");
}

bool conv_implicit(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y, const ConvShape& s,
                   bool adjoint) {
  const int64_t area = s.kh * s.kw, K = s.C * area, M = adjoint ? w.size(1) / area : w.size(0), P = s.N * s.Ho * s.Wo;
  LD_CHECK(w.dim() == 2 && w.size(adjoint ? 0 : 1) * (adjoint ? area : 1) == K && w.is_contiguous() &&
               y.is_contiguous(),
           "conv_implicit: weights must be a contiguous [O, C·kh·kw] matrix and y contiguous");
  if (P == 0 || M == 0) return true;
  Strides4 xs{x.strides()[0], x.strides()[1], x.strides()[2], x.strides()[3]};
  bool ok = false;
  ig::with_half(w.dtype(), [&](auto ht) {
    using H = decltype(ht);
    ig::with_f32_or<H>(x.dtype(), [&](auto xt) {
      using X = decltype(xt);
      ok = ig::with_f32_or<H>(y.dtype(), [&](auto yt) {
        using Y = decltype(yt);
        const H* wp = static_cast<const H*>(w.device_data());
        ig::PixelColumns<H, X> b{static_cast<const X*>(x.device_data()), xs, s, P};
        ig::ImageOut<Y, H> out{static_cast<Y*>(y.device_data()),
                               bias.defined() ? static_cast<const float*>(bias.device_data()) : nullptr, M,
                               s.Ho * s.Wo, P};
        if (adjoint) ig::launch<H>(ig::FlippedRows<H>{wp, M, area}, b, out, M, P, K, 1, stream_of(y));
        else ig::launch<H>(ig::MatrixRows<H>{wp, M, K}, b, out, M, P, K, 1, stream_of(y));
      });
    });
  });
  if (ok) LD_CUDA_LAUNCHED("conv2d (implicit GEMM)");
  return ok;
}

bool conv_implicit_weight_grad(const Tensor& dy, const Tensor& x, const Tensor& part, const ConvShape& s, DType half) {
  const int64_t M = dy.size(1), Kt = part.size(2), L = s.Ho * s.Wo, P = s.N * L;
  LD_CHECK(dy.is_contiguous() && part.is_contiguous() && part.dtype() == DType::f32 && part.size(1) == M,
           "conv_implicit_weight_grad: dy must be contiguous, the partials a contiguous f32 [chunks, O, Kt]");
  if (P == 0 || M == 0) return true;
  Strides4 xs{x.strides()[0], x.strides()[1], x.strides()[2], x.strides()[3]};
  bool ok = false;
  ig::with_half(half, [&](auto ht) {
    using H = decltype(ht);
    ig::with_f32_or<H>(dy.dtype(), [&](auto yt) {
      using Y = decltype(yt);
      ok = ig::with_f32_or<H>(x.dtype(), [&](auto xt) {
        using X = decltype(xt);
        ig::ChannelRows<H, Y> a{static_cast<const Y*>(dy.device_data()), M, L};
        ig::ColumnRows<H, X> b{static_cast<const X*>(x.device_data()), xs, s};
        ig::launch<H>(a, b, ig::PartialOut{static_cast<float*>(part.device_data()), M, Kt}, M, Kt, P, part.size(0),
                      stream_of(part));
      });
    });
  });
  if (ok) LD_CUDA_LAUNCHED("conv2d weight gradient (implicit GEMM)");
  return ok;
}

}  // namespace liandan::cuda_impl
