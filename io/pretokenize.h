// Pre-tokenisation: the split of text into the pieces BPE merges within, exactly as the regexes
// of Hugging Face's pre-tokenizers split it. Written as scanners (no regex engine): each rule is
// one alternative of the regex, tried in order.
//   GPT-2 (ByteLevel's own regex):
//     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   SmolLM: Digits(individual_digits) first (each \p{N} its own piece), then GPT-2's.
//   Llama-3 (a Split before a regex-less ByteLevel; Qwen2's is the same with \p{N} for \p{N}{1,3}):
//     (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//     \s*[\r\n]+|\s+(?!\S)|\s+
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace smelt {

enum class PreTokenizer : uint8_t { Gpt2, SmolLM, Llama3, Qwen2 };
const char* pre_tokenizer_name(PreTokenizer kind);  // "gpt2", "smollm", "llama3", "qwen2"
// The Split regex of the Llama-3 and Qwen2 pre-tokenizers as tokenizer.json spells it.
const std::string& llama3_split_regex();
const std::string& qwen2_split_regex();

// The first position at or after `from` where text can be cut without changing its pieces: just
// after a newline and before a character that is not white space (no piece spans that point).
// Returns text.size() when there is none. Lets large files be encoded in parallel chunks that
// give exactly the ids of encoding the whole file at once.
size_t next_piece_boundary(std::string_view text, size_t from);

// Appends the pieces of `text` to `pieces` (views into text; together they cover it exactly).
void split_gpt2(std::string_view text, std::vector<std::string_view>& pieces);
// The same for any pre-tokenizer.
void split_pieces(PreTokenizer kind, std::string_view text, std::vector<std::string_view>& pieces);

}  // namespace smelt
