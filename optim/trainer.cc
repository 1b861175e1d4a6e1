#include "optim/trainer.h"

#include <chrono>
#include <cmath>

#include "autograd/grad_mode.h"
#include "models/expert_parallel.h"
#include "ops/ops.h"
#include "ops/optimizer_ops.h"
#include "autograd/node.h"
#include "ops/precision.h"
#include "optim/data_parallel.h"
#include "runtime/storage.h"

namespace smelt {

void TrainConfig::validate() const {
  // Upper bounds far past any real run, so that a typo is named here rather than failing as an
  // allocation of exabytes.
  SMELT_CHECK(steps > 0 && steps <= (int64_t{1} << 40), "train.steps must be in 1..2^40, got ", steps);
  if (!precision.empty()) parse_matmul_precision(precision, "train.precision");
  SMELT_CHECK(batch_size > 0 && batch_size <= (int64_t{1} << 20), "train.batch_size must be in 1..1048576, got ", batch_size);
  SMELT_CHECK(seq_len > 0 && seq_len <= (int64_t{1} << 24), "train.seq_len must be in 1..16777216, got ", seq_len);
  SMELT_CHECK(grad_accum > 0 && grad_accum <= (int64_t{1} << 20), "train.grad_accum must be in 1..1048576, got ", grad_accum);
  SMELT_CHECK(optimizer == "adamw" || optimizer == "sgd", "train.optimizer must be \"adamw\" or \"sgd\", got \"", optimizer, "\"");
  SMELT_CHECK(lr > 0 && min_lr >= 0 && min_lr <= lr, "train.lr must be positive and train.min_lr in [0, lr], got ", lr, ", ", min_lr);
  SMELT_CHECK(warmup_steps >= 0, "train.warmup_steps must be ≥ 0, got ", warmup_steps);
  SMELT_CHECK(std::isfinite(lr), "train.lr must be finite, got ", lr);
  SMELT_CHECK(weight_decay >= 0 && std::isfinite(weight_decay), "train.weight_decay must be finite and ≥ 0, got ", weight_decay);
  // Checked here with the recipe's field names (the optimizers check again, by their own names).
  SMELT_CHECK(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1, "train.beta1 and train.beta2 must be in [0, 1), got ", beta1, ", ", beta2);
  SMELT_CHECK(adam_eps > 0 && adam_eps < 1, "train.adam_eps must be in (0, 1), got ", adam_eps);
  SMELT_CHECK(momentum >= 0 && momentum < 1, "train.momentum must be in [0, 1), got ", momentum);
  SMELT_CHECK(std::isfinite(grad_clip), "train.grad_clip must be finite (≤ 0 turns clipping off), got ", grad_clip);
  SMELT_CHECK(eval_every >= 0, "train.eval_every must be ≥ 0, got ", eval_every);
  SMELT_CHECK(eval_batches > 0 && eval_batches <= (int64_t{1} << 20), "train.eval_batches must be in 1..1048576, got ", eval_batches);
  SMELT_CHECK(zero_stage == 0 || zero_stage == 1, "train.zero_stage must be 0 or 1 (optimizer state sharding), got ", zero_stage);
  SMELT_CHECK(expert_parallel >= 1, "train.expert_parallel must be ≥ 1, got ", expert_parallel);
  SMELT_CHECK(zero_stage == 0 || expert_parallel == 1, "train.zero_stage 1 with train.expert_parallel ", expert_parallel,
              " is not supported yet: use one of them");
  SMELT_CHECK(zero_stage == 0 || optimizer == "adamw", "train.zero_stage 1 shards AdamW's moments; train.optimizer is \"", optimizer, "\"");
}

Batch batch_on(const Batch& b, Device device) {
  if (b.ids.device() == device) return b;
  Batch out = b;
  for (Tensor* t : {&out.ids, &out.targets, &out.weights, &out.key_start})
    if (t->defined()) *t = t->to(device);
  return out;
}

Batch concat_rows(const Batch& a, const Batch& b) {
  SMELT_CHECK(a.ids.size(1) == b.ids.size(1), "concat_rows: sequences of ", a.ids.size(1), " and ", b.ids.size(1), " tokens");
  auto join = [](const Tensor& x, const Tensor& y, const Batch& bx, const Batch& by, float neutral, DType dtype) {
    if (!x.defined() && !y.defined()) return Tensor();
    const Tensor xs = x.defined() ? x : Tensor::full(bx.ids.shape(), neutral, dtype, bx.ids.device());
    const Tensor ys = y.defined() ? y : Tensor::full(by.ids.shape(), neutral, dtype, by.ids.device());
    return ops::cat({xs, ys.to(xs.dtype())}, 0);
  };
  Batch out{ops::cat({a.ids, b.ids.to(a.ids.dtype())}, 0), ops::cat({a.targets, b.targets.to(a.targets.dtype())}, 0),
            join(a.weights, b.weights, a, b, 1.0f, DType::F32), a.starts, join(a.key_start, b.key_start, a, b, 0.0f, DType::I64), 1.0};
  out.starts.insert(out.starts.end(), b.starts.begin(), b.starts.end());
  return out;
}

Tensor loss_token_mask(const Batch& b) {
  // Targets are token ids (≥ 0) or −100 (ignored): t + 0.5 > 0 exactly for the counted ones.
  Tensor mask = ops::positive(ops::add(ops::reshape(b.targets, {-1}).to(DType::F32), 0.5f));
  if (b.weights.defined()) mask = ops::mul(mask, ops::positive(ops::reshape(b.weights, {-1})));
  return mask;
}

Tensor forward_logits(const Transformer& model, const Batch& b) {
  return model.forward(b.ids, nullptr, model.config().num_local_experts > 0 ? loss_token_mask(b) : Tensor(), b.key_start);
}

Tensor next_token_loss(const Tensor& logits, const Batch& b) {
  const int64_t V = logits.size(-1);
  Tensor weights = b.weights.defined() ? ops::reshape(b.weights, {-1}) : Tensor();
  return ops::cross_entropy(ops::reshape(logits, {-1, V}), ops::reshape(b.targets, {-1}), -100, weights);
}

Tensor next_token_loss(const Transformer& model, const Batch& b) {
  const Tensor hidden = model.hidden_states(b.ids, nullptr, model.config().num_local_experts > 0 ? loss_token_mask(b) : Tensor(), b.key_start);
  Tensor weights = b.weights.defined() ? ops::reshape(b.weights, {-1}) : Tensor();
  return ops::linear_cross_entropy(hidden, model.lm_head_weight(), ops::reshape(b.targets, {-1}), -100, weights);
}

Tensor with_auxiliary_loss(const Transformer& model, const Tensor& loss, Tensor* aux) {
  Tensor extra = model.auxiliary_loss();
  if (aux) *aux = extra.defined() ? extra.detach() : Tensor();
  return extra.defined() ? ops::add(loss, extra) : loss;
}

Tensor training_loss(const Transformer& model, const Batch& batch, Tensor* aux) {
  return with_auxiliary_loss(model, next_token_loss(model, batch), aux);
}

double evaluate_loss(const Transformer& model, const std::function<Batch(int64_t)>& batch_at, int64_t batches) {
  NoGradGuard no_grad;
  double total = 0;
  for (int64_t i = 0; i < batches; ++i) {
    const Batch b = batch_at(i);
    total += next_token_loss(model, b).item();
  }
  return batches > 0 ? total / batches : 0.0;
}

std::string default_precision(Device device) { return device.type == DeviceType::CUDA ? "bf16" : "f32"; }

Trainer::Trainer(Transformer& model, TrainConfig config, NamedTensors extra_parameters)
    : model_(model),
      config_(std::move(config)),
      precision_(parse_matmul_precision(config_.precision.empty() ? default_precision(model.device()) : config_.precision, "train.precision")) {
  config_.validate();
  SMELT_CHECK(model_.weight_dtype() == DType::F32, "the model's weights are kept in ", dtype_name(model_.weight_dtype()),
              ", which is for inference: load it in f32 to train");
  check_parallel_launch(config_, model_.config(), comm_.size());
  if (config_.expert_parallel > 1) {
    // M consecutive ranks share out the experts; the ranks holding the same experts (one per
    // group) sum those experts' gradients.
    const int M = static_cast<int>(config_.expert_parallel);
    expert_group_ = comm_.split(comm_.rank() / M, comm_.rank());
    if (M < comm_.size()) expert_replicas_ = comm_.split(comm_.rank() % M, comm_.rank());
    shard_experts(model_, *expert_group_);
    sharded_ = sharded_expert_parameters(model_);
  }
  std::vector<Tensor> params;
  for (const auto& [name, t] : model_.trainable_parameters()) params.push_back(t);
  for (const auto& [name, t] : extra_parameters) params.push_back(t);
  model_.set_activation_checkpointing(config_.activation_checkpointing);
  SMELT_CHECK(!params.empty(), "every parameter is frozen: nothing to train");
  if (config_.optimizer == "adamw")
    optimizer_ = std::make_unique<AdamW>(params, config_.beta1, config_.beta2, config_.adam_eps, config_.weight_decay,
                                         config_.zero_stage == 1 && comm_.size() > 1 ? &comm_ : nullptr);
  else
    optimizer_ = std::make_unique<SGD>(params, config_.momentum, config_.weight_decay);
  schedule_ = {static_cast<float>(config_.lr), static_cast<float>(config_.min_lr), config_.warmup_steps, config_.steps};
  if (comm_.size() > 1) {
    split_rows_ = batch_split(config_.batch_size, config_.grad_accum, comm_.size()) == BatchSplit::Rows;
    if (!split_rows_) micro_batches_ = micro_batches_of_rank(config_.grad_accum, comm_.rank(), comm_.size());
  }
}

void check_parallel_launch(const TrainConfig& tc, const ModelConfig& mc, int ranks) {
  if (tc.expert_parallel > 1) {
    SMELT_CHECK(ranks % tc.expert_parallel == 0, "train.expert_parallel ", tc.expert_parallel, " needs a multiple of ", tc.expert_parallel,
                " ranks (launch with mpirun -np ", tc.expert_parallel, ", or set it to 1); this job has ", ranks);
    SMELT_CHECK(mc.num_local_experts > 0, "train.expert_parallel ", tc.expert_parallel, ": the model is dense (no experts to share out)");
    SMELT_CHECK(mc.num_local_experts % tc.expert_parallel == 0, "train.expert_parallel ", tc.expert_parallel, " does not divide the model's ",
                mc.num_local_experts, " experts per layer");
  }
  if (ranks == 1) return;
  batch_split(tc.batch_size, tc.grad_accum, ranks);
  if (mc.num_local_experts > 0) {
    // What one process does in sequence within a step, ranks cannot share exactly.
    SMELT_CHECK(mc.router_jitter_noise == 0, "model.router_jitter_noise ", mc.router_jitter_noise, " with ", ranks,
                " ranks: each rank's jitter stream would differ from the single-process run; set it to 0 to train on several ranks");
    SMELT_CHECK(mc.moe_balancing != "aux_free", "model.moe_balancing \"aux_free\" with ", ranks,
                " ranks: its bias moves after every micro-batch in sequence; use \"aux_loss\" to train on several ranks");
  }
}

namespace {
// sum + t (t a device scalar), or t when nothing was summed yet.
Tensor add_to(const Tensor& sum, const Tensor& t) { return !t.defined() ? sum : sum.defined() ? ops::add(sum, t) : t; }
}  // namespace

StepMetrics Trainer::step(int64_t step_index, const std::vector<Batch>& micro_batches) {
  const MatmulPrecisionScope precision(precision_);
  // Mixed precision on a device keeps the activations saved for backward in bf16 too (the CPU's
  // bf16 runs keep them f32: there bf16 is for the arithmetic's speed, and its numbers stay as
  // measured).
  const SavedActivationsInBf16 saved_in_bf16(precision_ == MatmulPrecision::BF16 && !model_.device().is_cpu());
  optimizer_->zero_grad();
  // The losses stay on the device: summed here, read once with the gradient norm and the
  // routing statistics after the optimizer step (the step's one host read).
  Tensor loss_sum, aux_sum;
  // Every micro-batch of the global batch (on every rank) contributes 1/n of the step's gradient;
  // split by rows, each rank's part of a micro-batch contributes its share of that.
  const int64_t global_micro = static_cast<int64_t>(micro_batches.size()) * (split_rows_ ? 1 : comm_.size());
  int64_t local_tokens = 0;
  for (const Batch& b : micro_batches) {
    Tensor aux;
    Tensor loss = loss_(model_, b, &aux);
    {
      NoGradGuard no_grad;
      // A rank's part of a row-split micro-batch reports its share (share 1 leaves it as it is).
      const float share = static_cast<float>(b.share);
      loss_sum = add_to(loss_sum, share == 1.0f ? loss.detach() : ops::mul(loss.detach(), share));
      aux_sum = add_to(aux_sum, share == 1.0f || !aux.defined() ? aux : ops::mul(aux, share));
    }
    ops::mul(loss, static_cast<float>(b.share / static_cast<double>(global_micro))).backward();
    local_tokens += b.ids.numel();
  }
  // A rank whose experts no token chose ran no expert GEMM and has no gradient for them; one
  // process has zeros there (the dispatch covers every expert), and AdamW still decays them.
  for (const Tensor& p : sharded_)
    if (p.requires_grad() && !p.grad().defined()) p.set_grad(Tensor::zeros(p.shape(), DType::F32, p.device()));
  all_reduce_gradients(replicated(optimizer_->params()), comm_);
  if (expert_replicas_) all_reduce_gradients(sharded_, *expert_replicas_);
  StepMetrics m;
  m.step = step_index + 1;
  m.lr = schedule_.at(step_index);
  // [norm, clip factor, non-finite]: the optimizer scales by the factor, and does nothing at all
  // when the gradient is not finite, so a failed step leaves the weights as they were.
  const Tensor clip = sharded_.empty() ? grad_norm(optimizer_->params(), static_cast<float>(config_.grad_clip)) : sharded_grad_norm();
  optimizer_->step(static_cast<float>(m.lr), clip);
  if (auto* adamw = dynamic_cast<AdamW*>(optimizer_.get()); adamw && adamw->sharded()) adamw->sync_sharded_parameters();
  std::vector<Tensor> read = {ops::reshape(loss_sum, {1}), aux_sum.defined() ? ops::reshape(aux_sum, {1}) : Tensor::zeros({1}, DType::F32, loss_sum.device()),
                              clip};
  for (const Tensor& t : model_.moe_raw_stats()) read.push_back(t);
  std::vector<float> values = ops::cat(read, 0).to_vector();
  tokens_ += sum_over_ranks(values, local_tokens);
  const double n = static_cast<double>(global_micro);
  SMELT_CHECK(std::isfinite(values[0]), "loss became ", values[0], " at step ", m.step, " (lower train.lr or enable train.grad_clip)");
  SMELT_CHECK(values[4] == 0.0f, "gradient norm is not finite (", values[2], ") at step ", m.step,
              ": the loss or a gradient overflowed (the weights were not updated)");
  m.loss = (values[0] - values[1]) / n;  // the language-model loss; the balancing part separately
  m.aux_loss = values[1] / n;
  m.grad_norm = values[2];
  model_.set_moe_stats_from_raw(std::vector<float>(values.begin() + 5, values.end()));
  m.moe = model_.moe_stats();
  Storage::trim_cached_blocks();
  optimizer_->zero_grad();
  m.tokens = tokens_;
  return m;
}

namespace {
// The tokens that carry loss, weighted as the cross-entropy's mean weighs them (one host read).
double loss_weight(const Batch& b) {
  Tensor w = loss_token_mask(b);
  if (b.weights.defined()) w = ops::mul(w, ops::reshape(b.weights, {-1}));
  return ops::sum(w).item();
}
}  // namespace

// This rank's equal share of a micro-batch's rows, with its share of the loss-carrying tokens.
Batch Trainer::rows_of_rank(const Batch& b) const {
  const int64_t B = b.ids.size(0), per = B / comm_.size(), first = per * comm_.rank();
  auto rows = [&](const Tensor& t) { return t.defined() ? ops::contiguous(ops::slice(t, 0, first, first + per)) : Tensor(); };
  Batch mine{rows(b.ids), rows(b.targets), rows(b.weights), {}, rows(b.key_start), 1.0};
  if (!b.starts.empty()) mine.starts.assign(b.starts.begin() + first, b.starts.begin() + first + per);
  const double whole = loss_weight(b);
  mine.share = whole > 0 ? loss_weight(mine) / whole : 1.0 / static_cast<double>(comm_.size());
  return mine;
}

bool Trainer::is_sharded(const Tensor& p) const {
  for (const Tensor& e : sharded_)
    if (e.storage() == p.storage()) return true;
  return false;
}

std::vector<Tensor> Trainer::replicated(const std::vector<Tensor>& params) const {
  if (sharded_.empty()) return params;
  std::vector<Tensor> out;
  for (const Tensor& p : params)
    if (!is_sharded(p)) out.push_back(p);
  return out;
}

// grad_norm's [norm, clip factor, non-finite] when each rank holds part of the experts: the
// replicated parameters' squares once, plus every rank's own experts' squares (one host read and
// one small all-reduce; the clip factor as ops::grad_norm forms it).
Tensor Trainer::sharded_grad_norm() const {
  std::vector<Tensor> experts;
  for (const Tensor& p : optimizer_->params())
    if (is_sharded(p)) experts.push_back(p);
  auto with_grad = [](const std::vector<Tensor>& ps) {
    std::vector<Tensor> grads;
    for (const Tensor& p : ps)
      if (p.grad().defined()) grads.push_back(p.grad());
    return grads;
  };
  const std::vector<float> dense = ops::grad_norm_with_squares(with_grad(replicated(optimizer_->params()))).to_vector();
  const std::vector<float> own = ops::grad_norm_with_squares(with_grad(experts)).to_vector();
  std::vector<double> sums = {static_cast<double>(own[3]) + own[4], own[2]};
  expert_group_->all_reduce_sum(sums.data(), 2, CommType::F64);  // each expert once: one group's ranks
  const float norm = static_cast<float>(std::sqrt(static_cast<double>(dense[3]) + dense[4] + sums[0]));
  const float max_norm = static_cast<float>(config_.grad_clip);
  const float factor = max_norm > 0 && norm > max_norm ? max_norm / (norm + 1e-6f) : 1.0f;
  const bool finite = std::isfinite(norm) && dense[2] == 0.0f && sums[1] == 0.0;
  return Tensor::from_vector({norm, factor, finite ? 0.0f : 1.0f}, {3}, optimizer_->params().front().device());
}

// The step's loss sums (values[0..1]) and token count summed over the ranks, and the MoE
// statistics (values[5..]) taken from the rank that ran the step's last micro-batch, as one
// process reports them. The gradient norm and clip factor (values[2..4]) are already the same
// everywhere. Returns the step's global token count.
int64_t Trainer::sum_over_ranks(std::vector<float>& values, int64_t local_tokens) const {
  if (comm_.size() == 1) return local_tokens;
  std::vector<double> sums = {values[0], values[1], static_cast<double>(local_tokens)};
  const bool has_last = comm_.rank() == comm_.size() - 1;
  for (size_t i = 5; i < values.size(); ++i) sums.push_back(has_last ? values[i] : 0.0);
  comm_.all_reduce_sum(sums.data(), static_cast<int64_t>(sums.size()), CommType::F64);
  values[0] = static_cast<float>(sums[0]);
  values[1] = static_cast<float>(sums[1]);
  for (size_t i = 5; i < values.size(); ++i) values[i] = static_cast<float>(sums[i - 2]);
  return static_cast<int64_t>(sums[2]);
}

// The mean validation loss over config.eval_batches batches; with several ranks each evaluates
// a contiguous share of the batches and the sums are added.
double Trainer::validation_loss(const std::function<Batch(int64_t)>& val_batch) const {
  const int64_t n = config_.eval_batches, ranks = comm_.size(), r = comm_.rank();
  if (ranks == 1) return evaluate_loss(model_, val_batch, n);
  const int64_t begin = n * r / ranks, end = n * (r + 1) / ranks;
  double total = end > begin ? evaluate_loss(model_, [&](int64_t i) { return val_batch(begin + i); }, end - begin) * static_cast<double>(end - begin) : 0.0;
  if (!sharded_.empty()) {
    // Every forward of a sharded model is a meeting of all ranks: a rank with one batch fewer
    // than the others runs one more (its first) and does not count it.
    const int64_t most = (n + ranks - 1) / ranks;
    for (int64_t extra = end - begin; extra < most; ++extra) evaluate_loss(model_, [&](int64_t) { return val_batch(0); }, 1);
  }
  comm_.all_reduce_sum(&total, 1, CommType::F64);
  return total / static_cast<double>(n);
}

void Trainer::run(const std::function<Batch(int64_t, int64_t)>& next_batch, const std::function<Batch(int64_t)>& val_batch,
                  const std::function<void(const StepMetrics&)>& on_step, int64_t first_step, int64_t last_step) {
  const auto start = std::chrono::steady_clock::now();
  const int64_t end = last_step > 0 ? std::min(last_step, config_.steps) : config_.steps;
  for (int64_t s = first_step; s < end; ++s) {
    // Every rank draws every micro-batch (the data stream stays the single-process one) and
    // keeps its own share.
    std::vector<Batch> micro;
    for (int64_t k = 0; k < config_.grad_accum; ++k) {
      Batch b = next_batch(s, k);
      if (split_rows_) micro.push_back(rows_of_rank(b));
      else if (comm_.size() == 1 || micro_batches_.contains(k)) micro.push_back(std::move(b));
    }
    StepMetrics m = step(s, micro);
    m.elapsed_seconds = prior_seconds_ + std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    m.tokens_per_second = m.elapsed_seconds > 0 ? m.tokens / m.elapsed_seconds : 0;
    const bool last = s + 1 == config_.steps;
    if (val_batch && (last || (config_.eval_every > 0 && m.step % config_.eval_every == 0))) {
      m.has_val = true;
      const MatmulPrecisionScope precision(precision_);
      m.val_loss = validation_loss(val_batch);
    }
    if (on_step) on_step(m);
  }
}

}  // namespace smelt
