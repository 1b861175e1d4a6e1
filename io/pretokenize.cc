#include "io/pretokenize.h"

#include <algorithm>
#include <cstdint>

#include "io/unicode.h"

namespace smelt {
namespace {

struct Char {
  uint32_t cp;
  uint32_t offset;
  CharClass cls;
};

// Length in characters of a contraction ('s 't 're 've 'm 'll 'd, lower case only) at i, or 0.
size_t contraction_at(const std::vector<Char>& c, size_t i) {
  if (c[i].cp != '\'' || i + 1 >= c.size()) return 0;
  const uint32_t a = c[i + 1].cp;
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (i + 2 < c.size()) {
    const uint32_t b = c[i + 2].cp;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  }
  return 0;
}

}  // namespace

size_t next_piece_boundary(std::string_view text, size_t from) {
  for (size_t i = std::max<size_t>(from, 1); i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    // ASCII non-space after '\n': the newline ends a white-space run and c starts a new piece.
    if (text[i - 1] == '\n' && c < 0x80 && c != ' ' && !(c >= 0x09 && c <= 0x0D)) return i;
  }
  return text.size();
}

namespace {

// The text as characters (code point, byte offset, class), reused per thread.
const std::vector<Char>& characters(std::string_view text) {
  thread_local std::vector<Char> chars;
  chars.clear();
  for (size_t pos = 0; pos < text.size();) {
    uint32_t cp;
    const int len = decode_utf8(text, pos, cp);
    chars.push_back({cp, static_cast<uint32_t>(pos), char_class(cp)});
    pos += len;
  }
  return chars;
}

size_t run_of(const std::vector<Char>& c, size_t i, CharClass cls) {
  while (i < c.size() && c[i].cls == cls) ++i;
  return i;
}

void emit(std::string_view text, const std::vector<Char>& c, size_t begin, size_t end, std::vector<std::string_view>& pieces) {
  const auto offset = [&](size_t i) { return i < c.size() ? c[i].offset : text.size(); };
  pieces.emplace_back(text.substr(offset(begin), offset(end) - offset(begin)));
}

// \s+(?!\S) then \s+: a run of white space from i, less its last character when a word follows
// (that one goes with the word), unless the run is a single character.
// `limit`: where the text being split ends (SmolLM splits the text between digits).
size_t space_run_end(const std::vector<Char>& c, size_t i, size_t limit) {
  size_t end = run_of(c, i, CharClass::Space);
  if (end < limit && end - i >= 2) --end;
  return end;
}

// Runs of letters, symbols and spaces never cross a digit, so only the look-aheads need `limit`.
size_t gpt2_piece_end(const std::vector<Char>& c, size_t i, size_t limit) {
  const size_t n = limit;
  const CharClass here = c[i].cls;
  // An optional leading U+0020 belongs to a following letter, number or symbol run.
  const CharClass after_space = (c[i].cp == ' ' && i + 1 < n) ? c[i + 1].cls : CharClass::Space;
  if (size_t len = contraction_at(c, i)) return i + len;
  if (here == CharClass::Letter || here == CharClass::Number || here == CharClass::Other) return run_of(c, i, here);
  if (after_space != CharClass::Space) return run_of(c, i + 1, after_space);
  return space_run_end(c, i, limit);
}

bool is_newline(uint32_t cp) { return cp == '\r' || cp == '\n'; }
uint32_t lower_ascii(uint32_t cp) { return cp >= 'A' && cp <= 'Z' ? cp + 32 : cp; }

// (?i:'s|'t|'re|'ve|'m|'ll|'d): the contractions in either case.
size_t contraction_any_case_at(const std::vector<Char>& c, size_t i) {
  if (c[i].cp != '\'' || i + 1 >= c.size()) return 0;
  const uint32_t a = lower_ascii(c[i + 1].cp);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (i + 2 < c.size()) {
    const uint32_t b = lower_ascii(c[i + 2].cp);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  }
  return 0;
}

size_t llama3_piece_end(const std::vector<Char>& c, size_t i, size_t max_digits) {
  const size_t n = c.size();
  const CharClass here = c[i].cls;
  if (size_t len = contraction_any_case_at(c, i)) return i + len;
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (here == CharClass::Letter) return run_of(c, i, CharClass::Letter);
  if (here != CharClass::Number && !is_newline(c[i].cp) && i + 1 < n && c[i + 1].cls == CharClass::Letter)
    return run_of(c, i + 1, CharClass::Letter);
  // \p{N}{1,max_digits}
  if (here == CharClass::Number) return std::min(run_of(c, i, CharClass::Number), i + max_digits);
  // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
  const size_t symbols = (c[i].cp == ' ' && i + 1 < n && c[i + 1].cls == CharClass::Other) ? i + 1 : i;
  if (c[symbols].cls == CharClass::Other) {
    size_t end = run_of(c, symbols, CharClass::Other);
    while (end < n && is_newline(c[end].cp)) ++end;
    return end;
  }
  // \s*[\r\n]+: the white-space run up to and including its last newline.
  const size_t run_end = run_of(c, i, CharClass::Space);
  for (size_t k = run_end; k > i; --k)
    if (is_newline(c[k - 1].cp)) return k;
  return space_run_end(c, i, n);
}

}  // namespace

void split_gpt2(std::string_view text, std::vector<std::string_view>& pieces) {
  const std::vector<Char>& c = characters(text);
  for (size_t i = 0; i < c.size();) {
    const size_t end = gpt2_piece_end(c, i, c.size());
    emit(text, c, i, end, pieces);
    i = end;
  }
}

void split_pieces(PreTokenizer kind, std::string_view text, std::vector<std::string_view>& pieces) {
  if (kind == PreTokenizer::Gpt2) return split_gpt2(text, pieces);
  const std::vector<Char>& c = characters(text);
  size_t next_digit = 0;  // SmolLM: the first number character at or after i
  for (size_t i = 0; i < c.size();) {
    size_t end;
    if (kind == PreTokenizer::SmolLM) {
      // Digits first: each number character alone; GPT-2's rules within the text between them.
      if (c[i].cls == CharClass::Number) {
        end = i + 1;
      } else {
        if (next_digit <= i) {
          next_digit = i;
          while (next_digit < c.size() && c[next_digit].cls != CharClass::Number) ++next_digit;
        }
        end = gpt2_piece_end(c, i, next_digit);
      }
    } else {
      end = llama3_piece_end(c, i, kind == PreTokenizer::Llama3 ? 3 : 1);
    }
    emit(text, c, i, end, pieces);
    i = end;
  }
}

const char* pre_tokenizer_name(PreTokenizer kind) {
  switch (kind) {
    case PreTokenizer::Gpt2: return "gpt2";
    case PreTokenizer::SmolLM: return "smollm";
    case PreTokenizer::Llama3: return "llama3";
    case PreTokenizer::Qwen2: return "qwen2";
  }
  return "?";
}

const std::string& llama3_split_regex() {
  static const std::string r =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  return r;
}

const std::string& qwen2_split_regex() {
  static const std::string r =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  return r;
}

}  // namespace smelt
