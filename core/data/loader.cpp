#include "core/data/loader.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <tuple>

#include "core/data/sampler.h"
#include "core/random.h"

namespace liandan::data {

bool Batch::has(const std::string& name) const {
  for (const auto& f : fields)
    if (f.first == name) return true;
  return false;
}

const Tensor& Batch::operator[](const std::string& name) const {
  for (const auto& f : fields)
    if (f.first == name) return f.second;
  std::string present;
  for (const auto& f : fields) present += (present.empty() ? "" : ", ") + f.first;
  LD_FAIL("Batch: no field '", name, "' (fields: ", present, ")");
}

Tensor gather_rows(const Tensor& x, const std::vector<int64_t>& indices) {
  LD_CHECK(x.dim() >= 1 && x.is_contiguous(), "gather_rows: expected a contiguous tensor with a row dim, got ",
           shape_str(x.shape()));
  Shape shape = x.shape();
  int64_t n = shape[0];
  shape[0] = int64_t(indices.size());
  Tensor out = empty(shape, x.dtype());
  size_t row = size_t(x.numel() / std::max<int64_t>(n, 1)) * dtype_size(x.dtype());
  const char* src = static_cast<const char*>(x.raw_data());
  char* dst = static_cast<char*>(out.raw_data());
  for (size_t i = 0; i < indices.size(); ++i) {
    LD_CHECK(indices[i] >= 0 && indices[i] < n, "gather_rows: index ", indices[i], " out of range for ", n, " rows");
    std::memcpy(dst + i * row, src + size_t(indices[i]) * row, row);
  }
  return out;
}

TensorDataset::TensorDataset(Batch fields) {
  LD_CHECK(!fields.fields.empty(), "TensorDataset: no fields");
  size_ = fields.fields[0].second.dim() >= 1 ? fields.fields[0].second.size(0) : -1;
  for (auto& [name, t] : fields.fields) {
    LD_CHECK(t.dim() >= 1 && t.size(0) == size_, "TensorDataset: field '", name, "' has shape ",
             shape_str(t.shape()), ", expected dim 0 = ", size_, " like field '", fields.fields[0].first, "'");
    t = t.detach().contiguous();
  }
  fields_ = std::move(fields);
}

Batch TensorDataset::get(const std::vector<int64_t>& indices) const {
  Batch b;
  for (const auto& [name, t] : fields_.fields) b.add(name, gather_rows(t, indices));
  return b;
}

// ---------------------------------------------------------------- DataLoader

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, LoaderOptions opt)
    : dataset_(std::move(dataset)), opt_(opt) {
  LD_CHECK(dataset_ != nullptr, "DataLoader: null dataset");
  LD_CHECK(opt_.batch_size >= 1, "DataLoader: batch_size must be >= 1, got ", opt_.batch_size);
  LD_CHECK(opt_.shard_count >= 1 && opt_.shard_rank >= 0 && opt_.shard_rank < opt_.shard_count &&
               opt_.batch_size % opt_.shard_count == 0,
           "DataLoader: shard_rank ", opt_.shard_rank, " of shard_count ", opt_.shard_count, " with batch_size ",
           opt_.batch_size, " (the global batch must split evenly over the shards)");
  size_ = dataset_->size();
  batches_per_epoch_ = opt_.drop_last ? size_ / opt_.batch_size : (size_ + opt_.batch_size - 1) / opt_.batch_size;
  LD_CHECK(batches_per_epoch_ >= 1, "DataLoader: a data set of ", size_, " elements makes no batch of ",
           opt_.batch_size, opt_.drop_last ? " (drop_last)" : "");
}

DataLoader::~DataLoader() { stop_worker(); }

// Fills `perm` with epoch `epoch`'s order unless it already holds it (`perm_epoch`).
void DataLoader::ensure_perm(int64_t epoch, std::vector<int64_t>& perm, int64_t& perm_epoch) const {
  if (perm_epoch == epoch) return;
  if (opt_.shuffle) {
    // Each epoch owns the Philox blocks [e·ceil(n/2), (e+1)·ceil(n/2)): randperm draws n f64 uniforms.
    Generator gen;
    gen.set_state(opt_.seed, uint64_t(epoch) * uint64_t((size_ + 1) / 2));
    Tensor p = randperm(size_, gen);
    perm.assign(p.data_ptr<int64_t>(), p.data_ptr<int64_t>() + size_);
  } else {
    perm.resize(size_t(size_));
    std::iota(perm.begin(), perm.end(), int64_t(0));
  }
  perm_epoch = epoch;
}

std::vector<int64_t> DataLoader::batch_indices(int64_t epoch, int64_t position) const {
  std::vector<int64_t> perm;
  int64_t perm_epoch = -1;
  ensure_perm(epoch, perm, perm_epoch);
  int64_t begin = position * opt_.batch_size, end = std::min(size_, begin + opt_.batch_size);
  std::tie(begin, end) = shard_range(begin, end, opt_.shard_rank, opt_.shard_count);
  return {perm.begin() + begin, perm.begin() + end};
}

// Builds batch (epoch, position) on the calling thread; an exception is caught into the item.
DataLoader::Item DataLoader::produce(int64_t epoch, int64_t position, std::vector<int64_t>& perm,
                                     int64_t& perm_epoch) const {
  Item item;
  try {
    ensure_perm(epoch, perm, perm_epoch);
    int64_t begin = position * opt_.batch_size, end = std::min(size_, begin + opt_.batch_size);
    std::tie(begin, end) = shard_range(begin, end, opt_.shard_rank, opt_.shard_count);
    item.batch = dataset_->get({perm.begin() + begin, perm.begin() + end});
  } catch (...) {
    item.error = std::current_exception();
  }
  return item;
}

void DataLoader::worker_loop(int64_t epoch, int64_t position) {
  std::vector<int64_t> perm;
  int64_t perm_epoch = -1;
  while (true) {
    Item item = produce(epoch, position, perm, perm_epoch);
    bool failed = bool(item.error);
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || queue_.size() < kQueue; });
      if (stop_) return;
      queue_.push_back(std::move(item));
    }
    cv_.notify_all();
    if (failed) return;  // the consumer rethrows; nothing after a failure is produced
    if (++position == batches_per_epoch_) position = 0, ++epoch;
  }
}

void DataLoader::start_worker() {
  stop_ = false;
  worker_ = std::thread(&DataLoader::worker_loop, this, epoch_, position_);
}

void DataLoader::stop_worker() {
  if (!worker_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
  queue_.clear();
}

Batch DataLoader::next() {
  if (failed_) std::rethrow_exception(failed_);
  Item item;
  if (opt_.prefetch) {
    if (!worker_.joinable()) start_worker();
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return !queue_.empty(); });
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    cv_.notify_all();
  } else {
    item = produce(epoch_, position_, perm_, perm_epoch_);
  }
  if (item.error) {
    failed_ = item.error;
    std::rethrow_exception(failed_);
  }
  if (++position_ == batches_per_epoch_) position_ = 0, ++epoch_;
  return std::move(item.batch);
}

std::vector<int64_t> DataLoader::state() const {
  return {int64_t(opt_.seed), epoch_, position_, size_, opt_.batch_size};
}

void DataLoader::set_state(const std::vector<int64_t>& s) {
  LD_CHECK(s.size() == 5, "DataLoader::set_state: expected 5 values {seed, epoch, position, size, batch_size}, got ",
           s.size());
  LD_CHECK(s[3] == size_ && s[4] == opt_.batch_size, "DataLoader::set_state: the state is for a data set of ", s[3],
           " elements in batches of ", s[4], ", this loader has ", size_, " in batches of ", opt_.batch_size);
  LD_CHECK(s[1] >= 0 && s[2] >= 0 && s[2] < batches_per_epoch_, "DataLoader::set_state: epoch ", s[1],
           ", position ", s[2], " out of range (", batches_per_epoch_, " batches per epoch)");
  stop_worker();
  opt_.seed = uint64_t(s[0]);
  epoch_ = s[1];
  position_ = s[2];
  perm_epoch_ = -1;
  failed_ = nullptr;
}

}  // namespace liandan::data
