// The CUDA op table's MoE routing, as ops/cpu/moe_route_ops.cc: scores to slots (token choice:
// slot j·N + n is token n's j-th choice; expert choice: each expert's best S / E tokens),
// capacity dropping in slot order (GShard), the statistics and DeepSeek-V3's bias update, all
// on the GPU. Token choice ranks a token's experts in one thread (a router row is a few dozen
// experts); capacity keeps each expert's first slots in slot order through the stable bucket
// sort (buckets.cuh); expert choice ranks every token against the column, one thread per (expert,
// token). Counts use integer atomics and the entropy a fixed-order block sum: no float atomics.
#include <cuda_runtime.h>

#include <cmath>

#include "ops/cuda/block_reduce.cuh"
#include "ops/cuda/buckets.cuh"
#include "ops/cuda/cuda_ops.h"
#include "runtime/cuda_launch.cuh"

namespace smelt {
namespace {

struct SlotArrays {
  int64_t *token, *expert, *flat;
  float* chosen;
  int64_t E;
  __device__ void set(int64_t s, int64_t n, int64_t e, bool is_chosen) const {
    token[s] = n;
    expert[s] = is_chosen ? e : -1;
    flat[s] = n * E + (is_chosen ? e : 0);
    chosen[s] = is_chosen ? 1.0f : 0.0f;
  }
};

// An expert's selection score (score + balancing bias), NaN ranked as −∞: the order is total, so
// every pick finds an expert.
__device__ inline float selection(const float* row, const float* bias, int64_t e) {
  const float s = bias ? row[e] + bias[e] : row[e];
  return s != s ? -INFINITY : s;
}

__device__ inline bool is_real(const float* mask, int64_t n) { return !mask || mask[n] > 0; }

// A token's routing probability of expert e: softmax scores as they are, sigmoid ones
// normalised by the row's total.
__device__ inline double probability(const float* row, int64_t e, bool softmax_scores, double total) {
  return softmax_scores ? row[e] : row[e] / (total > 1e-30 ? total : 1e-30);
}

__device__ inline double row_total(const float* row, int64_t E) {
  double total = 0;
  for (int64_t e = 0; e < E; ++e) total += row[e];
  return total;
}

// entropy[n] = the router entropy of a real token (0 for padding); sums[0] = the real tokens.
__global__ void entropy_kernel(const float* scores, const float* mask, int64_t N, int64_t E, bool softmax_scores, double* entropy,
                               double* real_tokens) {
  double real = 0;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    const float* row = scores + n * E;
    const double total = softmax_scores ? 0.0 : row_total(row, E);
    double h = 0;
    if (is_real(mask, n)) {
      real += 1;
      for (int64_t e = 0; e < E; ++e) {
        const double p = probability(row, e, softmax_scores, total);
        if (p > 0) h -= p * log(p);
      }
    }
    entropy[n] = h;
  }
  real = block_sum(real);
  if (threadIdx.x == 0) *real_tokens = real;
}

// Token choice: token n's experts ranked by score + bias (ties to the lower index), its first
// kmax written to slots j·N + n, the first `count` of them chosen (k, or top-p's fewest).
__global__ void token_choice_kernel(const float* scores, const float* bias, int64_t N, int64_t E, int64_t kmax, MoeRouteParams p,
                                    SlotArrays slots) {
  SMELT_GRID_STRIDE(n, N) {
    const float* row = scores + n * E;
    const double total = p.softmax_scores ? 0.0 : row_total(row, E);
    const int64_t k = p.k < E ? p.k : E;
    double cum = 0;
    bool reached = false;  // top-p: the probabilities so far reached p
    int64_t previous = -1;
    for (int64_t j = 0; j < kmax; ++j) {
      int64_t best = -1;
      for (int64_t e = 0; e < E; ++e) {
        const float se = selection(row, bias, e);
        if (previous >= 0) {
          const float sp = selection(row, bias, previous);
          if (!(sp > se || (sp == se && previous < e))) continue;  // ranked before the last pick: taken
        }
        if (best < 0) {
          best = e;
          continue;
        }
        const float sb = selection(row, bias, best);
        if (se > sb || (se == sb && e < best)) best = e;
      }
      const bool chosen = j == 0 || (p.top_p ? !reached : j < k);
      slots.set(j * N + n, n, best, chosen);
      if (p.top_p && !reached) {
        cum += probability(row, best, p.softmax_scores, total);
        reached = cum >= p.p;
      }
      previous = best;
    }
  }
}

// Expert choice: expert e takes its cap best tokens (score, ties to the lower token): token a's
// rank in the column is the number of tokens ranked before it.
__global__ void expert_choice_kernel(const float* scores, int64_t N, int64_t E, int64_t cap, SlotArrays slots) {
  SMELT_GRID_STRIDE(pair, N * E) {
    const int64_t e = pair / N, a = pair % N;
    const float sa = selection(scores + a * E, nullptr, e);
    int64_t rank = 0;
    for (int64_t b = 0; b < N && rank < cap; ++b) {
      const float sb = selection(scores + b * E, nullptr, e);
      rank += sb > sa || (sb == sa && b < a);
    }
    if (rank < cap) slots.set(e * cap + rank, a, e, true);
  }
}

// Capacity: an expert keeps its first cap slots in slot order (sorted positions of its bucket),
// later ones are dropped (expert −1, still chosen). key holds the experts before dropping.
__global__ void capacity_kernel(const int64_t* key, const int64_t* order, const int64_t* bounds, int64_t E, double capacity_factor,
                                int64_t config_top_k, const double* real_tokens, int64_t* expert) {
  const double real = *real_tokens > 1.0 ? *real_tokens : 1.0;
  const int64_t cap = static_cast<int64_t>(ceil(capacity_factor * real * config_top_k / static_cast<double>(E)));
  SMELT_GRID_STRIDE(i, bounds[E]) {
    const int64_t s = order[i];
    if (i - bounds[key[s]] >= cap) expert[s] = -1;
  }
}

// counts[e] = chosen real slots per expert (from flat: the chosen expert survives dropping),
// counts[E + e] = kept real slots per expert.
__global__ void count_slots_kernel(const int64_t* token, const int64_t* expert, const int64_t* flat, const float* chosen, const float* mask,
                                   int64_t S, int64_t E, unsigned long long* counts) {
  SMELT_GRID_STRIDE(s, S) {
    if (chosen[s] == 0.0f || !is_real(mask, token[s])) continue;
    atomicAdd(&counts[flat[s] - token[s] * E], 1ull);
    if (expert[s] >= 0) atomicAdd(&counts[E + expert[s]], 1ull);
  }
}

// stats [2E + 4] and (token choice with a bias rate) the bias update.
__global__ void route_stats_kernel(const unsigned long long* counts, const double* entropy, const double* real_tokens, int64_t N, int64_t E,
                                   double bias_rate, float* stats, float* bias) {
  double h = 0;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) h += entropy[n];
  h = block_sum(h);
  if (threadIdx.x != 0) return;
  double kept = 0, chosen = 0;
  for (int64_t e = 0; e < E; ++e) {
    stats[e] = static_cast<float>(counts[E + e]);
    stats[E + e] = static_cast<float>(counts[e]);
    kept += counts[E + e];
    chosen += counts[e];
  }
  stats[2 * E] = static_cast<float>(kept);
  stats[2 * E + 1] = static_cast<float>(chosen);
  stats[2 * E + 2] = static_cast<float>(h);
  stats[2 * E + 3] = static_cast<float>(*real_tokens);
  if (bias_rate <= 0) return;
  const double mean_load = 1.0 / static_cast<double>(E);  // DeepSeek-V3: nudge toward the mean load
  for (int64_t e = 0; e < E; ++e) {
    const double load = chosen > 0 ? counts[e] / chosen : mean_load;
    bias[e] += static_cast<float>(bias_rate * (load < mean_load ? 1.0 : (load > mean_load ? -1.0 : 0.0)));
  }
}

}  // namespace

void cuda_moe_route_op(const Tensor& scores, const Tensor& bias, const Tensor& mask, const MoeRouteParams& p, const MoeRoute& route) {
  const int64_t N = scores.size(0), E = scores.size(1), S = route.token.numel();
  const Tensor& on = route.stats;
  const Device dev = on.device();
  const cudaStream_t s = cuda_stream(on);
  const SlotArrays slots{static_cast<int64_t*>(route.token.device_data()), static_cast<int64_t*>(route.expert.device_data()),
                         static_cast<int64_t*>(route.flat.device_data()), f32_out(route.chosen), E};
  // 8-byte scratch: per-token entropy, the real token count, the integer counts.
  const Tensor entropy = Tensor::empty({std::max<int64_t>(N, 1)}, DType::I64, dev), real = Tensor::empty({1}, DType::I64, dev);
  const Tensor counts = Tensor::zeros({2 * E}, DType::I64, dev);
  auto* pe = static_cast<double*>(entropy.device_data());
  auto* pr = static_cast<double*>(real.device_data());
  entropy_kernel<<<1, kCudaRowThreads, 0, s>>>(f32(scores), f32(mask), N, E, p.softmax_scores, pe, pr);
  if (p.expert_choice) {
    if (S > 0) expert_choice_kernel<<<cuda_grid_for(N * E), 256, 0, s>>>(f32(scores), N, E, S / E, slots);
  } else if (N > 0) {
    token_choice_kernel<<<cuda_grid_for(N), 128, 0, s>>>(f32(scores), f32(bias), N, E, S / N, p, slots);
    if (p.capacity_factor > 0) {
      const Tensor key = Tensor::empty({std::max<int64_t>(S, 1)}, DType::I64, dev), order = Tensor::empty({std::max<int64_t>(S, 1)}, DType::I64, dev);
      const Tensor bounds = Tensor::empty({E + 2}, DType::I64, dev);
      SMELT_CHECK(cudaMemcpyAsync(key.device_data(), slots.expert, S * sizeof(int64_t), cudaMemcpyDeviceToDevice, s) == cudaSuccess,
                  "op 'moe_route' on ", dev.str(), ": device copy failed");
      auto* pk = static_cast<int64_t*>(key.device_data());
      auto* po = static_cast<int64_t*>(order.device_data());
      auto* pb = static_cast<int64_t*>(bounds.device_data());
      cuda_stable_buckets(IndexView{pk, true}, S, E, pb, po, on, "moe_route");
      capacity_kernel<<<cuda_grid_for(S), 256, 0, s>>>(pk, po, pb, E, p.capacity_factor, p.config_top_k, pr, slots.expert);
    }
  }
  cuda_clear(route.stats, "moe_route");
  if (S > 0)
    count_slots_kernel<<<cuda_grid_for(S), 256, 0, s>>>(slots.token, slots.expert, slots.flat, slots.chosen, f32(mask), S, E,
                                                       static_cast<unsigned long long*>(counts.device_data()));
  route_stats_kernel<<<1, kCudaRowThreads, 0, s>>>(static_cast<const unsigned long long*>(counts.device_data()), pe, pr, N, E,
                                                   p.expert_choice ? 0.0 : p.bias_rate, f32_out(route.stats), f32_out(bias));
  cuda_check_launch(on, "moe_route");
}

}  // namespace smelt
