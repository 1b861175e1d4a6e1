#include "io/gguf.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <set>

#include "io/files.h"

namespace smelt {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian uint32
constexpr uint32_t kMaxDims = 4;         // GGML_MAX_DIMS

// Reads little-endian values from the file, checking each against the bytes left; `what` names
// the field being read in the error ("key 'general.name'", "tensor 3's name").
class Cursor {
 public:
  Cursor(const uint8_t* base, uint64_t size, const std::string& source) : base_(base), size_(size), source_(source) {}

  uint64_t position() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }

  const uint8_t* take(uint64_t n, const std::string& what) {
    SMELT_CHECK(n <= left(), source_, ": ", what, ": needs ", n, " bytes at offset ", pos_, " but the file has ", left(),
                " left (truncated or a lying length)");
    const uint8_t* p = base_ + pos_;
    pos_ += n;
    return p;
  }
  template <typename T>
  T read(const std::string& what) {
    T v;
    std::memcpy(&v, take(sizeof(T), what), sizeof(T));
    return v;
  }
  std::string string(const std::string& what) {
    const uint64_t n = read<uint64_t>(what + " (string length)");
    const uint8_t* p = take(n, what + " (a string of " + std::to_string(n) + " bytes)");
    return std::string(reinterpret_cast<const char*>(p), n);
  }

 private:
  const uint8_t* base_;
  uint64_t size_, pos_ = 0;
  const std::string& source_;
};

// Smallest encoded size of a value of type t (arrays: their type and count fields).
uint64_t min_value_bytes(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8: case GgufValueType::I8: case GgufValueType::Bool: return 1;
    case GgufValueType::U16: case GgufValueType::I16: return 2;
    case GgufValueType::U32: case GgufValueType::I32: case GgufValueType::F32: return 4;
    case GgufValueType::U64: case GgufValueType::I64: case GgufValueType::F64: case GgufValueType::String: return 8;
    case GgufValueType::Array: return 12;
  }
  return 1;
}

GgufValueType value_type(uint32_t raw, const std::string& source, const std::string& what) {
  SMELT_CHECK(raw <= static_cast<uint32_t>(GgufValueType::F64), source, ": ", what, ": unknown value type ", raw, " (GGUF has 0..12)");
  return static_cast<GgufValueType>(raw);
}

GgufValue read_scalar(Cursor& c, GgufValueType t, const std::string& what, const std::string& source) {
  GgufValue v;
  v.type = t;
  switch (t) {
    case GgufValueType::U8: v.u = c.read<uint8_t>(what); break;
    case GgufValueType::I8: v.i = c.read<int8_t>(what); break;
    case GgufValueType::U16: v.u = c.read<uint16_t>(what); break;
    case GgufValueType::I16: v.i = c.read<int16_t>(what); break;
    case GgufValueType::U32: v.u = c.read<uint32_t>(what); break;
    case GgufValueType::I32: v.i = c.read<int32_t>(what); break;
    case GgufValueType::U64: v.u = c.read<uint64_t>(what); break;
    case GgufValueType::I64: v.i = c.read<int64_t>(what); break;
    case GgufValueType::F32: v.f = c.read<float>(what); break;
    case GgufValueType::F64: v.f = c.read<double>(what); break;
    case GgufValueType::Bool: {
      const uint8_t b = c.read<uint8_t>(what);
      SMELT_CHECK(b <= 1, source, ": ", what, ": a bool must be 0 or 1, got ", int{b});
      v.u = b;
      break;
    }
    case GgufValueType::String: v.s = c.string(what); break;
    case GgufValueType::Array: SMELT_FAIL(source, ": ", what, ": arrays of arrays are not supported");
  }
  return v;
}

GgufValue read_value(Cursor& c, GgufValueType t, const std::string& what, const std::string& source) {
  if (t != GgufValueType::Array) return read_scalar(c, t, what, source);
  GgufValue v;
  v.type = GgufValueType::Array;
  v.element_type = value_type(c.read<uint32_t>(what + " (array type)"), source, what);
  const uint64_t n = c.read<uint64_t>(what + " (array length)");
  SMELT_CHECK(n <= c.left() / min_value_bytes(v.element_type), source, ": ", what, ": an array of ", n, " ",
              gguf_value_type_name(v.element_type), " values cannot fit in the ", c.left(), " bytes left");
  v.items.reserve(n);
  for (uint64_t k = 0; k < n; ++k) v.items.push_back(read_scalar(c, v.element_type, what, source));
  return v;
}

std::string describe(const GgufValue& v) {
  return v.type == GgufValueType::Array ? std::string("array of ") + gguf_value_type_name(v.element_type) : gguf_value_type_name(v.type);
}

int64_t as_integer(const GgufValue& v, const std::string& where) {
  SMELT_CHECK(v.is_integer(), where, ": expected an integer, got ", describe(v));
  if (v.type == GgufValueType::I8 || v.type == GgufValueType::I16 || v.type == GgufValueType::I32 || v.type == GgufValueType::I64) return v.i;
  SMELT_CHECK(v.u <= static_cast<uint64_t>(INT64_MAX), where, ": ", v.u, " is too large");
  return static_cast<int64_t>(v.u);
}

void parse_metadata(Cursor& c, uint64_t count, GgufFile& f) {
  std::set<std::string> seen;
  for (uint64_t k = 0; k < count; ++k) {
    const std::string key = c.string("metadata key " + std::to_string(k));
    const std::string what = "key '" + key + "'";
    SMELT_CHECK(seen.insert(key).second, f.source, ": ", what, " appears twice");
    const GgufValueType t = value_type(c.read<uint32_t>(what + " (value type)"), f.source, what);
    f.metadata.emplace_back(key, read_value(c, t, what, f.source));
  }
  if (const GgufValue* a = f.find("general.alignment")) {
    SMELT_CHECK(a->type == GgufValueType::U32, f.source, ": key 'general.alignment': expected u32, got ", describe(*a));
    SMELT_CHECK(a->u > 0 && (a->u & (a->u - 1)) == 0, f.source, ": key 'general.alignment': ", a->u, " is not a power of two");
    f.alignment = a->u;
  }
}

GgufTensorInfo parse_tensor_record(Cursor& c, uint64_t index, const std::string& source) {
  GgufTensorInfo t;
  t.name = c.string("tensor " + std::to_string(index) + "'s name");
  const std::string what = "tensor '" + t.name + "'";
  const uint32_t n_dims = c.read<uint32_t>(what + " (dimension count)");
  SMELT_CHECK(n_dims >= 1 && n_dims <= kMaxDims, source, ": ", what, ": ", n_dims, " dimensions (GGUF allows 1..", kMaxDims, ")");
  uint64_t numel = 1;
  for (uint32_t d = 0; d < n_dims; ++d) {
    const uint64_t n = c.read<uint64_t>(what + " (dimension)");
    SMELT_CHECK(n >= 1 && n <= (uint64_t{1} << 40), source, ": ", what, ": dimension ", d, " is ", n, " (expected 1..2^40)");
    SMELT_CHECK(numel <= (uint64_t{1} << 50) / n, source, ": ", what, ": too many elements");
    numel *= n;
    t.dims.push_back(static_cast<int64_t>(n));
  }
  const uint32_t raw_type = c.read<uint32_t>(what + " (type)");
  const GgmlTypeInfo* info = ggml_type_info(raw_type);
  SMELT_CHECK(info, source, ": ", what, ": tensor type ", ggml_type_name(raw_type), " is not supported (smelt reads ",
              ggml_supported_type_names(), ")");
  t.type = info->type;
  SMELT_CHECK(t.dims[0] % info->block_values == 0, source, ": ", what, ": its rows of ", t.dims[0], " values are not whole ",
              info->name, " blocks of ", info->block_values);
  t.nbytes = numel / info->block_values * info->block_bytes;
  t.offset = c.read<uint64_t>(what + " (offset)");
  return t;
}

void check_tensor_placement(GgufFile& f, uint64_t file_size) {
  const uint64_t data_size = f.tensors.empty() ? 0 : file_size - f.data_start;
  std::set<std::string> names;
  for (const GgufTensorInfo& t : f.tensors) {
    const std::string what = f.source + ": tensor '" + t.name + "'";
    SMELT_CHECK(names.insert(t.name).second, what, ": the name appears twice");
    SMELT_CHECK(t.offset % f.alignment == 0, what, ": offset ", t.offset, " is not a multiple of the alignment ", f.alignment);
    SMELT_CHECK(t.offset <= data_size && t.nbytes <= data_size - t.offset, what, ": its ", t.nbytes, " bytes at data offset ", t.offset,
                " run past the end of the file (the data section has ", data_size, " bytes; truncated?)");
  }
  std::vector<const GgufTensorInfo*> by_offset;
  for (const GgufTensorInfo& t : f.tensors) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t k = 1; k < by_offset.size(); ++k)
    SMELT_CHECK(by_offset[k]->offset >= by_offset[k - 1]->offset + by_offset[k - 1]->nbytes, f.source, ": tensors '",
                by_offset[k - 1]->name, "' and '", by_offset[k]->name, "' overlap in the data section");
}

uint64_t align_up(uint64_t n, uint64_t alignment) { return (n + alignment - 1) / alignment * alignment; }

}  // namespace

const char* gguf_value_type_name(GgufValueType t) {
  static const char* names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"};
  const auto k = static_cast<uint32_t>(t);
  return k < 13 ? names[k] : "?";
}

GgufValue GgufValue::of_u32(uint32_t v) {
  GgufValue g;
  g.type = GgufValueType::U32;
  g.u = v;
  return g;
}
GgufValue GgufValue::of_i32(int32_t v) {
  GgufValue g;
  g.type = GgufValueType::I32;
  g.i = v;
  return g;
}
GgufValue GgufValue::of_f32(float v) {
  GgufValue g;
  g.type = GgufValueType::F32;
  g.f = v;
  return g;
}
GgufValue GgufValue::of_bool(bool v) {
  GgufValue g;
  g.type = GgufValueType::Bool;
  g.u = v ? 1 : 0;
  return g;
}
GgufValue GgufValue::of_string(std::string v) {
  GgufValue g;
  g.type = GgufValueType::String;
  g.s = std::move(v);
  return g;
}
GgufValue GgufValue::of_strings(const std::vector<std::string>& v) {
  GgufValue g;
  g.type = GgufValueType::Array;
  g.element_type = GgufValueType::String;
  for (const std::string& s : v) g.items.push_back(of_string(s));
  return g;
}
GgufValue GgufValue::of_i32s(const std::vector<int32_t>& v) {
  GgufValue g;
  g.type = GgufValueType::Array;
  g.element_type = GgufValueType::I32;
  for (int32_t x : v) g.items.push_back(of_i32(x));
  return g;
}

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufValueType::U8: case GgufValueType::I8: case GgufValueType::U16: case GgufValueType::I16: case GgufValueType::U32:
    case GgufValueType::I32: case GgufValueType::U64: case GgufValueType::I64: return true;
    default: return false;
  }
}

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

Shape GgufTensorInfo::shape() const { return Shape(dims.rbegin(), dims.rend()); }

// ---- Metadata access.

const GgufValue* GgufFile::find(const std::string& key) const {
  for (const auto& [k, v] : metadata)
    if (k == key) return &v;
  return nullptr;
}

namespace {
const GgufValue& require(const GgufFile& f, const std::string& key) {
  const GgufValue* v = f.find(key);
  SMELT_CHECK(v, f.source, ": metadata key '", key, "' is missing");
  return *v;
}
std::string where(const GgufFile& f, const std::string& key) { return f.source + ": key '" + key + "'"; }
}  // namespace

int64_t GgufFile::integer(const std::string& key) const { return as_integer(require(*this, key), where(*this, key)); }
int64_t GgufFile::integer(const std::string& key, int64_t fallback) const { return has(key) ? integer(key) : fallback; }

double GgufFile::number(const std::string& key) const {
  const GgufValue& v = require(*this, key);
  if (v.is_integer()) return static_cast<double>(as_integer(v, where(*this, key)));
  SMELT_CHECK(v.is_number(), where(*this, key), ": expected a number, got ", describe(v));
  return v.f;
}
double GgufFile::number(const std::string& key, double fallback) const { return has(key) ? number(key) : fallback; }

bool GgufFile::boolean(const std::string& key, bool fallback) const {
  const GgufValue* v = find(key);
  if (!v) return fallback;
  SMELT_CHECK(v->type == GgufValueType::Bool, where(*this, key), ": expected a bool, got ", describe(*v));
  return v->u != 0;
}

std::string GgufFile::string(const std::string& key) const {
  const GgufValue& v = require(*this, key);
  SMELT_CHECK(v.type == GgufValueType::String, where(*this, key), ": expected a string, got ", describe(v));
  return v.s;
}
std::string GgufFile::string(const std::string& key, const std::string& fallback) const { return has(key) ? string(key) : fallback; }

std::vector<std::string> GgufFile::strings(const std::string& key) const {
  const GgufValue& v = require(*this, key);
  SMELT_CHECK(v.type == GgufValueType::Array && v.element_type == GgufValueType::String, where(*this, key),
              ": expected an array of strings, got ", describe(v));
  std::vector<std::string> out;
  out.reserve(v.items.size());
  for (const GgufValue& s : v.items) out.push_back(s.s);
  return out;
}

std::vector<int64_t> GgufFile::integers(const std::string& key) const {
  const GgufValue& v = require(*this, key);
  SMELT_CHECK(v.type == GgufValueType::Array && (v.items.empty() || v.items[0].is_integer()), where(*this, key),
              ": expected an array of integers, got ", describe(v));
  std::vector<int64_t> out;
  out.reserve(v.items.size());
  for (const GgufValue& x : v.items) out.push_back(as_integer(x, where(*this, key)));
  return out;
}

// ---- Tensors.

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  for (const GgufTensorInfo& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

const GgufTensorInfo& GgufFile::tensor(const std::string& name) const {
  const GgufTensorInfo* t = find_tensor(name);
  SMELT_CHECK(t, source, ": no tensor named '", name, "'");
  return *t;
}

const uint8_t* GgufFile::tensor_bytes(const GgufTensorInfo& t) const {
  return static_cast<const uint8_t*>(bytes->data()) + data_start + t.offset;
}

Tensor GgufFile::dequantize(const GgufTensorInfo& t) const {
  Tensor out = Tensor::empty(t.shape());
  ggml_dequantize(t.type, tensor_bytes(t), out.data<float>(), t.numel());
  return out;
}

Tensor GgufFile::read(const GgufTensorInfo& t, DType keep) const {
  // Q4_K keeps Q4_0 too: its fallback for rows that are not whole super-blocks (see
  // Transformer::store_weights_in), as smelt's own q4_k exports write them.
  const bool same = (keep == DType::Q8_0 && t.type == GgmlType::Q8_0) || (keep == DType::Q4_0 && t.type == GgmlType::Q4_0) ||
                    (keep == DType::Q4_K && (t.type == GgmlType::Q4_K || t.type == GgmlType::Q4_0));
  if (!same) return dequantize(t);
  const DType as = t.type == GgmlType::Q4_0 ? DType::Q4_0 : keep;
  Tensor out = Tensor::empty(t.shape(), as);  // the block layouts are the same (runtime/quant.h)
  std::memcpy(out.device_data(), tensor_bytes(t), dtype_bytes(as, t.numel()));
  return out;
}

GgufFile parse_gguf(std::shared_ptr<Storage> storage, const std::string& source) {
  GgufFile f;
  f.source = source;
  f.bytes = storage;
  const uint64_t size = storage->nbytes();
  Cursor c(static_cast<const uint8_t*>(storage->data()), size, f.source);
  const uint32_t magic = c.read<uint32_t>("magic");
  SMELT_CHECK(magic == kMagic, source, ": not a GGUF file (the first 4 bytes are not \"GGUF\")");
  f.version = c.read<uint32_t>("version");
  SMELT_CHECK(f.version == 2 || f.version == 3, source, ": GGUF version ", f.version,
              " is not supported (smelt reads versions 2 and 3; a huge number means a big-endian file)");
  const uint64_t tensor_count = c.read<uint64_t>("tensor count");
  const uint64_t kv_count = c.read<uint64_t>("metadata count");
  SMELT_CHECK(kv_count <= c.left() / 13, source, ": metadata count ", kv_count, " cannot fit in the ", c.left(), " bytes left");
  parse_metadata(c, kv_count, f);
  SMELT_CHECK(tensor_count <= c.left() / 32, source, ": tensor count ", tensor_count, " cannot fit in the ", c.left(), " bytes left");
  for (uint64_t k = 0; k < tensor_count; ++k) f.tensors.push_back(parse_tensor_record(c, k, source));
  f.data_start = align_up(c.position(), f.alignment);
  SMELT_CHECK(f.tensors.empty() || f.data_start <= size, source, ": the data section would start at byte ", f.data_start,
              ", past the end of the file (", size, " bytes)");
  check_tensor_placement(f, size);
  return f;
}

GgufFile read_gguf(const std::string& path) { return parse_gguf(map_file(path), path); }

bool is_gguf_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

// ---- Writing.

namespace {

class Writer {
 public:
  std::string out;
  template <typename T>
  void put(T v) {
    out.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  void string(const std::string& s) {
    put<uint64_t>(s.size());
    out += s;
  }
  void scalar(const GgufValue& v) {
    switch (v.type) {
      case GgufValueType::U8: put<uint8_t>(static_cast<uint8_t>(v.u)); break;
      case GgufValueType::I8: put<int8_t>(static_cast<int8_t>(v.i)); break;
      case GgufValueType::U16: put<uint16_t>(static_cast<uint16_t>(v.u)); break;
      case GgufValueType::I16: put<int16_t>(static_cast<int16_t>(v.i)); break;
      case GgufValueType::U32: put<uint32_t>(static_cast<uint32_t>(v.u)); break;
      case GgufValueType::I32: put<int32_t>(static_cast<int32_t>(v.i)); break;
      case GgufValueType::U64: put<uint64_t>(v.u); break;
      case GgufValueType::I64: put<int64_t>(v.i); break;
      case GgufValueType::F32: put<float>(static_cast<float>(v.f)); break;
      case GgufValueType::F64: put<double>(v.f); break;
      case GgufValueType::Bool: put<uint8_t>(v.u ? 1 : 0); break;
      case GgufValueType::String: string(v.s); break;
      case GgufValueType::Array: SMELT_FAIL("GGUF writer: arrays of arrays are not supported");
    }
  }
  void value(const GgufValue& v) {
    put<uint32_t>(static_cast<uint32_t>(v.type));
    if (v.type != GgufValueType::Array) return scalar(v);
    put<uint32_t>(static_cast<uint32_t>(v.element_type));
    put<uint64_t>(v.items.size());
    for (const GgufValue& item : v.items) scalar(item);
  }
  void pad_to(uint64_t alignment) { out.append(align_up(out.size(), alignment) - out.size(), '\0'); }
};

}  // namespace

std::string gguf_bytes(const std::vector<std::pair<std::string, GgufValue>>& metadata, const std::vector<GgufTensorToWrite>& tensors,
                       const std::string& source) {
  constexpr uint64_t alignment = 32;
  Writer w;
  w.put<uint32_t>(kMagic);
  w.put<uint32_t>(3);
  w.put<uint64_t>(tensors.size());
  w.put<uint64_t>(metadata.size());
  for (const auto& [key, v] : metadata) {
    SMELT_CHECK(key != "general.alignment" || (v.type == GgufValueType::U32 && v.u == alignment), source,
                ": general.alignment other than 32 is not written");
    w.string(key);
    w.value(v);
  }
  uint64_t offset = 0;
  std::vector<uint64_t> offsets;
  for (const GgufTensorToWrite& t : tensors) {
    SMELT_CHECK(t.values.dtype() == DType::F32 && t.values.dim() >= 1 && t.values.dim() <= 4, source, ": tensor '", t.name,
                "': expected f32 values of 1 to 4 dimensions");
    const Shape& shape = t.values.shape();
    const GgmlTypeInfo* info = ggml_type_info(static_cast<uint32_t>(t.type));
    SMELT_CHECK(shape.back() % info->block_values == 0, source, ": tensor '", t.name, "': rows of ", shape.back(),
                " values are not whole ", info->name, " blocks of ", info->block_values);
    w.string(t.name);
    w.put<uint32_t>(static_cast<uint32_t>(shape.size()));
    for (auto d = shape.rbegin(); d != shape.rend(); ++d) w.put<uint64_t>(static_cast<uint64_t>(*d));
    w.put<uint32_t>(static_cast<uint32_t>(t.type));
    w.put<uint64_t>(offset);
    offsets.push_back(offset);
    offset = align_up(offset + ggml_row_bytes(t.type, t.values.numel()), alignment);
  }
  w.pad_to(alignment);
  const uint64_t data_start = w.out.size();
  w.out.resize(data_start + offset, '\0');
  for (size_t k = 0; k < tensors.size(); ++k) {
    const Tensor values = tensors[k].values.is_contiguous() ? tensors[k].values : tensors[k].values.clone();
    ggml_quantize(tensors[k].type, values.data<float>(), reinterpret_cast<uint8_t*>(&w.out[data_start + offsets[k]]), values.numel());
  }
  return w.out;
}

void write_gguf(const std::string& path, const std::vector<std::pair<std::string, GgufValue>>& metadata,
                const std::vector<GgufTensorToWrite>& tensors) {
  write_file_atomic(path, gguf_bytes(metadata, tensors, path));
}

}  // namespace smelt
