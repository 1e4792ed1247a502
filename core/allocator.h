#pragma once
// Caching allocator for tensor storage, one instance per device (the CPU's below; CUDA's in core/cuda/).
//
// Why: a training step allocates and frees the same large buffers every step. Returning them to the OS
// (glibc unmaps blocks above its mmap threshold; cudaFree synchronizes the whole device) and getting them
// back costs as much as the math. So freed blocks go to size-binned free lists and are reused.
//
// Stream-aware: a block freed on a stream is reused only by a request on the same stream, so a kernel
// still queued on that stream can never see its memory handed to work on another stream. (The CUDA backend
// runs one stream per device, so today every block of a device carries the same stream.)
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace liandan {

struct AllocatorStats {
  size_t current = 0;   // bytes handed out to live storages
  size_t peak = 0;      // high-water mark of `current`
  size_t cached = 0;    // bytes held in free lists, ready for reuse
  uint64_t n_alloc = 0; // allocation requests served
  uint64_t n_os_alloc = 0; // requests that had to go to the system (cache misses)
  std::string str() const;  // "current=… peak=… cached=… (n_alloc …, n_os_alloc …)"
};

// Where the raw memory comes from: `raw_alloc` returns null when the system refuses (it must not throw).
struct RawAllocator {
  void* (*raw_alloc)(size_t bytes, void* ctx) = nullptr;
  void (*raw_free)(void* p, size_t bytes, void* ctx) = nullptr;
  void* ctx = nullptr;
};

class CachingAllocator {
 public:
  // `what` names the device in errors ("cpu", "cuda:0"); cached bytes above `max_cached` go back at once.
  CachingAllocator(std::string what, RawAllocator raw, size_t max_cached);
  // Throws liandan::Error naming the request, the device and the allocator's state when the system refuses
  // even after the cache was returned to it.
  void* allocate(size_t bytes, void* stream = nullptr);
  void deallocate(void* p, size_t bytes, void* stream = nullptr);
  AllocatorStats stats();
  void reset_peak();
  void empty_cache();  // returns every cached block to the system

  // Bytes really reserved for a request: 64-byte steps up to 4 KiB, then four bins per power of two
  // (at most 25 % waste, few distinct sizes so blocks are reused).
  static size_t bin_size(size_t bytes);

 private:
  void note_alloc(size_t bin);
  std::string what_;
  RawAllocator raw_;
  size_t max_cached_;
  std::mutex mu_;
  std::map<std::pair<size_t, void*>, std::vector<void*>> free_lists_;  // (bin, stream) -> blocks
  AllocatorStats stats_;
};

// The CPU's instance: 64-byte aligned blocks from the C library.
CachingAllocator& cpu_allocator();
void* cpu_alloc(size_t bytes);
void cpu_free(void* p, size_t bytes);
AllocatorStats cpu_allocator_stats();
void cpu_reset_peak();
void cpu_empty_cache();
inline size_t cpu_bin_size(size_t bytes) { return CachingAllocator::bin_size(bytes); }

}  // namespace liandan
