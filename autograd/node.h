// The autograd graph. Every differentiable op produces one output; its Node knows where each
// input's gradient goes (another Node, or a leaf tensor's .grad) and how to compute them.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace smelt {

// A tensor kept for backward, with the version it had when saved: if it is modified in place
// before backward uses it, the gradient would be silently wrong, so unpacking refuses.
// Within a SavedActivationsInBf16 scope, a tensor its op marks as an activation (f32, on a
// device, not tiny) is kept as a bf16 copy, shared by every op that saves the same values (one
// storage, offset, shape and strides, whatever view of them each op holds), and widened back to
// f32 by get(): mixed precision's bf16 activations, half the memory. Ops mark only activations
// (is_activation: not a parameter) whose derivative tolerates bf16's rounding; weights are alive
// in f32 anyway, a copy would only add.
class SavedTensor {
 public:
  SavedTensor() = default;
  SavedTensor(const Tensor& t, const char* op, bool activation = false);
  Tensor get() const;
  // get(), the saved handle given up: a backward that runs once can then reuse the memory when
  // nothing else holds it (Tensor::is_sole_reference).
  Tensor take() {
    Tensor t = get();
    tensor_ = Tensor();
    return t;
  }
  void reset() {
    tensor_ = Tensor();
    original_.reset();
  }

 private:
  Tensor tensor_;                         // the tensor, or its bf16 copy
  std::weak_ptr<Storage> original_;       // with a bf16 copy: the f32 values' storage, for the version check
  bool widen_ = false;                    // tensor_ is the bf16 copy of an f32 activation
  uint64_t version_ = 0;
  const char* op_ = "";
};

// Whether `t` (an op's own input, not a detached view of it) is an activation: not a parameter.
inline bool is_activation(const Tensor& t) { return !(t.requires_grad() && t.is_leaf()); }

// While one is alive (with bf16 true), SavedTensor keeps device activations in bf16 (the
// trainer opens one around a step of a "precision": "bf16" run on a device).
class SavedActivationsInBf16 {
 public:
  explicit SavedActivationsInBf16(bool bf16);
  ~SavedActivationsInBf16();
  SavedActivationsInBf16(const SavedActivationsInBf16&) = delete;
  SavedActivationsInBf16& operator=(const SavedActivationsInBf16&) = delete;

 private:
  bool previous_;
};

struct Edge {
  std::shared_ptr<Node> fn;            // input made by an op
  std::shared_ptr<TensorImpl> leaf;    // input is a leaf that requires grad
  bool active() const { return fn || leaf; }
};

class Node {
 public:
  virtual ~Node() = default;
  virtual const char* name() const = 0;
  // Gradients w.r.t. each input (undefined where none flows), given d(loss)/d(output).
  virtual std::vector<Tensor> backward(const Tensor& grad_output) = 0;
  // Drops saved tensors once backward has run, so activations are freed early.
  virtual void release() {}

  std::vector<Edge> next;
  Shape output_shape;
};

// A node whose backward is a lambda written next to the forward in each op's .cc.
class FunctionNode : public Node {
 public:
  using BackwardFn = std::function<std::vector<Tensor>(const Tensor&)>;
  FunctionNode(const char* name, BackwardFn fn) : name_(name), fn_(std::move(fn)) {}
  const char* name() const override { return name_; }
  std::vector<Tensor> backward(const Tensor& g) override;
  void release() override { fn_ = nullptr; }

 private:
  const char* name_;
  BackwardFn fn_;
};

// True when grad mode is on and any input requires grad: the op must record a node.
bool needs_grad(std::initializer_list<const Tensor*> inputs);
bool needs_grad(const std::vector<Tensor>& inputs);

// Makes `out` the output of a new FunctionNode over `inputs` (call only when needs_grad).
void attach_grad_fn(const Tensor& out, const char* name, const std::vector<Tensor>& inputs, FunctionNode::BackwardFn fn);

}  // namespace smelt
