// libFuzzer target: any bytes (valid UTF-8 or not) encode with the fixture tokenizer, with and
// without special tokens, and decode back to exactly the same bytes.
#include <string>

#include "io/bpe_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const smelt::BpeTokenizer t = smelt::BpeTokenizer::from_file(SMELT_FIXTURE_DIR "/smelt_tokenizer.json");
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (bool special : {false, true}) {
    const std::vector<int32_t> ids = t.encode(text, special);
    if (t.decode(ids) != text) __builtin_trap();
    if (!special)
      for (int32_t id : ids)
        if (t.is_special(id)) __builtin_trap();  // ordinary text never yields control tokens
  }
  return 0;
}
