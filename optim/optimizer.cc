#include "optim/optimizer.h"

#include <algorithm>
#include <cmath>

#include "autograd/grad_mode.h"
#include "ops/optimizer_ops.h"
#include "runtime/tensor_collectives.h"

namespace smelt {

namespace {
// The parameters that have a gradient, with those gradients and (when given) their state.
struct WithGrad {
  std::vector<Tensor> params, grads, first, second;
};
WithGrad with_grad(const std::vector<Tensor>& params, const std::vector<Tensor>* a = nullptr, const std::vector<Tensor>* b = nullptr) {
  WithGrad w;
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor g = params[i].grad();
    if (!g.defined()) continue;
    w.params.push_back(params[i]);
    w.grads.push_back(g);
    if (a) w.first.push_back((*a)[i]);
    if (b) w.second.push_back((*b)[i]);
  }
  return w;
}
}  // namespace

void Optimizer::zero_grad() {
  for (const Tensor& p : params_) p.set_grad(Tensor());
}

std::vector<int> zero_owners(const std::vector<Tensor>& params, int ranks) {
  std::vector<size_t> order(params.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return params[a].numel() > params[b].numel(); });
  std::vector<int64_t> load(static_cast<size_t>(ranks), 0);
  std::vector<int> owner(params.size());
  for (size_t i : order) {
    const int r = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    owner[i] = r;
    load[static_cast<size_t>(r)] += params[i].numel();
  }
  return owner;
}

AdamW::AdamW(std::vector<Tensor> params, float beta1, float beta2, float eps, float weight_decay, Communicator* shard_over)
    : Optimizer(std::move(params)), beta1_(beta1), beta2_(beta2), eps_(eps), weight_decay_(weight_decay), comm_(shard_over) {
  SMELT_CHECK(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1, "AdamW betas must be in [0, 1), got ", beta1, ", ", beta2);
  SMELT_CHECK(eps > 0, "AdamW eps must be positive, got ", eps);
  if (comm_) owner_ = zero_owners(params_, comm_->size());
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    SMELT_CHECK(p.dtype() == DType::F32 && p.is_contiguous(), "AdamW needs contiguous f32 parameters, got ", p.str());
    m_.push_back(owns(i) ? Tensor::zeros(p.shape(), DType::F32, p.device()) : Tensor());
    v_.push_back(owns(i) ? Tensor::zeros(p.shape(), DType::F32, p.device()) : Tensor());
  }
}

void AdamW::sync_sharded_parameters() {
  if (!comm_) return;
  for (int r = 0; r < comm_->size(); ++r) {
    std::vector<Tensor> of_rank;
    for (size_t i = 0; i < params_.size(); ++i)
      if (owner_[i] == r) of_rank.push_back(params_[i]);
    broadcast(of_rank, *comm_, r);
  }
}

void AdamW::step(float lr, const Tensor& clip) {
  NoGradGuard no_grad;
  ++t_;
  const float bc1 = 1.0f - std::pow(beta1_, static_cast<float>(t_));
  const float bc2 = 1.0f - std::pow(beta2_, static_cast<float>(t_));
  AdamWStep s;
  s.decay = 1.0f - lr * weight_decay_;
  s.beta1 = beta1_;
  s.beta2 = beta2_;
  s.step_size = lr / bc1;
  s.inv_sqrt_bc2 = 1.0f / std::sqrt(bc2);
  s.eps = eps_;
  WithGrad w = with_grad(params_, &m_, &v_);
  if (comm_) {  // this rank's shard only (the moments of the others are not here)
    WithGrad mine;
    for (size_t i = 0; i < w.params.size(); ++i)
      if (w.first[i].defined()) {
        mine.params.push_back(w.params[i]);
        mine.grads.push_back(w.grads[i]);
        mine.first.push_back(w.first[i]);
        mine.second.push_back(w.second[i]);
      }
    w = std::move(mine);
  }
  ops::adamw_step(w.params, w.grads, w.first, w.second, s, clip);  // every parameter in one call
}

namespace {
using NamedList = std::vector<std::pair<std::string, Tensor>>;

// Copies the tensor named prefix + name into `slot`, checking presence and shape.
void restore(const NamedList& tensors, const std::string& name, const Tensor& slot, const std::string& source) {
  for (const auto& [n, t] : tensors)
    if (n == name) {
      SMELT_CHECK(t.shape() == slot.shape(), source, ": optimizer tensor '", name, "' has shape ", shape_str(t.shape()),
                  ", the parameter has ", shape_str(slot.shape()));
      slot.copy_from(t);
      return;
    }
  SMELT_FAIL(source, ": optimizer tensor '", name, "' is missing");
}

const std::string& field(const std::map<std::string, std::string>& fields, const std::string& key, const std::string& source) {
  auto it = fields.find(key);
  SMELT_CHECK(it != fields.end(), source, ": optimizer field '", key, "' is missing");
  return it->second;
}

void check_names(const std::vector<std::string>& names, size_t count) {
  SMELT_CHECK(names.size() == count, "optimizer state: ", names.size(), " names for ", count, " parameters");
}
}  // namespace

std::pair<NamedList, std::map<std::string, std::string>> AdamW::state(const std::vector<std::string>& names) const {
  check_names(names, params_.size());
  NamedList t;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor m = m_[i], v = v_[i];
    if (comm_) {  // sharded: each moment travels from its owner to every rank
      if (!owns(i)) {
        m = Tensor::zeros(params_[i].shape(), DType::F32, params_[i].device());
        v = Tensor::zeros(params_[i].shape(), DType::F32, params_[i].device());
      }
      broadcast({m, v}, *comm_, owner_[i]);
    }
    t.push_back({"exp_avg." + names[i], m});
    t.push_back({"exp_avg_sq." + names[i], v});
  }
  return {t, {{"optimizer", "adamw"}, {"step", std::to_string(t_)}}};
}

void AdamW::load_state(const NamedList& tensors, const std::map<std::string, std::string>& fields, const std::vector<std::string>& names,
                       const std::string& source) {
  check_names(names, params_.size());
  SMELT_CHECK(field(fields, "optimizer", source) == "adamw", source, ": holds a '", field(fields, "optimizer", source),
              "' state, the recipe uses adamw");
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!owns(i)) continue;  // sharded: another rank keeps these
    restore(tensors, "exp_avg." + names[i], m_[i], source);
    restore(tensors, "exp_avg_sq." + names[i], v_[i], source);
  }
  t_ = std::stoll(field(fields, "step", source));
}

std::pair<NamedList, std::map<std::string, std::string>> SGD::state(const std::vector<std::string>& names) const {
  check_names(names, params_.size());
  NamedList t;
  for (size_t i = 0; i < params_.size(); ++i) t.push_back({"momentum_buffer." + names[i], buf_[i]});
  return {t, {{"optimizer", "sgd"}, {"first_step_done", first_ ? "0" : "1"}}};
}

void SGD::load_state(const NamedList& tensors, const std::map<std::string, std::string>& fields, const std::vector<std::string>& names,
                     const std::string& source) {
  check_names(names, params_.size());
  SMELT_CHECK(field(fields, "optimizer", source) == "sgd", source, ": holds a '", field(fields, "optimizer", source),
              "' state, the recipe uses sgd");
  for (size_t i = 0; i < params_.size(); ++i) restore(tensors, "momentum_buffer." + names[i], buf_[i], source);
  first_ = field(fields, "first_step_done", source) != "1";
}

SGD::SGD(std::vector<Tensor> params, float momentum, float weight_decay, bool nesterov)
    : Optimizer(std::move(params)), momentum_(momentum), weight_decay_(weight_decay), nesterov_(nesterov) {
  SMELT_CHECK(momentum >= 0, "SGD momentum must be ≥ 0, got ", momentum);
  for (const Tensor& p : params_) buf_.push_back(Tensor::zeros(p.shape(), DType::F32, p.device()));
}

void SGD::step(float lr, const Tensor& clip) {
  NoGradGuard no_grad;
  const WithGrad w = with_grad(params_, &buf_);
  ops::sgd_step(w.params, w.grads, w.first, SgdStep{lr, momentum_, weight_decay_, nesterov_, first_}, clip);
  first_ = false;
}

Tensor grad_norm(const std::vector<Tensor>& params, float max_norm) { return ops::grad_norm(with_grad(params).grads, max_norm); }

float clip_grad_norm(const std::vector<Tensor>& params, float max_norm) {
  const WithGrad w = with_grad(params);
  const Tensor clip = ops::grad_norm(w.grads, max_norm);
  const std::vector<float> c = clip.to_vector();  // one host read
  SMELT_CHECK(c[2] == 0.0f, "gradient norm is not finite (", c[0], "): the loss or a gradient overflowed");
  ops::scale_grads(w.grads, clip);
  return c[0];
}

float LrSchedule::at(int64_t step) const {
  if (warmup > 0 && step < warmup) return max_lr * static_cast<float>(step + 1) / static_cast<float>(warmup);
  if (total <= warmup) return max_lr;
  const double progress = std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(total - warmup));
  return min_lr + (max_lr - min_lr) * static_cast<float>(0.5 * (1.0 + std::cos(M_PI * progress)));
}

}  // namespace smelt
