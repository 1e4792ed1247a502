#pragma once
// Data sets and the DataLoader: shuffling with the framework's Philox generator, batching, and a
// background thread that prepares the next batches while the model trains on the current one.
//
// Order. The batches are a pure function of (seed, epoch, position): epoch e shuffles with
// randperm(size, Generator(seed) at offset e·ceil(size/2)) — each epoch its own Philox block range —
// and batch p of the epoch takes elements [p·B, (p+1)·B) of that permutation. So the order never depends
// on thread timing or on whether prefetching is on, and a loader's whole state is a few integers
// (state() / set_state()) that a checkpoint stores to resume on exactly the next batch.
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace liandan::data {

// Named tensors of one batch, e.g. {"image": [B, 1, 28, 28], "label": [B]}.
struct Batch {
  std::vector<std::pair<std::string, Tensor>> fields;
  void add(std::string name, Tensor t) { fields.emplace_back(std::move(name), std::move(t)); }
  bool has(const std::string& name) const;
  // Error naming the missing field and the ones present.
  const Tensor& operator[](const std::string& name) const;
};

// A data set of `size()` elements. `get` returns the elements `indices` stacked along a new dim 0.
// It runs on the loader's worker thread, so it must be safe to call concurrently with the trainer: read
// only immutable state, and build the batch with plain loops (no autograd, no OpenMP).
class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  virtual Batch get(const std::vector<int64_t>& indices) const = 0;
};

// Rows of in-memory tensors: every field has the same dim 0 (the element index).
class TensorDataset : public Dataset {
 public:
  explicit TensorDataset(Batch fields);  // fields are made contiguous; their rows are copied by get()
  int64_t size() const override { return size_; }
  Batch get(const std::vector<int64_t>& indices) const override;
  const Batch& fields() const { return fields_; }

 private:
  Batch fields_;
  int64_t size_ = 0;
};

// Rows `indices` of a contiguous tensor x [N, ...], copied with memcpy (no autograd, no threads).
Tensor gather_rows(const Tensor& x, const std::vector<int64_t>& indices);

struct LoaderOptions {
  int64_t batch_size = 64;
  bool shuffle = true;     // false: every epoch in index order
  bool drop_last = true;   // false: the last batch of an epoch may be smaller
  uint64_t seed = 0;       // the shuffling generator's seed
  bool prefetch = true;    // a worker thread keeps up to 2 batches ready
  // Data-parallel training (core/data/sampler.h): batch_size is the global batch and this loader returns rank
  // shard_rank's slice [r·B/N, (r+1)·B/N) of each, N = shard_count (B divisible by N). The order and the
  // state stay the global ones, so N loaders together see exactly the batches of one loader with N = 1.
  int64_t shard_rank = 0, shard_count = 1;
};

class DataLoader {
 public:
  DataLoader(std::shared_ptr<const Dataset> dataset, LoaderOptions opt);
  ~DataLoader();  // stops and joins the worker
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // The next batch; epochs follow each other without end. An exception thrown by the data set (on the
  // worker or not) is rethrown here, in the batch's turn, and again on every later call.
  Batch next();

  int64_t batches_per_epoch() const { return batches_per_epoch_; }
  int64_t epoch() const { return epoch_; }        // the next batch's epoch
  int64_t position() const { return position_; }  // the next batch's index within its epoch
  const LoaderOptions& options() const { return opt_; }

  // {seed, epoch, position, dataset size, batch size}: what next() returns next. set_state checks that the
  // size and batch size match this loader (an error naming both otherwise) and discards prefetched batches.
  std::vector<int64_t> state() const;
  void set_state(const std::vector<int64_t>& s);

  // The data set indices of batch `position` of `epoch` (the pure function described above).
  std::vector<int64_t> batch_indices(int64_t epoch, int64_t position) const;

 private:
  struct Item {
    Batch batch;
    std::exception_ptr error;
  };
  void ensure_perm(int64_t epoch, std::vector<int64_t>& perm, int64_t& perm_epoch) const;
  Item produce(int64_t epoch, int64_t position, std::vector<int64_t>& perm, int64_t& perm_epoch) const;
  void start_worker();
  void stop_worker();
  void worker_loop(int64_t epoch, int64_t position);

  std::shared_ptr<const Dataset> dataset_;
  LoaderOptions opt_;
  int64_t size_ = 0, batches_per_epoch_ = 0;
  int64_t epoch_ = 0, position_ = 0;  // the consumer's cursor
  std::exception_ptr failed_;         // sticky: set once a batch failed

  // the synchronous path's permutation cache
  std::vector<int64_t> perm_;
  int64_t perm_epoch_ = -1;

  // the worker and its bounded queue (capacity kQueue)
  static constexpr size_t kQueue = 2;
  std::thread worker_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  bool stop_ = false;
};

}  // namespace liandan::data
