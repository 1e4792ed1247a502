#include "core/allocator.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

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
  LD_CHECK(p, "allocator (", what_, "): out of memory allocating ", format_bytes(bytes), " (", bytes, " bytes)",
           raw_.describe_limit ? "; " + raw_.describe_limit(raw_.ctx) : std::string(), "; allocator state: ",
           stats_.str());
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

std::string format_bytes(size_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = double(bytes);
  int u = 0;
  while (v >= 1024 && u < 5) v /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

namespace {

// A number from a /proc or /sys file: `key` names a "Key:   123 kB" line of /proc/meminfo; empty reads the
// whole file as one number ("max" means none). 0 when absent.
size_t read_bytes(const char* path, const char* key) {
  FILE* f = std::fopen(path, "r");
  if (!f) return 0;
  char line[256];
  size_t out = 0;
  if (!*key) {
    if (std::fgets(line, sizeof line, f) && line[0] != 'm') out = size_t(std::strtoull(line, nullptr, 10));
  } else {
    size_t klen = std::strlen(key);
    while (std::fgets(line, sizeof line, f))
      if (std::strncmp(line, key, klen) == 0 && line[klen] == ':') {
        out = size_t(std::strtoull(line + klen + 1, nullptr, 10)) * 1024;  // kB
        break;
      }
  }
  std::fclose(f);
  return out;
}

// Bytes the CPU allocator holds from the system (live and cached): with overcommit, memory that was handed
// out but not yet touched does not show in MemAvailable, so the sum is checked against the total as well.
std::atomic<size_t> g_cpu_held{0};
std::atomic<size_t> g_budget{0};  // 0: none (CpuAllocationBudget)
std::string g_budget_why;
constexpr size_t kCheckedRequest = size_t(64) << 20;

void* cpu_raw_alloc(size_t bytes, void*) {
  if (bytes >= kCheckedRequest) {
    MemoryInfo m = system_memory();
    if (m.total && (bytes > m.available || g_cpu_held.load() + bytes > m.total)) return nullptr;
    size_t budget = g_budget.load();
    if (budget && g_cpu_held.load() + bytes > budget) return nullptr;
  }
  void* p = std::aligned_alloc(64, bytes);
  if (p) g_cpu_held += bytes;
  return p;
}

void cpu_raw_free(void* p, size_t bytes, void*) {
  std::free(p);
  g_cpu_held -= bytes;
}

std::string cpu_limit(void*) {
  MemoryInfo m = system_memory();
  std::string s = "the machine has " + format_bytes(m.available) + " available of " + format_bytes(m.total) +
                  " (this process's allocator holds " + format_bytes(g_cpu_held.load()) + ")";
  if (size_t b = g_budget.load()) s += "; " + g_budget_why + ": at most " + format_bytes(b);
  return s;
}

}  // namespace

CpuAllocationBudget::CpuAllocationBudget(size_t bytes, std::string why) {
  g_budget_why = std::move(why);
  g_budget = std::max<size_t>(bytes, 1);
}
CpuAllocationBudget::~CpuAllocationBudget() { g_budget = 0; }

MemoryInfo system_memory() {
  MemoryInfo m;
  m.total = read_bytes("/proc/meminfo", "MemTotal");
  m.available = read_bytes("/proc/meminfo", "MemAvailable");
  size_t cg_max = read_bytes("/sys/fs/cgroup/memory.max", "");  // cgroup v2; 0 when unlimited or absent
  if (cg_max) {
    size_t cg_cur = read_bytes("/sys/fs/cgroup/memory.current", "");
    m.total = m.total ? std::min(m.total, cg_max) : cg_max;
    m.available = std::min(m.available ? m.available : cg_max, cg_max > cg_cur ? cg_max - cg_cur : 0);
  }
  return m;
}

CachingAllocator& cpu_allocator() {
  static RawAllocator raw{cpu_raw_alloc, cpu_raw_free, nullptr, cpu_limit};
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
