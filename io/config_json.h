// ModelConfig ↔ Hugging Face config.json, and the training recipe file read by `smelt train`.
#pragma once
#include <string>

#include "io/json_reader.h"
#include "models/config.h"
#include "optim/trainer.h"

namespace smelt {

// Reads HF Llama fields; known HF bookkeeping fields are accepted and ignored, anything else
// is an unknown-field error. `file` names the source in errors.
ModelConfig model_config_from_json(JsonReader& r);
json model_config_to_json(const ModelConfig& c);
ModelConfig read_model_config(const std::string& path);

TrainConfig train_config_from_json(JsonReader& r);
json train_config_to_json(const TrainConfig& c);

// A recipe file: {"model": {...config.json fields...}, "train": {...TrainConfig fields...}}.
struct Recipe {
  bool has_model = false;  // a recipe may leave the model out when training starts from a checkpoint
  ModelConfig model;
  TrainConfig train;
  json distill;  // distillation settings (smelt distill records them for --resume); null if absent
  json sft;      // instruct-tuning settings (smelt sft records them for --resume); null if absent
};
Recipe read_recipe(const std::string& path);
// The same from text already in memory (`source` names it in errors).
Recipe parse_recipe(const std::string& text, const std::string& source);

// Throws naming the input (by `names`, base first) whose architecture differs from the base's,
// field by field as config.json writes them, or that is not a dense model (smelt compose).
void check_composable(const std::vector<ModelConfig>& configs, const std::vector<std::string>& names);

}  // namespace smelt
