#pragma once
// CPU caching allocator for tensor storage.
//
// Why: a training step allocates and frees the same large buffers every step. Returning them to
// the OS (glibc unmaps blocks above its mmap threshold) and faulting them back in costs as much as
// the math on a 2-core machine. So freed blocks go to size-binned free lists and are reused.
#include <cstddef>
#include <cstdint>

namespace liandan {

struct AllocatorStats {
  size_t current = 0;   // bytes handed out to live storages
  size_t peak = 0;      // high-water mark of `current`
  size_t cached = 0;    // bytes held in free lists, ready for reuse
  uint64_t n_alloc = 0; // allocation requests served
  uint64_t n_os_alloc = 0; // requests that had to go to the OS (cache misses)
};

// Returns memory aligned to 64 bytes. Throws liandan::Error when the OS refuses.
void* cpu_alloc(size_t bytes);
void cpu_free(void* p, size_t bytes);
AllocatorStats cpu_allocator_stats();
void cpu_reset_peak();
// Returns all cached blocks to the OS.
void cpu_empty_cache();
// Bytes the allocator really reserves for a request (the bin size).
size_t cpu_bin_size(size_t bytes);

}  // namespace liandan
