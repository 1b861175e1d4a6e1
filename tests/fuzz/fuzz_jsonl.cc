// libFuzzer target: a JSONL data file either yields documents (texts or conversations with
// known roles and an assistant turn) or throws smelt::Error naming the line.
#include <string>

#include "io/corpus.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    for (const smelt::Document& d : smelt::parse_documents(bytes, "fuzz.jsonl")) {
      if (d.is_chat()) {
        bool assistant = false;
        for (const auto& m : d.messages) assistant = assistant || m.role == "assistant";
        if (!assistant) __builtin_trap();
      }
    }
  } catch (const smelt::Error&) {
  }
  return 0;
}
