// Freed tensor blocks of 1 MiB and more, kept by exact size for the next request of that size.
//
// A training step allocates and frees the same sizes in the same order every step. Handed back
// to malloc, the freed blocks are coalesced and split again for blocks of other sizes, and
// the heap ends up well above the most bytes ever alive at once: 1.22× (MoE) and 1.33× (dense)
// of the reference model's parameters, gradients, Adam moments and kept activations (measured
// with `smelt bench train`). Kept by size, every block is reused by the same tensor of the
// next step: 1.10× and 1.09×.
//
// Two bounds keep sizes that stop recurring from piling up: trim() (called between training
// steps) frees the blocks of every size nobody asked for since the previous trim, and the cache
// never holds more than the most bytes of tensors alive at once so far (a freed block beyond
// that goes straight back to malloc).
#pragma once
#include <cstddef>
#include <cstdint>

namespace smelt::block_cache {

constexpr size_t kMinBytes = size_t{1} << 20;

// The bytes a CPU block of `bytes` takes: a multiple of 64, and from kMinBytes on one of 16
// sizes per power of two (at most 1/16 more), so that tensors whose shape moves a little from
// step to step (the rows an expert-parallel rank receives) reuse the same cached blocks instead
// of piling up new sizes.
size_t block_size(size_t bytes);

// A cached block of exactly `bytes`, or nullptr.
void* take(size_t bytes);
// Keeps a freed block of `bytes` (≥ kMinBytes) for reuse; false when it must be freed instead.
bool keep(void* block, size_t bytes, int64_t peak_live_bytes);
// Frees the blocks of sizes not asked for since the previous trim.
void trim();
// Frees every cached block.
void release_all();
int64_t cached_bytes();

}  // namespace smelt::block_cache
