#include "io/bpe_tokenizer.h"

#include <algorithm>
#include <atomic>
#include <queue>

#include "io/files.h"
#include "io/pretokenize.h"
#include "io/unicode.h"

namespace smelt {
namespace {

uint64_t pair_key(int32_t a, int32_t b) { return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b); }

// GPT-2's map: printable Latin-1 bytes stand for themselves, the other 68 bytes for U+0100 onwards.
struct ByteMap {
  uint32_t to_char[256];
  int16_t to_byte[512];  // code point → byte, -1 where none (every mapped code point is < 0x144)
  ByteMap() {
    std::fill(std::begin(to_byte), std::end(to_byte), int16_t{-1});
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      to_char[b] = printable ? static_cast<uint32_t>(b) : next++;
      to_byte[to_char[b]] = static_cast<int16_t>(b);
    }
  }
};
const ByteMap kByteMap;

void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else {  // every code point of the byte map is below U+0800
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::atomic<uint64_t> g_tokenizer_serial{0};

}  // namespace

std::string bytes_to_vocab_string(std::string_view bytes) {
  std::string out;
  for (unsigned char b : bytes) append_utf8(kByteMap.to_char[b], out);
  return out;
}

bool vocab_string_to_bytes(std::string_view s, std::string& bytes) {
  bytes.clear();
  for (size_t pos = 0; pos < s.size();) {
    uint32_t cp;
    const int len = decode_utf8(s, pos, cp);
    if (cp >= 512 || kByteMap.to_byte[cp] < 0 || (len == 1 && static_cast<unsigned char>(s[pos]) >= 0x80)) return false;
    bytes += static_cast<char>(kByteMap.to_byte[cp]);
    pos += len;
  }
  return true;
}

const std::vector<std::string>& BpeTokenizer::default_special_tokens() {
  static const std::vector<std::string> tokens = {"<|bos|>", "<|eos|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"};
  return tokens;
}

void BpeTokenizer::index() {
  id_of_.clear();
  merge_of_.clear();
  special_.assign(token_bytes_.size(), false);
  for (const auto& [content, id] : specials_) special_[id] = true;
  for (size_t id = 0; id < token_bytes_.size(); ++id)
    if (!special_[id]) id_of_.emplace(token_bytes_[id], static_cast<int32_t>(id));
  for (int b = 0; b < 256; ++b) {
    auto it = id_of_.find(std::string(1, static_cast<char>(b)));
    byte_id_[b] = it == id_of_.end() ? -1 : it->second;
  }
  for (size_t r = 0; r < merges_.size(); ++r) {
    const auto [a, b] = merges_[r];
    auto it = id_of_.find(token_bytes_[a] + token_bytes_[b]);
    SMELT_CHECK(it != id_of_.end(), name_, ": merge ", r, " (", bytes_to_vocab_string(token_bytes_[a]), " ",
                bytes_to_vocab_string(token_bytes_[b]), ") makes a token that is not in the vocabulary");
    merge_of_.emplace(pair_key(a, b), std::make_pair(static_cast<int32_t>(r), it->second));  // the first rank wins
  }
  serial_ = ++g_tokenizer_serial;
}

// Applies merges lowest rank first, leftmost first among equals (Hugging Face's order), on a
// linked list of symbols with a heap of candidate merges; stale candidates are skipped on pop.
void BpeTokenizer::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  if (ignore_merges_) {
    auto it = id_of_.find(std::string(piece));
    if (it != id_of_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (piece.size() == 1) {
    if (byte_id_[static_cast<unsigned char>(piece[0])] >= 0) out.push_back(byte_id_[static_cast<unsigned char>(piece[0])]);
    return;
  }
  struct Symbol {
    int32_t id, prev, next;
  };
  struct Candidate {
    int32_t rank, pos, merged;
    bool operator<(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  thread_local std::vector<Symbol> sym;
  thread_local std::vector<Candidate> heap_storage;
  // One symbol per byte the vocabulary has (bytes it lacks are dropped, as HF's BPE does
  // without an unknown token: SmolLM2's vocabulary has no token for byte 0x04).
  sym.clear();
  for (unsigned char b : piece)
    if (byte_id_[b] >= 0) sym.push_back({byte_id_[b], 0, 0});
  const int32_t n = static_cast<int32_t>(sym.size());
  if (n == 0) return;
  for (int32_t i = 0; i < n; ++i) {
    sym[i].prev = i - 1;
    sym[i].next = i + 1 < n ? i + 1 : -1;
  }
  heap_storage.clear();
  std::priority_queue<Candidate, std::vector<Candidate>> heap(std::less<Candidate>(), std::move(heap_storage));
  auto offer = [&](int32_t pos) {
    if (pos < 0 || sym[pos].next < 0) return;
    auto it = merge_of_.find(pair_key(sym[pos].id, sym[sym[pos].next].id));
    if (it != merge_of_.end()) heap.push({it->second.first, pos, it->second.second});
  };
  for (int32_t i = 0; i + 1 < n; ++i) offer(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& left = sym[c.pos];
    if (left.id < 0 || left.next < 0) continue;  // merged away, or now last
    auto it = merge_of_.find(pair_key(left.id, sym[left.next].id));
    if (it == merge_of_.end() || it->second.second != c.merged) continue;  // the pair changed since
    Symbol& right = sym[left.next];
    left.id = c.merged;
    right.id = -1;
    left.next = right.next;
    if (left.next >= 0) sym[left.next].prev = c.pos;
    offer(left.prev);
    offer(c.pos);
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) out.push_back(sym[i].id);
}

void BpeTokenizer::encode_ordinary(std::string_view text, std::vector<int32_t>& out) const {
  // Frequent pieces (common words, indentation) are encoded once per thread and tokenizer.
  struct Cache {
    uint64_t serial = ~uint64_t{0};
    std::unordered_map<std::string, std::vector<int32_t>> pieces;
  };
  thread_local Cache cache;
  const uint64_t serial = serial_;
  if (cache.serial != serial || cache.pieces.size() > (1u << 17)) {
    cache.pieces.clear();
    cache.serial = serial;
  }
  thread_local std::vector<std::string_view> pieces;
  pieces.clear();
  std::string prefixed;
  if (add_prefix_space_ && !text.empty()) {
    uint32_t cp;
    decode_utf8(text, 0, cp);
    if (char_class(cp) != CharClass::Space) {
      prefixed = " " + std::string(text);
      text = prefixed;
    }
  }
  split_pieces(pre_, text, pieces);
  thread_local std::string key;
  for (std::string_view piece : pieces) {
    if (piece.size() > 64) {  // long runs are rare: not worth a cache slot
      encode_piece(piece, out);
      continue;
    }
    key.assign(piece);
    auto it = cache.pieces.find(key);
    if (it == cache.pieces.end()) {
      std::vector<int32_t> ids;
      encode_piece(piece, ids);
      it = cache.pieces.emplace(key, std::move(ids)).first;
    }
    out.insert(out.end(), it->second.begin(), it->second.end());
  }
}

void BpeTokenizer::encode_normalised(std::string_view text, std::vector<int32_t>& out) const {
  if (!nfc_) return encode_ordinary(text, out);
  // HF normalises the text between added tokens; text that is not UTF-8 has no NFC and is
  // encoded as it is.
  const std::optional<std::string> nfc = unicode_nfc(text);
  encode_ordinary(nfc ? std::string_view(*nfc) : text, out);
}

void BpeTokenizer::encode_append(std::string_view text, bool allow_special, std::vector<int32_t>& out) const {
  if (!allow_special || specials_.empty()) return encode_normalised(text, out);
  while (!text.empty()) {
    // The earliest special token in the text (the longest where two start at one place).
    size_t best = std::string_view::npos, best_len = 0;
    int32_t best_id = -1;
    for (const auto& [content, id] : specials_) {
      const size_t at = text.find(content);
      if (at != std::string_view::npos && (at < best || (at == best && content.size() > best_len))) {
        best = at;
        best_len = content.size();
        best_id = id;
      }
    }
    if (best == std::string_view::npos) return encode_normalised(text, out);
    if (best > 0) encode_normalised(text.substr(0, best), out);
    out.push_back(best_id);
    text.remove_prefix(best + best_len);
  }
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, bool allow_special) const {
  std::vector<int32_t> out;
  encode_append(text, allow_special, out);
  return out;
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) {
    SMELT_CHECK(id >= 0 && id < vocab_size(), name_, ": token id ", id, " is outside the vocabulary [0, ", vocab_size(), ")");
    out += token_bytes_[id];
  }
  return out;
}

int32_t BpeTokenizer::special_id(const std::string& content) const {
  for (const auto& [c, id] : specials_)
    if (c == content) return id;
  SMELT_FAIL(name_, ": no special token ", content);
}

bool BpeTokenizer::has_special(const std::string& content) const {
  for (const auto& [c, id] : specials_)
    if (c == content) return true;
  return false;
}

bool BpeTokenizer::is_special(int32_t id) const { return id >= 0 && id < vocab_size() && special_[id]; }

bool BpeTokenizer::same_as(const BpeTokenizer& other) const {
  return token_bytes_ == other.token_bytes_ && merges_ == other.merges_ && specials_ == other.specials_ &&
         add_prefix_space_ == other.add_prefix_space_ && ignore_merges_ == other.ignore_merges_ && pre_ == other.pre_ && nfc_ == other.nfc_;
}

}  // namespace smelt
