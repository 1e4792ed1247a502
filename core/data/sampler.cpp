#include "core/data/sampler.h"

#include <algorithm>
#include <numeric>

#include "core/random.h"

namespace liandan::data {

std::vector<int64_t> epoch_permutation(int64_t size, uint64_t seed, int64_t epoch, bool shuffle) {
  std::vector<int64_t> perm(static_cast<size_t>(size));
  if (!shuffle) {
    std::iota(perm.begin(), perm.end(), int64_t(0));
    return perm;
  }
  // Each epoch owns the Philox blocks [e·ceil(n/2), (e+1)·ceil(n/2)): randperm draws n f64 uniforms (as DataLoader).
  Generator gen;
  gen.set_state(seed, uint64_t(epoch) * uint64_t((size + 1) / 2));
  Tensor p = randperm(size, gen);
  perm.assign(p.data_ptr<int64_t>(), p.data_ptr<int64_t>() + size);
  return perm;
}

std::pair<int64_t, int64_t> shard_range(int64_t begin, int64_t end, int64_t rank, int64_t world) {
  LD_CHECK(world >= 1 && rank >= 0 && rank < world, "shard_range: rank ", rank, " of a world of ", world);
  int64_t len = end - begin;
  return {begin + rank * len / world, begin + (rank + 1) * len / world};
}

Tensor shard_rows(const Tensor& x, int64_t rank, int64_t world) {
  LD_CHECK(x.dim() >= 1 && x.size(0) % world == 0, "shard_rows: ", x.dim() >= 1 ? x.size(0) : 0,
           " rows do not split evenly over ", world, " ranks");
  auto [b, e] = shard_range(0, x.size(0), rank, world);
  return x.narrow(0, b, e - b);
}

DistributedSampler::DistributedSampler(int64_t dataset_size, SamplerOptions opt) : size_(dataset_size), opt_(opt) {
  LD_CHECK(opt_.world_size >= 1 && opt_.rank >= 0 && opt_.rank < opt_.world_size, "DistributedSampler: rank ",
           opt_.rank, " of a world of ", opt_.world_size);
  LD_CHECK(opt_.global_batch >= 1 && opt_.global_batch % opt_.world_size == 0, "DistributedSampler: global_batch ",
           opt_.global_batch, " must be a positive multiple of the world size ", opt_.world_size);
  batches_per_epoch_ = opt_.drop_last ? size_ / opt_.global_batch : (size_ + opt_.global_batch - 1) / opt_.global_batch;
  LD_CHECK(batches_per_epoch_ >= 1, "DistributedSampler: a data set of ", size_, " elements makes no global batch of ",
           opt_.global_batch);
}

std::vector<int64_t> DistributedSampler::indices(int64_t epoch, int64_t position) const {
  LD_CHECK(epoch >= 0 && position >= 0 && position < batches_per_epoch_, "DistributedSampler: epoch ", epoch,
           ", position ", position, " out of range (", batches_per_epoch_, " batches per epoch)");
  if (perm_epoch_ != epoch) {
    perm_ = epoch_permutation(size_, opt_.seed, epoch, opt_.shuffle);
    perm_epoch_ = epoch;
  }
  int64_t begin = position * opt_.global_batch, end = std::min(size_, begin + opt_.global_batch);
  auto [b, e] = shard_range(begin, end, opt_.rank, opt_.world_size);
  return {perm_.begin() + b, perm_.begin() + e};
}

std::vector<int64_t> DistributedSampler::next() {
  std::vector<int64_t> out = indices(epoch_, position_);
  if (++position_ == batches_per_epoch_) position_ = 0, ++epoch_;
  return out;
}

std::vector<int64_t> DistributedSampler::state() const {
  return {int64_t(opt_.seed), epoch_, position_, size_, opt_.global_batch};
}

void DistributedSampler::set_state(const std::vector<int64_t>& s) {
  LD_CHECK(s.size() == 5, "DistributedSampler::set_state: expected 5 values {seed, epoch, position, size, "
           "global_batch}, got ", s.size());
  LD_CHECK(s[3] == size_ && s[4] == opt_.global_batch, "DistributedSampler::set_state: the state is for a data set of ",
           s[3], " elements in global batches of ", s[4], ", this sampler has ", size_, " in global batches of ",
           opt_.global_batch);
  LD_CHECK(s[1] >= 0 && s[2] >= 0 && s[2] < batches_per_epoch_, "DistributedSampler::set_state: epoch ", s[1],
           ", position ", s[2], " out of range (", batches_per_epoch_, " batches per epoch)");
  opt_.seed = uint64_t(s[0]);
  epoch_ = s[1];
  position_ = s[2];
}

}  // namespace liandan::data
