// Hugging Face layouts both ways, against checkpoints transformers made
// (tests/fixtures/make_hf_models.py): each imports with transformers' logits, and exports back
// to the same tensors and the same configuration. Features HF cannot reproduce are refused.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/grad_mode.h"
#include "io/checkpoint.h"
#include "io/config_json.h"
#include "io/hf_export.h"
#include "io/safetensors.h"
#include "models/upcycle.h"
#include "tests/test_util.h"

namespace smelt {
namespace {

using testing::expect_error_mentions;
using testing::fixture_path;

class HfLayouts : public ::testing::TestWithParam<std::string> {};

TEST_P(HfLayouts, ImportGivesTransformersLogitsAndExportGivesItsTensorsBack) {
  const std::string arch = GetParam(), dir = fixture_path("hf_" + arch);
  const SafetensorsFile oracle = read_safetensors(fixture_path("hf_logits.safetensors"));
  const Transformer model = load_model_dir(dir);
  NoGradGuard no_grad;
  const Tensor logits = model.forward(oracle.at("input_ids", "hf_logits").to(DType::I64));
  const std::vector<float> got = logits.to_vector(), want = oracle.at("logits." + arch, "hf_logits").to_vector();
  ASSERT_EQ(got.size(), want.size());
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(got[i] - want[i]) / (1.0 + std::fabs(want[i])));
  EXPECT_LT(worst, 1e-4) << arch;
  EXPECT_GT(std::fabs(want[0]) + std::fabs(want[1]), 1e-3);  // the logits are not trivially zero

  const std::string out = ::testing::TempDir() + "export_" + arch;
  export_hf(dir, out);
  const SafetensorsFile original = read_safetensors(dir + "/model.safetensors"), exported = read_safetensors(out + "/model.safetensors");
  ASSERT_EQ(exported.tensors.size(), original.tensors.size()) << arch;
  for (const auto& [name, t] : original.tensors) {
    const Tensor* e = exported.find(name);
    ASSERT_NE(e, nullptr) << arch << ": export lacks " << name;
    EXPECT_EQ(e->shape(), t.shape()) << name;
    EXPECT_EQ(e->to_vector(), t.to_vector()) << name;
  }
  json ours = read_json_file(out + "/config.json"), theirs = read_json_file(dir + "/config.json");
  for (const char* key : {"architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads", "num_key_value_heads", "num_local_experts", "num_experts", "num_experts_per_tok",
                          "moe_intermediate_size", "shared_expert_intermediate_size", "norm_topk_prob", "decoder_sparse_step",
                          "tie_word_embeddings", "rms_norm_eps", "rope_parameters"}) {
    if (theirs.contains(key)) EXPECT_EQ(ours[key], theirs[key]) << arch << ": " << key;
  }
}

INSTANTIATE_TEST_SUITE_P(Architectures, HfLayouts, ::testing::Values("llama", "mixtral", "qwen2_moe", "qwen2", "qwen2_moe_qkv"));

TEST(HfExport, RefusesWhatTransformersWouldComputeDifferently) {
  ModelConfig c = testing::small_config(61, 32, 48, 2, 4, 2);
  c.num_local_experts = 4;
  c.num_experts_per_tok = 2;
  c.scoring_func = "sigmoid";
  expect_error_mentions([&] { check_hf_exportable(Transformer::create(c, 1), "m"); }, {"m", "scoring_func", "MixtralForCausalLM"});
  c.scoring_func = "softmax";
  c.decoder_sparse_step = 2;
  expect_error_mentions([&] { check_hf_exportable(Transformer::create(c, 1), "m"); }, {"decoder_sparse_step 2"});
  c.decoder_sparse_step = 1;
  c.norm_topk_prob = false;
  expect_error_mentions([&] { check_hf_exportable(Transformer::create(c, 1), "m"); }, {"norm_topk_prob"});
  c.norm_topk_prob = true;
  c.shared_expert_intermediate_size = 16;
  expect_error_mentions([&] { check_hf_exportable(Transformer::create(c, 1), "m"); }, {"shared_expert_gate", "Qwen2MoeForCausalLM"});
  c.shared_expert_gate = true;
  check_hf_exportable(Transformer::create(c, 1), "m");
  ModelConfig biased = c;  // Mixtral has no attention biases; Qwen2-MoE has them
  biased.qkv_bias = true;
  check_hf_exportable(Transformer::create(biased, 1), "m");
  biased.shared_expert_intermediate_size = 0;
  biased.shared_expert_gate = false;
  expect_error_mentions([&] { check_hf_exportable(Transformer::create(biased, 1), "m"); }, {"q, k and v biases", "MixtralForCausalLM"});
  c.moe_balancing = "aux_free";
  Transformer m = Transformer::create(c, 1);
  check_hf_exportable(m, "m");  // a zero bias selects as HF does
  m.layer(1).moe->score_bias.data<float>()[2] = 0.5f;
  expect_error_mentions([&] { check_hf_exportable(m, "m"); }, {"aux-free balancing bias of layer 1"});
}

TEST(HfImport, RefusesUnsupportedArchitecturesByName) {
  json j = read_json_file(fixture_path("hf_qwen2_moe/config.json"));
  auto refused = [&](const std::function<void(json&)>& edit, const std::vector<std::string>& needles) {
    json k = j;
    edit(k);
    JsonReader r(k, "config.json");
    expect_error_mentions([&] { model_config_from_json(r); }, needles);
  };
  refused([](json& k) { k["architectures"] = {"GPT2LMHeadModel"}; }, {"config.json", "architectures", "GPT2LMHeadModel"});
  refused([](json& k) { k["attention_bias"] = true; }, {"attention_bias", "output projection"});
  refused([](json& k) { k["layer_types"][1] = "sliding_attention"; }, {"layer_types", "sliding_attention"});
  refused([](json& k) { k["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 1e4}, {"factor", 4.0}}; }, {"rope_type", "yarn"});
  refused([](json& k) { k["mlp_only_layers"] = {0}; }, {"mlp_only_layers"});
}

}  // namespace
}  // namespace smelt

namespace smelt {
namespace {

// A config.json as transformers 5 writes it for SmolLM2: bookkeeping fields are accepted and
// ignored; a field that would change the computation is still refused by name.
TEST(HfConfig, AcceptsBookkeepingAndRefusesWhatChangesTheComputation) {
  const std::string good = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "_name_or_path": "HuggingFaceTB/x",
    "_model_name_or_path": "x", "unk_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2, "dtype": "bfloat16",
    "hidden_act": "silu", "vocab_size": 61, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64, "rms_norm_eps": 1e-5,
    "rope_parameters": {"rope_theta": 100000, "rope_type": "default"}, "tie_word_embeddings": true, "use_cache": true,
    "transformers.js_config": {"kv_cache_dtype": {"q4f16": "float16"}}, "id2label": {"0": "LABEL_0"}, "is_decoder": false})";
  const std::string path = ::testing::TempDir() + "lenient_config.json";
  write_file_atomic(path, good);
  const ModelConfig c = read_model_config(path);
  EXPECT_EQ(c.rope_theta, 100000.0);
  EXPECT_TRUE(c.tie_word_embeddings);
  for (const auto& [field, value] : {std::pair{"hidden_act", "\"gelu\""}, {"quantization_config", "{\"bits\": 4}"},
                                     {"attention_bias", "true"}, {"rope_scaling", "{\"rope_type\": \"yarn\", \"factor\": 4}"}}) {
    std::string bad = good;
    bad.insert(bad.size() - 1, std::string(", \"") + field + "\": " + value);
    if (std::string(field) == "hidden_act") bad.replace(bad.find("\"hidden_act\": \"silu\", "), 22, "");
    write_file_atomic(path, bad);
    expect_error_mentions([&] { read_model_config(path); }, {"lenient_config.json", field});
  }
}

}  // namespace
}  // namespace smelt
