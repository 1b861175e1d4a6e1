#include "io/safetensors.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "io/json_reader.h"

namespace smelt {

const Tensor* SafetensorsFile::find(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return &t;
  return nullptr;
}

const Tensor& SafetensorsFile::at(const std::string& name, const std::string& source) const {
  const Tensor* t = find(name);
  SMELT_CHECK(t != nullptr, source, ": no tensor named '", name, "'");
  return *t;
}

SafetensorsFile parse_safetensors(std::shared_ptr<Storage> bytes, const std::string& source) {
  const uint8_t* base = static_cast<const uint8_t*>(bytes->data());
  const uint64_t size = bytes->nbytes();
  SMELT_CHECK(size >= 8, source, ": truncated safetensors file (", size, " bytes, the header length alone needs 8)");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | base[i];
  SMELT_CHECK(header_len <= size - 8, source, ": header length ", header_len, " runs past the end of the file (", size, " bytes)");
  SMELT_CHECK(header_len <= (100u << 20), source, ": header length ", header_len, " exceeds 100 MiB");
  json header;
  try {
    header = json::parse(reinterpret_cast<const char*>(base + 8), reinterpret_cast<const char*>(base + 8 + header_len));
  } catch (const json::parse_error& e) {
    SMELT_FAIL(source, ": malformed safetensors header JSON at byte ", e.byte);
  } catch (const json::exception& e) {  // e.g. a number too large for a double
    SMELT_FAIL(source, ": invalid safetensors header JSON: ", e.what());
  }
  SMELT_CHECK(header.is_object(), source, ": safetensors header must be a JSON object");
  const uint64_t data_start = 8 + header_len, data_size = size - data_start;
  struct Entry { std::string name; DType dtype; Shape shape; uint64_t begin, end; };
  std::vector<Entry> entries;
  SafetensorsFile out;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") {
      SMELT_CHECK(it->is_object(), source, ": __metadata__ must be an object of strings");
      for (auto m = it->begin(); m != it->end(); ++m) {
        SMELT_CHECK(m->is_string(), source, ": __metadata__.", m.key(), " must be a string");
        out.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    const std::string where = source + ": tensor '" + name + "'";
    SMELT_CHECK(it->is_object(), where, ": entry must be an object");
    SMELT_CHECK(it->contains("dtype") && (*it)["dtype"].is_string(), where, ": missing string field 'dtype'");
    SMELT_CHECK(it->contains("shape") && (*it)["shape"].is_array(), where, ": missing array field 'shape'");
    SMELT_CHECK(it->contains("data_offsets") && (*it)["data_offsets"].is_array() && (*it)["data_offsets"].size() == 2, where,
                ": 'data_offsets' must be [begin, end]");
    Entry e;
    e.name = name;
    try {
      e.dtype = dtype_from_safetensors_name((*it)["dtype"].get<std::string>());
    } catch (const Error& err) {
      SMELT_FAIL(where, ": ", err.message());
    }
    uint64_t elems = 1;
    for (const json& d : (*it)["shape"]) {
      SMELT_CHECK(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0), where, ": shape entries must be non-negative integers");
      uint64_t dim = d.get<uint64_t>();
      SMELT_CHECK(dim == 0 || elems <= (1ull << 62) / dim, where, ": shape is too large");
      elems *= dim;
      e.shape.push_back(static_cast<int64_t>(dim));
    }
    for (const json& o : (*it)["data_offsets"])
      SMELT_CHECK(o.is_number_unsigned() || (o.is_number_integer() && o.get<int64_t>() >= 0), where, ": data_offsets must be non-negative integers");
    e.begin = (*it)["data_offsets"][0].get<uint64_t>();
    e.end = (*it)["data_offsets"][1].get<uint64_t>();
    SMELT_CHECK(e.begin <= e.end, where, ": data_offsets begin ", e.begin, " > end ", e.end);
    SMELT_CHECK(e.end <= data_size, where, ": data_offsets end ", e.end, " past the data section (", data_size, " bytes; file truncated?)");
    SMELT_CHECK(e.end - e.begin == elems * dtype_size(e.dtype), where, ": ", e.end - e.begin, " bytes for shape ",
                shape_str(e.shape), " of ", dtype_safetensors_name(e.dtype), " (needs ", elems * dtype_size(e.dtype), ")");
    SMELT_CHECK((data_start + e.begin) % dtype_size(e.dtype) == 0, where, ": data is not aligned to its element size");
    entries.push_back(std::move(e));
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < entries.size(); ++i)
    SMELT_CHECK(entries[i].begin >= entries[i - 1].end || entries[i - 1].begin == entries[i - 1].end, source, ": tensors '",
                entries[i - 1].name, "' and '", entries[i].name, "' overlap in the data section");
  for (const Entry& e : entries) {
    const int64_t offset_elems = static_cast<int64_t>((data_start + e.begin) / dtype_size(e.dtype));
    out.tensors.push_back({e.name, Tensor::view_of(bytes, e.shape, contiguous_strides(e.shape), offset_elems, e.dtype)});
  }
  return out;
}

SafetensorsFile read_safetensors(const std::string& path) { return parse_safetensors(map_file(path), path); }

std::string safetensors_bytes(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata,
                              const std::string& path) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::vector<Tensor> payload;
  for (const auto& [name, t] : tensors) {
    SMELT_CHECK(name != "__metadata__" && !header.contains(name), path, ": duplicate or reserved tensor name '", name, "'");
    SMELT_CHECK(!is_quantized(t.dtype()), path, ": tensor '", name, "' is ", dtype_name(t.dtype()),
                ", which safetensors cannot hold (save f32 or bf16 weights; quantised ones go to GGUF with smelt export)");
    // A device tensor (a model trained on a GPU) comes over to the host here, contiguous.
    Tensor c = !t.device().is_cpu() ? t.to(Device::cpu()) : t.is_contiguous() ? t : t.clone();
    const uint64_t nbytes = static_cast<uint64_t>(c.numel()) * dtype_size(c.dtype());
    header[name] = {{"dtype", dtype_safetensors_name(c.dtype())}, {"shape", c.shape()}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    payload.push_back(c);
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // pad so the data section starts 8-byte aligned
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((static_cast<uint64_t>(h.size()) >> (8 * i)) & 0xff);
  bytes += h;
  bytes.reserve(bytes.size() + offset);
  for (const Tensor& c : payload)
    bytes.append(static_cast<const char*>(c.raw_data()), static_cast<size_t>(c.numel()) * dtype_size(c.dtype()));
  return bytes;
}

void write_safetensors(const std::string& path, const NamedTensors& tensors, const std::map<std::string, std::string>& metadata) {
  write_file_atomic(path, safetensors_bytes(tensors, metadata, path));
}

}  // namespace smelt
