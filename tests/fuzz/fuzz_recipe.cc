// libFuzzer target: recipe / config.json text must either parse into a validated configuration
// or throw smelt::Error with a message — never crash, hang or throw anything else.
#include <string>

#include "io/config_json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    smelt::Recipe r = smelt::parse_recipe(text, "fuzz.json");
    (void)r.model.parameter_count();
  } catch (const smelt::Error&) {
  }
  return 0;
}
