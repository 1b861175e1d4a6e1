// Byte-level BPE (GPT-2 / Llama-3 family): text → pre-tokenised pieces (io/pretokenize.h) →
// bytes → merges applied by rank within each piece. Special tokens (<|bos|>, <|eos|>, <|pad|>,
// chat roles) are whole tokens that ordinary text never produces unless asked to.
// Files are Hugging Face tokenizer.json (ByteLevel pre-tokenizer and decoder, BPE model), read
// and written so that HF `tokenizers` and smelt give the same ids for the same text.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "io/json_reader.h"
#include "io/pretokenize.h"

namespace smelt {

struct BpeTrainOptions {
  int64_t vocab_size = 4096;   // bytes (256) + merges + special tokens
  int64_t min_frequency = 2;   // a pair seen fewer times is never merged
  std::vector<std::string> special_tokens;  // appended after the merges, in this order
  bool show_progress = true;
};

class BpeTokenizer {
 public:
  // The special tokens smelt's tokenizers carry (bos, eos, pad, then the chat-template markers).
  static const std::vector<std::string>& default_special_tokens();

  // Learns merges from the pieces of `texts` (each text pre-tokenised separately).
  static BpeTokenizer train(const std::vector<std::string_view>& texts, const BpeTrainOptions& options);
  // Reads a Hugging Face tokenizer.json; anything it cannot reproduce exactly is refused, naming the field.
  static BpeTokenizer from_file(const std::string& path);
  static BpeTokenizer from_json(const json& j, const std::string& source);
  nlohmann::ordered_json to_json() const;
  void save(const std::string& path) const;  // atomic

  // Token ids of `text`. With allow_special, special-token strings in the text become their
  // tokens (as HF does for added tokens); without, they are encoded as ordinary text.
  std::vector<int32_t> encode(std::string_view text, bool allow_special = false) const;
  void encode_append(std::string_view text, bool allow_special, std::vector<int32_t>& out) const;
  // The bytes the ids stand for (special tokens as their strings).
  std::string decode(const std::vector<int32_t>& ids) const;

  int64_t vocab_size() const { return static_cast<int64_t>(token_bytes_.size()); }
  PreTokenizer pre_tokenizer() const { return pre_; }
  int64_t merges() const { return static_cast<int64_t>(merges_.size()); }
  // The merges in rank order, as (left id, right id).
  const std::vector<std::pair<int32_t, int32_t>>& merge_pairs() const { return merges_; }
  const std::string& token_bytes(int32_t id) const { return token_bytes_.at(id); }
  // Id of a special token; throws naming the tokenizer when it has none of that name.
  int32_t special_id(const std::string& content) const;
  bool has_special(const std::string& content) const;
  bool is_special(int32_t id) const;
  // Equal vocabularies, merges and special tokens (what "the same tokenizer" means for mixing models).
  bool same_as(const BpeTokenizer& other) const;

 private:
  void index();  // rebuilds the lookup maps from token_bytes_, merges_ and specials_
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;
  void encode_ordinary(std::string_view text, std::vector<int32_t>& out) const;
  void encode_normalised(std::string_view text, std::vector<int32_t>& out) const;  // NFC first when nfc_

  std::vector<std::string> token_bytes_;               // id → bytes
  std::vector<std::pair<int32_t, int32_t>> merges_;    // in rank order
  std::vector<std::pair<std::string, int32_t>> specials_;
  PreTokenizer pre_ = PreTokenizer::Gpt2;
  bool add_prefix_space_ = false;
  bool ignore_merges_ = false;  // a piece found whole in the vocabulary is one token (Llama-3)
  bool nfc_ = false;            // text is put in Unicode NFC before pre-tokenisation (Qwen2's normalizer)
  std::string name_;
  // Lookups.
  uint64_t serial_ = 0;  // changes whenever the lookups are rebuilt: keys the encode cache
  std::unordered_map<std::string, int32_t> id_of_;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merge_of_;  // (left, right) → (rank, merged id)
  int32_t byte_id_[256] = {};  // -1 for a byte the vocabulary lacks (dropped, as HF does without an unknown token)
  std::vector<bool> special_;
};

// The pre_tokenizer entry of tokenizer.json for a pre-tokenizer smelt reproduces.
nlohmann::ordered_json pre_tokenizer_json(PreTokenizer kind, bool add_prefix_space);

// The GPT-2 byte ↔ printable-character map used in vocabulary strings of byte-level tokenizers.
std::string bytes_to_vocab_string(std::string_view bytes);
// Inverse; returns false when the string has a character outside the 256 of the map.
bool vocab_string_to_bytes(std::string_view s, std::string& bytes);

}  // namespace smelt
