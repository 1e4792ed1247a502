// The CUDA device: one CudaBackend per GPU, created on first use and never destroyed (storages may outlive
// other statics). It owns the device's stream (one per device: every kernel and copy is ordered on it),
// its cuBLAS handle and its caching allocator (cudaMalloc / cudaFree are slow and cudaFree synchronizes the
// whole device, so freed blocks are kept for reuse).
#include <cublas_v2.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "core/cuda/common.cuh"
#include "core/cuda/kernels.h"

namespace liandan::cuda_impl {
namespace {

class DeviceGuard {  // makes `index` the current device for this scope
 public:
  explicit DeviceGuard(int index) {
    cudaGetDevice(&prev_);
    if (prev_ != index) cudaSetDevice(index);
    index_ = index;
  }
  ~DeviceGuard() {
    if (prev_ != index_) cudaSetDevice(prev_);
  }
 private:
  int prev_ = 0, index_ = 0;
};

void* raw_cuda_alloc(size_t bytes, void* ctx) {
  DeviceGuard g(int(reinterpret_cast<intptr_t>(ctx)));
  void* p = nullptr;
  if (cudaMalloc(&p, bytes) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so the caller can retry after emptying the cache
    return nullptr;
  }
  return p;
}

void raw_cuda_free(void* p, size_t, void* ctx) {
  DeviceGuard g(int(reinterpret_cast<intptr_t>(ctx)));
  cudaFree(p);
}

class CudaBackend final : public DeviceBackend {
 public:
  explicit CudaBackend(int index)
      : index_(index),
        alloc_("cuda:" + std::to_string(index),
               RawAllocator{raw_cuda_alloc, raw_cuda_free, reinterpret_cast<void*>(intptr_t(index))},
               SIZE_MAX) {
    DeviceGuard g(index_);
    LD_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    LD_CHECK(cublasCreate(&cublas_) == CUBLAS_STATUS_SUCCESS, "cuda:", index_, ": cublasCreate failed");
    cublasSetStream(cublas_, stream_);
    cudaDeviceProp prop;
    LD_CUDA_CHECK(cudaGetDeviceProperties(&prop, index_));
    describe_ = std::string(prop.name) + ", sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ", " +
                std::to_string(prop.totalGlobalMem >> 20) + " MiB";
  }

  std::string describe() const override { return describe_; }
  cudaStream_t stream() const { return stream_; }

  void* allocate(size_t bytes) override {
    DeviceGuard g(index_);
    try {
      return alloc_.allocate(bytes, stream_);
    } catch (const Error& e) {
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      LD_FAIL(e.what(), "; the GPU has ", free_b >> 20, " MiB free of ", total_b >> 20, " MiB");
    }
  }
  void deallocate(void* p, size_t bytes) override { alloc_.deallocate(p, bytes, stream_); }
  CachingAllocator& allocator() override { return alloc_; }

  // Host → device copies up to kStagingMax go through a ring of pinned staging buffers: the caller's (pageable)
  // bytes are memcpy'd into one, its DMA is queued on the stream, and the call returns while the GPU may still
  // be busy with earlier kernels — a data loader's batch upload no longer waits for the previous step. A
  // buffer is reused only after the event recorded behind its copy has completed. Larger copies (weights,
  // checkpoints) go straight from pageable memory and wait.
  void copy_from_host(void* dst, const void* src, size_t bytes) override {
    OpScope scope(*this, "copy host to device");
    if (bytes > kStagingMax) {
      LD_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
      LD_CUDA_CHECK(cudaStreamSynchronize(stream_));
      return;
    }
    std::lock_guard<std::mutex> lock(staging_mu_);
    Staging& st = staging_[next_staging_];
    next_staging_ = (next_staging_ + 1) % kStagingBuffers;
    if (!st.done) LD_CUDA_CHECK(cudaEventCreateWithFlags(&st.done, cudaEventDisableTiming));
    else LD_CUDA_CHECK(cudaEventSynchronize(st.done));  // its previous copy has left the buffer
    if (st.capacity < bytes) {
      if (st.host) LD_CUDA_CHECK(cudaFreeHost(st.host));
      st.host = nullptr;
      st.capacity = std::max(bytes, size_t(1) << 20);
      LD_CUDA_CHECK(cudaHostAlloc(&st.host, st.capacity, cudaHostAllocDefault));
    }
    std::memcpy(st.host, src, bytes);
    LD_CUDA_CHECK(cudaMemcpyAsync(dst, st.host, bytes, cudaMemcpyHostToDevice, stream_));
    LD_CUDA_CHECK(cudaEventRecord(st.done, stream_));
  }
  void copy_to_host(void* dst, const void* src, size_t bytes) override {
    OpScope scope(*this, "copy device to host");
    LD_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    LD_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void synchronize() override {
    DeviceGuard g(index_);
    LD_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void* event_create() override {
    DeviceGuard g(index_);
    cudaEvent_t e = nullptr;
    LD_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDefault));
    return e;
  }
  void event_record(void* e) override {
    DeviceGuard g(index_);
    LD_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(e), stream_));
  }
  double event_elapsed_ms(void* start, void* stop) override {
    DeviceGuard g(index_);
    LD_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(stop)));
    float ms = 0;
    LD_CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start), static_cast<cudaEvent_t>(stop)));
    return double(ms);
  }
  void event_destroy(void* e) override {
    DeviceGuard g(index_);
    cudaEventDestroy(static_cast<cudaEvent_t>(e));
  }

  // A registered kernel's call (core/dispatch.h): the same scope as the table's own calls.
  void* op_begin(const char* op, const char* suffix) override { return new OpScope(*this, op, suffix); }
  void op_end(void* token) override { delete static_cast<OpScope*>(token); }

  std::string check_tensor_core_layouts() override {
    DeviceGuard g(index_);
    return cuda_impl::check_tensor_core_layouts(stream_);
  }

  // The op profiler: while on, every kernel-table call records an event before and after its launches (events
  // from a pool); profile_stop() waits for the stream and sums the GPU time between each pair per op name.
  void profile_start() override {
    DeviceGuard g(index_);
    recycle_spans();
    profiling_ = true;
  }
  std::vector<OpTime> profile_stop() override {
    DeviceGuard g(index_);
    profiling_ = false;
    LD_CUDA_CHECK(cudaStreamSynchronize(stream_));
    std::map<std::string, OpTime> by_op;
    for (const Span& sp : spans_) {
      float ms = 0;
      LD_CUDA_CHECK(cudaEventElapsedTime(&ms, sp.start, sp.stop));
      OpTime& t = by_op[sp.op];
      t.op = sp.op;
      t.calls += 1;
      t.ms += double(ms);
    }
    recycle_spans();
    std::vector<OpTime> out;
    for (auto& kv : by_op) out.push_back(kv.second);
    std::sort(out.begin(), out.end(), [](const OpTime& a, const OpTime& b) { return a.ms > b.ms; });
    return out;
  }

  void copy_strided(const Tensor& dst, const Tensor& src, const Shape& st) override {
    OpScope scope(*this, "copy_strided");
    cuda_impl::copy_strided(dst, src, st);
  }
  void fill(const Tensor& dst, double v) override {
    OpScope scope(*this, "fill");
    cuda_impl::fill(dst, v);
  }
  void gather_scatter(bool gather, const Tensor& idx, const Tensor& src, const Tensor& dst, int64_t dim) override {
    OpScope scope(*this, gather ? "gather" : "scatter_add");
    cuda_impl::gather_scatter(gather, idx, src, dst, dim);
  }
  void index_select(const Tensor& x, const Tensor& idx, int64_t outer, int64_t n, int64_t inner,
                    const Tensor& out) override {
    OpScope scope(*this, "index_select");
    cuda_impl::index_select(x, idx, outer, n, inner, out);
  }
  void index_add_rows(const Tensor& g, const Tensor& order, const Tensor& starts, const Tensor& rows, int64_t outer,
                      int64_t n, int64_t inner, const Tensor& dx) override {
    OpScope scope(*this, "index_select backward");
    cuda_impl::index_add_rows(g, order, starts, rows, outer, n, inner, dx);
  }
  void im2col(const Tensor& x, const Tensor& col, const ConvShape& s) override {
    OpScope scope(*this, "im2col");
    cuda_impl::im2col(x, col, s);
  }
  void col2im(const Tensor& col, const Tensor& dx, const ConvShape& s) override {
    OpScope scope(*this, "col2im");
    cuda_impl::col2im(col, dx, s);
  }
  bool conv_implicit(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y, const ConvShape& s,
                     bool adjoint) override {
    OpScope scope(*this, "conv_implicit");
    return cuda_impl::conv_implicit(x, w, bias, y, s, adjoint);
  }
  bool conv_implicit_weight_grad(const Tensor& dy, const Tensor& x, const Tensor& part, const ConvShape& s,
                                 DType half) override {
    OpScope scope(*this, "conv_implicit_weight_grad");
    return cuda_impl::conv_implicit_weight_grad(dy, x, part, s, half);
  }
  void sum_run(const Tensor& x, int64_t outer, int64_t R, int64_t inner, const Tensor& out) override {
    OpScope scope(*this, "sum_run");
    cuda_impl::sum_run(x, outer, R, inner, out);
  }
  void extreme_run(const Tensor& x, int64_t outer, int64_t R, int64_t inner, const Tensor& vals, const Tensor& idx,
                   bool is_max) override {
    OpScope scope(*this, "extreme_run");
    cuda_impl::extreme_run(x, outer, R, inner, vals, idx, is_max);
  }
  void cumsum_run(const Tensor& x, int64_t outer, int64_t R, int64_t inner, const Tensor& y, bool reverse) override {
    OpScope scope(*this, "cumsum_run");
    cuda_impl::cumsum_run(x, outer, R, inner, y, reverse);
  }
  void sum_squares(const std::vector<Tensor>& xs, const Tensor& out) override {
    OpScope scope(*this, "sum_squares");
    cuda_impl::sum_squares(xs, out);
  }
  void gemm_batched(DType dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const void* A, int64_t lda,
                    int64_t sa, const void* B, int64_t ldb, int64_t sb, void* C, int64_t ldc, int64_t sc,
                    int64_t batch, bool half_result) override {
    OpScope scope(*this, dt == DType::f32 ? (cuda::allow_tf32() ? "gemm tf32" : "gemm f32") : dt == DType::f64 ? "gemm f64" : dt == DType::bf16 ? "gemm bf16" : "gemm f16");
    cuda_impl::gemm_batched(cublas_, dt, ta, tb, M, N, K, A, lda, sa, B, ldb, sb, C, ldc, sc, batch, half_result);
  }

  void softmax(const Tensor& x, const Tensor& y, int64_t outer, int64_t n, int64_t inner, bool log) override {
    OpScope scope(*this, "softmax");
    cuda_impl::softmax(x, y, outer, n, inner, log);
  }
  void softmax_backward(const Tensor& y, const Tensor& g, const Tensor& dx, int64_t outer, int64_t n, int64_t inner,
                        bool log) override {
    OpScope scope(*this, "softmax_backward");
    cuda_impl::softmax_backward(y, g, dx, outer, n, inner, log);
  }
  void norm_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y, const Tensor& mean,
                    const Tensor& rstd, int64_t rows, int64_t len, bool center, double eps) override {
    OpScope scope(*this, "norm_forward");
    cuda_impl::norm_forward(x, w, b, y, mean, rstd, rows, len, center, eps);
  }
  void norm_backward(const Tensor& x, const Tensor& w, const Tensor& g, const Tensor& mean, const Tensor& rstd,
                     const Tensor& dx, const Tensor& dw, const Tensor& db, int64_t rows, int64_t len,
                     bool center) override {
    OpScope scope(*this, "norm_backward");
    cuda_impl::norm_backward(x, w, g, mean, rstd, dx, dw, db, rows, len, center);
  }
  void group_norm_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y, const Tensor& mean,
                          const Tensor& rstd, int64_t N, int64_t C, int64_t G, int64_t S, double eps, bool silu) override {
    OpScope scope(*this, "group_norm_forward");
    cuda_impl::group_norm_forward(x, w, b, y, mean, rstd, N, C, G, S, eps, silu);
  }
  void group_norm_backward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& g, const Tensor& mean,
                           const Tensor& rstd, const Tensor& dx, const Tensor& dw, const Tensor& db, int64_t N,
                           int64_t C, int64_t G, int64_t S, bool silu) override {
    OpScope scope(*this, "group_norm_backward");
    cuda_impl::group_norm_backward(x, w, b, g, mean, rstd, dx, dw, db, N, C, G, S, silu);
  }
  void rope(const Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& y, const Shape& lead,
            const Shape& table_strides, bool half, double sign) override {
    OpScope scope(*this, "rope");
    cuda_impl::rope(x, cos, sin, y, lead, table_strides, half, sign);
  }
  bool attention_forward(const AttentionShape& a, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& valid,
                         const Tensor& out, const Tensor& lse) override {
    OpScope scope(*this, "attention_forward");
    return cuda_impl::attention_forward(a, q, k, v, valid, out, lse);
  }
  bool attention_backward(const AttentionShape& a, const Tensor& q, const Tensor& k, const Tensor& v,
                          const Tensor& valid, const Tensor& out, const Tensor& lse, const Tensor& g, const Tensor& dq,
                          const Tensor& dk, const Tensor& dv) override {
    OpScope scope(*this, "attention_backward");
    return cuda_impl::attention_backward(a, q, k, v, valid, out, lse, g, dq, dk, dv);
  }
  void fill_uniform(const Tensor& out, double lo, double hi, uint64_t seed, uint64_t first) override {
    OpScope scope(*this, "fill_uniform");
    cuda_impl::fill_uniform(out, lo, hi, seed, first);
  }
  void fill_normal(const Tensor& out, double mean, double std, uint64_t seed, uint64_t first) override {
    OpScope scope(*this, "fill_normal");
    cuda_impl::fill_normal(out, mean, std, seed, first);
  }

 private:
  // Makes the device current for a kernel-table call and, while the profiler is on, brackets it with events
  // (the profiler records the calls of the thread that runs the step: data loaders only build CPU batches).
  class OpScope {
   public:
    OpScope(CudaBackend& b, const char* op, const char* suffix = "") : b_(b), guard_(b.index_) {
      if (!b_.profiling_) return;
      op_ = std::string(op) + suffix;
      start_ = b_.pooled_event();
      LD_CUDA_CHECK(cudaEventRecord(start_, b_.stream_));
    }
    ~OpScope() {
      if (!start_) return;
      cudaEvent_t stop = b_.pooled_event();
      cudaEventRecord(stop, b_.stream_);
      b_.spans_.push_back({std::move(op_), start_, stop});
    }
    OpScope(const OpScope&) = delete;
    OpScope& operator=(const OpScope&) = delete;
   private:
    CudaBackend& b_;
    DeviceGuard guard_;
    std::string op_;
    cudaEvent_t start_ = nullptr;
  };
  struct Span {
    std::string op;
    cudaEvent_t start, stop;
  };
  cudaEvent_t pooled_event() {
    if (event_pool_.empty()) {
      cudaEvent_t e = nullptr;
      LD_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDefault));
      return e;
    }
    cudaEvent_t e = event_pool_.back();
    event_pool_.pop_back();
    return e;
  }
  void recycle_spans() {
    for (const Span& sp : spans_) {
      event_pool_.push_back(sp.start);
      event_pool_.push_back(sp.stop);
    }
    spans_.clear();
  }
  bool profiling_ = false;
  std::vector<Span> spans_;
  std::vector<cudaEvent_t> event_pool_;

  static constexpr size_t kStagingMax = size_t(64) << 20;
  static constexpr int kStagingBuffers = 4;
  struct Staging {
    void* host = nullptr;
    size_t capacity = 0;
    cudaEvent_t done = nullptr;
  };
  int index_;
  CachingAllocator alloc_;
  std::mutex staging_mu_;
  Staging staging_[kStagingBuffers];
  int next_staging_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  std::string describe_;
};

// Function-local, so that a static initializer elsewhere (a test's `const bool has_gpu = ...`) may ask
// before this file's own statics are constructed.
struct Devices {
  int count = 0;
  std::string why;
  std::vector<CudaBackend*> backends;
  std::mutex mu;
  Devices() {
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
      count = 0;
      why = std::string("no usable CUDA GPU (") + cudaGetErrorString(e) + ")";
      cudaGetLastError();
    } else if (count == 0) {
      why = "no CUDA GPU found";
    }
    backends.assign(size_t(count), nullptr);
  }
};
Devices& devices() {
  static Devices* d = new Devices();  // never destroyed, like the backends
  return *d;
}

}  // namespace

int device_count(std::string* why_not) {
  Devices& d = devices();
  if (why_not) *why_not = d.why;
  return d.count;
}

DeviceBackend* backend(int index) {
  Devices& d = devices();
  std::lock_guard<std::mutex> lock(d.mu);
  if (!d.backends[size_t(index)]) d.backends[size_t(index)] = new CudaBackend(index);
  return d.backends[size_t(index)];
}

// Called for every kernel launch: a tensor on the device means its backend exists (created under the lock
// when the tensor's storage was allocated) and the table never changes size, so no lock is needed here.
cudaStream_t stream_of(const Tensor& t) { return devices().backends[size_t(t.device().index)]->stream(); }

}  // namespace liandan::cuda_impl
