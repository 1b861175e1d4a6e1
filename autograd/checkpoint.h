// Activation checkpointing: a function's forward runs without recording history, so none of its
// intermediate activations are kept; its backward runs the function again with history on and
// backpropagates through that copy. Memory for a block falls to its input; compute rises by
// one extra forward of the block.
#pragma once
#include <functional>
#include <vector>

#include "runtime/tensor.h"

namespace smelt {

using CheckpointFn = std::function<Tensor(const std::vector<Tensor>& inputs)>;

// out = fn(inputs). Parameters used inside fn receive their gradients during the recomputation
// (they are leaves there); the inputs receive theirs through the returned tensor's node. fn
// must compute the same thing twice: no random draws, no side effects that matter.
Tensor checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs);

}  // namespace smelt
