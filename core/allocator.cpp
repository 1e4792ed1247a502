#include "core/allocator.h"

#include <cstdlib>

#include "core/error.h"

namespace liandan {

std::string AllocatorStats::str() const {
  return "current=" + std::to_string(current) + " B, peak=" + std::to_string(peak) + " B, cached=" +
         std::to_string(cached) + " B (" + std::to_string(n_alloc) + " requests, " + std::to_string(n_os_alloc) +
         " from the system)";
}

CachingAllocator::CachingAllocator(std::string what, RawAllocator raw, size_t max_cached)
    : what_(std::move(what)), raw_(raw), max_cached_(max_cached) {}

size_t CachingAllocator::bin_size(size_t bytes) {
  if (bytes == 0) bytes = 1;
  if (bytes <= 4096) return (bytes + 63) & ~size_t(63);
  size_t p = size_t(1) << (63 - __builtin_clzll(bytes - 1));  // largest power of two < bytes
  size_t step = p / 4;
  return (bytes + step - 1) / step * step;
}

void CachingAllocator::note_alloc(size_t bin) {
  stats_.current += bin;
  if (stats_.current > stats_.peak) stats_.peak = stats_.current;
}

void* CachingAllocator::allocate(size_t bytes, void* stream) {
  size_t bin = bin_size(bytes);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.n_alloc++;
    auto it = free_lists_.find({bin, stream});
    if (it != free_lists_.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      stats_.cached -= bin;
      note_alloc(bin);
      return p;
    }
  }
  void* p = raw_.raw_alloc(bin, raw_.ctx);
  if (!p) {
    empty_cache();  // the memory may be sitting in our own cache: give it back and retry once
    p = raw_.raw_alloc(bin, raw_.ctx);
  }
  std::lock_guard<std::mutex> lock(mu_);
  LD_CHECK(p, "allocator (", what_, "): out of memory allocating ", bytes, " bytes (bin ", bin,
           "); allocator state: ", stats_.str());
  stats_.n_os_alloc++;
  note_alloc(bin);
  return p;
}

void CachingAllocator::deallocate(void* p, size_t bytes, void* stream) {
  if (!p) return;
  size_t bin = bin_size(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  stats_.current -= bin;
  if (stats_.cached + bin > max_cached_) {
    raw_.raw_free(p, bin, raw_.ctx);
    return;
  }
  free_lists_[{bin, stream}].push_back(p);
  stats_.cached += bin;
}

AllocatorStats CachingAllocator::stats() {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void CachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak = stats_.current;
}

void CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [key, list] : free_lists_)
    for (void* p : list) raw_.raw_free(p, key.first, raw_.ctx);
  free_lists_.clear();
  stats_.cached = 0;
}

// ---- the CPU's instance

CachingAllocator& cpu_allocator() {
  static RawAllocator raw{[](size_t bytes, void*) { return std::aligned_alloc(64, bytes); },
                          [](void* p, size_t, void*) { std::free(p); }, nullptr};
  // Never destroyed: storages may outlive other statics.
  static CachingAllocator* a = new CachingAllocator("cpu", raw, size_t(8) << 30);
  return *a;
}
void* cpu_alloc(size_t bytes) { return cpu_allocator().allocate(bytes); }
void cpu_free(void* p, size_t bytes) { cpu_allocator().deallocate(p, bytes); }
AllocatorStats cpu_allocator_stats() { return cpu_allocator().stats(); }
void cpu_reset_peak() { cpu_allocator().reset_peak(); }
void cpu_empty_cache() { cpu_allocator().empty_cache(); }

}  // namespace liandan
