// Pre-tokenisation: the split of text into the pieces BPE merges within, exactly as the GPT-2
// regex used by Hugging Face's ByteLevel pre-tokenizer splits it:
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// Written as a scanner (no regex engine): each rule below is one alternative, tried in order.
#pragma once
#include <string_view>
#include <vector>

namespace smelt {

// The first position at or after `from` where text can be cut without changing its pieces: just
// after a newline and before a character that is not white space (no piece spans that point).
// Returns text.size() when there is none. Lets large files be encoded in parallel chunks that
// give exactly the ids of encoding the whole file at once.
size_t next_piece_boundary(std::string_view text, size_t from);

// Appends the pieces of `text` to `pieces` (views into text; together they cover it exactly).
void split_gpt2(std::string_view text, std::vector<std::string_view>& pieces);

}  // namespace smelt
