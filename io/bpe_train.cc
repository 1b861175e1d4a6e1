// BPE training: count the pre-tokenised pieces of the corpus, then repeatedly merge the most
// frequent adjacent pair. Pair counts are kept up to date incrementally: a merge touches only
// the words that contain its pair (found through an index), and a max-heap with lazy deletion
// picks the next pair. Ties go to the pair with the smaller ids, so training is deterministic
// (the corpus is cut into chunks at fixed places, independent of the thread count).
#include <algorithm>
#include <mutex>
#include <optional>
#include <queue>
#include <unordered_set>

#include "io/bpe_tokenizer.h"
#include "io/pretokenize.h"
#include "runtime/log.h"
#include "runtime/thread_pool.h"

namespace smelt {
namespace {

constexpr size_t kChunkBytes = 1 << 20;

uint64_t pair_key(int32_t a, int32_t b) { return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b); }

// Cuts a text into chunks of about kChunkBytes at piece boundaries.
std::vector<std::string_view> chunks_of(std::string_view text) {
  std::vector<std::string_view> out;
  for (size_t pos = 0; pos < text.size();) {
    const size_t end = next_piece_boundary(text, pos + kChunkBytes);
    out.push_back(text.substr(pos, end - pos));
    pos = end;
  }
  return out;
}

struct Word {
  std::vector<int32_t> symbols;
  int64_t count;
};

std::vector<Word> count_words(const std::vector<std::string_view>& texts) {
  std::vector<std::string_view> chunks;
  for (std::string_view t : texts)
    for (std::string_view c : chunks_of(t)) chunks.push_back(c);
  std::unordered_map<std::string, int64_t> counts;
  std::mutex mu;
  parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t lo, int64_t hi) {
    std::unordered_map<std::string_view, int64_t> local;
    std::vector<std::string_view> pieces;
    for (int64_t c = lo; c < hi; ++c) {
      pieces.clear();
      split_gpt2(chunks[c], pieces);
      for (std::string_view p : pieces) ++local[p];
    }
    std::lock_guard<std::mutex> g(mu);
    for (const auto& [piece, n] : local) counts[std::string(piece)] += n;
  });
  std::vector<std::pair<std::string, int64_t>> sorted(counts.begin(), counts.end());
  std::sort(sorted.begin(), sorted.end());  // a fixed order, whatever the hash map did
  std::vector<Word> words;
  words.reserve(sorted.size());
  for (const auto& [piece, n] : sorted) {
    Word w;
    w.count = n;
    for (unsigned char b : piece) w.symbols.push_back(b);
    words.push_back(std::move(w));
  }
  return words;
}

}  // namespace

BpeTokenizer BpeTokenizer::train(const std::vector<std::string_view>& texts, const BpeTrainOptions& options) {
  const int64_t specials = static_cast<int64_t>(options.special_tokens.size());
  SMELT_CHECK(options.vocab_size >= 256 + specials, "tokenizer: --vocab-size ", options.vocab_size, " is smaller than the 256 bytes + ",
              specials, " special tokens");
  SMELT_CHECK(options.min_frequency >= 1, "tokenizer: min_frequency must be at least 1");
  BpeTokenizer t;
  t.name_ = "trained tokenizer";
  for (int b = 0; b < 256; ++b) t.token_bytes_.emplace_back(1, static_cast<char>(b));
  std::vector<Word> words = count_words(texts);

  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::vector<int32_t>> where;  // pair → words that had it (may repeat)
  for (size_t w = 0; w < words.size(); ++w) {
    const auto& s = words[w].symbols;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      const uint64_t k = pair_key(s[i], s[i + 1]);
      pair_count[k] += words[w].count;
      auto& list = where[k];
      if (list.empty() || list.back() != static_cast<int32_t>(w)) list.push_back(static_cast<int32_t>(w));
    }
  }
  struct Entry {
    int64_t count;
    uint64_t key;
    bool operator<(const Entry& o) const { return count != o.count ? count < o.count : key > o.key; }
  };
  std::priority_queue<Entry> heap;
  for (const auto& [k, c] : pair_count) heap.push({c, k});

  const int64_t target_merges = options.vocab_size - 256 - specials;
  std::vector<int64_t> last_seen(words.size(), -1);
  std::optional<ProgressBar> progress;
  if (options.show_progress) progress.emplace("bpe merges", target_merges, "merge");
  while (static_cast<int64_t>(t.merges_.size()) < target_merges && !heap.empty()) {
    const Entry top = heap.top();
    heap.pop();
    auto pc = pair_count.find(top.key);
    const int64_t current = pc == pair_count.end() ? 0 : pc->second;
    if (current != top.count) {  // stale: counts changed since it was pushed
      if (current > 0) heap.push({current, top.key});
      continue;
    }
    if (current < options.min_frequency) break;
    const int32_t a = static_cast<int32_t>(top.key >> 32), b = static_cast<int32_t>(top.key & 0xFFFFFFFFu);
    const int32_t merged = static_cast<int32_t>(t.token_bytes_.size());
    const int64_t merge_no = static_cast<int64_t>(t.merges_.size());
    t.token_bytes_.push_back(t.token_bytes_[a] + t.token_bytes_[b]);
    t.merges_.emplace_back(a, b);
    std::unordered_set<uint64_t> changed;
    std::vector<int32_t> users = std::move(where[top.key]);
    where.erase(top.key);
    for (int32_t w : users) {
      if (last_seen[w] == merge_no) continue;
      last_seen[w] = merge_no;
      Word& word = words[w];
      auto& s = word.symbols;
      bool found = false;
      for (size_t i = 0; i + 1 < s.size() && !found; ++i) found = s[i] == a && s[i + 1] == b;
      if (!found) continue;
      for (size_t i = 0; i + 1 < s.size(); ++i) {
        const uint64_t k = pair_key(s[i], s[i + 1]);
        pair_count[k] -= word.count;
        changed.insert(k);
      }
      std::vector<int32_t> next;
      next.reserve(s.size());
      for (size_t i = 0; i < s.size(); ++i) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
          next.push_back(merged);
          ++i;
        } else {
          next.push_back(s[i]);
        }
      }
      s = std::move(next);
      for (size_t i = 0; i + 1 < s.size(); ++i) {
        const uint64_t k = pair_key(s[i], s[i + 1]);
        pair_count[k] += word.count;
        changed.insert(k);
        if (s[i] == merged || s[i + 1] == merged) {
          auto& list = where[k];
          if (list.empty() || list.back() != w) list.push_back(w);
        }
      }
    }
    pair_count.erase(top.key);
    std::vector<uint64_t> changed_sorted(changed.begin(), changed.end());
    std::sort(changed_sorted.begin(), changed_sorted.end());
    for (uint64_t k : changed_sorted) {
      auto it = pair_count.find(k);
      if (it == pair_count.end()) continue;
      if (it->second > 0) heap.push({it->second, k});
      else pair_count.erase(it);
    }
    if (progress) progress->update(static_cast<int64_t>(t.merges_.size()));
  }
  if (progress) progress->finish();
  for (const std::string& special : options.special_tokens) {
    t.specials_.emplace_back(special, static_cast<int32_t>(t.token_bytes_.size()));
    t.token_bytes_.push_back(special);
  }
  t.index();
  return t;
}

}  // namespace smelt
