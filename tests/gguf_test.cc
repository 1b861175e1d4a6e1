// GGUF: every block format decoded as the gguf Python package decodes it (committed fixture),
// Q8_0/Q4_0 encoded byte for byte as it encodes them, metadata of every type read back, a
// written file read back, and every kind of truncated or lying file refused with the key or
// tensor named.
#include <cstring>
#include <fstream>

#include "io/gguf.h"
#include "io/safetensors.h"
#include "tests/test_util.h"

namespace smelt {
namespace {

const std::string kFixture = SMELT_FIXTURE_DIR "/gguf_quants.gguf";

std::string parse_error(const std::string& bytes) {
  auto storage = std::make_shared<Storage>(std::max<size_t>(bytes.size(), 1), Device::cpu());
  std::memcpy(storage->data(), bytes.data(), bytes.size());
  auto exact = std::make_shared<Storage>(storage->data(), bytes.size(), Device::cpu(), [storage] {});
  try {
    parse_gguf(exact, "bad.gguf");
  } catch (const Error& e) {
    return e.message();
  }
  return "";
}

std::string fixture_bytes() {
  std::ifstream in(kFixture, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(Gguf, DecodesEveryBlockFormatAsGgufPy) {
  const GgufFile f = read_gguf(kFixture);
  const SafetensorsFile expected = read_safetensors(SMELT_FIXTURE_DIR "/gguf_quants_expected.safetensors");
  int checked = 0;
  for (const auto& [name, want] : expected.tensors) {
    const Tensor got = f.dequantize(f.tensor(name));
    ASSERT_EQ(got.shape(), want.shape()) << name;
    const std::vector<float> g = got.to_vector(), w = want.to_vector();
    for (size_t i = 0; i < g.size(); ++i) ASSERT_EQ(g[i], w[i]) << name << " value " << i;
    ++checked;
  }
  EXPECT_EQ(checked, 11);  // 8 block formats and F32, F16, BF16
}

TEST(Gguf, EncodesQ8_0AndQ4_0ByteForByteAsGgufPy) {
  const GgufFile f = read_gguf(kFixture);
  const Tensor input = f.dequantize(f.tensor("quantize.input"));
  for (auto [name, type] : {std::pair{"quantize.q8_0", GgmlType::Q8_0}, std::pair{"quantize.q4_0", GgmlType::Q4_0}}) {
    const GgufTensorInfo& want = f.tensor(name);
    std::vector<uint8_t> got(want.nbytes);
    ggml_quantize(type, input.data<float>(), got.data(), input.numel());
    for (size_t i = 0; i < want.nbytes; ++i)
      ASSERT_EQ(int{got[i]}, int{f.tensor_bytes(want)[i]}) << name << " byte " << i << " (block " << i / ggml_type_info(static_cast<uint32_t>(type))->block_bytes << ")";
  }
}

TEST(Gguf, ReadsMetadataOfEveryType) {
  const GgufFile f = read_gguf(kFixture);
  EXPECT_EQ(f.version, 3u);
  EXPECT_EQ(f.string("general.architecture"), "smelt-fixture");
  EXPECT_EQ(f.integer("test.u8"), 200);
  EXPECT_EQ(f.integer("test.i8"), -100);
  EXPECT_EQ(f.integer("test.u16"), 60000);
  EXPECT_EQ(f.integer("test.i16"), -30000);
  EXPECT_EQ(f.integer("test.u32"), 4000000000);
  EXPECT_EQ(f.integer("test.i32"), -2000000000);
  EXPECT_EQ(f.integer("test.u64"), (int64_t{1} << 40) + 3);
  EXPECT_EQ(f.integer("test.i64"), -(int64_t{1} << 40) - 3);
  EXPECT_EQ(f.number("test.f32"), 0.25);
  EXPECT_EQ(f.number("test.f64"), -1.5e300);
  EXPECT_TRUE(f.boolean("test.bool", false));
  EXPECT_EQ(f.string("test.string"), "h\xc3\xa9llo w\xc3\xb6rld");
  EXPECT_EQ(f.strings("test.strings"), (std::vector<std::string>{"a", "", "\xc3\xa7 c"}));
  EXPECT_EQ(f.integers("test.ints"), (std::vector<int64_t>{1, -2, 3}));
  testing::expect_error_mentions([&] { f.integer("test.string"); }, {"gguf_quants.gguf: key 'test.string': expected an integer, got string"});
  testing::expect_error_mentions([&] { f.string("llama.block_count"); }, {"metadata key 'llama.block_count' is missing"});
}

TEST(Gguf, WrittenFileReadsBack) {
  Philox rng(7);
  const Tensor a = Tensor::randn({3, 64}, rng);
  const Tensor b = Tensor::randn({2, 2, 32}, rng);
  const std::string path = ::testing::TempDir() + "written.gguf";
  write_gguf(path, {{"general.architecture", GgufValue::of_string("llama")}, {"x.n", GgufValue::of_u32(9)},
                    {"x.names", GgufValue::of_strings({"p", "q"})}},
             {{"a", a, GgmlType::F32}, {"b", b, GgmlType::Q8_0}, {"c", a, GgmlType::BF16}});
  EXPECT_TRUE(is_gguf_file(path));
  const GgufFile f = read_gguf(path);
  EXPECT_EQ(f.integer("x.n"), 9);
  EXPECT_EQ(f.strings("x.names"), (std::vector<std::string>{"p", "q"}));
  EXPECT_EQ(f.dequantize(f.tensor("a")).to_vector(), a.to_vector());
  EXPECT_EQ(f.tensor("b").shape(), (Shape{2, 2, 32}));
  const std::vector<float> q = f.dequantize(f.tensor("b")).to_vector(), want = b.to_vector();
  float amax = 0;
  for (float v : want) amax = std::max(amax, std::fabs(v));
  for (size_t i = 0; i < q.size(); ++i) EXPECT_NEAR(q[i], want[i], amax / 127 * 0.51 + 1e-3);
  const std::vector<float> h = f.dequantize(f.tensor("c")).to_vector(), full = a.to_vector();
  for (size_t i = 0; i < h.size(); ++i) EXPECT_NEAR(h[i], full[i], std::fabs(full[i]) / 128);
}

// Byte offsets inside the fixture, found by scanning for known strings.
size_t find(const std::string& bytes, const std::string& what) {
  const size_t at = bytes.find(what);
  EXPECT_NE(at, std::string::npos) << what;
  return at;
}

template <typename T>
void poke(std::string& bytes, size_t at, T value) {
  std::memcpy(&bytes[at], &value, sizeof(T));
}

TEST(Gguf, RefusesBadFilesNamingTheField) {
  const std::string good = fixture_bytes();
  ASSERT_EQ(parse_error(good), "");
  EXPECT_NE(parse_error("GGUF").find("bad.gguf: version: needs 4 bytes"), std::string::npos) << parse_error("GGUF");
  EXPECT_NE(parse_error("GGML" + good.substr(4)).find("not a GGUF file"), std::string::npos);
  {
    std::string b = good;
    poke<uint32_t>(b, 4, 0x03000000);  // big-endian version 3
    EXPECT_NE(parse_error(b).find("GGUF version 50331648 is not supported"), std::string::npos) << parse_error(b);
  }
  {
    std::string b = good;
    poke<uint64_t>(b, 8, uint64_t{1} << 40);  // tensor count
    poke<uint64_t>(b, 16, 100);               // kv count: reading runs into tensor records
    EXPECT_NE(parse_error(b).find("bad.gguf"), std::string::npos);
  }
  {
    std::string b = good;
    poke<uint64_t>(b, 16, uint64_t{1} << 50);
    EXPECT_NE(parse_error(b).find("metadata count 1125899906842624 cannot fit"), std::string::npos) << parse_error(b);
  }
  {
    std::string b = good;  // the string value's length made huge
    const size_t at = find(b, "test.string") + std::strlen("test.string") + 4;
    poke<uint64_t>(b, at, uint64_t{1} << 60);
    EXPECT_NE(parse_error(b).find("key 'test.string' (a string of 1152921504606846976 bytes): needs"), std::string::npos) << parse_error(b);
  }
  {
    std::string b = good;  // the value type of test.u8 unknown
    poke<uint32_t>(b, find(b, "test.u8") + 7, 99);
    EXPECT_NE(parse_error(b).find("key 'test.u8': unknown value type 99"), std::string::npos) << parse_error(b);
  }
  {
    std::string b = good;  // an array longer than the file
    const size_t at = find(b, "test.strings") + std::strlen("test.strings") + 4 + 4;
    poke<uint64_t>(b, at, uint64_t{1} << 40);
    EXPECT_NE(parse_error(b).find("key 'test.strings': an array of 1099511627776 string values cannot fit"), std::string::npos)
        << parse_error(b);
  }
  const size_t record = find(good, "blocks.q6_k") + std::strlen("blocks.q6_k");  // n_dims, dims[2], type, offset
  {
    std::string b = good;
    poke<uint32_t>(b, record + 4 + 16, 77);
    EXPECT_NE(parse_error(b).find("tensor 'blocks.q6_k': tensor type unknown type 77 is not supported"), std::string::npos) << parse_error(b);
  }
  {
    std::string b = good;
    poke<uint32_t>(b, record + 4 + 16, 16);
    EXPECT_NE(parse_error(b).find("tensor 'blocks.q6_k': tensor type IQ2_XXS is not supported"), std::string::npos) << parse_error(b);
  }
  {
    std::string b = good;
    poke<uint64_t>(b, record + 4, 500);  // not whole 256-value blocks
    EXPECT_NE(parse_error(b).find("tensor 'blocks.q6_k': its rows of 500 values are not whole Q6_K blocks of 256"), std::string::npos)
        << parse_error(b);
  }
  {
    std::string b = good;
    poke<uint32_t>(b, record, 9);
    EXPECT_NE(parse_error(b).find("tensor 'blocks.q6_k': 9 dimensions (GGUF allows 1..4)"), std::string::npos) << parse_error(b);
  }
  {
    std::string b = good;
    poke<uint64_t>(b, record + 4 + 16 + 4, 3);  // offset not aligned
    EXPECT_NE(parse_error(b).find("tensor 'blocks.q6_k': offset 3 is not a multiple of the alignment 32"), std::string::npos)
        << parse_error(b);
  }
  {
    std::string b = good;
    poke<uint64_t>(b, record + 4 + 16 + 4, 0);  // on top of the first tensor
    EXPECT_NE(parse_error(b).find("overlap in the data section"), std::string::npos) << parse_error(b);
  }
  {
    std::string b = good.substr(0, good.size() - 100);
    EXPECT_NE(parse_error(b).find("tensor 'quantize.q4_0': its 144 bytes at data offset"), std::string::npos) << parse_error(b);
    EXPECT_NE(parse_error(b).find("truncated?"), std::string::npos);
  }
  {
    std::string b = good;
    const size_t name = find(b, "blocks.q5_k");
    b.replace(name, 11, "blocks.q4_k");
    EXPECT_NE(parse_error(b).find("tensor 'blocks.q4_k': the name appears twice"), std::string::npos) << parse_error(b);
  }
  // Every prefix of the file is refused with a message (no crash, no read past the end).
  const size_t last_tensor_end = good.size() - 16;  // the writer pads the last tensor's 144 bytes to 160
  for (size_t n = 0; n < last_tensor_end; n += 7) EXPECT_NE(parse_error(good.substr(0, n)), "") << n;
}

}  // namespace
}  // namespace smelt
