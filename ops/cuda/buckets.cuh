// A stable counting sort of keys into buckets on the GPU, for the ops whose sums must repeat
// bit for bit although many positions add into one place (an embedding's backward, the MoE
// dispatch): counts by integer atomics (exact, whatever the order), a prefix sum, then one warp
// places the positions 32 at a time in their own order. Sums taken over a bucket in sorted order
// then add in position order, as the CPU's loops do, with no float atomics.
#pragma once
#include <cstdint>

#include "ops/cuda/device_index.cuh"

namespace smelt {

// Sorts positions 0..m−1 by keys[j] into K + 1 buckets (a key < 0 goes to bucket K, after all
// the others; keys ≥ K must not occur): offsets [K + 2] (i64 on the device) gets the buckets'
// bounds (bucket b holds sorted positions [offsets[b], offsets[b + 1])), order [m] (i64) the
// position at each sorted place, ascending within a bucket. `on` names the GPU (its stream) and
// `op` the op, for errors. The placement is one warp's walk over the keys (about 1 µs per 32 of
// them): fine for the token counts of a training step, and a multi-block sort can replace it
// behind this call.
void cuda_stable_buckets(IndexView keys, int64_t m, int64_t K, int64_t* offsets, int64_t* order, const Tensor& on, const char* op);

}  // namespace smelt
