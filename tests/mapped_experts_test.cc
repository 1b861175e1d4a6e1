// An MoE's experts left in the memory-mapped checkpoint (--map-experts): the stacked projections
// are views of the file, the model computes exactly what the copied one does, and an expert no
// token chooses is never read (the mapping's resident bytes stay below the unchosen experts').
#include <filesystem>

#include "autograd/grad_mode.h"
#include "io/checkpoint.h"
#include "io/files.h"
#include "ops/ops.h"
#include "tests/test_util.h"

namespace smelt {
namespace {

namespace fs = std::filesystem;
using testing::small_config;

ModelConfig many_experts() {
  // 16 experts of 128 × 1024 f32 (512 KiB per projection): many pages each, so residency is measurable.
  ModelConfig c = small_config(97, 128, 1024, 2, 4, 2);
  c.num_local_experts = 16;
  c.num_experts_per_tok = 2;
  return c;
}

Tensor stacked(const Transformer& m, const std::string& name) {
  for (const auto& [n, t] : m.named_parameters())
    if (n == name) return t;
  throw std::runtime_error("no " + name);
}

TEST(MappedExperts, ViewsOfTheFileComputingWhatCopiesCompute) {
  const std::string dir = (fs::temp_directory_path() / "smelt_mapped_experts").string();
  fs::remove_all(dir);
  save_model_dir(dir, Transformer::create(many_experts(), 41));
  const Transformer copied = load_model_dir(dir);
  const Transformer mapped = load_model_dir(dir, DType::F32, Transformer::Experts::Mapped);
  const std::string gate = "model.layers.0.block_sparse_moe.experts.gate_proj";
  EXPECT_FALSE(stacked(copied, gate).storage()->borrowed());
  EXPECT_TRUE(stacked(mapped, gate).storage()->borrowed());  // the file's mapping
  EXPECT_EQ(stacked(mapped, gate).storage(), stacked(mapped, "model.layers.1.block_sparse_moe.experts.down_proj").storage());
  NoGradGuard g;
  const Tensor ids = Tensor::from_ints({1, 5, 9, 13, 17, 21}, {1, 6});
  EXPECT_EQ(mapped.forward(ids).to_vector(), copied.forward(ids).to_vector());
  fs::remove_all(dir);
}

TEST(MappedExperts, AnExpertNoTokenChoosesIsNeverRead) {
  // Router rows of constant values r_e score r_e·Σx for a token whose FFN input is x: with
  // r = (10, −10, 5, −5, 0, ..., 0) top-2 is {0, 2} when Σx > 0 and {1, 3} when Σx < 0, so
  // experts 4..15 are never chosen.
  ModelConfig c = many_experts();
  Transformer m = Transformer::create(c, 42);
  NamedTensors tensors = m.state_dict();
  for (auto& [name, t] : tensors) {
    if (name.find("block_sparse_moe.gate.weight") == std::string::npos) continue;
    std::vector<float> rows(static_cast<size_t>(t.numel()), 0.0f);
    for (int64_t e = 0; e < c.num_local_experts; ++e)
      for (int64_t j = 0; j < c.hidden_size; ++j) rows[e * c.hidden_size + j] = e < 4 ? (e % 2 ? -1.0f : 1.0f) * (e < 2 ? 10.0f : 5.0f) : 0.0f;
    t = Tensor::from_vector(rows, t.shape());
  }
  const std::string dir = (fs::temp_directory_path() / "smelt_mapped_experts_unchosen").string();
  fs::remove_all(dir);
  save_model_dir(dir, Transformer::from_tensors(c, tensors, "test"));
  const Transformer mapped = load_model_dir(dir, DType::F32, Transformer::Experts::Mapped);
  const Tensor gate = stacked(mapped, "model.layers.0.block_sparse_moe.experts.gate_proj");
  const int64_t expert_bytes = c.hidden_size * c.intermediate_size * 4;  // one expert's one projection
  const int64_t all_experts = 3 * c.num_hidden_layers * c.num_local_experts * expert_bytes;
  EXPECT_LT(mapping_resident_bytes(gate.storage()->data()), all_experts / 16) << "loading read the experts";
  NoGradGuard g;
  mapped.forward(Tensor::from_ints({1, 2, 3, 4, 5, 6, 7, 8}, {1, 8}));
  const int64_t read = mapping_resident_bytes(gate.storage()->data());
  EXPECT_GE(read, all_experts * 4 / 16 * 9 / 10);  // experts 0..3 of every projection and layer
  // 4..15 stay on disk, but for what the kernel maps at each fault: a whole page-cache folio, up to
  // 2 MiB on this kernel (measured: each projection's 2 MiB of chosen experts straddles two
  // folios, 4 MiB mapped). All 16 read would be 48 MiB.
  const int64_t projections = 3 * c.num_hidden_layers, folio = 2 << 20;
  EXPECT_LE(read, projections * (4 * expert_bytes + 2 * folio));
  EXPECT_LT(read, all_experts * 13 / 16);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace smelt
