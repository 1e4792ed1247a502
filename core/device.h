#pragma once
// Devices other than the CPU. A device provides memory, copies and the core's kernels behind one table
// (DeviceBackend); an op asks the table of its tensor's device instead of containing `#ifdef CUDA`. Kernels that
// moved to the registry (core/dispatch.h) are not in this table: the elementwise family's
// (core/ops/elementwise_kernels.h) and those of the layers above the core (optim/kernels.h, losses/kernels.h),
// registered in slots next to their CPU code. The CPU's kernels are
// the ops' own loops (core/cpu/), so the CPU needs no table: ops run them directly.
//
// A kernel a device does not have is an Error naming the op and the device ("op 'softplus' has no kernel on
// cuda:0 yet; move the tensor to the CPU"), never a crash: CPU code refuses device pointers (data_ptr).
#include <string>

#include "core/allocator.h"
#include "core/host_device.h"
#include "core/tensor.h"

namespace liandan {

// Where row i of head bh (= b·H + h) of an attention operand starts, in elements from its data pointer: a
// [B, H, T, D] tensor with any strides on B, H and T and a contiguous last dim — the heads split out of a fused
// QKV projection, or an output laid out [B, T, H, D] so that the head merge is a view — or a contiguous tensor
// with its leading dims flattened (heads = BH, sh = T·D).
struct HeadRows {
  int64_t sb = 0, sh = 0, st = 0, heads = 1;
  LD_HOST_DEVICE int64_t at(int64_t bh, int64_t i) const { return (bh / heads) * sb + (bh % heads) * sh + i * st; }
};
HeadRows head_rows(const Tensor& t);  // (core/ops/attention.cpp) t in one of the two layouts above

// The geometry of one fused attention call: BH = batch·heads rows of [Tq, D] queries, [Tk, D] keys and
// [Tk, Dv] values (laid out as HeadRows); `heads` = BH / B for a key_valid mask of [B, Tk]; scale multiplies q·k.
// autocast: bf16 or f16 when autocast is on — the GEMMs take that format with f32 accumulation (tensor cores).
// rope_pairs > 0: RoPE inside the kernels (core/ops/attention.h): q, k rotated by the contiguous f32 [Tk, rope_pairs]
// device tables rope_cos/rope_sin (query i at row Tk − Tq + i), pairs interleaved or split in halves (rope_half);
// dq, dk rotated back.
struct AttentionShape {
  int64_t BH, Tq, Tk, D, Dv, heads;
  double scale;
  bool causal;
  DType autocast = DType::f32;
  const float* rope_cos = nullptr;
  const float* rope_sin = nullptr;
  int64_t rope_pairs = 0;
  bool rope_half = false;
};

// The geometry of an im2col (unfold) and its adjoint: x [N, C, H, W] with zero padding `pad` on every side, a
// kh × kw window moved by `stride`, giving columns [N, C·kh·kw, Ho·Wo] (row (c·kh + i)·kw + j, column oy·Wo + ox).
// extra_rows > 0: im2col writes that many more rows after them, the first all ones (a convolution's bias row), the
// rest zeros (col2im reads only the C·kh·kw rows).
struct ConvShape {
  int64_t N, C, H, W, kh, kw, stride, pad, Ho, Wo;
  int64_t extra_rows = 0;
};

// One line of a GPU op profile (cuda::profile_stop): a kernel-table op, how often it ran, its GPU time.
struct OpTime {
  std::string op;
  int64_t calls = 0;
  double ms = 0;
};

class DeviceBackend {
 public:
  virtual ~DeviceBackend() = default;
  virtual std::string describe() const = 0;  // e.g. "NVIDIA H200, sm_90, 139.8 GiB"

  // ---- memory (a caching allocator) and copies
  virtual void* allocate(size_t bytes) = 0;  // Error naming the size and the allocator's state on OOM
  virtual void deallocate(void* p, size_t bytes) = 0;
  virtual CachingAllocator& allocator() = 0;
  // Host → device returns once `src` may be reused (through pinned staging it need not wait for the copy);
  // device → host returns when the data is there. Both are ordered with the device's kernels.
  virtual void copy_from_host(void* dst, const void* src, size_t bytes) = 0;
  virtual void copy_to_host(void* dst, const void* src, size_t bytes) = 0;
  virtual void synchronize() = 0;
  // Events on the device's stream, for timing GPU work without synchronizing in between (cuda::EventTimer).
  virtual void* event_create() = 0;
  virtual void event_record(void* event) = 0;
  virtual double event_elapsed_ms(void* start, void* stop) = 0;  // waits for `stop`
  virtual void event_destroy(void* event) = 0;
  // The op profiler (cuda::profile_start / profile_stop).
  virtual void profile_start() = 0;
  virtual std::vector<OpTime> profile_stop() = 0;  // by GPU time, largest first
  // Brackets the call of a kernel from the registry (core/dispatch.h, KernelScope): makes the device current and,
  // while the profiler runs, times the call under `op` + `suffix`. op_begin's token goes back to op_end.
  virtual void* op_begin(const char* op, const char* suffix = "") = 0;
  virtual void op_end(void* token) = 0;
  // cuda::check_tensor_core_layouts: "" when the device's tensor-core instructions match their documented layouts.
  virtual std::string check_tensor_core_layouts() = 0;

  // ---- kernels. Tensors are on this device; outputs are preallocated and contiguous unless said.
  // dst[i] = src[i] over dst's shape (dst strided), src read through `src_strides` (0 on broadcast dims),
  // converting between any two of f32, f64, i64, bf16, f16 (half formats rounded as core/half.h does).
  virtual void copy_strided(const Tensor& dst, const Tensor& src, const Shape& src_strides) = 0;
  virtual void fill(const Tensor& dst, double value) = 0;  // dst strided
  // out[o, j] = Σ_r x[o, r, j] for a contiguous x viewed as [outer, R, inner]; deterministic (a fixed
  // summation tree, no atomics), accumulated in double for f32 as on the CPU.
  virtual void sum_run(const Tensor& x, int64_t outer, int64_t R, int64_t inner, const Tensor& out) = 0;
  // max (is_max) or min over R of a contiguous [outer, R, inner] into vals [outer, inner], with the index of the
  // first extreme element into idx (i64; may be undefined); a NaN wins. cumsum: running sums along R into y
  // (contiguous, x's shape), from the end when `reverse`. Both in the CPU kernels' order: bit-identical.
  virtual void extreme_run(const Tensor& x, int64_t outer, int64_t R, int64_t inner, const Tensor& vals,
                           const Tensor& idx, bool is_max) = 0;
  virtual void cumsum_run(const Tensor& x, int64_t outer, int64_t R, int64_t inner, const Tensor& y, bool reverse) = 0;
  // out[i] = Σ xs[i]² in double (out: f64 [xs.size()] on this device; xs contiguous f32/f64), all tensors in a few
  // launches, deterministically; NaN/Inf propagate. (Gradient norms and the non-finite check of a step: one copy
  // back for the whole model instead of a reduction and a synchronization per parameter.)
  virtual void sum_squares(const std::vector<Tensor>& xs, const Tensor& out) = 0;
  // C[i] = op(A[i]) @ op(B[i]) for i < batch, row-major, as cpu::gemm's arguments (lda etc. in elements).
  // dt is the operands' dtype; C is f32 when they are bf16/f16 (f32 accumulation), or with half_result the
  // f32 sums rounded to dt (the GEMM's epilogue rounds: no f32 result written and read back by a cast).
  virtual void gemm_batched(DType dt, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                            const void* A, int64_t lda, int64_t stride_a, const void* B, int64_t ldb,
                            int64_t stride_b, void* C, int64_t ldc, int64_t stride_c, int64_t batch,
                            bool half_result) = 0;
  // softmax / log_softmax over n of a contiguous [outer, n, inner] (y likewise), max-subtracted; and its
  // backward: dx = y·(g − Σ g·y), or for log_softmax dx = g − exp(y)·Σ g.
  virtual void softmax(const Tensor& x, const Tensor& y, int64_t outer, int64_t n, int64_t inner, bool log) = 0;
  virtual void softmax_backward(const Tensor& y, const Tensor& g, const Tensor& dx, int64_t outer, int64_t n,
                                int64_t inner, bool log) = 0;
  // layer_norm (center) / rms_norm over rows of `len` of a contiguous x: y, and the per-row mean (0 for rms)
  // and rstd saved for the backward; w, b: [len] or undefined. The backward writes dx, dw, db (each may be
  // undefined), deterministically (core/ops/norm.cpp has the math).
  virtual void norm_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y, const Tensor& mean,
                            const Tensor& rstd, int64_t rows, int64_t len, bool center, double eps) = 0;
  virtual void norm_backward(const Tensor& x, const Tensor& w, const Tensor& g, const Tensor& mean, const Tensor& rstd,
                             const Tensor& dx, const Tensor& dw, const Tensor& db, int64_t rows, int64_t len,
                             bool center) = 0;
  // group_norm (+ SiLU when `silu`) of a contiguous x [N, C, S...] in G groups; w, b: [C] or undefined; mean,
  // rstd: [N·G]. The backward writes dx, dw, db (each may be undefined), deterministically.
  virtual void group_norm_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y, const Tensor& mean,
                                  const Tensor& rstd, int64_t N, int64_t C, int64_t G, int64_t S, double eps,
                                  bool silu) = 0;
  virtual void group_norm_backward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& g,
                                   const Tensor& mean, const Tensor& rstd, const Tensor& dx, const Tensor& dw,
                                   const Tensor& db, int64_t N, int64_t C, int64_t G, int64_t S, bool silu) = 0;
  // RoPE (core/ops/rope.h): y = x (y contiguous; x's rows [.., D] anywhere its strides say, the last dim
  // contiguous, at most 8 leading dims) with its first 2P dims rotated by contiguous cos/sin tables ([.., P]);
  // x's row with index i over its leading dims `lead` uses table row Σ i_d·table_strides[d]; sign −1 rotates
  // backwards (the gradient).
  // Indexing (core/ops/index.cpp), deterministic. gather (or scatter_add, dst += ...) along dim: idx with shape s,
  // src and dst strided, every coordinate but dim shared (i64 idx on this device).
  virtual void gather_scatter(bool gather, const Tensor& idx, const Tensor& src, const Tensor& dst, int64_t dim) = 0;
  // out [outer, K, inner] = x [outer, n, inner] rows idx[k] (contiguous); and its backward, an index_add over
  // segments the host sorted: dx[o, rows[u], j] = Σ_{p in [starts[u], starts[u+1])} g[o, order[p], j] (the other
  // rows of dx are left as they are: zeroed by the caller).
  virtual void index_select(const Tensor& x, const Tensor& idx, int64_t outer, int64_t n, int64_t inner,
                            const Tensor& out) = 0;
  virtual void index_add_rows(const Tensor& g, const Tensor& order, const Tensor& starts, const Tensor& rows,
                              int64_t outer, int64_t n, int64_t inner, const Tensor& dx) = 0;
  // im2col (unfold and conv2d, core/ops/conv.cpp): col [N, C·kh·kw, Ho·Wo] (any strides for its first two dims,
  // contiguous along the last; its own dtype: a half col from an f32 x is rounded once) from x [N, C, H, W]
  // (strided); and its adjoint, dx = Σ over the windows that cover each pixel, in window order (i, j) with f32/f64
  // accumulation (dx contiguous, x's dtype; col may be half).
  virtual void im2col(const Tensor& x, const Tensor& col, const ConvShape& s) = 0;
  virtual void col2im(const Tensor& col, const Tensor& dx, const ConvShape& s) = 0;
  // Convolution as an implicit GEMM on tensor cores (no column matrix in memory), with half operands (bf16/f16,
  // autocast's): y [N, O, Ho, Wo] (contiguous, f32 or the half format) = w [O, C·kh·kw] (contiguous, half) · im2col(x)
  // + bias (f32 [O], optional, rounded to the half format); x (f32 or that half format) any strides. adjoint: w is
  // instead the [O', C'·kh·kw] weight matrix of the stride-1 convolution whose input gradient this computes (x = its
  // dy, s.C = O'; y = its dx, C' channels), read flipped and transposed. And the weight gradient's partial sums over
  // part.size(0) pixel chunks: part [chunks, O, Kt] (f32) = dy [N, O, Ho, Wo] (contiguous) · im2col(x)ᵀ with the
  // bias's row of ones at column C·kh·kw where s.extra_rows > 0 (Kt = C·kh·kw + extra_rows). False: dtypes these
  // kernels do not take (then im2col + GEMM).
  virtual bool conv_implicit(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y, const ConvShape& s,
                             bool adjoint = false) = 0;
  virtual bool conv_implicit_weight_grad(const Tensor& dy, const Tensor& x, const Tensor& part, const ConvShape& s,
                                         DType half) = 0;
  virtual void rope(const Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& y, const Shape& lead,
                    const Shape& table_strides, bool half, double sign) = 0;
  // Fused softmax attention (flash-style: no Tq × Tk matrix stored), with the masking rules of
  // core/ops/attention.h; valid (q's dtype, [B, Tk]) may be undefined. The forward writes out and the per-row
  // log-sum-exp (+inf for a row that sees no key); the backward takes both back. Both return false when
  // they do not handle the shape (then the op runs its composite form).
  virtual bool attention_forward(const AttentionShape& a, const Tensor& q, const Tensor& k, const Tensor& v,
                                 const Tensor& valid, const Tensor& out, const Tensor& lse) = 0;
  virtual bool attention_backward(const AttentionShape& a, const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& valid, const Tensor& out, const Tensor& lse, const Tensor& g,
                                  const Tensor& dq, const Tensor& dk, const Tensor& dv) = 0;
  // Random fills of a contiguous f32/f64 tensor from Philox blocks first, first + 1, ... of `seed`: element for
  // element the CPU's numbers (the formulas are core/philox.h's, compiled for both).
  virtual void fill_uniform(const Tensor& out, double lo, double hi, uint64_t seed, uint64_t first) = 0;
  virtual void fill_normal(const Tensor& out, double mean, double std, uint64_t seed, uint64_t first) = 0;
};

// The backend of a non-CPU device; an Error saying why when it is not there (no CUDA in this build, no GPU,
// a bad index).
DeviceBackend& device_backend(Device d);

// An Error for an op that has no kernel on a device yet.
[[noreturn]] void no_device_kernel(const char* op, Device d);

namespace cuda {
bool is_available();           // a CUDA build and at least one usable GPU
int device_count();            // 0 without either
std::string unavailable_reason();  // why is_available() is false ("" when it is true)
void synchronize(int device = 0);
AllocatorStats memory_stats(int device = 0);
void reset_peak_memory_stats(int device = 0);
void empty_cache(int device = 0);
// GPU time between start() and stop() on a device's stream, measured by CUDA events: the host does not wait
// in between (a training step's launches stay queued); elapsed_ms() waits for the stop event.
//   cuda::EventTimer t;  t.start();  step();  t.stop();  double ms = t.elapsed_ms();
class EventTimer {
 public:
  explicit EventTimer(int device = 0);
  ~EventTimer();
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;
  void start();
  void stop();
  double elapsed_ms();
 private:
  DeviceBackend* backend_;
  void *start_ = nullptr, *stop_ = nullptr;
  bool started_ = false, stopped_ = false;
};
// A per-op GPU time profile of everything a device runs between start and stop: each kernel-table call (an
// elementwise op by name, "gemm bf16", "attention_forward", "adam_step", host copies, ...) is bracketed by CUDA
// events, so the times are the GPU's own, summed per op. (The events add a few microseconds per call: profile a
// step, time it without.) profile_table() formats the result with each op's share of the total.
void profile_start(int device = 0);
std::vector<OpTime> profile_stop(int device = 0);
std::string profile_table(const std::vector<OpTime>& profile);
// Runs each tensor-core instruction the attention kernels are built on (mma.sync bf16/f16/tf32, ldmatrix, cvt to
// tf32, cp.async: core/cuda/mma.cuh) once on the device, with fragments built from the PTX ISA's layouts, against
// the host's products: "" when all agree, else the instructions that differ (a GPU that disagrees with the
// documented layouts would give wrong attention numbers; this says which instruction).
std::string check_tensor_core_layouts(int device = 0);
// TF32 tensor-core GEMMs for f32 (off by default: results then differ from the CPU's by ~1e-3 relative).
void set_allow_tf32(bool on);
bool allow_tf32();
}  // namespace cuda

// The CUDA backend's entry points, defined in core/cuda/ (a CUDA build) or core/cuda/none.cpp (no CUDA).
namespace cuda_impl {
int device_count(std::string* why_not);
DeviceBackend* backend(int index);  // created once per device
}  // namespace cuda_impl

}  // namespace liandan
