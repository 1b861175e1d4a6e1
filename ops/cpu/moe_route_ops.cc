// The CPU's MoE routing: from router scores to a fixed number of slots (token choice: every
// token's first choices, then its second choices, ...; expert choice: each expert's best tokens),
// capacity dropping in that priority order (GShard), the routing statistics, and DeepSeek-V3's
// bias update. Plain loops: N × E is small next to the experts' GEMMs.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "ops/cpu/cpu_ops.h"

namespace smelt {
namespace {

struct Slots {
  int64_t *token, *expert, *flat;
  float* chosen;
  int64_t E;
  void set(int64_t s, int64_t n, int64_t e, bool is_chosen) {
    token[s] = n;
    expert[s] = is_chosen ? e : -1;
    flat[s] = n * E + (is_chosen ? e : 0);
    chosen[s] = is_chosen ? 1.0f : 0.0f;
  }
};

// A score as ranked: NaN as −∞, so that the comparisons below are a strict total order (std::sort
// needs one; a NaN router score would otherwise make the ranking undefined).
float rank_key(float v) { return std::isnan(v) ? -std::numeric_limits<float>::infinity() : v; }

// Experts in order of selection score (score + balancing bias), ties to the lower index.
void rank_experts(const float* scores, const float* bias, int64_t E, std::vector<int64_t>& order) {
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    const float sa = rank_key(scores[a] + bias[a]), sb = rank_key(scores[b] + bias[b]);
    return sa > sb || (sa == sb && a < b);
  });
}

}  // namespace

void cpu_moe_route_op(const Tensor& scores, const Tensor& bias, const Tensor& mask, const MoeRouteParams& p, const MoeRoute& out) {
  const int64_t N = scores.size(0), E = scores.size(1), S = out.token.numel();
  const float* sv = static_cast<const float*>(scores.device_data());
  float* pb = static_cast<float*>(bias.device_data());
  const float* pm = mask.defined() ? static_cast<const float*>(mask.device_data()) : nullptr;
  auto real = [&](int64_t n) { return !pm || pm[n] > 0; };
  Slots slots{static_cast<int64_t*>(out.token.device_data()), static_cast<int64_t*>(out.expert.device_data()),
              static_cast<int64_t*>(out.flat.device_data()), static_cast<float*>(out.chosen.device_data()), E};
  double real_count = 0;
  for (int64_t n = 0; n < N; ++n) real_count += real(n) ? 1 : 0;
  const double real_tokens = std::max(real_count, 1.0);
  // Routing probabilities: softmax scores, or sigmoid scores normalised per token.
  std::vector<double> prob(N * E);
  for (int64_t n = 0; n < N; ++n) {
    double total = 0;
    for (int64_t e = 0; e < E; ++e) total += sv[n * E + e];
    for (int64_t e = 0; e < E; ++e) prob[n * E + e] = p.softmax_scores ? sv[n * E + e] : sv[n * E + e] / std::max(total, 1e-30);
  }
  std::vector<double> chosen_per_expert(E, 0.0);
  if (p.expert_choice) {
    // Each expert takes its top-capacity tokens by score.
    const int64_t cap = S / E;
    std::vector<int64_t> order(N);
    for (int64_t e = 0; e < E; ++e) {
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + cap, order.end(), [&](int64_t a, int64_t b) {
        const float sa = rank_key(sv[a * E + e]), sb = rank_key(sv[b * E + e]);
        return sa > sb || (sa == sb && a < b);
      });
      for (int64_t i = 0; i < cap; ++i) {
        slots.set(e * cap + i, order[i], e, true);
        if (real(order[i])) chosen_per_expert[e] += 1;
      }
    }
  } else {
    // Token choice: slot j·N + n is token n's j-th choice (or unused past its count), so that
    // capacity drops later choices first.
    const int64_t kmax = S / N;
    std::vector<int64_t> order(E);
    for (int64_t n = 0; n < N; ++n) {
      rank_experts(sv + n * E, pb, E, order);
      int64_t count = std::min(p.k, E);
      if (p.top_p) {
        double cum = 0;
        count = kmax;
        for (int64_t i = 0; i < kmax; ++i) {
          cum += prob[n * E + order[i]];
          if (cum >= p.p) {
            count = i + 1;
            break;
          }
        }
      }
      count = std::max<int64_t>(count, 1);
      for (int64_t j = 0; j < kmax; ++j) {
        slots.set(j * N + n, n, order[j], j < count);
        if (j < count && real(n)) chosen_per_expert[order[j]] += 1;
      }
    }
    const int64_t cap = p.capacity_factor > 0 ? static_cast<int64_t>(std::ceil(p.capacity_factor * real_tokens * p.config_top_k / static_cast<double>(E)))
                                              : std::numeric_limits<int64_t>::max();
    std::vector<int64_t> fill(E, 0);
    for (int64_t s = 0; s < S; ++s) {
      const int64_t e = slots.expert[s];
      if (e < 0) continue;
      if (fill[e] < cap) ++fill[e];
      else slots.expert[s] = -1;  // dropped by capacity (still counted as chosen)
    }
  }
  // Statistics: [0, E) kept real slots per expert, [E, 2E) chosen real slots per expert, then
  // kept real, chosen real, Σ router entropy over real tokens, real tokens.
  float* st = static_cast<float*>(out.stats.device_data());
  std::fill(st, st + out.stats.numel(), 0.0f);
  double kept_real = 0, chosen_real = 0, entropy = 0;
  for (int64_t s = 0; s < S; ++s)
    if (slots.expert[s] >= 0 && real(slots.token[s])) {
      st[slots.expert[s]] += 1;
      kept_real += 1;
    }
  for (int64_t e = 0; e < E; ++e) {
    st[E + e] = static_cast<float>(chosen_per_expert[e]);
    chosen_real += chosen_per_expert[e];
  }
  for (int64_t n = 0; n < N; ++n) {
    if (!real(n)) continue;
    for (int64_t e = 0; e < E; ++e)
      if (prob[n * E + e] > 0) entropy -= prob[n * E + e] * std::log(prob[n * E + e]);
  }
  st[2 * E] = static_cast<float>(kept_real);
  st[2 * E + 1] = static_cast<float>(chosen_real);
  st[2 * E + 2] = static_cast<float>(entropy);
  st[2 * E + 3] = static_cast<float>(real_count);
  if (p.bias_rate > 0 && !p.expert_choice) {
    // DeepSeek-V3: nudge each expert's selection bias toward the mean load (no gradient involved).
    const double mean_load = 1.0 / static_cast<double>(E);
    for (int64_t e = 0; e < E; ++e) {
      const double load = chosen_real > 0 ? chosen_per_expert[e] / chosen_real : mean_load;
      pb[e] += static_cast<float>(p.bias_rate * (load < mean_load ? 1.0 : (load > mean_load ? -1.0 : 0.0)));
    }
  }
}

}  // namespace smelt
