// safetensors: round trip, and every kind of malformed file refused with the file and tensor named.
#include <cstring>
#include <fstream>

#include "io/safetensors.h"
#include "tests/test_util.h"

namespace smelt {
namespace {

std::string bytes_of(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string with_header(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string parse_error(const std::string& bytes) {
  auto storage = std::make_shared<Storage>(bytes.size(), Device::cpu());
  std::memcpy(storage->data(), bytes.data(), bytes.size());
  try {
    parse_safetensors(storage, "bad.safetensors");
  } catch (const Error& e) {
    return e.message();
  }
  return "";
}

TEST(Safetensors, RoundTripKeepsDtypesShapesAndMetadata) {
  const std::string path = ::testing::TempDir() + "rt.safetensors";
  Tensor f = Tensor::from_vector({1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 8.0f}, {2, 3});
  Tensor i = Tensor::from_ints({1, -2, 3}, {3}, DType::I32);
  Tensor h = f.to(DType::BF16);
  write_safetensors(path, {{"w", f}, {"ids", i}, {"half", h}}, {{"note", "hello"}});
  SafetensorsFile r = read_safetensors(path);
  EXPECT_EQ(r.metadata.at("note"), "hello");
  EXPECT_EQ(r.at("w", path).to_vector(), f.to_vector());
  EXPECT_EQ(r.at("ids", path).dtype(), DType::I32);
  EXPECT_EQ(r.at("ids", path).to_int_vector(), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(r.at("half", path).dtype(), DType::BF16);
  EXPECT_EQ(r.at("half", path).to_vector(), h.to_vector());
}

TEST(Safetensors, MalformedFilesAreRefusedWithReason) {
  EXPECT_NE(parse_error("abc").find("truncated"), std::string::npos);
  EXPECT_NE(parse_error(with_header("{", "")).find("malformed"), std::string::npos);
  std::string long_header(8, '\0');
  long_header[0] = static_cast<char>(200);
  EXPECT_NE(parse_error(long_header + "{}").find("past the end"), std::string::npos);
  EXPECT_NE(parse_error(with_header(R"({"t":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}})", "1234")).find("F99"), std::string::npos);
  EXPECT_NE(parse_error(with_header(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", "1234")).find("'t'"), std::string::npos);
  EXPECT_NE(parse_error(with_header(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "1234")).find("past the data"), std::string::npos);
  EXPECT_NE(parse_error(with_header(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})", "123456")).find("overlap"), std::string::npos);
  EXPECT_NE(parse_error(with_header(R"({"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "1234")).find("non-negative"), std::string::npos);
}

TEST(Safetensors, TruncatedRealFileIsRefused) {
  const std::string path = ::testing::TempDir() + "trunc.safetensors";
  write_safetensors(path, {{"w", Tensor::zeros({64})}});
  std::string b = bytes_of(path);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << b.substr(0, b.size() - 10);
  try {
    read_safetensors(path);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(e.message().find(path), std::string::npos);
    EXPECT_NE(e.message().find("'w'"), std::string::npos);
  }
}

}  // namespace
}  // namespace smelt
