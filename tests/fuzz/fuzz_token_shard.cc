// libFuzzer target: token shard bytes either parse into tokens within the vocabulary (and the
// shard, encoded again and parsed again, is the same shard) or throw smelt::Error.
// Not a byte-for-byte round trip: a valid shard may use 4-byte tokens for a small vocabulary, or
// set the mask flag with zero tokens, and smelt writes those canonically (2 bytes, no flag).
#include <string>

#include "io/token_shard.h"
#include "runtime/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    const smelt::TokenShard s = smelt::parse_token_shard(bytes, "fuzz.tok");
    const smelt::TokenShard again = smelt::parse_token_shard(smelt::token_shard_bytes(s), "again.tok");
    if (again.tokens != s.tokens || again.mask != s.mask || again.vocab_size != s.vocab_size) __builtin_trap();
  } catch (const smelt::Error&) {
  }
  return 0;
}
