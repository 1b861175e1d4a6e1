// libFuzzer target: token shard bytes either parse into tokens within the vocabulary (and encode
// back to the same bytes) or throw smelt::Error.
#include <string>

#include "io/token_shard.h"
#include "runtime/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    const smelt::TokenShard s = smelt::parse_token_shard(bytes, "fuzz.tok");
    if (smelt::token_shard_bytes(s) != bytes) __builtin_trap();
  } catch (const smelt::Error&) {
  }
  return 0;
}
