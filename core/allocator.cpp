#include "core/allocator.h"

#include <cstdlib>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "core/error.h"

namespace liandan {
namespace {

// Cached bytes above this are returned to the OS instead of kept (a bound, not a target).
constexpr size_t kMaxCached = size_t(8) << 30;

struct CachingAllocator {
  std::mutex mu;
  std::unordered_map<size_t, std::vector<void*>> free_lists;  // bin size -> blocks
  AllocatorStats stats;

  void* alloc(size_t bytes) {
    size_t bin = cpu_bin_size(bytes);
    {
      std::lock_guard<std::mutex> lock(mu);
      stats.n_alloc++;
      auto it = free_lists.find(bin);
      if (it != free_lists.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        stats.cached -= bin;
        note_alloc(bin);
        return p;
      }
    }
    void* p = std::aligned_alloc(64, bin);
    if (!p) {
      release_all();  // memory may be sitting in our own cache: give it back and retry once
      p = std::aligned_alloc(64, bin);
    }
    std::lock_guard<std::mutex> lock(mu);
    LD_CHECK(p, "allocator: out of memory allocating ", bytes, " bytes (bin ", bin,
             "); allocator state: current=", stats.current, " peak=", stats.peak,
             " cached=", stats.cached);
    stats.n_os_alloc++;
    note_alloc(bin);
    return p;
  }

  void note_alloc(size_t bin) {
    stats.current += bin;
    if (stats.current > stats.peak) stats.peak = stats.current;
  }

  void free(void* p, size_t bytes) {
    if (!p) return;
    size_t bin = cpu_bin_size(bytes);
    std::lock_guard<std::mutex> lock(mu);
    stats.current -= bin;
    if (stats.cached + bin > kMaxCached) {
      std::free(p);
      return;
    }
    free_lists[bin].push_back(p);
    stats.cached += bin;
  }

  void release_all() {
    std::lock_guard<std::mutex> lock(mu);
    for (auto& [bin, list] : free_lists)
      for (void* p : list) std::free(p);
    free_lists.clear();
    stats.cached = 0;
  }
};

CachingAllocator& allocator() {
  static CachingAllocator* a = new CachingAllocator();  // never destroyed: storages may outlive statics
  return *a;
}

}  // namespace

size_t cpu_bin_size(size_t bytes) {
  if (bytes == 0) bytes = 1;
  if (bytes <= 4096) return (bytes + 63) & ~size_t(63);  // 64-byte steps for small blocks
  // Above 4 KiB: four bins per power of two (at most 25% waste, few distinct sizes).
  size_t p = size_t(1) << (63 - __builtin_clzll(bytes - 1));  // largest power of two < bytes
  size_t step = p / 4;
  return (bytes + step - 1) / step * step;
}

void* cpu_alloc(size_t bytes) { return allocator().alloc(bytes); }
void cpu_free(void* p, size_t bytes) { allocator().free(p, bytes); }
AllocatorStats cpu_allocator_stats() {
  std::lock_guard<std::mutex> lock(allocator().mu);
  return allocator().stats;
}
void cpu_reset_peak() {
  std::lock_guard<std::mutex> lock(allocator().mu);
  allocator().stats.peak = allocator().stats.current;
}
void cpu_empty_cache() { allocator().release_all(); }

}  // namespace liandan
