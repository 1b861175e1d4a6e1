#include "autograd/checkpoint.h"

#include "autograd/grad_mode.h"
#include "autograd/node.h"

namespace smelt {

Tensor checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs) {
  if (!grad_enabled()) return fn(inputs);
  Tensor out;
  {
    NoGradGuard no_grad;
    out = fn(inputs);
  }
  std::vector<SavedTensor> saved;
  for (const Tensor& in : inputs) saved.emplace_back(in, "checkpoint");
  attach_grad_fn(out, "checkpoint", inputs, [fn, saved](const Tensor& grad) {
    std::vector<Tensor> again;
    for (const SavedTensor& s : saved) {
      const Tensor& in = s.get();
      Tensor d = in.detach();
      if (in.requires_grad()) d.set_requires_grad(true);
      again.push_back(d);
    }
    Tensor recomputed;
    {
      EnableGradGuard with_grad;  // the engine runs backward with history off
      const SavedActivationsInBf16 f32_saves(false);  // used at once: a bf16 copy would only cost two passes
      recomputed = fn(again);
    }
    recomputed.backward(grad);
    std::vector<Tensor> grads;
    for (const Tensor& d : again) grads.push_back(d.requires_grad() && d.grad().defined() ? d.grad() : Tensor());
    return grads;
  });
  return out;
}

}  // namespace smelt
