#include "nn/parallel.h"

#include <chrono>
#include <map>
#include <sstream>

#include "core/ops.h"

namespace liandan::nn {

namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
bool power_of_two(int64_t n) { return n > 0 && (n & (n - 1)) == 0; }
}  // namespace

void broadcast_module(Module& module, dist::Communicator& comm, int root, bool buffers) {
  if (comm.world_size() == 1) return;
  NoGradGuard ng;
  std::vector<std::pair<Tensor, Tensor>> copies;  // (target, contiguous staging) for strided tensors
  std::vector<dist::Work> works;
  auto send = [&](const Tensor& t) {
    if (!t.defined()) return;
    if (t.is_contiguous()) {
      works.push_back(comm.broadcast(t, root));
    } else {
      copies.emplace_back(t, t.contiguous());
      works.push_back(comm.broadcast(copies.back().second, root));
    }
  };
  for (auto& [name, p] : module.named_parameters()) send(p);
  if (buffers)
    for (auto& [name, b] : module.named_buffers()) send(b);
  for (auto& w : works) w.wait();
  for (auto& [t, c] : copies) Tensor(t).copy_(c);
}

DistributedDataParallel::DistributedDataParallel(std::shared_ptr<Module> module,
                                                 std::shared_ptr<dist::Communicator> comm, DDPOptions opt)
    : module_(std::move(module)), comm_(std::move(comm)), opt_(opt) {
  LD_CHECK(module_ && comm_, "DistributedDataParallel: null module or communicator");
  LD_CHECK(opt_.bucket_bytes > 0, "DistributedDataParallel: bucket_bytes must be > 0, got ", opt_.bucket_bytes);
  broadcast_module(*module_, *comm_, 0, opt_.broadcast_buffers);
  for (auto& [name, p] : module_->named_parameters())
    if (p.requires_grad()) params_.push_back(Param{name, p, 0, 0, false, HookHandle()});
  LD_CHECK(!params_.empty(), "DistributedDataParallel: the module has no parameter that requires grad");
  // Buckets in reverse registration order, one (dtype, device) each; bucket_bytes closes a bucket.
  std::map<std::pair<DType, std::string>, size_t> open;
  std::vector<int64_t> sizes;  // elements per bucket so far
  for (size_t k = params_.size(); k-- > 0;) {
    Param& p = params_[k];
    auto key = std::make_pair(p.t.dtype(), p.t.device().str());
    const int64_t esize = int64_t(dtype_size(p.t.dtype()));
    auto it = open.find(key);
    if (it == open.end() || (sizes[it->second] > 0 && (sizes[it->second] + p.t.numel()) * esize > opt_.bucket_bytes)) {
      buckets_.emplace_back();
      sizes.push_back(0);
      it = open.insert_or_assign(key, buckets_.size() - 1).first;
    }
    p.bucket = it->second;
    p.offset = sizes[p.bucket];
    sizes[p.bucket] += p.t.numel();
    buckets_[p.bucket].params.push_back(k);
  }
  for (size_t i = 0; i < buckets_.size(); ++i) {
    Tensor one = params_[buckets_[i].params[0]].t;
    buckets_[i].flat = zeros({sizes[i]}, {one.dtype(), one.device()});
    buckets_[i].pending = buckets_[i].params.size();
  }
  for (size_t i = 0; i < params_.size(); ++i)
    params_[i].hook = register_post_accumulate_grad_hook(params_[i].t, [this, i](const Tensor&) { on_grad_ready(i); });
}

DistributedDataParallel::~DistributedDataParallel() {
  // A bucket still in flight writes into memory we own: wait for it (the collective completes on every rank).
  for (Bucket& b : buckets_)
    if (b.started) b.work.wait();
}

std::vector<DistributedDataParallel::BucketInfo> DistributedDataParallel::buckets() const {
  std::vector<BucketInfo> out;
  for (const Bucket& b : buckets_) {
    BucketInfo info;
    for (size_t k : b.params) info.names.push_back(params_[k].name);
    info.numel = b.flat.numel();
    info.dtype = b.flat.dtype();
    out.push_back(std::move(info));
  }
  return out;
}

int64_t DistributedDataParallel::chunks_per_rank(int64_t global_chunks) const {
  int64_t w = comm_->world_size();
  LD_CHECK(power_of_two(global_chunks) && power_of_two(w) && global_chunks % w == 0,
           "DistributedDataParallel (deterministic): ", global_chunks, " chunks over ", w,
           " ranks; both must be powers of two and the world size must divide the chunks");
  return global_chunks / w;
}

// ---- fast mode

void DistributedDataParallel::on_grad_ready(size_t index) {
  if (no_sync_depth_ > 0 || opt_.deterministic) return;
  Param& p = params_[index];
  LD_CHECK(!p.ready, "DistributedDataParallel: parameter '", p.name, "' got a second gradient before "
           "finish_gradient_sync(); call it after every synchronised backward, and run the accumulation steps "
           "inside no_sync()");
  Bucket& b = buckets_[p.bucket];
  Tensor g = p.t.grad();
  b.flat.narrow(0, p.offset, p.t.numel()).copy_(g.reshape({p.t.numel()}));
  p.ready = true;
  if (--b.pending == 0) {
    size_t before = next_bucket_;
    start_ready_buckets();
    started_in_backward_ += int64_t(next_bucket_ - before);
  }
}

void DistributedDataParallel::start_ready_buckets() {
  while (next_bucket_ < buckets_.size() && buckets_[next_bucket_].pending == 0) {
    Bucket& b = buckets_[next_bucket_++];
    b.work = comm_->all_reduce(b.flat, dist::ReduceOp::average);
    b.started = true;
  }
}

void DistributedDataParallel::reset_step() {
  for (Param& p : params_) p.ready = false;
  for (Bucket& b : buckets_) {
    b.pending = b.params.size();
    b.started = false;
    b.work = dist::Work();
  }
  next_bucket_ = 0;
  started_in_backward_ = 0;
}

void DistributedDataParallel::fail_unused(const std::vector<size_t>& missing, const char* where) const {
  std::ostringstream os;
  os << "DistributedDataParallel: parameter '" << params_[missing[0]].name << "' got no gradient " << where;
  if (missing.size() > 1) {
    os << " (" << missing.size() << " parameters in all:";
    for (size_t i = 0; i < missing.size() && i < 8; ++i) os << " " << params_[missing[i]].name;
    if (missing.size() > 8) os << " ...";
    os << ")";
  }
  os << "; every parameter must take part in the loss, or set DDPOptions::find_unused_parameters = true";
  LD_FAIL(os.str());
}

void DistributedDataParallel::finish_gradient_sync() {
  if (no_sync_depth_ > 0) return;  // accumulating: nothing to reduce yet
  NoGradGuard ng;
  if (opt_.deterministic) finish_deterministic();
  else finish_fast();
}

void DistributedDataParallel::finish_fast() {
  auto t0 = Clock::now();
  std::vector<size_t> missing;
  for (size_t i = 0; i < params_.size(); ++i)
    if (!params_[i].ready) missing.push_back(i);
  if (!missing.empty() && !opt_.find_unused_parameters) {
    for (Bucket& b : buckets_)  // keep every rank's collective sequence whole before failing
      if (b.started) b.work.wait();
    reset_step();
    stats_ = {};
    fail_unused(missing, "in this backward");
  }
  for (size_t i : missing) {
    Param& p = params_[i];
    buckets_[p.bucket].flat.narrow(0, p.offset, p.t.numel()).zero_();
    --buckets_[p.bucket].pending;
  }
  start_ready_buckets();
  // With find_unused_parameters every rank reduces the "used" flags too: a parameter no rank used keeps no
  // gradient, as in one process.
  Tensor used;
  dist::Work used_work;
  if (opt_.find_unused_parameters) {
    used = zeros({int64_t(params_.size())}, DType::f64);
    double* u = used.data_ptr<double>();
    for (size_t i = 0; i < params_.size(); ++i) u[i] = params_[i].ready ? 1 : 0;
    used_work = comm_->all_reduce(used, dist::ReduceOp::sum);
  }
  double reduce_s = 0;
  for (Bucket& b : buckets_) {
    b.work.wait();
    reduce_s += b.work.seconds();
  }
  used_work.wait();
  for (size_t i = 0; i < params_.size(); ++i) {
    Param& p = params_[i];
    if (used.defined() && used.data_ptr<double>()[i] == 0) continue;  // no rank used it: no gradient
    Tensor avg = buckets_[p.bucket].flat.narrow(0, p.offset, p.t.numel()).view(p.t.shape());
    Tensor g = p.t.grad();
    if (g.defined() && g.is_contiguous() && g.dtype() == avg.dtype()) g.copy_(avg);
    else p.t.set_grad(avg.clone());
  }
  int64_t early = started_in_backward_;
  reset_step();
  stats_ = {early, since(t0), reduce_s};
}

// ---- deterministic mode

void DistributedDataParallel::accumulate_chunk() {
  LD_CHECK(opt_.deterministic, "DistributedDataParallel::accumulate_chunk: only in deterministic mode");
  NoGradGuard ng;
  Partial part;
  part.used = zeros({int64_t(params_.size())}, DType::f64);
  for (Bucket& b : buckets_) part.flats.push_back(zeros_like(b.flat));
  std::vector<size_t> missing;
  double* used = part.used.data_ptr<double>();
  for (size_t i = 0; i < params_.size(); ++i) {
    Param& p = params_[i];
    Tensor g = p.t.grad();
    if (!g.defined()) {
      missing.push_back(i);
      continue;
    }
    part.flats[p.bucket].narrow(0, p.offset, p.t.numel()).copy_(g.reshape({p.t.numel()}));
    used[i] = 1;
    p.t.set_grad(Tensor());  // the next chunk's backward starts from nothing
  }
  if (!missing.empty() && !opt_.find_unused_parameters) fail_unused(missing, "in this chunk's backward");
  stack_.push_back(std::move(part));
  while (stack_.size() >= 2 && stack_[stack_.size() - 1].level == stack_[stack_.size() - 2].level) {
    Partial right = std::move(stack_.back());
    stack_.pop_back();
    Partial& left = stack_.back();
    for (size_t k = 0; k < left.flats.size(); ++k) left.flats[k].add_(right.flats[k]);
    left.used.add_(right.used);
    ++left.level;
  }
  ++chunks_;
}

void DistributedDataParallel::finish_deterministic() {
  auto t0 = Clock::now();
  const int64_t w = comm_->world_size();
  LD_CHECK(chunks_ > 0, "DistributedDataParallel (deterministic): finish_gradient_sync() before any "
           "accumulate_chunk()");
  LD_CHECK(power_of_two(chunks_) && stack_.size() == 1, "DistributedDataParallel (deterministic): ", chunks_,
           " chunks on this rank; the chunks per rank must be a power of two");
  LD_CHECK(power_of_two(w), "DistributedDataParallel (deterministic): the world size ", w,
           " must be a power of two (each rank's chunks must form one subtree of the fixed tree)");
  Partial mine = std::move(stack_[0]);
  stack_.clear();
  // Every rank's subtree sums, in rank order.
  std::vector<Tensor> all;
  std::vector<dist::Work> works;
  for (Tensor& f : mine.flats) {
    all.push_back(empty({w * f.numel()}, {f.dtype(), f.device()}));
    works.push_back(comm_->all_gather(all.back(), f));
  }
  Tensor used_all = empty({w * mine.used.numel()}, DType::f64);
  works.push_back(comm_->all_gather(used_all, mine.used));
  double reduce_s = 0;
  for (auto& wk : works) {
    wk.wait();
    reduce_s += wk.seconds();
  }
  // The top of the tree: the rank subtrees added pairwise, (0+1)+(2+3), … — the same binary counter as the chunks.
  auto tree_sum = [&](const Tensor& gathered, int64_t n) {
    std::vector<std::pair<Tensor, int>> st;
    for (int64_t r = 0; r < w; ++r) {
      st.emplace_back(gathered.narrow(0, r * n, n), 0);
      while (st.size() >= 2 && st[st.size() - 1].second == st[st.size() - 2].second) {
        Tensor right = st.back().first;
        st.pop_back();
        st.back().first.add_(right);
        ++st.back().second;
      }
    }
    return st[0].first;
  };
  const double scale = 1.0 / double(chunks_ * w);  // exact: a power of two
  std::vector<Tensor> sums;
  for (size_t k = 0; k < all.size(); ++k) sums.push_back(tree_sum(all[k], mine.flats[k].numel()).mul_(scale));
  Tensor used = tree_sum(used_all, mine.used.numel());
  const double* u = used.data_ptr<double>();
  for (size_t i = 0; i < params_.size(); ++i) {
    Param& p = params_[i];
    if (u[i] == 0) {
      p.t.set_grad(Tensor());
      continue;
    }
    p.t.set_grad(sums[p.bucket].narrow(0, p.offset, p.t.numel()).view(p.t.shape()).clone());
  }
  chunks_ = 0;
  stats_ = {0, since(t0), reduce_s};
}

}  // namespace liandan::nn
