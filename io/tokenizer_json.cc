// BpeTokenizer ↔ Hugging Face tokenizer.json. We write what HF `tokenizers` writes for a
// byte-level BPE (ByteLevel pre-tokenizer with the GPT-2 regex, ByteLevel decoder, BPE model
// with merges as "left right" strings, special tokens as added tokens) and read any file of
// that family, refusing by name each setting we could not reproduce token for token.
#include <map>
#include <unordered_set>

#include "io/bpe_tokenizer.h"
#include "io/files.h"

namespace smelt {
namespace {

// The value at `key` when present and not null.
const json* field(const json& obj, const std::string& key) {
  auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

// A field of a third-party object, with its type checked (nlohmann's value() would throw its own
// exception on a wrong type, which is not a one-line error naming the field).
bool flag(const json& obj, const std::string& key, bool fallback, const std::string& where) {
  const json* v = field(obj, key);
  if (!v) return fallback;
  SMELT_CHECK(v->is_boolean(), where, ".", key, ": expected true or false, got ", v->dump().substr(0, 80));
  return v->get<bool>();
}

std::string text(const json& obj, const std::string& key, const std::string& fallback, const std::string& where) {
  const json* v = field(obj, key);
  if (!v) return fallback;
  SMELT_CHECK(v->is_string(), where, ".", key, ": expected a string, got ", v->dump().substr(0, 80));
  return v->get<std::string>();
}

void check_byte_level(const json& j, const std::string& where, bool want_regex, bool* add_prefix_space) {
  SMELT_CHECK(j.is_object() && text(j, "type", "", where) == "ByteLevel", where, ": expected {\"type\": \"ByteLevel\", ...}, got ",
              j.dump().substr(0, 120));
  if (want_regex) {
    SMELT_CHECK(flag(j, "use_regex", true, where), where, ".use_regex: false is not supported (smelt splits with the GPT-2 regex)");
  }
  if (add_prefix_space) *add_prefix_space = flag(j, "add_prefix_space", false, where);
}

// The pre-tokenizers smelt reproduces (see io/pretokenize.h), as tokenizer.json writes them.
PreTokenizer parse_pre_tokenizer(const json& pre, const std::string& where, bool* add_prefix_space) {
  if (text(pre, "type", "", where) != "Sequence") {
    check_byte_level(pre, where, true, add_prefix_space);
    return PreTokenizer::Gpt2;
  }
  const json* steps = field(pre, "pretokenizers");
  const std::string shown = pre.dump().substr(0, 200);
  SMELT_CHECK(steps && steps->is_array() && steps->size() == 2 && (*steps)[0].is_object(), where,
              ": a Sequence smelt reproduces is [Digits, ByteLevel] or [Split, ByteLevel], got ", shown);
  const json& first = (*steps)[0];
  const std::string first_type = text(first, "type", "", where + ".pretokenizers[0]");
  if (first_type == "Digits") {
    SMELT_CHECK(flag(first, "individual_digits", false, where + ".pretokenizers[0]"), where,
                ".pretokenizers[0]: Digits without individual_digits is not supported");
    check_byte_level((*steps)[1], where + ".pretokenizers[1]", true, add_prefix_space);
    return PreTokenizer::SmolLM;
  }
  SMELT_CHECK(first_type == "Split", where, ".pretokenizers[0]: ", first_type, " is not supported (Digits or Split)");
  const json* pattern = field(first, "pattern");
  const std::string regex = pattern && pattern->is_object() ? text(*pattern, "Regex", "", where + ".pretokenizers[0].pattern") : "";
  SMELT_CHECK(regex == llama3_split_regex() || regex == qwen2_split_regex(), where,
              ".pretokenizers[0].pattern: only the Llama-3 and Qwen2 split regexes are supported, got ", regex.substr(0, 120));
  SMELT_CHECK(text(first, "behavior", "", where) == "Isolated" && !flag(first, "invert", false, where), where,
              ".pretokenizers[0]: only behavior Isolated without invert is supported");
  const json& second = (*steps)[1];
  check_byte_level(second, where + ".pretokenizers[1]", false, add_prefix_space);
  SMELT_CHECK(!flag(second, "use_regex", true, where), where, ".pretokenizers[1].use_regex: must be false after a Split");
  return regex == llama3_split_regex() ? PreTokenizer::Llama3 : PreTokenizer::Qwen2;
}

}  // namespace

nlohmann::ordered_json pre_tokenizer_json(PreTokenizer kind, bool add_prefix_space) {
  using ojson = nlohmann::ordered_json;
  const ojson byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", add_prefix_space}, {"trim_offsets", true},
                            {"use_regex", kind == PreTokenizer::Gpt2 || kind == PreTokenizer::SmolLM}};
  switch (kind) {
    case PreTokenizer::Gpt2: return byte_level;
    case PreTokenizer::SmolLM:
      return {{"type", "Sequence"}, {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}}, byte_level}}};
    case PreTokenizer::Llama3:
    case PreTokenizer::Qwen2: {
      const std::string& regex = kind == PreTokenizer::Llama3 ? llama3_split_regex() : qwen2_split_regex();
      const ojson split = {{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}};
      return {{"type", "Sequence"}, {"pretokenizers", {split, byte_level}}};
    }
  }
  return byte_level;
}

BpeTokenizer BpeTokenizer::from_file(const std::string& path) { return from_json(read_json_file(path), path); }

BpeTokenizer BpeTokenizer::from_json(const json& j, const std::string& source) {
  SMELT_CHECK(j.is_object(), source, ": a tokenizer.json must be a JSON object");
  BpeTokenizer t;
  t.name_ = source;
  if (const json* n = field(j, "normalizer")) {
    const bool nfc = n->is_object() && n->size() == 1 && n->contains("type") && (*n)["type"] == "NFC";
    SMELT_CHECK(nfc, source, ": normalizer ", n->dump().substr(0, 80), " is not supported (null or {\"type\": \"NFC\"})");
    t.nfc_ = true;
  }
  const json* pre = field(j, "pre_tokenizer");
  SMELT_CHECK(pre, source, ": pre_tokenizer: missing (smelt reads byte-level BPE tokenizers)");
  t.pre_ = parse_pre_tokenizer(*pre, source + ": pre_tokenizer", &t.add_prefix_space_);
  if (const json* dec = field(j, "decoder")) check_byte_level(*dec, source + ": decoder", false, nullptr);
  const json* model = field(j, "model");
  SMELT_CHECK(model && model->is_object(), source, ": model: missing");
  const std::string model_type = text(*model, "type", "BPE", source + ": model");
  SMELT_CHECK(model_type == "BPE", source, ": model.type: ", model_type, " is not supported (only BPE)");
  SMELT_CHECK(!flag(*model, "byte_fallback", false, source + ": model"), source, ": model.byte_fallback: true is not supported");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix", "dropout"}) {
    const json* v = field(*model, key);
    SMELT_CHECK(!v || (v->is_string() && v->get<std::string>().empty()), source, ": model.", key, ": ", v ? v->dump() : "",
                " is not supported (only null)");
  }
  t.ignore_merges_ = flag(*model, "ignore_merges", false, source + ": model");
  const json* vocab = field(*model, "vocab");
  SMELT_CHECK(vocab && vocab->is_object() && !vocab->empty(), source, ": model.vocab: expected a non-empty object");
  // Added tokens: literal strings with their own ids (the special ones are smelt's special tokens).
  std::map<int64_t, std::string> literal;
  if (const json* added = field(j, "added_tokens")) {
    SMELT_CHECK(added->is_array(), source, ": added_tokens: expected an array");
    for (size_t i = 0; i < added->size(); ++i) {
      const json& a = (*added)[i];
      const std::string where = source + ": added_tokens[" + std::to_string(i) + "]";
      SMELT_CHECK(a.is_object() && a.contains("id") && a["id"].is_number_integer() && a.contains("content") && a["content"].is_string(),
                  where, ": expected {\"id\": integer, \"content\": string, ...}");
      SMELT_CHECK(flag(a, "special", true, where), where, ": non-special added tokens are not supported");
      const int64_t id = a["id"].get<int64_t>();
      SMELT_CHECK(id >= 0 && id < (int64_t{1} << 31), where, ".id: ", id, " out of range");
      literal[id] = a["content"].get<std::string>();
    }
  }
  int64_t max_id = literal.empty() ? -1 : literal.rbegin()->first;
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    SMELT_CHECK(it.value().is_number_integer(), source, ": model.vocab[\"", it.key(), "\"]: expected an integer id");
    const int64_t id = it.value().get<int64_t>();
    SMELT_CHECK(id >= 0 && id < (int64_t{1} << 31), source, ": model.vocab[\"", it.key(), "\"]: id ", id, " out of range");
    max_id = std::max(max_id, id);
  }
  SMELT_CHECK(max_id < (int64_t{1} << 24), source, ": ids up to ", max_id, ": too many for a vocabulary");
  t.token_bytes_.assign(static_cast<size_t>(max_id + 1), std::string());
  std::vector<bool> filled(static_cast<size_t>(max_id + 1), false);
  for (const auto& [id, content] : literal) {
    t.token_bytes_[id] = content;
    filled[id] = true;
    t.specials_.emplace_back(content, static_cast<int32_t>(id));
  }
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    const int64_t id = it.value().get<int64_t>();
    if (literal.count(id)) {
      SMELT_CHECK(literal[id] == it.key(), source, ": model.vocab[\"", it.key(), "\"]: id ", id, " is also added token ", literal[id]);
      continue;
    }
    SMELT_CHECK(!filled[id], source, ": model.vocab: id ", id, " is used twice");
    std::string bytes;
    SMELT_CHECK(vocab_string_to_bytes(it.key(), bytes) && !bytes.empty(), source, ": model.vocab[\"", it.key(),
                "\"]: not a byte-level token string");
    t.token_bytes_[id] = std::move(bytes);
    filled[id] = true;
  }
  for (size_t id = 0; id < filled.size(); ++id) SMELT_CHECK(filled[id], source, ": model.vocab: no token has id ", id, " (ids must be 0..", max_id, ")");
  std::unordered_map<std::string, int32_t> by_string;
  for (auto it = vocab->begin(); it != vocab->end(); ++it) by_string.emplace(it.key(), it.value().get<int32_t>());
  const json* merges = field(*model, "merges");
  SMELT_CHECK(merges && merges->is_array(), source, ": model.merges: expected an array");
  for (size_t r = 0; r < merges->size(); ++r) {
    const json& m = (*merges)[r];
    std::string left, right;
    if (m.is_string()) {  // "left right" (byte-level strings never contain a plain space)
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      SMELT_CHECK(space != std::string::npos && s.find(' ', space + 1) == std::string::npos, source, ": model.merges[", r,
                  "]: expected \"left right\", got \"", s, "\"");
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else {
      SMELT_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(), source, ": model.merges[", r,
                  "]: expected \"left right\" or [\"left\", \"right\"]");
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    }
    auto a = by_string.find(left), b = by_string.find(right);
    SMELT_CHECK(a != by_string.end() && b != by_string.end(), source, ": model.merges[", r, "]: \"",
                a == by_string.end() ? left : right, "\" is not in the vocabulary");
    t.merges_.emplace_back(a->second, b->second);
  }
  t.index();
  return t;
}

nlohmann::ordered_json BpeTokenizer::to_json() const {
  using ojson = nlohmann::ordered_json;
  ojson added = ojson::array();
  for (const auto& [content, id] : specials_)
    added.push_back({{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                     {"normalized", false}, {"special", true}});
  // Appended straight to the ordered map's vector: its operator[] searches linearly, which made
  // writing a 50K-token vocabulary quadratic. Keys are checked unique with a hash set instead.
  ojson vocab = ojson::object();
  auto& entries = vocab.get_ref<ojson::object_t&>();
  std::unordered_set<std::string> keys;
  for (size_t id = 0; id < token_bytes_.size(); ++id) {
    std::string key = special_[id] ? token_bytes_[id] : bytes_to_vocab_string(token_bytes_[id]);
    SMELT_CHECK(keys.insert(key).second, name_, ": token ", id, " is spelled \"", key, "\" like another token");
    entries.ojson::object_t::Container::emplace_back(std::move(key), ojson(id));
  }
  ojson merges = ojson::array();
  for (const auto& [a, b] : merges_) merges.push_back(bytes_to_vocab_string(token_bytes_[a]) + " " + bytes_to_vocab_string(token_bytes_[b]));
  const ojson byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", add_prefix_space_}, {"trim_offsets", true}, {"use_regex", true}};
  ojson model = {{"type", "BPE"},           {"dropout", nullptr},     {"unk_token", nullptr},
                 {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr}, {"fuse_unk", false},
                 {"byte_fallback", false},  {"ignore_merges", ignore_merges_}, {"vocab", vocab}, {"merges", merges}};
  return {{"version", "1.0"},        {"truncation", nullptr}, {"padding", nullptr},      {"added_tokens", added},
          {"normalizer", nfc_ ? nlohmann::ordered_json{{"type", "NFC"}} : nlohmann::ordered_json(nullptr)},   {"pre_tokenizer", pre_tokenizer_json(pre_, add_prefix_space_)}, {"post_processor", byte_level},
          {"decoder", byte_level},   {"model", model}};
}

void BpeTokenizer::save(const std::string& path) const { write_file_atomic(path, to_json().dump(1) + "\n"); }

}  // namespace smelt
