// How the commands find their tokens: a text file (raw bytes, or encoded with the model's
// tokenizer) or a prepared data directory, and the tokenizer files that travel with a model.
#pragma once
#include <map>
#include <optional>
#include <string>

#include "io/bpe_tokenizer.h"
#include "io/token_data.h"

namespace smelt::tools {

// The tokenizer stored with a model (DIR/tokenizer.json, or a GGUF's metadata), if it has one.
std::optional<BpeTokenizer> model_tokenizer(const std::string& model_dir);

// The Jinja chat template a model carries (tokenizer_config.json's chat_template, or a GGUF's
// tokenizer.chat_template); empty when it has none.
std::string model_chat_template(const std::string& model_dir);

// The files a model made from `model_dir` (upcycled, composed, moefied) carries over: its
// recipe.json (the sequence length its weights were trained on, eval's default window) and its
// tokenizer files, so the new model reads and writes text as the old one did.
std::map<std::string, std::string> carried_model_files(const std::string& model_dir);

struct TrainingData {
  TokenDataset train, val;  // val may be empty
  std::optional<BpeTokenizer> tokenizer;           // none: byte-level
  std::map<std::string, std::string> tokenizer_files;  // to store beside the model
};

// `data`: a prepared directory (its train split; its val split unless `val` is given) or a text
// file (bytes, or encoded with `tokenizer`; the last val_fraction held out unless `val` is
// given). `tokenizer` is the model's, when it has one: a prepared directory must have been made
// with the same one. `model_name` names the model in errors.
TrainingData load_training_data(const std::string& data, const std::string& val, double val_fraction, int64_t seq_len,
                                const std::optional<BpeTokenizer>& tokenizer, const std::string& model_name);

// One dataset to score: a prepared directory's `split`, or a text file (encoded with `tokenizer`
// when the model has one).
TokenDataset load_eval_data(const std::string& data, const std::string& split, int64_t seq_len, const std::optional<BpeTokenizer>& tokenizer,
                            const std::string& model_name);

}  // namespace smelt::tools
