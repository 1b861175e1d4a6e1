// `smelt export --format hf`: a model directory that Hugging Face transformers loads as it is
// (LlamaForCausalLM, MixtralForCausalLM or Qwen2MoeForCausalLM): config.json with only the
// fields transformers reads, model.safetensors under HF names (experts one by one, the layout
// transformers saves), and the tokenizer files when the model has them. Features transformers'
// implementation of the architecture would not compute the same way are refused by name, so an
// export never loads into something that silently gives different logits.
#pragma once
#include <optional>
#include <string>

#include "io/bpe_tokenizer.h"
#include "io/json_reader.h"
#include "models/transformer.h"

namespace smelt {

// Throws naming `source` and the first setting with no equivalent in the HF architecture.
void check_hf_exportable(const Transformer& model, const std::string& source);
// config.json as transformers writes it for the model's architecture.
json hf_config_json(const ModelConfig& config, const std::optional<BpeTokenizer>& tokenizer);
// Reads a smelt model directory and writes the HF directory `out` (atomically).
void export_hf(const std::string& model_dir, const std::string& out);

}  // namespace smelt
