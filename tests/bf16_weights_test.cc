// Weights kept in bf16 for inference: a model whose matrices are stored in bf16 must compute
// exactly what the f32 model computes with those matrices rounded to bf16 (the GEMMs widen the
// values as they read them and accumulate in f32), with and without the KV cache; it must refuse
// training; and it must save and load as BF16 safetensors.
#include <filesystem>

#include "autograd/grad_mode.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "ops/moe.h"
#include "ops/ops.h"
#include "ops/precision.h"
#include "optim/trainer.h"
#include "tests/support/decoding.h"
#include "tests/test_util.h"

namespace smelt {
namespace {

using testing::expect_error_mentions;
using testing::small_config;
using testing::some_ids;

ModelConfig moe_with_shared_expert() {
  ModelConfig c = small_config(61, 32, 48, 2, 4, 2);
  c.num_local_experts = 4;
  c.num_experts_per_tok = 2;
  c.shared_expert_intermediate_size = 24;
  c.shared_expert_gate = true;
  return c;
}

ModelConfig dense_tied() {
  ModelConfig c = small_config(53, 40, 72, 2, 5, 5);
  c.tie_word_embeddings = true;
  return c;
}

// The model's tensors with every weight matrix rounded to bf16 and widened back to f32.
NamedTensors rounded_to_bf16(const Transformer& m) {
  NamedTensors out;
  for (const auto& [name, t] : m.state_dict()) {
    const bool matrix = t.dim() >= 2;
    out.push_back({name, matrix ? t.to(DType::BF16).to(DType::F32) : t.clone()});
  }
  return out;
}

void expect_same_values(const std::vector<float>& got, const std::vector<float>& want, float tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], tol) << what << " element " << i;
}

TEST(Bf16Weights, ForwardEqualsF32ModelWithRoundedWeights) {
  for (const ModelConfig& c : {moe_with_shared_expert(), dense_tied()}) {
    Transformer m = Transformer::create(c, 21);
    const Transformer rounded = Transformer::from_tensors(c, rounded_to_bf16(m), "rounded");
    int64_t f32_bytes = 0, bf16_bytes = 0;
    for (const auto& [name, t] : m.named_parameters()) f32_bytes += t.numel() * 4;
    m.store_weights_in(DType::BF16);
    EXPECT_EQ(m.weight_dtype(), DType::BF16);
    for (const auto& [name, t] : m.named_parameters()) {
      bf16_bytes += t.numel() * static_cast<int64_t>(dtype_size(t.dtype()));
      EXPECT_EQ(t.dtype(), name.find("norm") != std::string::npos ? DType::F32 : DType::BF16) << name;
      EXPECT_EQ(t.requires_grad(), t.dtype() == DType::F32) << name;
    }
    EXPECT_LT(bf16_bytes, f32_bytes * 51 / 100);  // norms are a sliver of the parameters
    NoGradGuard g;
    // Batch 3 × 7 takes the packed GEMM path, where bf16 weights compute in bf16 (activations
    // rounded as packed: the rounded f32 model under bf16 GEMM precision); batch 1 × 3 the
    // dot-product path for every linear, which stays f32 (the rounded model as it is).
    for (const Tensor& ids : {some_ids(c.vocab_size, 3, 7), some_ids(c.vocab_size, 1, 3)}) {
      const MatmulPrecisionScope precision(ids.size(1) == 7 ? MatmulPrecision::BF16 : MatmulPrecision::F32);
      const std::vector<float> want = rounded.forward(ids).to_vector();
      expect_same_values(m.forward(ids).to_vector(), want, 2e-5f, "logits " + ids.str());
    }
    // The chunked LM-head loss reads the bf16 head too.
    const Tensor ids = some_ids(c.vocab_size, 2, 5), targets = some_ids(c.vocab_size, 2, 5);
    const MatmulPrecisionScope precision(MatmulPrecision::BF16);
    EXPECT_NEAR(ops::linear_cross_entropy(m.hidden_states(ids), m.lm_head_weight(), targets).item(),
                ops::linear_cross_entropy(rounded.hidden_states(ids), rounded.lm_head_weight(), targets).item(), 1e-5);
  }
}

TEST(Bf16Weights, KvCacheDecodingMatchesFullForward) {
  Transformer m = Transformer::create(moe_with_shared_expert(), 22);
  m.store_weights_in(DType::BF16);
  NoGradGuard g;
  const Tensor ids = some_ids(61, 1, 9);
  const std::vector<float> full = m.forward(ids).to_vector();
  const std::vector<float> stepped = testing::cached_logits(m, ids, 5);
  // The full forward (9 rows) computes in bf16 on the packed path, the one-token steps in f32 on
  // the dot path: they agree to bf16's rounding of the activations (a wrong cache is off by O(1)).
  expect_same_values(stepped, full, 2e-3f, "cached decoding");
}

TEST(Bf16Weights, GradientsFlowThroughBf16MatricesToTheNorms) {
  // Outside NoGradGuard the f32 norms still want gradients: they must pass through the bf16
  // projections and experts (the MoE backward without weight gradients) and equal those of the
  // f32 model with rounded weights.
  const ModelConfig c = moe_with_shared_expert();
  Transformer m = Transformer::create(c, 25);
  const Transformer rounded = Transformer::from_tensors(c, rounded_to_bf16(m), "rounded");
  m.store_weights_in(DType::BF16);
  const Tensor ids = some_ids(c.vocab_size, 2, 6);
  ops::sum(ops::mul(m.forward(ids), m.forward(ids))).backward();
  Tensor out;
  {
    // bf16 weights compute their forward in bf16 (the packed path), as the rounded f32 model
    // under bf16 GEMM precision does; the backward's products with them stay f32, as the rounded
    // model's do outside the scope (each op reads the precision as it runs).
    const MatmulPrecisionScope precision(MatmulPrecision::BF16);
    out = rounded.forward(ids);
  }
  ops::sum(ops::mul(out, out)).backward();
  const NamedTensors got = m.named_parameters(), want = rounded.named_parameters();
  int64_t norms = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i].second.dtype() != DType::F32) {
      EXPECT_FALSE(got[i].second.grad().defined()) << got[i].first;
      continue;
    }
    ++norms;
    ASSERT_TRUE(got[i].second.grad().defined()) << got[i].first;
    expect_same_values(got[i].second.grad().to_vector(), want[i].second.grad().to_vector(), 2e-4f, got[i].first);
  }
  EXPECT_EQ(norms, 2 * c.num_hidden_layers + 1);
}

TEST(Bf16Weights, RefusesTrainingWithAClearError) {
  Transformer m = Transformer::create(dense_tied(), 23);
  m.store_weights_in(DType::BF16);
  const TrainConfig tc = testing::one_step_config();
  expect_error_mentions([&] { Trainer t(m, tc); }, {"bf16", "load it in f32 to train"});
  Tensor w = Tensor::zeros({3, 4}, DType::BF16).set_requires_grad(true);
  expect_error_mentions([&] { ops::linear(Tensor::zeros({2, 4}), w); }, {"matmul", "bf16", "requires grad"});
  // Experts in bf16 that ask for their own gradient are refused before any work.
  Tensor x = Tensor::zeros({2, 4}).set_requires_grad(true);
  const Tensor gate = Tensor::zeros({2, 3, 4}, DType::BF16).set_requires_grad(true), down = Tensor::zeros({2, 4, 3}, DType::BF16);
  const Tensor slots = Tensor::from_ints({0, 1}, {2}), weight = Tensor::full({2}, 1.0f);
  expect_error_mentions([&] { ops::moe_ffn(x, gate, gate, down, slots, slots, weight); }, {"moe_ffn", "gate", "bf16", "requires grad"});
  // Converted back to f32 the model trains again; what was frozen before the round trip stays frozen.
  m.store_weights_in(DType::F32);
  EXPECT_NO_THROW(Trainer(m, tc));
  m.freeze({"model.layers.0.*"});
  m.store_weights_in(DType::BF16);
  m.store_weights_in(DType::F32);
  for (const auto& [name, t] : m.named_parameters())
    EXPECT_EQ(t.requires_grad(), name.rfind("model.layers.0.", 0) != 0) << name;
}

TEST(Bf16Weights, SaveAsBf16AndLoadInEitherDtype) {
  const ModelConfig c = moe_with_shared_expert();
  Transformer m = Transformer::create(c, 24);
  const Transformer rounded = Transformer::from_tensors(c, rounded_to_bf16(m), "rounded");
  m.store_weights_in(DType::BF16);
  const std::string dir = ::testing::TempDir() + "smelt_bf16_model";
  save_model_dir(dir, m);
  const SafetensorsFile file = read_safetensors(dir + "/model.safetensors");
  EXPECT_EQ(file.at("model.embed_tokens.weight", dir).dtype(), DType::BF16);
  EXPECT_EQ(file.at("model.norm.weight", dir).dtype(), DType::F32);
  const Transformer as_f32 = load_model_dir(dir), as_bf16 = load_model_dir(dir, DType::BF16);
  EXPECT_EQ(as_f32.weight_dtype(), DType::F32);
  EXPECT_EQ(as_bf16.weight_dtype(), DType::BF16);
  NoGradGuard g;
  const Tensor ids = some_ids(c.vocab_size, 2, 6);
  const std::vector<float> want = m.forward(ids).to_vector();
  EXPECT_EQ(as_bf16.forward(ids).to_vector(), want);
  expect_same_values(as_f32.forward(ids).to_vector(), rounded.forward(ids).to_vector(), 0.0f, "loaded in f32");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace smelt
