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
// `describe_limit`, when set, says what the system has (e.g. "the machine has 3.1 GiB available"); it goes
// into the out-of-memory error.
struct RawAllocator {
  void* (*raw_alloc)(size_t bytes, void* ctx) = nullptr;
  void (*raw_free)(void* p, size_t bytes, void* ctx) = nullptr;
  void* ctx = nullptr;
  std::string (*describe_limit)(void* ctx) = nullptr;
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

// The CPU's instance: 64-byte aligned blocks from the C library. Linux overcommits memory, so a request that
// cannot fit would "succeed" and then thrash until the kernel's OOM killer ends the process without a word.
// The CPU allocator refuses it instead (a liandan::Error naming the size and what the machine has): a request
// of 64 MiB or more must fit in the memory available now (MemAvailable, and the cgroup's memory.max minus
// memory.current when a limit is set), and all the memory the allocator holds must stay within the machine's
// (or cgroup's) total.
struct MemoryInfo {
  size_t total = 0;      // min(MemTotal, cgroup memory.max)
  size_t available = 0;  // min(MemAvailable, cgroup memory.max - memory.current)
};
MemoryInfo system_memory();
std::string format_bytes(size_t bytes);  // "1.5 GiB"

// While alive, the CPU allocator also refuses to hold more than `bytes` in all (`why` goes into the error).
// The trainer builds a model under one: weights that take more than the share of memory that training leaves
// them (gradients and optimizer state come after) are refused at the first large tensor, in milliseconds,
// instead of after minutes of initialising tensors that can never train.
class CpuAllocationBudget {
 public:
  CpuAllocationBudget(size_t bytes, std::string why);
  ~CpuAllocationBudget();
  CpuAllocationBudget(const CpuAllocationBudget&) = delete;
  CpuAllocationBudget& operator=(const CpuAllocationBudget&) = delete;
};
CachingAllocator& cpu_allocator();
void* cpu_alloc(size_t bytes);
void cpu_free(void* p, size_t bytes);
AllocatorStats cpu_allocator_stats();
void cpu_reset_peak();
void cpu_empty_cache();
inline size_t cpu_bin_size(size_t bytes) { return CachingAllocator::bin_size(bytes); }

}  // namespace liandan
