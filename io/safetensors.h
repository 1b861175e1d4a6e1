// safetensors files: an 8-byte little-endian header length, a JSON header mapping tensor names
// to {dtype, shape, data_offsets}, then the raw data. Reading memory-maps the file and validates
// everything before any tensor is used; writing goes to a temporary name, fsyncs and renames.
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "io/files.h"
#include "runtime/tensor.h"

namespace smelt {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

struct SafetensorsFile {
  NamedTensors tensors;  // in data-offset order; views into the mapped file (copy-on-write)
  std::map<std::string, std::string> metadata;
  const Tensor* find(const std::string& name) const;
  const Tensor& at(const std::string& name, const std::string& source) const;  // throws naming source
};

SafetensorsFile read_safetensors(const std::string& path);
// Parses from memory (the same checks; used by the reader and by the fuzz target).
SafetensorsFile parse_safetensors(std::shared_ptr<Storage> bytes, const std::string& source);

void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// The file's bytes in memory (`path` only names it in errors).
std::string safetensors_bytes(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata = {},
                              const std::string& path = "safetensors");


}  // namespace smelt
