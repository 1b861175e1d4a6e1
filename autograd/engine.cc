// The backward engine: orders the graph reachable from the root topologically, then walks it
// from the root, summing the gradients that reach each node before calling its backward.
#include <unordered_map>
#include <unordered_set>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "runtime/device_backend.h"

namespace smelt {
namespace {

// Gradients flowing through the engine are contiguous f32 of the receiving tensor's shape.
Tensor as_grad(const Tensor& g, const Shape& shape, const char* from) {
  SMELT_ASSERT(g.shape() == shape, "backward of '", from, "' returned a gradient of shape ", shape_str(g.shape()),
               " for an input of shape ", shape_str(shape));
  if (g.is_contiguous() && g.dtype() == DType::F32) return g.detach();
  return g.to(DType::F32).clone();
}

void accumulate(Tensor& slot, const Tensor& g) {
  if (!slot.defined()) {
    slot = g;
    return;
  }
  // Never add into a tensor some op may still hold. A residual stream's two gradients are
  // usually held by nothing else by the time they meet, so the sum goes into one of them.
  Tensor sum = slot.is_sole_reference() ? slot : g.is_sole_reference() ? g : slot.clone();
  const Tensor& other = sum.same(g) ? slot : g;
  device_backend(sum.device()).accumulate(sum, other);
  slot = sum;
}

std::vector<Node*> topological_order(Node* root) {
  // Iterative DFS post-order, reversed: every node comes before the nodes it feeds gradients to.
  std::vector<Node*> order;
  std::unordered_set<Node*> visited;
  std::vector<std::pair<Node*, size_t>> stack{{root, 0}};
  visited.insert(root);
  while (!stack.empty()) {
    auto& [node, i] = stack.back();
    if (i < node->next.size()) {
      Node* child = node->next[i++].fn.get();
      if (child && visited.insert(child).second) stack.push_back({child, 0});
    } else {
      order.push_back(node);
      stack.pop_back();
    }
  }
  return {order.rbegin(), order.rend()};
}

}  // namespace

void Tensor::backward(const Tensor& grad) const {
  SMELT_CHECK(requires_grad(), "backward() on a tensor that does not require grad: ", str());
  Tensor seed = grad;
  if (!seed.defined()) {
    SMELT_CHECK(numel() == 1, "backward() without a gradient needs a one-element output, got ", str());
    seed = Tensor::full(shape(), 1.0f, DType::F32, device());
  }
  seed = as_grad(seed, shape(), "backward seed");
  NoGradGuard no_grad;
  if (is_leaf()) {
    Tensor slot = this->grad();
    accumulate(slot, seed);
    set_grad(slot);
    return;
  }
  std::unordered_map<Node*, Tensor> pending;
  pending[grad_fn().get()] = seed;
  // Keep nodes alive while we walk even if outputs drop their references.
  std::shared_ptr<Node> root = grad_fn();
  for (Node* node : topological_order(root.get())) {
    auto it = pending.find(node);
    if (it == pending.end()) continue;  // no gradient reached this node
    Tensor g = it->second;
    pending.erase(it);
    std::vector<Tensor> grads = node->backward(g);
    SMELT_ASSERT(grads.size() == node->next.size(), "backward of '", node->name(), "' returned ", grads.size(),
                 " gradients for ", node->next.size(), " inputs");
    for (size_t i = 0; i < grads.size(); ++i) {
      const Edge& e = node->next[i];
      if (!e.active() || !grads[i].defined()) continue;
      if (e.fn) {
        accumulate(pending[e.fn.get()], as_grad(grads[i], e.fn->output_shape, node->name()));
      } else {
        Tensor leaf(e.leaf);
        Tensor slot = leaf.grad();
        accumulate(slot, as_grad(grads[i], leaf.shape(), node->name()));
        leaf.set_grad(slot);
      }
    }
    node->release();
  }
}

}  // namespace smelt
