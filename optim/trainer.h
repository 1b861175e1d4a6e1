// The training loop for next-token prediction: micro-batches with gradient accumulation,
// global-norm clipping, warm-up + cosine learning rate, AdamW or SGD, periodic evaluation, and a
// metrics callback per step (the tools write it as JSONL and draw the progress bar).
#pragma once
#include <functional>
#include <string>
#include <utility>

#include "models/transformer.h"
#include "ops/precision.h"
#include "optim/data_parallel.h"
#include "optim/optimizer.h"
#include "runtime/communicator.h"

namespace smelt {

struct TrainConfig {
  int64_t steps = 100;
  int64_t batch_size = 8;       // sequences per micro-batch
  int64_t seq_len = 128;
  int64_t grad_accum = 1;       // micro-batches per optimizer step
  std::string optimizer = "adamw";  // "adamw" or "sgd"
  double lr = 3e-3, min_lr = 3e-4;
  int64_t warmup_steps = 20;
  double weight_decay = 0.1;
  double beta1 = 0.9, beta2 = 0.95, adam_eps = 1e-8;
  double momentum = 0.9;        // sgd only
  double grad_clip = 1.0;       // ≤ 0 disables clipping
  uint64_t seed = 1;
  int64_t eval_every = 100;     // steps between validation passes (0: only at the end)
  int64_t eval_batches = 8;
  std::vector<std::string> freeze;  // parameter name patterns kept fixed ("*.self_attn.*", ...)
  bool activation_checkpointing = false;  // recompute attention (and dense MLP) halves in backward
  int64_t zero_stage = 0;  // 1: AdamW moments sharded over the ranks (ZeRO-1); no effect on one rank
  int64_t expert_parallel = 1;  // M > 1: each rank keeps E/M experts of every MoE layer (M divides the ranks)
  // "bf16": the GEMMs' operands rounded to bf16, products summed in f32 (VDPBF16PS on AVX512_BF16
  // CPUs); master weights, moments, gradients, norms, softmax and losses stay f32 (ops/precision.h).
  // Empty: the device's default (default_precision).
  std::string precision;
  void validate() const;
};

// The precision a recipe that names none trains in on `device`: bf16 on CUDA (its tensor cores),
// f32 elsewhere (the CPU's bf16 path is an option: it trades accuracy for speed only with AVX512_BF16).
std::string default_precision(Device device);

// Refuses, before any work, a job of `ranks` processes that cannot run the recipe exactly
// (world size not dividing grad_accum, expert_parallel not the world size or not dividing the
// experts, per-micro-batch sequential state such as router jitter or aux-free bias).
void check_parallel_launch(const TrainConfig& train, const ModelConfig& model, int ranks);

struct Batch {
  Tensor ids;      // [B, T] integers
  Tensor targets;  // [B, T] integers (ignore_index -100 where no loss)
  Tensor weights;  // optional [B, T] f32 loss mask
  std::vector<int64_t> starts;  // token index of each row's first input (where the data knows it)
  Tensor key_start;             // optional [B, T]: packed documents (see Transformer::forward)
  // The part of its micro-batch's loss this batch carries: 1, or a rank's share of the
  // loss-carrying tokens when data parallelism splits a micro-batch's rows.
  double share = 1.0;
};

struct StepMetrics {
  int64_t step = 0;  // 1-based optimizer step just finished
  double loss = 0, grad_norm = 0, lr = 0;
  double tokens_per_second = 0, elapsed_seconds = 0;
  int64_t tokens = 0;  // tokens seen so far
  bool has_val = false;
  double val_loss = 0;
  double aux_loss = 0;  // weighted MoE balancing loss included in the optimised objective
  std::vector<std::pair<int64_t, MoEStats>> moe;  // per MoE layer, from the step's last micro-batch
};

// The batch with its tensors on `device` (the data loaders make them on the host).
Batch batch_on(const Batch& b, Device device);

// The rows of `a` then those of `b` as one batch (weights and key_start filled with their
// neutral values where only one side has them: weight 1, attend from position 0).
Batch concat_rows(const Batch& a, const Batch& b);

// The model's logits for a batch ([B, T, V]); MoE balancing sees only the tokens that carry loss.
Tensor forward_logits(const Transformer& model, const Batch& batch);
// Mean next-token cross-entropy of logits against the batch's targets (and weights).
Tensor next_token_loss(const Tensor& logits, const Batch& batch);
// The same loss straight from the model, through the fused LM head + cross-entropy (the
// [B, T, V] logits never exist; see ops::linear_cross_entropy).
Tensor next_token_loss(const Transformer& model, const Batch& batch);
// 1 for each target that carries loss, else 0, flattened ([B·T] f32).
Tensor loss_token_mask(const Batch& batch);
// The model's MoE balancing loss of its last forward added to `loss` (its value, a detached
// device scalar, into *aux; undefined when the model has none).
Tensor with_auxiliary_loss(const Transformer& model, const Tensor& loss, Tensor* aux);

// Cross-entropy of a batch plus the model's MoE balancing loss (when it has one). `aux` receives
// the balancing part's value.
Tensor training_loss(const Transformer& model, const Batch& batch, Tensor* aux = nullptr);
// What a step minimises: training_loss by default; distillation supplies its own.
using LossFn = std::function<Tensor(const Transformer& model, const Batch& batch, Tensor* aux)>;

// Mean loss of `model` over batches (no grad).
double evaluate_loss(const Transformer& model, const std::function<Batch(int64_t index)>& batch_at, int64_t batches);

class Trainer {
 public:
  // `extra_parameters` are trained beside the model's (e.g. a distillation projection).
  Trainer(Transformer& model, TrainConfig config, NamedTensors extra_parameters = {});
  // Runs config.steps optimizer steps. `next_batch(step, micro)` supplies training data;
  // `val_batch(i)` (may be empty) supplies validation data; `on_step` sees every step's metrics.
  // Steps [first_step, last_step) run (a resumed run starts where its checkpoint stopped;
  // last_step ≤ 0 means config.steps).
  void run(const std::function<Batch(int64_t step, int64_t micro)>& next_batch, const std::function<Batch(int64_t)>& val_batch,
           const std::function<void(const StepMetrics&)>& on_step, int64_t first_step = 0, int64_t last_step = 0);
  // One optimizer step on the given micro-batches (this rank's share of the step's when the job
  // has several ranks: gradients, losses and statistics are then combined over the ranks).
  StepMetrics step(int64_t step_index, const std::vector<Batch>& micro_batches);
  Optimizer& optimizer() { return *optimizer_; }
  void set_loss(LossFn loss) { loss_ = std::move(loss); }
  int64_t tokens() const { return tokens_; }
  void set_tokens(int64_t tokens) { tokens_ = tokens; }
  // Elapsed training time carried over from earlier runs (so tokens/s stays meaningful on resume).
  void set_prior_seconds(double s) { prior_seconds_ = s; }

 private:
  bool is_sharded(const Tensor& p) const;
  Batch rows_of_rank(const Batch& b) const;
  std::vector<Tensor> replicated(const std::vector<Tensor>& params) const;
  Tensor sharded_grad_norm() const;
  int64_t sum_over_ranks(std::vector<float>& values, int64_t local_tokens) const;
  double validation_loss(const std::function<Batch(int64_t)>& val_batch) const;

  Transformer& model_;
  TrainConfig config_;
  MatmulPrecision precision_;  // config_.precision, parsed once
  Communicator& comm_ = world();
  MicroBatchRange micro_batches_{0, 0};  // this rank's share of each step (set by check_data_parallel)
  bool split_rows_ = false;      // data parallel by rows of each micro-batch (see batch_split)
  std::vector<Tensor> sharded_;
  std::unique_ptr<Communicator> expert_group_;     // the ranks that share out one copy of the experts
  std::unique_ptr<Communicator> expert_replicas_;  // the ranks that hold the same experts (when M < ranks)  // expert parallelism: the parameters holding this rank's experts only
  std::unique_ptr<Optimizer> optimizer_;
  LrSchedule schedule_;
  int64_t tokens_ = 0;
  double prior_seconds_ = 0;
  LossFn loss_ = [](const Transformer& m, const Batch& b, Tensor* aux) { return training_loss(m, b, aux); };
};

}  // namespace smelt
