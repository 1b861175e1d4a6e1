// libFuzzer target: any byte string given to the GGUF parser must either parse into metadata
// and tensors whose every byte lies inside the buffer (each tensor is decoded; AddressSanitizer
// watches the reads), or throw smelt::Error — never crash, hang or read out of bounds.
#include <cstring>
#include <vector>

#include "io/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // An exactly-sized heap copy, so a read one byte past the end is caught.
  auto* copy = new uint8_t[size > 0 ? size : 1];
  if (size > 0) std::memcpy(copy, data, size);
  auto storage = std::make_shared<smelt::Storage>(copy, size, smelt::Device::cpu(), [copy] { delete[] copy; });
  try {
    const smelt::GgufFile f = smelt::parse_gguf(storage, "fuzz.gguf");
    for (const smelt::GgufTensorInfo& t : f.tensors) {
      if (t.numel() > (1 << 20)) continue;
      std::vector<float> out(static_cast<size_t>(t.numel()));
      smelt::ggml_dequantize(t.type, f.tensor_bytes(t), out.data(), t.numel());
    }
  } catch (const smelt::Error&) {
  }
  return 0;
}
