// Models from GGUF files written as llama.cpp's converter writes them
// (tests/fixtures/make_gguf_models.py): each gives the logits of the Hugging Face model it was
// made from (F32 files) or of transformers' own reading of the file (Q8_0), with the Q/K row
// permutation undone; the tokenizer in the metadata gives HF's ids; what smelt cannot compute is
// refused by name.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "autograd/grad_mode.h"
#include "io/checkpoint.h"
#include "io/files.h"
#include "io/gguf_export.h"
#include "io/gguf_model.h"
#include "tests/test_util.h"

namespace smelt {
namespace {

using testing::expect_error_mentions;
using testing::fixture_path;

double worst_relative_error(const Tensor& got_t, const Tensor& want_t) {
  const std::vector<float> got = got_t.to_vector(), want = want_t.to_vector();
  EXPECT_EQ(got.size(), want.size());
  double worst = 0;
  for (size_t i = 0; i < got.size() && i < want.size(); ++i)
    worst = std::max(worst, std::fabs(got[i] - want[i]) / (1.0 + std::fabs(want[i])));
  return worst;
}

struct Case {
  const char* file;
  const char* oracle_file;
  const char* oracle;
};

class GgufModels : public ::testing::TestWithParam<Case> {};

TEST_P(GgufModels, GiveTheOracleLogits) {
  const Case c = GetParam();
  const SafetensorsFile oracle = read_safetensors(fixture_path(c.oracle_file));
  const Transformer model = load_model_dir(fixture_path(c.file));
  NoGradGuard no_grad;
  const Tensor logits = model.forward(oracle.at("input_ids", c.oracle_file).to(DType::I64));
  EXPECT_LT(worst_relative_error(logits, oracle.at(c.oracle, c.oracle_file)), 1e-4) << c.file;
}

INSTANTIATE_TEST_SUITE_P(Files, GgufModels,
                         ::testing::Values(Case{"gguf_llama.gguf", "hf_logits.safetensors", "logits.llama"},
                                           Case{"gguf_mixtral.gguf", "hf_logits.safetensors", "logits.mixtral"},
                                           Case{"gguf_qwen2.gguf", "hf_logits.safetensors", "logits.qwen2"},
                                           Case{"gguf_qwen2moe.gguf", "hf_logits.safetensors", "logits.qwen2_moe_qkv"},
                                           Case{"gguf_llama_q8_0.gguf", "gguf_logits.safetensors", "logits.llama_q8_0"}));

TEST(GgufModel, ConfigComesFromTheMetadata) {
  const ModelConfig c = gguf_model_config(read_gguf(fixture_path("gguf_mixtral.gguf")));
  EXPECT_EQ(c.num_hidden_layers, 2);
  EXPECT_EQ(c.hidden_size, 32);
  EXPECT_EQ(c.num_attention_heads, 4);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.vocab_size, 61);
  EXPECT_EQ(c.num_local_experts, 4);
  EXPECT_EQ(c.num_experts_per_tok, 2);
  EXPECT_FALSE(c.tie_word_embeddings);
}

TEST(GgufModel, RopeRowPermutationRoundTrips) {
  Philox rng(3);
  const Tensor w = Tensor::randn({2 * 8, 5}, rng);
  const Tensor llama_cpp = permute_rope_rows(w, 2);
  EXPECT_NE(llama_cpp.to_vector(), w.to_vector());
  EXPECT_EQ(unpermute_rope_rows(llama_cpp, 2).to_vector(), w.to_vector());
  // llama.cpp's order interleaves each head's rotary halves: its row 1 is HF's row 4 (head 0,
  // second half, pair 0).
  const std::vector<float> a = llama_cpp.to_vector(), b = w.to_vector();
  for (int col = 0; col < 5; ++col) EXPECT_EQ(a[1 * 5 + col], b[4 * 5 + col]);
}

// A tiny llama GGUF carrying `extra` metadata and tensors, written with smelt's own writer.
std::string tiny_gguf(const std::string& name, std::vector<std::pair<std::string, GgufValue>> extra,
                      std::vector<GgufTensorToWrite> tensors = {}) {
  std::vector<std::pair<std::string, GgufValue>> meta = {
      {"general.architecture", GgufValue::of_string("llama")}, {"llama.block_count", GgufValue::of_u32(1)},
      {"llama.embedding_length", GgufValue::of_u32(32)},        {"llama.feed_forward_length", GgufValue::of_u32(64)},
      {"llama.attention.head_count", GgufValue::of_u32(4)},     {"llama.context_length", GgufValue::of_u32(16)}};
  for (auto& kv : extra) {
    bool replaced = false;
    for (auto& m : meta)
      if (m.first == kv.first) m.second = kv.second, replaced = true;
    if (!replaced) meta.push_back(kv);
  }
  Philox rng(1);
  std::vector<GgufTensorToWrite> all = {{"token_embd.weight", Tensor::randn({8, 32}, rng)}};
  for (auto& t : tensors) all.push_back(t);
  const std::string path = ::testing::TempDir() + name;
  write_gguf(path, meta, all);
  return path;
}

TEST(GgufModel, RefusesWhatSmeltDoesNotComputeByName) {
  expect_error_mentions([&] { load_model_dir(tiny_gguf("falcon.gguf", {{"general.architecture", GgufValue::of_string("falcon")}})); },
                        {"falcon.gguf: key 'general.architecture': \"falcon\" is not supported"});
  expect_error_mentions([&] { load_model_dir(tiny_gguf("yarn.gguf", {{"llama.rope.scaling.type", GgufValue::of_string("yarn")}})); },
                        {"yarn.gguf: key 'llama.rope.scaling.type': \"yarn\" is not supported"});
  expect_error_mentions(
      [&] { load_model_dir(tiny_gguf("partial.gguf", {{"llama.rope.dimension_count", GgufValue::of_u32(4)}})); },
      {"partial.gguf: key 'llama.rope.dimension_count': 4", "whole head of 8"});
  expect_error_mentions([&] { load_model_dir(tiny_gguf("nolayers.gguf", {{"llama.block_count", GgufValue::of_string("1")}})); },
                        {"nolayers.gguf: key 'llama.block_count': expected an integer, got string"});
  Philox rng(2);
  expect_error_mentions(
      [&] { load_model_dir(tiny_gguf("bias.gguf", {}, {{"blk.0.attn_output.bias", Tensor::randn({32}, rng)}})); },
      {"bias.gguf: tensor 'blk.0.attn_output.bias': 'attn_output.bias' is not a tensor smelt's llama computes with"});
  // A q bias makes a llama file's attention biased (k and v must then have theirs too).
  EXPECT_TRUE(gguf_model_config(read_gguf(tiny_gguf("qbias.gguf", {}, {{"blk.0.attn_q.bias", Tensor::randn({32}, rng)}}))).qkv_bias);
  EXPECT_FALSE(gguf_model_config(read_gguf(tiny_gguf("nobias.gguf", {}))).qkv_bias);
  expect_error_mentions(
      [&] { load_model_dir(tiny_gguf("missing.gguf", {})); },
      {"missing.gguf: tensor 'model.layers.0.input_layernorm.weight' is missing"});
}

// The tokenizer in GGUF metadata (tokens, token types, merges, pre-tokenizer) reads as the same
// tokenizer as its tokenizer.json: HF's ids for the SmolLM pre-tokenizer fixture.
TEST(GgufModel, TokenizerFromMetadataGivesHfIds) {
  const json hf = read_json_file(fixture_path("hf_tokenizer.json"));
  std::vector<std::string> tokens(hf["model"]["vocab"].size());
  std::vector<int32_t> types(tokens.size(), 1);
  for (auto it = hf["model"]["vocab"].begin(); it != hf["model"]["vocab"].end(); ++it) tokens.at(it.value().get<size_t>()) = it.key();
  for (const json& a : hf["added_tokens"]) types.at(a["id"].get<size_t>()) = 3;
  std::vector<std::string> merges;
  for (const json& m : hf["model"]["merges"]) merges.push_back(m.is_string() ? m.get<std::string>() : m[0].get<std::string>() + " " + m[1].get<std::string>());
  const std::string path = tiny_gguf("tok.gguf", {{"tokenizer.ggml.model", GgufValue::of_string("gpt2")},
                                                  {"tokenizer.ggml.pre", GgufValue::of_string("smollm")},
                                                  {"tokenizer.ggml.tokens", GgufValue::of_strings(tokens)},
                                                  {"tokenizer.ggml.token_type", GgufValue::of_i32s(types)},
                                                  {"tokenizer.ggml.merges", GgufValue::of_strings(merges)},
                                                  {"tokenizer.ggml.eos_token_id", GgufValue::of_u32(1)},
                                                  {"tokenizer.chat_template", GgufValue::of_string("{{ x }}")}});
  const GgufFile f = read_gguf(path);
  const BpeTokenizer t = BpeTokenizer::from_json(*gguf_tokenizer_json(f), path);
  EXPECT_EQ(t.pre_tokenizer(), PreTokenizer::SmolLM);
  EXPECT_TRUE(t.is_special(1));
  const json expected = read_json_file(fixture_path("pretokenizer_expected.json"));
  for (size_t k = 0; k < expected["texts"].size(); ++k)
    EXPECT_EQ(t.encode(expected["texts"][k].get<std::string>()), expected["variants"]["smollm"]["ids"][k].get<std::vector<int32_t>>()) << k;
  const json config = json::parse(gguf_tokenizer_config_json(f));
  EXPECT_EQ(config["eos_token"], tokens[1]);
  EXPECT_EQ(config["chat_template"], "{{ x }}");
  const std::string bad = tiny_gguf("spm.gguf", {{"tokenizer.ggml.model", GgufValue::of_string("llama")}});
  expect_error_mentions([&] { gguf_tokenizer_json(read_gguf(bad)); }, {"spm.gguf: key 'tokenizer.ggml.model': \"llama\" is not supported"});
}

}  // namespace
}  // namespace smelt

namespace smelt {
namespace {

// smelt → GGUF → smelt: an F32 export reads back to the same logits (dense and MoE, tied and
// untied), and a Q8_0 export to within the quantisation error; the tokenizer travels with it.
TEST(GgufExport, ReadsBackToTheSameModel) {
  const SafetensorsFile oracle = read_safetensors(fixture_path("hf_logits.safetensors"));
  const Tensor ids = oracle.at("input_ids", "hf_logits").to(DType::I64);
  NoGradGuard no_grad;
  for (const char* arch : {"llama", "mixtral", "qwen2", "qwen2_moe_qkv"}) {
    const std::string dir = fixture_path(std::string("hf_") + arch);
    const Tensor want = load_model_dir(dir).forward(ids);
    const std::string f32 = ::testing::TempDir() + arch + "_f32.gguf", q8 = ::testing::TempDir() + arch + "_q8.gguf";
    export_gguf(dir, f32, GgmlType::F32);
    export_gguf(dir, q8, GgmlType::Q8_0);
    EXPECT_EQ(load_model_dir(f32).forward(ids).to_vector(), want.to_vector()) << arch;
    // Q8_0: every value within half a quantisation step d = amax / 127 of its block, plus what
    // storing d as f16 adds (|q| ≤ 127 times d's rounding of 2^-11 relative: 0.062 d).
    const GgufFile f = read_gguf(q8), exact = read_gguf(f32);
    int64_t quantised = 0;
    for (const GgufTensorInfo& t : f.tensors) {
      const std::vector<float> got = f.dequantize(t).to_vector(), full = exact.dequantize(exact.tensor(t.name)).to_vector();
      for (size_t block = 0; block < full.size(); block += 32) {
        float amax = 0;
        for (size_t k = block; k < block + 32 && k < full.size(); ++k) amax = std::max(amax, std::fabs(full[k]));
        for (size_t k = block; k < block + 32 && k < full.size(); ++k)
          ASSERT_LE(std::fabs(got[k] - full[k]), amax / 127 * 0.563f + 1e-7f) << t.name << " value " << k;
      }
      quantised += t.type == GgmlType::Q8_0;
    }
    EXPECT_GT(quantised, 0) << arch;
    EXPECT_GT(worst_relative_error(load_model_dir(q8).forward(ids), want), 0.0) << arch;
    EXPECT_EQ(f.tensor("blk.0.attn_q.weight").type, GgmlType::Q8_0);
    EXPECT_EQ(f.tensor("blk.0.attn_norm.weight").type, GgmlType::F32);
    EXPECT_EQ(f.strings("tokenizer.ggml.tokens").size(), 61u);  // a byte-level model of 61 rows: bytes 0..60
  }
}

// Halves every stored value of the file's blocks of `type` (the scale kept), so that no block
// is what quantising its own values would give (that would use the full int range again).
void shrink_quantised_blocks(const std::string& path, GgmlType type) {
  std::string bytes = read_file(path);
  const GgufFile f = read_gguf(path);
  const auto* base = static_cast<const uint8_t*>(f.bytes->data());
  for (const GgufTensorInfo& t : f.tensors) {
    if (t.type != type) continue;
    uint8_t* p = reinterpret_cast<uint8_t*>(bytes.data()) + (f.tensor_bytes(t) - base);
    const int64_t block_bytes = type == GgmlType::Q8_0 ? 34 : 18;
    for (int64_t b = 0; b < t.numel() / 32; ++b)
      for (int64_t i = 2; i < block_bytes; ++i) {
        uint8_t& v = p[b * block_bytes + i];
        if (type == GgmlType::Q8_0) v = static_cast<uint8_t>(static_cast<int8_t>(v) / 2);
        else v = static_cast<uint8_t>(((v & 15) - 8) / 2 + 8) | static_cast<uint8_t>((((v >> 4) - 8) / 2 + 8) << 4);
      }
  }
  write_file_atomic(path, bytes);
}

// --weights q8_0 / q4_0 on a GGUF that stores its matrices in that type keeps the file's blocks
// (copied, the Q/K rows put back in HF's order) instead of decoding and quantising them again,
// which would give other blocks for a file whose blocks do not use the whole int range (another
// quantiser's, or the shrunk ones here). Dense and MoE.
TEST(GgufExport, QuantisedMatricesStayQuantisedWhenLoadedAsTheirType) {
  const SafetensorsFile oracle = read_safetensors(fixture_path("hf_logits.safetensors"));
  const Tensor ids = oracle.at("input_ids", "hf_logits").to(DType::I64);
  NoGradGuard no_grad;
  for (const char* arch : {"llama", "mixtral", "qwen2", "qwen2_moe_qkv"})
    for (auto [ggml, dtype] : {std::pair{GgmlType::Q8_0, DType::Q8_0}, std::pair{GgmlType::Q4_0, DType::Q4_0}}) {
      const std::string path = ::testing::TempDir() + arch + "_" + dtype_name(dtype) + "_kept.gguf";
      export_gguf(fixture_path(std::string("hf_") + arch), path, ggml);
      shrink_quantised_blocks(path, ggml);
      const GgufFile f = read_gguf(path);
      const GgufTensorInfo& embd = f.tensor("token_embd.weight");
      ASSERT_EQ(embd.type, ggml);
      const size_t embd_bytes = dtype_bytes(dtype, embd.numel());
      const Transformer kept = load_model_dir(path, dtype);
      Transformer requantised = load_model_dir(path);
      requantised.store_weights_in(dtype);
      EXPECT_EQ(std::memcmp(kept.named_parameters()[0].second.device_data(), f.tensor_bytes(embd), embd_bytes), 0) << arch;
      EXPECT_NE(std::memcmp(requantised.named_parameters()[0].second.device_data(), f.tensor_bytes(embd), embd_bytes), 0) << arch;
      int64_t quantised = 0;
      for (const auto& [name, t] : kept.named_parameters()) quantised += t.dtype() == dtype;
      EXPECT_GE(quantised, 5) << arch;  // the embedding and at least the attention's four
      // The kept blocks' values are the file's: the model computes what the f32 decoding of the
      // file computes, up to the rounding of the activations in the integer dot products.
      EXPECT_LT(worst_relative_error(kept.forward(ids), load_model_dir(path).forward(ids)), 1e-2) << arch << " " << dtype_name(dtype);
    }
}

TEST(GgufExport, CarriesTheTokenizerAndChatTemplate) {
  const std::string smollm_like = ::testing::TempDir() + "tok_model.gguf";
  // The metadata tokenizer of TokenizerFromMetadataGivesHfIds, on a model sized for it.
  const json hf = read_json_file(fixture_path("hf_tokenizer.json"));
  const BpeTokenizer t = BpeTokenizer::from_json(hf, "hf_tokenizer.json");
  ModelConfig c = testing::small_config(t.vocab_size() + 3, 32, 64, 1, 4, 2);
  const std::string dir = ::testing::TempDir() + "tok_model";
  save_model_dir(dir, Transformer::create(c, 1),
                 {{"tokenizer.json", t.to_json().dump()}, {"tokenizer_config.json", R"({"eos_token": "<|eos|>", "chat_template": "{{ m }}"})"}});
  export_gguf(dir, smollm_like, GgmlType::F32);
  const GgufFile f = read_gguf(smollm_like);
  const BpeTokenizer back = BpeTokenizer::from_json(*gguf_tokenizer_json(f), smollm_like);
  const std::string text = "Hello, world! 12345 \xc3\xa9t\xc3\xa9 <|eos|>";
  EXPECT_EQ(back.encode(text, true), t.encode(text, true));
  EXPECT_EQ(f.integer("tokenizer.ggml.eos_token_id"), t.special_id("<|eos|>"));
  EXPECT_EQ(f.string("tokenizer.chat_template"), "{{ m }}");
  EXPECT_EQ(f.strings("tokenizer.ggml.tokens").size(), static_cast<size_t>(c.vocab_size));  // padded with unused tokens
}

}  // namespace
}  // namespace smelt
