#include "tools/data_source.h"

#include <filesystem>

#include "io/chat.h"
#include "io/corpus.h"
#include "io/files.h"
#include "io/gguf_model.h"
#include "io/prepared_data.h"

namespace smelt::tools {
namespace {

// A prepared directory's tokenizer, checked against the model's.
BpeTokenizer data_tokenizer(const std::string& dir, const std::optional<BpeTokenizer>& model_tok, const std::string& model_name) {
  BpeTokenizer t = BpeTokenizer::from_file(dir + "/tokenizer.json");
  SMELT_CHECK(!model_tok || model_tok->same_as(t), dir, ": was tokenised with a different tokenizer than ", model_name,
              " (its tokenizer.json differs); prepare the data with the model's tokenizer");
  return t;
}

// A .jsonl file encoded in memory: conversations through the chat template (loss on the
// assistant's turns), texts followed by <|eos|>.
TokenDataset jsonl_file(const std::string& path, const std::optional<BpeTokenizer>& tok, int64_t min_tokens) {
  SMELT_CHECK(tok, path, ": JSONL data needs a model with a tokenizer.json (or prepare it with smelt data prepare)");
  std::vector<int32_t> tokens;
  std::vector<uint8_t> mask;
  int64_t bytes = 0;
  bool chat = false;
  const std::vector<Document> docs = read_documents(path);
  for (const Document& d : docs) chat = chat || d.is_chat();
  if (chat) check_chat_tokens(*tok, path);
  for (const Document& d : docs) {
    bytes += static_cast<int64_t>(d.plain_text().size());
    if (d.is_chat()) {
      render_chat(*tok, d.messages, tokens, mask);
    } else {
      const size_t before = tokens.size();
      tok->encode_append(d.text, false, tokens);
      tokens.push_back(end_of_text_id(*tok, path));
      mask.insert(mask.end(), tokens.size() - before, 1);
    }
  }
  if (!chat) mask.clear();
  TokenDataset data = TokenDataset::from_tokens(std::move(tokens), std::move(mask), path, bytes, tok->vocab_size());
  SMELT_CHECK(data.size() >= min_tokens, path, ": ", data.size(), " tokens, fewer than the ", min_tokens, " one sequence needs");
  return data;
}

TokenDataset text_file(const std::string& path, const std::optional<BpeTokenizer>& tok, int64_t min_tokens) {
  if (is_jsonl(path)) return jsonl_file(path, tok, min_tokens);
  return tok ? TokenDataset::from_text_file(path, *tok, min_tokens) : TokenDataset::from_text_file(path, min_tokens);
}

}  // namespace

std::map<std::string, std::string> carried_model_files(const std::string& model_dir) {
  std::map<std::string, std::string> files;
  if (std::filesystem::is_regular_file(model_dir) && is_gguf_file(model_dir)) {
    const GgufFile f = read_gguf(model_dir);
    if (const auto tokenizer = gguf_tokenizer_json(f)) {
      files["tokenizer.json"] = BpeTokenizer::from_json(*tokenizer, model_dir).to_json().dump(1) + "\n";
      files["tokenizer_config.json"] = gguf_tokenizer_config_json(f);
    }
    return files;
  }
  for (const char* name : {"recipe.json", "tokenizer.json", "tokenizer_config.json"}) {
    const std::string path = model_dir + "/" + name;
    if (std::filesystem::exists(path)) files[name] = read_file(path);
  }
  return files;
}

std::string model_chat_template(const std::string& model_dir) {
  if (std::filesystem::is_regular_file(model_dir) && is_gguf_file(model_dir))
    return read_gguf(model_dir).string("tokenizer.chat_template", "");
  const std::map<std::string, std::string> files = carried_model_files(model_dir);
  auto it = files.find("tokenizer_config.json");
  if (it == files.end()) return "";
  const json config = parse_json_text(it->second, model_dir + "/tokenizer_config.json");
  return config.is_object() && config.contains("chat_template") && config["chat_template"].is_string()
             ? config["chat_template"].get<std::string>()
             : "";
}

std::optional<BpeTokenizer> model_tokenizer(const std::string& model_dir) {
  if (std::filesystem::is_regular_file(model_dir) && is_gguf_file(model_dir)) {
    const auto tokenizer = gguf_tokenizer_json(read_gguf(model_dir));
    if (!tokenizer) return std::nullopt;
    return BpeTokenizer::from_json(*tokenizer, model_dir);
  }
  const std::string path = model_dir + "/tokenizer.json";
  if (!std::filesystem::exists(path)) return std::nullopt;
  return BpeTokenizer::from_file(path);
}

TrainingData load_training_data(const std::string& data, const std::string& val, double val_fraction, int64_t seq_len,
                                const std::optional<BpeTokenizer>& tokenizer, const std::string& model_name) {
  TrainingData d;
  d.tokenizer = tokenizer;
  if (is_prepared_data(data)) {
    d.tokenizer = data_tokenizer(data, tokenizer, model_name);
    d.train = TokenDataset::from_prepared(data, "train", seq_len + 1);
    if (val.empty() && read_data_manifest(data).val.tokens > seq_len) d.val = TokenDataset::from_prepared(data, "val", seq_len + 1);
  } else {
    d.train = text_file(data, d.tokenizer, seq_len + 1);
    if (val.empty() && val_fraction > 0) {
      const int64_t cut = static_cast<int64_t>(static_cast<double>(d.train.size()) * (1.0 - val_fraction));
      SMELT_CHECK(d.train.size() - cut > seq_len + 1, data,
                  ": the held-out part is shorter than one sequence; pass --val or a larger --val-fraction");
      d.val = d.train.slice(cut, d.train.size(), data + " (held out)");
      d.train = d.train.slice(0, cut, data);
    }
  }
  if (!val.empty()) {
    if (is_prepared_data(val)) {
      SMELT_CHECK(d.tokenizer && d.tokenizer->same_as(data_tokenizer(val, d.tokenizer, model_name)), val,
                  ": validation data was tokenised differently from the training data");
      d.val = TokenDataset::from_prepared(val, "val", seq_len + 1);
    } else {
      d.val = text_file(val, d.tokenizer, seq_len + 1);
    }
  }
  if (d.tokenizer) {
    d.tokenizer_files["tokenizer.json"] = d.tokenizer->to_json().dump(1) + "\n";
    d.tokenizer_files["tokenizer_config.json"] = tokenizer_config_json();
  }
  return d;
}

TokenDataset load_eval_data(const std::string& data, const std::string& split, int64_t seq_len, const std::optional<BpeTokenizer>& tokenizer,
                            const std::string& model_name) {
  if (is_prepared_data(data)) {
    SMELT_CHECK(tokenizer, model_name, ": has no tokenizer.json but ", data, " holds token ids; score it with a model trained on such data");
    data_tokenizer(data, tokenizer, model_name);
    return TokenDataset::from_prepared(data, split, seq_len + 1);
  }
  return text_file(data, tokenizer, seq_len + 1);
}

}  // namespace smelt::tools
