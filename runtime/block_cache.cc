#include "runtime/block_cache.h"

#include <cstdlib>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace smelt::block_cache {
namespace {

struct SizeClass {
  std::vector<void*> blocks;
  bool asked_since_trim = false;
};

struct Cache {
  std::mutex mu;
  std::unordered_map<size_t, SizeClass> by_size;
  size_t bytes = 0;
};

Cache& cache() {
  static Cache* c = new Cache;  // never destroyed: storages may be freed after static destructors
  return *c;
}

}  // namespace

size_t block_size(size_t bytes) {
  if (bytes < kMinBytes) return bytes == 0 ? 64 : (bytes + 63) / 64 * 64;
  size_t step = 1;
  while ((step << 5) <= bytes) step <<= 1;  // 2^(⌊log2 bytes⌋ − 4)
  return (bytes + step - 1) / step * step;
}

void* take(size_t bytes) {
  Cache& c = cache();
  std::lock_guard<std::mutex> g(c.mu);
  SizeClass& s = c.by_size[bytes];
  s.asked_since_trim = true;
  if (s.blocks.empty()) return nullptr;
  void* block = s.blocks.back();
  s.blocks.pop_back();
  c.bytes -= bytes;
  return block;
}

bool keep(void* block, size_t bytes, int64_t peak_live_bytes) {
  Cache& c = cache();
  std::lock_guard<std::mutex> g(c.mu);
  if (static_cast<int64_t>(c.bytes + bytes) > peak_live_bytes) return false;
  c.by_size[bytes].blocks.push_back(block);
  c.bytes += bytes;
  return true;
}

void trim() {
  Cache& c = cache();
  std::lock_guard<std::mutex> g(c.mu);
  for (auto it = c.by_size.begin(); it != c.by_size.end();) {
    SizeClass& s = it->second;
    if (!s.asked_since_trim) {
      for (void* block : s.blocks) std::free(block);
      c.bytes -= s.blocks.size() * it->first;
      it = c.by_size.erase(it);
      continue;
    }
    s.asked_since_trim = false;
    ++it;
  }
}

void release_all() {
  Cache& c = cache();
  std::lock_guard<std::mutex> g(c.mu);
  for (auto& [bytes, s] : c.by_size)
    for (void* block : s.blocks) std::free(block);
  c.by_size.clear();
  c.bytes = 0;
}

int64_t cached_bytes() {
  Cache& c = cache();
  std::lock_guard<std::mutex> g(c.mu);
  return static_cast<int64_t>(c.bytes);
}

}  // namespace smelt::block_cache
