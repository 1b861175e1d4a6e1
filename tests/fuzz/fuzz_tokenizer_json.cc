// libFuzzer target: tokenizer.json text must either load into a tokenizer that encodes and
// decodes text losslessly, or throw smelt::Error — never crash, hang or throw anything else.
#include <string>

#include "io/bpe_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const smelt::BpeTokenizer t = smelt::BpeTokenizer::from_json(smelt::parse_json_text(text, "fuzz.json"), "fuzz.json");
    const std::string sample = "Hello, world! It's 2026 \xF0\x9F\x98\x80  \n\tend";
    if (t.decode(t.encode(sample)) != sample) __builtin_trap();
  } catch (const smelt::Error&) {
  }
  return 0;
}
