// Token shards: the on-disk form of a tokenised corpus. One shard is
//   a 64-byte header:  magic "SMELTTOK" | u32 version (1) | u32 bytes per token (2 or 4) |
//                      u64 token count | u64 checksum (FNV-1a 64 of everything after the header) |
//                      u32 flags (bit 0: a loss mask follows) | u32 vocabulary size | 24 zero bytes
//   the tokens, little-endian, then (with the mask flag) one byte per token, 0 or 1.
// Every field is checked on reading, and every token against the vocabulary size, so a
// truncated, corrupted or mismatched shard is refused with its name and the field at fault.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace smelt {

struct TokenShard {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> mask;  // empty, or one 0/1 per token (1 = the token is a training target)
  uint32_t vocab_size = 0;
};

// Encodes a shard (u16 tokens when the vocabulary fits, else u32).
std::string token_shard_bytes(const TokenShard& shard);
void write_token_shard(const std::string& path, const TokenShard& shard);  // atomic
TokenShard parse_token_shard(const std::string& bytes, const std::string& source);
TokenShard read_token_shard(const std::string& path);

}  // namespace smelt
