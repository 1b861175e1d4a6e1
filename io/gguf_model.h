// A pretrained model from a GGUF file: its config from llama.cpp's metadata keys, its tensors
// decoded to f32 under Hugging Face names (with the Q/K row order that llama.cpp's converter
// permutes for its RoPE kernels put back), and its tokenizer and chat template. (The reverse,
// a smelt model written as a GGUF, is io/gguf_export.h.)
// Architectures: "llama" (dense, and Mixtral-style experts in ffn_*_exps). Anything else, and
// any setting smelt would not compute the same way, is refused by name.
#pragma once
#include <optional>
#include <string>

#include "io/bpe_tokenizer.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "models/config.h"

namespace smelt {

struct GgufModel {
  ModelConfig config;
  NamedTensors tensors;  // HF names, f32 (or the kept quantised type)
};

ModelConfig gguf_model_config(const GgufFile& f);
// keep: Q8_0, Q4_0 or Q4_K keeps the matrices the file stores in that type as they are (their
// blocks copied, not decoded and quantised again; Q4_K keeps Q4_0 ones too, its fallback);
// everything else is decoded to f32.
GgufModel read_gguf_model(const GgufFile& f, DType keep = DType::F32);

// The tokenizer as HF's tokenizer.json (so it is validated and written like any other);
// nullopt when the file has no tokenizer.
std::optional<json> gguf_tokenizer_json(const GgufFile& f);
// tokenizer_config.json for the file: bos/eos tokens and the chat template it carries.
std::string gguf_tokenizer_config_json(const GgufFile& f);

// Rows of a Q or K projection [heads · head_dim, C] between HF's order (per head: the first
// halves of the rotary pairs, then the second halves) and llama.cpp's (pairs interleaved).
Tensor unpermute_rope_rows(const Tensor& w, int64_t heads);
Tensor permute_rope_rows(const Tensor& w, int64_t heads);

}  // namespace smelt
