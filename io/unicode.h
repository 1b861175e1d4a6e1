// The little of Unicode that byte-level BPE needs: decoding one UTF-8 character and classifying
// it as a letter (\p{L}), number (\p{N}), white space (\s) or anything else, as the GPT-2
// pre-tokenisation regex does. Tables come from io/unicode_table.inc (generated, committed).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace smelt {

enum class CharClass : uint8_t { Letter, Number, Space, Other };

// Decodes the character starting at text[pos]: returns its length in bytes (1–4) and stores the
// code point. A malformed or truncated sequence counts as one byte of class Other (code point
// 0xFFFD is stored), so every byte of any input belongs to exactly one character.
int decode_utf8(std::string_view text, size_t pos, uint32_t& code_point);

CharClass char_class(uint32_t code_point);

// The text in Unicode normalisation form C (canonical decomposition, then composition), by
// utf8proc; nullopt when the text is not valid UTF-8.
std::optional<std::string> unicode_nfc(std::string_view text);

}  // namespace smelt
