// Model directories: config.json + model.safetensors (+ any extra files, e.g. metrics). A
// directory is written under a temporary name and renamed into place, so a crash never leaves a
// half-written model and never destroys the previous one before the new one is complete.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "models/transformer.h"
#include "optim/optimizer.h"

namespace smelt {

// `extra_files` maps file names inside the directory to their contents.
void save_model_dir(const std::string& dir, const Transformer& model, const std::map<std::string, std::string>& extra_files = {});
// weight_dtype: bf16 keeps the weight matrices in bf16 for inference (Transformer::store_weights_in).
// `dir` may also be a .gguf file (io/gguf_model.h): every --model option takes one.
// experts: Transformer::Experts::Mapped leaves a safetensors checkpoint's experts in the mapped
// file (read when chosen) where they are stored adjacently in weight_dtype.
// On `place` (a GPU): each tensor goes there from the mapped file, with no owned host copy.
Transformer load_model_dir(const std::string& dir, DType weight_dtype = DType::F32,
                           Transformer::Experts experts = Transformer::Experts::InMemory, std::optional<Device> place = std::nullopt);
// The configuration of a model directory (its config.json) or a .gguf file (its metadata),
// without reading the weights.
ModelConfig read_model_dir_config(const std::string& dir);

// A training checkpoint is a model directory plus optimizer.safetensors and trainer_state.json:
// everything needed to continue bit-identically (weights, optimizer moments, step, data stream
// position, router-jitter streams, metrics so far, the recipe).
struct TrainerState {
  int64_t step = 0;  // optimizer steps completed
  int64_t tokens = 0;
  double elapsed_seconds = 0;
  uint64_t data_seed = 0, data_offset = 0;
  double val_fraction = -1;  // the share of a text --data held out for validation (-1: not recorded)
  bool whole_windows = false;  // batches of whole windows, as distillation samples them
  std::vector<uint64_t> jitter_offsets;  // one per layer (0 for dense layers)
  int64_t world_size = 1;                // ranks of the run that wrote it (any number may resume it)
  std::string metrics_jsonl;             // every step's metrics line so far
  std::string recipe_json;               // the recipe the run was started with
  std::map<std::string, std::string> extra_files;  // stored as they are (tokenizer.json, ...)
};

// `extra` are parameters the optimizer trains beside the model's (after them, in this order),
// kept in extra_parameters.safetensors.
void save_training_checkpoint(const std::string& dir, const Transformer& model, const Optimizer& optimizer, const TrainerState& state,
                              const NamedTensors& extra = {});
// The same from an optimizer state already taken (Optimizer::state is a collective when the
// state is sharded over ranks: every rank takes it, one writes).
void save_training_checkpoint(const std::string& dir, const Transformer& model, const OptimizerState& optimizer_state,
                              const TrainerState& state, const NamedTensors& extra = {});
// The names the optimizer's state goes by: the model's trainable parameters, then `extra`.
std::vector<std::string> optimizer_parameter_names(const Transformer& model, const NamedTensors& extra = {});
TrainerState read_trainer_state(const std::string& dir);
void load_optimizer_state(const std::string& dir, const Transformer& model, Optimizer& optimizer, const NamedTensors& extra = {});
// Copies the checkpoint's values of `extra` into those tensors (names and shapes must match).
void load_extra_parameters(const std::string& dir, const NamedTensors& extra);
// Restores the per-layer router-jitter stream positions recorded in `state`.
void restore_jitter_streams(Transformer& model, const TrainerState& state);

}  // namespace smelt
