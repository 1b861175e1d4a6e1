// Router rows for composing dense experts into an MoE (models/compose.h): each fitted per layer
// from what expert i's own model computes on expert i's domain prompts (token ids [n, T]).
#pragma once
#include <vector>

#include "models/transformer.h"

namespace smelt {

// hidden: the mean FFN input of each domain against the mean over domains (or its negatives').
std::vector<Tensor> routers_from_hidden(const std::vector<const Transformer*>& experts, const std::vector<Tensor>& prompts,
                                        const std::vector<Tensor>& negatives);
// lda: the same difference whitened by the pooled within-domain covariance plus a ridge of
// `ridge_share` of its mean variance.
std::vector<Tensor> routers_from_lda(const std::vector<const Transformer*>& experts, const std::vector<Tensor>& prompts, double ridge_share);
// embed: mean token embeddings; one router, repeated for every layer.
std::vector<Tensor> routers_from_embeddings(const std::vector<const Transformer*>& experts, const std::vector<Tensor>& prompts,
                                            const std::vector<Tensor>& negatives);

}  // namespace smelt
