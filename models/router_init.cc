// Router rows of a composed MoE, fitted per layer from what each expert's own model computes on its
// domain's prompts (see models/compose.h for the methods and why each exists).
#include "models/router_init.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "ops/ops.h"

namespace smelt {
namespace {

constexpr float kRouterMargin = 4.0f;

// Mean over all positions of a [.., C] tensor → C values.
std::vector<double> mean_rows(const Tensor& x) {
  const std::vector<float> p = x.to_vector();  // one host read
  const int64_t C = x.size(-1), rows = x.numel() / C;
  std::vector<double> m(C, 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < C; ++j) m[j] += p[r * C + j];
  for (double& v : m) v /= static_cast<double>(rows);
  return m;
}

// Per layer, the mean FFN input of `model` on `ids`.
std::vector<std::vector<double>> mean_ffn_inputs(const Transformer& model, const Tensor& ids) {
  model.set_capture(true);
  model.forward(ids);
  std::vector<std::vector<double>> out;
  for (const Tensor& x : model.captured().ffn_input) out.push_back(mean_rows(x));
  model.set_capture(false);
  return out;
}

// Per layer, the FFN inputs of `model` on `ids` as rows [positions, C] (one host read each).
std::vector<std::vector<float>> ffn_input_rows(const Transformer& model, const Tensor& ids) {
  model.set_capture(true);
  model.forward(ids);
  std::vector<std::vector<float>> out;
  for (const Tensor& x : model.captured().ffn_input) out.push_back(x.to_vector());
  model.set_capture(false);
  return out;
}

// The Cholesky factor L (lower triangle, row-major C × C) of S + ridge·I, S symmetric positive
// semi-definite.
std::vector<double> cholesky_ridge(std::vector<double> S, int64_t C, double ridge) {
  for (int64_t i = 0; i < C; ++i) S[i * C + i] += ridge;
  for (int64_t j = 0; j < C; ++j) {
    double diag = S[j * C + j];
    for (int64_t k = 0; k < j; ++k) diag -= S[j * C + k] * S[j * C + k];
    SMELT_CHECK(diag > 0, "compose: --gate-init lda: the hidden states' covariance is not positive definite");
    S[j * C + j] = std::sqrt(diag);
    for (int64_t i = j + 1; i < C; ++i) {
      double v = S[i * C + j];
      for (int64_t k = 0; k < j; ++k) v -= S[i * C + k] * S[j * C + k];
      S[i * C + j] = v / S[j * C + j];
    }
  }
  return S;
}

// x with L·Lᵀ x = b (two triangular solves).
std::vector<double> cholesky_solve(const std::vector<double>& L, const std::vector<double>& b) {
  const int64_t C = static_cast<int64_t>(b.size());
  std::vector<double> x = b;
  for (int64_t i = 0; i < C; ++i) {  // L y = b
    for (int64_t k = 0; k < i; ++k) x[i] -= L[i * C + k] * x[k];
    x[i] /= L[i * C + i];
  }
  for (int64_t i = C - 1; i >= 0; --i) {  // Lᵀ x = y
    for (int64_t k = i + 1; k < C; ++k) x[i] -= L[k * C + i] * x[k];
    x[i] /= L[i * C + i];
  }
  return x;
}

// Linear discriminant router rows for one layer from each domain's FFN inputs rows[i] ([n_i, C]
// flattened): d_i = mean_i − the mean of the means, whitened by the pooled within-domain
// covariance S (plus a ridge of `ridge_share` of its mean variance, for the few thousand tokens a
// prompt set has against C² entries): w_i = S⁻¹ d_i, scaled so a token at the domain's mean
// scores kRouterMargin above the average. The raw mean difference (hidden) weighs every
// direction alike, so a few high-variance directions that every domain shares decide the
// routing; whitening weighs each direction by how well it separates the domains.
Tensor router_lda(const std::vector<const std::vector<float>*>& rows, int64_t C, double ridge_share) {
  const int64_t E = static_cast<int64_t>(rows.size());
  std::vector<std::vector<double>> means(E, std::vector<double>(C, 0.0));
  std::vector<double> S(C * C, 0.0), centre(C, 0.0);
  int64_t total = 0;
  for (int64_t i = 0; i < E; ++i) {
    const std::vector<float>& x = *rows[i];
    const int64_t n = static_cast<int64_t>(x.size()) / C;
    for (int64_t r = 0; r < n; ++r)
      for (int64_t j = 0; j < C; ++j) means[i][j] += x[r * C + j] / static_cast<double>(n);
    std::vector<double> dev(C);
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t j = 0; j < C; ++j) dev[j] = x[r * C + j] - means[i][j];
      for (int64_t a = 0; a < C; ++a)
        for (int64_t b = 0; b <= a; ++b) S[a * C + b] += dev[a] * dev[b];
    }
    total += n;
    for (int64_t j = 0; j < C; ++j) centre[j] += means[i][j] / static_cast<double>(E);
  }
  double trace = 0;
  for (int64_t a = 0; a < C; ++a)
    for (int64_t b = 0; b <= a; ++b) {
      S[a * C + b] /= static_cast<double>(total);
      S[b * C + a] = S[a * C + b];
      if (a == b) trace += S[a * C + a];
    }
  const std::vector<double> L = cholesky_ridge(S, C, ridge_share * trace / static_cast<double>(C));  // one factor, E solves
  std::vector<float> w(E * C);
  for (int64_t i = 0; i < E; ++i) {
    std::vector<double> d(C);
    for (int64_t j = 0; j < C; ++j) d[j] = means[i][j] - centre[j];
    const std::vector<double> v = cholesky_solve(L, d);
    double vd = 0;
    for (int64_t j = 0; j < C; ++j) vd += v[j] * d[j];
    const double s = vd > 0 ? kRouterMargin / vd : 0.0;
    for (int64_t j = 0; j < C; ++j) w[i * C + j] = static_cast<float>(s * v[j]);
  }
  return Tensor::from_vector(w, {E, C});
}

std::vector<double> mean_embedding(const Transformer& model, const Tensor& ids) {
  for (const auto& [name, t] : model.state_dict())
    if (name == "model.embed_tokens.weight") return mean_rows(ops::embedding(t, ids));
  SMELT_FAIL("compose: the model has no embedding table");
}

// Router rows from per-expert means. The router has no bias, so each row is made orthogonal
// to its reference point r_i (the experts' mean, or the negative prompts' mean): with
// d = m_i − r_i and d' = d − (d·r_i / ‖r_i‖²) r_i, row i = margin · d' / ‖d'‖² scores 0 at r_i
// and exactly `margin` at m_i.
Tensor router_from_means(const std::vector<std::vector<double>>& means, const std::vector<std::vector<double>>& reference) {
  const int64_t E = static_cast<int64_t>(means.size()), C = static_cast<int64_t>(means[0].size());
  std::vector<float> w(E * C);
  for (int64_t i = 0; i < E; ++i) {
    const std::vector<double>& r = reference[i];
    std::vector<double> d(C);
    double dr = 0, rr = 0;
    for (int64_t j = 0; j < C; ++j) {
      d[j] = means[i][j] - r[j];
      dr += d[j] * r[j];
      rr += r[j] * r[j];
    }
    double norm2 = 0;
    for (int64_t j = 0; j < C; ++j) {
      if (rr > 0) d[j] -= dr / rr * r[j];
      norm2 += d[j] * d[j];
    }
    const double s = norm2 > 0 ? kRouterMargin / norm2 : 0.0;
    for (int64_t j = 0; j < C; ++j) w[i * C + j] = static_cast<float>(s * d[j]);
  }
  return Tensor::from_vector(w, {E, C});
}

// Reference points: the mean over experts, or each expert's negative-prompt mean.
std::vector<std::vector<double>> references(const std::vector<std::vector<double>>& means, const std::vector<std::vector<double>>& negative) {
  if (!negative.empty()) return negative;
  std::vector<double> avg(means[0].size(), 0.0);
  for (const auto& m : means)
    for (size_t j = 0; j < m.size(); ++j) avg[j] += m[j] / static_cast<double>(means.size());
  return std::vector<std::vector<double>>(means.size(), avg);
}

}  // namespace

std::vector<Tensor> routers_from_hidden(const std::vector<const Transformer*>& experts, const std::vector<Tensor>& prompts,
                                        const std::vector<Tensor>& negatives) {
  NoGradGuard no_grad;
  const size_t E = experts.size();
  std::vector<std::vector<std::vector<double>>> per_expert, per_negative;  // [expert][layer][C]
  for (size_t i = 0; i < E; ++i) per_expert.push_back(mean_ffn_inputs(*experts[i], prompts[i]));
  for (size_t i = 0; i < negatives.size(); ++i) per_negative.push_back(mean_ffn_inputs(*experts[i], negatives[i]));
  std::vector<Tensor> routers;
  for (size_t l = 0; l < per_expert[0].size(); ++l) {
    std::vector<std::vector<double>> means, neg;
    for (size_t i = 0; i < E; ++i) means.push_back(per_expert[i][l]);
    for (const auto& n : per_negative) neg.push_back(n[l]);
    routers.push_back(router_from_means(means, references(means, neg)));
  }
  return routers;
}

std::vector<Tensor> routers_from_lda(const std::vector<const Transformer*>& experts, const std::vector<Tensor>& prompts, double ridge_share) {
  NoGradGuard no_grad;
  std::vector<std::vector<std::vector<float>>> per_expert;  // [expert][layer][positions · C]
  for (size_t i = 0; i < experts.size(); ++i) per_expert.push_back(ffn_input_rows(*experts[i], prompts[i]));
  const int64_t C = experts[0]->config().hidden_size;
  std::vector<Tensor> routers;
  for (size_t l = 0; l < per_expert[0].size(); ++l) {
    std::vector<const std::vector<float>*> rows;
    for (const auto& e : per_expert) rows.push_back(&e[l]);
    routers.push_back(router_lda(rows, C, ridge_share));
  }
  return routers;
}

std::vector<Tensor> routers_from_embeddings(const std::vector<const Transformer*>& experts, const std::vector<Tensor>& prompts,
                                            const std::vector<Tensor>& negatives) {
  NoGradGuard no_grad;
  std::vector<std::vector<double>> means, neg;
  for (size_t i = 0; i < experts.size(); ++i) means.push_back(mean_embedding(*experts[i], prompts[i]));
  for (size_t i = 0; i < negatives.size(); ++i) neg.push_back(mean_embedding(*experts[i], negatives[i]));
  const Tensor r = router_from_means(means, references(means, neg));
  return std::vector<Tensor>(static_cast<size_t>(experts[0]->config().num_hidden_layers), r);
}

}  // namespace smelt
