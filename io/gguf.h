// GGUF files (llama.cpp's model format, versions 2 and 3): a header, typed metadata key/value
// pairs, tensor records (name, dimensions, ggml type, offset), then the aligned tensor data.
// Reading memory-maps the file and validates all of it before any tensor is used (magic,
// version, counts, every string and array length against the bytes left, value types,
// alignment, each tensor's dimensions, type, offset and size inside the data section, no two
// tensors overlapping), naming the key or tensor at fault. Writing builds the file in memory
// and replaces the target atomically.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "io/ggml_types.h"
#include "runtime/storage.h"
#include "runtime/tensor.h"

namespace smelt {

// GGUF's metadata value types (their numbers are the file's).
enum class GgufValueType : uint32_t { U8 = 0, I8, U16, I16, U32, I32, F32, Bool, String, Array, U64, I64, F64 };
const char* gguf_value_type_name(GgufValueType t);

struct GgufValue {
  GgufValueType type = GgufValueType::U32;
  GgufValueType element_type = GgufValueType::U32;  // of an array's items
  uint64_t u = 0;   // unsigned integers and booleans
  int64_t i = 0;    // signed integers
  double f = 0;     // floats
  std::string s;
  std::vector<GgufValue> items;

  static GgufValue of_u32(uint32_t v);
  static GgufValue of_i32(int32_t v);
  static GgufValue of_f32(float v);
  static GgufValue of_bool(bool v);
  static GgufValue of_string(std::string v);
  static GgufValue of_strings(const std::vector<std::string>& v);
  static GgufValue of_i32s(const std::vector<int32_t>& v);

  bool is_integer() const;
  bool is_number() const { return is_integer() || type == GgufValueType::F32 || type == GgufValueType::F64; }
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // ggml order: dims[0] is the innermost (contiguous) one
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;        // from the start of the data section
  uint64_t nbytes = 0;
  int64_t numel() const;
  // The PyTorch/safetensors shape (outermost first: dims reversed).
  Shape shape() const;
};

class GgufFile {
 public:
  uint32_t version = 3;
  uint64_t alignment = 32;
  uint64_t data_start = 0;  // file offset of the data section
  std::string source;
  std::vector<std::pair<std::string, GgufValue>> metadata;  // in file order
  std::vector<GgufTensorInfo> tensors;                      // in file order

  const GgufValue* find(const std::string& key) const;
  bool has(const std::string& key) const { return find(key) != nullptr; }
  // Typed reads of metadata; each throws naming the file and key when it is missing or of
  // another type (integers accept any integer type that holds the value).
  int64_t integer(const std::string& key) const;
  int64_t integer(const std::string& key, int64_t fallback) const;
  double number(const std::string& key) const;
  double number(const std::string& key, double fallback) const;
  bool boolean(const std::string& key, bool fallback) const;
  std::string string(const std::string& key) const;
  std::string string(const std::string& key, const std::string& fallback) const;
  std::vector<std::string> strings(const std::string& key) const;
  std::vector<int64_t> integers(const std::string& key) const;

  const GgufTensorInfo* find_tensor(const std::string& name) const;
  const GgufTensorInfo& tensor(const std::string& name) const;  // throws naming the file
  const uint8_t* tensor_bytes(const GgufTensorInfo& t) const;
  // The tensor decoded to f32, in PyTorch's shape (a fresh CPU tensor).
  Tensor dequantize(const GgufTensorInfo& t) const;
  // The tensor as stored when its type is `keep` (Q8_0 or Q4_0: the file's own blocks, copied),
  // else decoded to f32 like dequantize.
  Tensor read(const GgufTensorInfo& t, DType keep) const;

  std::shared_ptr<Storage> bytes;  // the mapped file
};

GgufFile read_gguf(const std::string& path);
// Parses from memory (the same checks; used by the reader and by the fuzz target).
GgufFile parse_gguf(std::shared_ptr<Storage> bytes, const std::string& source);
// True when the file starts with GGUF's magic (how `--model` tells a GGUF from a directory).
bool is_gguf_file(const std::string& path);

// A tensor to write: f32 values in PyTorch's shape, stored as `type`.
struct GgufTensorToWrite {
  std::string name;
  Tensor values;
  GgmlType type = GgmlType::F32;
};

// The whole file (version 3, alignment 32) in memory; `source` names it in errors.
std::string gguf_bytes(const std::vector<std::pair<std::string, GgufValue>>& metadata, const std::vector<GgufTensorToWrite>& tensors,
                       const std::string& source);
void write_gguf(const std::string& path, const std::vector<std::pair<std::string, GgufValue>>& metadata,
                const std::vector<GgufTensorToWrite>& tensors);

}  // namespace smelt
