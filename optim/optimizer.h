// Optimizers over a list of parameters (f32 master weights). step() runs without autograd.
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "runtime/communicator.h"
#include "runtime/tensor.h"

namespace smelt {

// An optimizer's state for a checkpoint: tensors named after the parameters, scalar fields.
using OptimizerState = std::pair<std::vector<std::pair<std::string, Tensor>>, std::map<std::string, std::string>>;

class Optimizer {
 public:
  explicit Optimizer(std::vector<Tensor> params) : params_(std::move(params)) {}
  virtual ~Optimizer() = default;
  // One step at learning rate lr. `clip` (grad_norm's [norm, factor, non-finite] tensor, or
  // undefined) scales the gradients as they are read, and a non-finite flag makes the step do
  // nothing: the caller learns of it at its one host read, with the weights intact.
  virtual void step(float lr, const Tensor& clip = Tensor()) = 0;
  void zero_grad();
  // The optimizer's state for a checkpoint: tensors named after the parameters (`names` in
  // params() order) and scalar fields as strings. load_state restores exactly what state() wrote.
  virtual OptimizerState state(
      const std::vector<std::string>& names) const = 0;
  virtual void load_state(const std::vector<std::pair<std::string, Tensor>>& tensors, const std::map<std::string, std::string>& fields,
                          const std::vector<std::string>& names, const std::string& source) = 0;
  const std::vector<Tensor>& params() const { return params_; }

 protected:
  std::vector<Tensor> params_;
};

// Which rank keeps the optimizer state of each parameter under ZeRO-1: whole parameter tensors
// (the update is element-wise within a tensor, so a sharded step is the unsharded one exactly),
// dealt largest first to the rank holding the fewest values so far. Depends only on the shapes
// and the number of ranks.
std::vector<int> zero_owners(const std::vector<Tensor>& params, int ranks);

// AdamW (Loshchilov & Hutter): decoupled weight decay p ← p − lr·wd·p, then the Adam update with
// bias-corrected moments. Matches torch.optim.AdamW.
//
// Sharded (ZeRO-1, `comm` given): this rank keeps the moments of the parameters it owns
// (zero_owners) and updates only those; the caller then broadcasts each parameter from its owner
// (sync_sharded_parameters). state() is then a collective (every rank calls it; each gets every
// moment), load_state keeps the owned ones, so a checkpoint is the same on any world size.
class AdamW : public Optimizer {
 public:
  AdamW(std::vector<Tensor> params, float beta1 = 0.9f, float beta2 = 0.999f, float eps = 1e-8f, float weight_decay = 0.01f,
        Communicator* shard_over = nullptr);
  void step(float lr, const Tensor& clip = Tensor()) override;
  OptimizerState state(
      const std::vector<std::string>& names) const override;
  void load_state(const std::vector<std::pair<std::string, Tensor>>& tensors, const std::map<std::string, std::string>& fields,
                  const std::vector<std::string>& names, const std::string& source) override;
  int64_t steps_taken() const { return t_; }
  const std::vector<Tensor>& exp_avg() const { return m_; }  // undefined where another rank owns the parameter
  const std::vector<Tensor>& exp_avg_sq() const { return v_; }
  // Sharded: every parameter becomes its owner's values (after step()).
  void sync_sharded_parameters();
  bool sharded() const { return comm_ != nullptr; }
  bool owns(size_t i) const { return !comm_ || owner_[i] == comm_->rank(); }

 private:
  float beta1_, beta2_, eps_, weight_decay_;
  int64_t t_ = 0;
  std::vector<Tensor> m_, v_;
  Communicator* comm_ = nullptr;  // set when sharded
  std::vector<int> owner_;
};

// SGD with (optionally Nesterov) momentum and L2 weight decay folded into the gradient, as torch.optim.SGD.
class SGD : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, float momentum = 0.0f, float weight_decay = 0.0f, bool nesterov = false);
  void step(float lr, const Tensor& clip = Tensor()) override;
  OptimizerState state(
      const std::vector<std::string>& names) const override;
  void load_state(const std::vector<std::pair<std::string, Tensor>>& tensors, const std::map<std::string, std::string>& fields,
                  const std::vector<std::string>& names, const std::string& source) override;

 private:
  float momentum_, weight_decay_;
  bool nesterov_;
  std::vector<Tensor> buf_;
  bool first_ = true;
};

// The global L2 norm of the parameters' gradients as a device tensor [norm, clip factor to reach
// max_norm (1 when max_norm ≤ 0 or already below), 1 if not finite]: no host read.
Tensor grad_norm(const std::vector<Tensor>& params, float max_norm);
// Scales all gradients so their global L2 norm is at most max_norm; returns the norm before
// clipping (one host read). max_norm ≤ 0 only measures. Throws if the norm is not finite.
float clip_grad_norm(const std::vector<Tensor>& params, float max_norm);

// Linear warm-up from 0 to max_lr over warmup steps, then cosine decay to min_lr at total steps.
struct LrSchedule {
  float max_lr = 1e-3f, min_lr = 1e-4f;
  int64_t warmup = 0, total = 1;
  float at(int64_t step) const;
};

}  // namespace smelt
