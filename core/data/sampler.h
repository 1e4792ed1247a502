#pragma once
// Data for data-parallel training: rank r of N sees its share of exactly the global batches one process would see.
//
// Global batch p of epoch e is the DataLoader's batch (core/data/loader.h): elements [p·B, (p+1)·B) of epoch e's
// Philox permutation of the data set. With N ranks each takes one contiguous slice of it, rank r
// [r·B/N, (r+1)·B/N), so N ranks with batch B/N train on the very batches of one process with batch B, and the
// slices are what DistributedDataParallel's deterministic chunks expect (rank r owns the chunks of its slice).
// The state is world-size independent — {seed, epoch, position, size, global batch} — so a run resumes on any
// number of ranks.
//
//   data::DistributedSampler s(ds->size(), {.global_batch = 64, .rank = comm->rank(),
//                                           .world_size = comm->world_size(), .seed = 7});
//   Batch b = ds->get(s.next());               // this rank's 64 / N elements of the next global batch
//
// A DataLoader does the same with LoaderOptions{.batch_size = B (global), .shard_rank = r, .shard_count = N}.
// Tasks that draw their batches from a generator instead (random text windows) draw the whole global batch on
// every rank and keep their rows: shard_rows(batch, r, N).
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace liandan::data {

// Epoch `epoch`'s order of `size` elements: the DataLoader's (randperm from Generator(seed) at offset
// epoch·ceil(size/2)), or 0..size-1 without shuffling.
std::vector<int64_t> epoch_permutation(int64_t size, uint64_t seed, int64_t epoch, bool shuffle = true);

// Rank `rank` of `world`'s part [begin + rank·len/world, begin + (rank+1)·len/world) of [begin, end), len = end − begin.
std::pair<int64_t, int64_t> shard_range(int64_t begin, int64_t end, int64_t rank, int64_t world);

// Rows of x [B, ...] for rank `rank` of `world` (a view; B must be divisible by world).
Tensor shard_rows(const Tensor& x, int64_t rank, int64_t world);

struct SamplerOptions {
  int64_t global_batch = 64;
  int64_t rank = 0, world_size = 1;
  bool shuffle = true;
  bool drop_last = true;  // false: the last global batch may be smaller (split as evenly as it goes)
  uint64_t seed = 0;
};

class DistributedSampler {
 public:
  DistributedSampler(int64_t dataset_size, SamplerOptions opt);
  // This rank's indices of global batch `position` of `epoch` (a pure function).
  std::vector<int64_t> indices(int64_t epoch, int64_t position) const;
  // This rank's indices of the next global batch; epochs follow each other without end.
  std::vector<int64_t> next();
  int64_t batches_per_epoch() const { return batches_per_epoch_; }
  int64_t local_batch() const { return opt_.global_batch / opt_.world_size; }
  int64_t epoch() const { return epoch_; }
  int64_t position() const { return position_; }
  const SamplerOptions& options() const { return opt_; }
  // {seed, epoch, position, dataset size, global batch}: the same on every rank and for any world size (a run
  // saved on 4 ranks resumes on 2). set_state checks size and global batch (an Error naming both otherwise).
  std::vector<int64_t> state() const;
  void set_state(const std::vector<int64_t>& s);

 private:
  int64_t size_ = 0, batches_per_epoch_ = 0;
  SamplerOptions opt_;
  int64_t epoch_ = 0, position_ = 0;
  mutable std::vector<int64_t> perm_;
  mutable int64_t perm_epoch_ = -1;
};

}  // namespace liandan::data
