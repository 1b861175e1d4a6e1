#include "io/token_shard.h"

#include <bit>
#include <cstring>

#include "io/files.h"
#include "runtime/error.h"

namespace smelt {
namespace {

static_assert(std::endian::native == std::endian::little, "token shards are read and written on little-endian hosts");

constexpr char kMagic[8] = {'S', 'M', 'E', 'L', 'T', 'T', 'O', 'K'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 64;
constexpr uint32_t kFlagMask = 1;

uint64_t fnv1a64(const char* p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<uint8_t>(p[i])) * 0x100000001b3ULL;
  return h;
}

template <typename T>
T load(const std::string& b, size_t off) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof v);
  return v;
}

template <typename T>
void store(std::string& b, size_t off, T v) {
  std::memcpy(b.data() + off, &v, sizeof v);
}

}  // namespace

std::string token_shard_bytes(const TokenShard& s) {
  SMELT_CHECK(s.vocab_size > 0, "token shard: vocabulary size must be positive");
  SMELT_CHECK(s.mask.empty() || s.mask.size() == s.tokens.size(), "token shard: ", s.mask.size(), " mask bytes for ", s.tokens.size(), " tokens");
  const uint32_t width = s.vocab_size <= 65536 ? 2 : 4;
  const size_t n = s.tokens.size();
  std::string b(kHeaderBytes + n * width + s.mask.size(), '\0');
  char* payload = b.data() + kHeaderBytes;
  for (size_t i = 0; i < n; ++i) {
    const int32_t t = s.tokens[i];
    SMELT_CHECK(t >= 0 && static_cast<uint32_t>(t) < s.vocab_size, "token shard: token ", t, " at ", i, " is outside the vocabulary of ",
                s.vocab_size);
    if (width == 2) {
      const uint16_t v = static_cast<uint16_t>(t);
      std::memcpy(payload + i * 2, &v, 2);
    } else {
      std::memcpy(payload + i * 4, &t, 4);
    }
  }
  if (!s.mask.empty()) std::memcpy(payload + n * width, s.mask.data(), n);
  std::memcpy(b.data(), kMagic, 8);
  store<uint32_t>(b, 8, kVersion);
  store<uint32_t>(b, 12, width);
  store<uint64_t>(b, 16, n);
  store<uint64_t>(b, 24, fnv1a64(payload, b.size() - kHeaderBytes));
  store<uint32_t>(b, 32, s.mask.empty() ? 0 : kFlagMask);
  store<uint32_t>(b, 36, s.vocab_size);
  return b;
}

void write_token_shard(const std::string& path, const TokenShard& shard) { write_file_atomic(path, token_shard_bytes(shard)); }

TokenShard parse_token_shard(const std::string& b, const std::string& source) {
  SMELT_CHECK(b.size() >= kHeaderBytes, source, ": ", b.size(), " bytes, shorter than the ", kHeaderBytes, "-byte token shard header");
  SMELT_CHECK(std::memcmp(b.data(), kMagic, 8) == 0, source, ": magic: not a smelt token shard");
  const uint32_t version = load<uint32_t>(b, 8), width = load<uint32_t>(b, 12), flags = load<uint32_t>(b, 32);
  const uint64_t n = load<uint64_t>(b, 16), checksum = load<uint64_t>(b, 24);
  TokenShard s;
  s.vocab_size = load<uint32_t>(b, 36);
  SMELT_CHECK(version == kVersion, source, ": version: ", version, " (this smelt reads version ", kVersion, ")");
  SMELT_CHECK(width == 2 || width == 4, source, ": bytes per token: ", width, " (expected 2 or 4)");
  SMELT_CHECK((flags & ~kFlagMask) == 0, source, ": flags: unknown bits 0x", std::hex, flags);
  SMELT_CHECK(s.vocab_size > 0 && (width == 4 || s.vocab_size <= 65536), source, ": vocabulary size: ", s.vocab_size,
              " does not fit ", width, "-byte tokens");
  for (size_t i = 40; i < kHeaderBytes; ++i) SMELT_CHECK(b[i] == 0, source, ": reserved header byte ", i, " is not zero");
  const bool has_mask = flags & kFlagMask;
  const uint64_t per_token = width + (has_mask ? 1 : 0);
  const uint64_t payload = b.size() - kHeaderBytes;
  SMELT_CHECK(n <= payload / per_token && n * per_token == payload, source, ": token count: the header says ", n, " tokens (",
              n * per_token, " bytes) but ", payload, " bytes follow it");
  SMELT_CHECK(fnv1a64(b.data() + kHeaderBytes, payload) == checksum, source, ": checksum: the payload does not match (corrupted file)");
  const char* p = b.data() + kHeaderBytes;
  s.tokens.resize(n);
  for (uint64_t i = 0; i < n; ++i) {
    uint32_t t;
    if (width == 2) {
      uint16_t v;
      std::memcpy(&v, p + i * 2, 2);
      t = v;
    } else {
      std::memcpy(&t, p + i * 4, 4);
    }
    SMELT_CHECK(t < s.vocab_size, source, ": token ", i, " is ", t, ", outside the vocabulary of ", s.vocab_size);
    s.tokens[i] = static_cast<int32_t>(t);
  }
  if (has_mask) {
    s.mask.assign(reinterpret_cast<const uint8_t*>(p + n * width), reinterpret_cast<const uint8_t*>(p + n * width) + n);
    for (uint64_t i = 0; i < n; ++i) SMELT_CHECK(s.mask[i] <= 1, source, ": mask byte ", i, " is ", int(s.mask[i]), " (expected 0 or 1)");
  }
  return s;
}

TokenShard read_token_shard(const std::string& path) { return parse_token_shard(read_file(path), path); }

}  // namespace smelt
