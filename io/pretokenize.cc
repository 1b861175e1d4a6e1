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

void split_gpt2(std::string_view text, std::vector<std::string_view>& pieces) {
  thread_local std::vector<Char> chars;
  chars.clear();
  for (size_t pos = 0; pos < text.size();) {
    uint32_t cp;
    const int len = decode_utf8(text, pos, cp);
    chars.push_back({cp, static_cast<uint32_t>(pos), char_class(cp)});
    pos += len;
  }
  const size_t n = chars.size();
  const auto offset = [&](size_t i) { return i < n ? chars[i].offset : text.size(); };
  const auto run_of = [&](size_t i, CharClass cls) {
    while (i < n && chars[i].cls == cls) ++i;
    return i;
  };
  size_t i = 0;
  while (i < n) {
    size_t end;
    const CharClass here = chars[i].cls;
    // An optional leading U+0020 belongs to a following letter, number or symbol run.
    const CharClass after_space = (chars[i].cp == ' ' && i + 1 < n) ? chars[i + 1].cls : CharClass::Space;
    if (size_t len = contraction_at(chars, i)) {
      end = i + len;
    } else if (here == CharClass::Letter || here == CharClass::Number || here == CharClass::Other) {
      end = run_of(i, here);  //  ?\p{L}+,  ?\p{N}+,  ?[^\s\p{L}\p{N}]+ without the space
    } else if (after_space != CharClass::Space) {
      end = run_of(i + 1, after_space);  // the same three with the space
    } else {
      // \s+(?!\S) leaves the last space of a run for the word after it; \s+ takes a lone one.
      end = run_of(i, CharClass::Space);
      if (end < n && end - i >= 2) --end;
    }
    pieces.emplace_back(text.substr(offset(i), offset(end) - offset(i)));
    i = end;
  }
}

}  // namespace smelt
