// libFuzzer target: any byte string given to the safetensors parser must either parse into
// tensors whose every byte lies inside the buffer, or throw smelt::Error — never crash or read
// out of bounds (AddressSanitizer watches).
#include <cstring>

#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto storage = std::make_shared<smelt::Storage>(size, smelt::Device::cpu());
  if (size > 0) std::memcpy(storage->data(), data, size);
  try {
    smelt::SafetensorsFile f = smelt::parse_safetensors(storage, "fuzz.safetensors");
    for (const auto& [name, t] : f.tensors) {
      if (t.numel() == 0) continue;
      // Touch the first and last element of each tensor: out-of-range views would trip ASan.
      const uint8_t* first = static_cast<const uint8_t*>(t.raw_data());
      volatile uint8_t sink = first[0] ^ first[t.numel() * smelt::dtype_size(t.dtype()) - 1];
      (void)sink;
    }
  } catch (const smelt::Error&) {
  }
  return 0;
}
