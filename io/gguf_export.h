// `smelt export --format gguf`: a smelt model as a GGUF file that llama.cpp loads — the
// "llama" architecture (dense, or Mixtral-style experts stacked in ffn_*_exps), llama.cpp's
// metadata keys and tensor names, the Q/K rows permuted as its converter does, the tokenizer
// (a byte-level model gets a 256-token vocabulary whose ids are the bytes) and chat template.
// Weight matrices are stored as F32, F16, BF16, Q8_0, Q4_0 or Q4_K (Q4_K rows that are not whole
// super-blocks of 256 as Q4_0; rows that are not whole blocks, norms and routers stay F32). What llama.cpp would compute differently is refused by name.
#pragma once
#include <string>

#include "io/ggml_types.h"

namespace smelt {

// Reads a model directory (or GGUF) and writes `out` atomically.
void export_gguf(const std::string& model_dir, const std::string& out, GgmlType matrix_type);

}  // namespace smelt
