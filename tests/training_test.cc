// Training behaviour: a tiny model must overfit one batch; data and config errors are clear.
#include "io/checkpoint.h"
#include "io/config_json.h"
#include "io/files.h"
#include "io/json_reader.h"
#include "io/safetensors.h"
#include "io/token_data.h"
#include "ops/ops.h"
#include "optim/trainer.h"
#include "runtime/storage.h"
#include "tests/test_util.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace smelt {
namespace {

ModelConfig tiny_config() { return testing::small_config(32, 32, 64, 2, 4, 2, 64); }

TEST(Training, TinyModelOverfitsOneBatch) {
  Transformer m = Transformer::create(tiny_config(), 7);
  Philox rng(3);
  Batch b;
  std::vector<int64_t> ids(4 * 16), tgt(4 * 16);
  for (size_t i = 0; i < ids.size(); ++i) {
    ids[i] = rng.next_u32() % 32;
    tgt[i] = rng.next_u32() % 32;
  }
  b.ids = Tensor::from_ints(ids, {4, 16});
  b.targets = Tensor::from_ints(tgt, {4, 16});
  TrainConfig tc;
  tc.steps = 150;
  tc.lr = 1e-2;
  tc.min_lr = 1e-3;
  tc.warmup_steps = 10;
  tc.weight_decay = 0.0;
  Trainer trainer(m, tc);
  double last = 0;
  for (int64_t s = 0; s < tc.steps; ++s) last = trainer.step(s, {b}).loss;
  EXPECT_LT(last, 0.05) << "random targets memorised: loss should approach 0";
}

TEST(Training, Bf16PrecisionFollowsTheF32LossCurve) {
  // "precision": "bf16" rounds every GEMM operand to bf16 (VDPBF16PS on AVX512_BF16, rounded
  // operands through the f32 kernel elsewhere): a tiny MoE learning a periodic sequence must
  // follow the f32 run's losses within 2e-2 relative at every step, learn as well, and still
  // differ from it (the rounding is really applied).
  ModelConfig c = testing::small_config(48, 64, 128, 2, 4, 2, 64);
  c.num_local_experts = 4;
  c.num_experts_per_tok = 2;
  c.moe_intermediate_size = 64;
  Batch b;
  std::vector<int64_t> ids(4 * 32), tgt(4 * 32);
  for (size_t i = 0; i < ids.size(); ++i) {
    ids[i] = static_cast<int64_t>((i * 5 + i / 7) % 48);
    tgt[i] = static_cast<int64_t>(((i + 1) * 5 + (i + 1) / 7) % 48);
  }
  b.ids = Tensor::from_ints(ids, {4, 32});
  b.targets = Tensor::from_ints(tgt, {4, 32});
  auto losses = [&](const std::string& precision) {
    Transformer m = Transformer::create(c, 5);
    TrainConfig tc;
    tc.steps = 40;
    tc.lr = 3e-3;
    tc.warmup_steps = 5;
    tc.precision = precision;
    Trainer trainer(m, tc);
    std::vector<double> out;
    for (int64_t s = 0; s < tc.steps; ++s) out.push_back(trainer.step(s, {b}).loss);
    return out;
  };
  const auto f32 = losses("f32"), bf16 = losses("bf16");
  double largest_gap = 0;
  for (size_t s = 0; s < f32.size(); ++s) {
    EXPECT_NEAR(bf16[s], f32[s], 2e-2 * f32[s]) << "step " << s;
    largest_gap = std::max(largest_gap, std::abs(bf16[s] - f32[s]));
  }
  EXPECT_LT(bf16.back(), 0.5 * bf16.front()) << "bf16 training learns";
  EXPECT_GT(largest_gap, 1e-5) << "bf16 GEMMs gave the f32 losses: the precision was not applied";
}

TEST(Training, ActivationCheckpointingGivesTheSameGradientsWithLessKept) {
  // Dense and MoE layers (every second layer MoE: the MoE half is not recomputed, the attention
  // halves are), packed documents included: every parameter's gradient must match.
  ModelConfig c = testing::small_config(40, 16, 32, 2, 4, 2, 32);
  c.num_local_experts = 4;
  c.decoder_sparse_step = 2;
  const Transformer model = Transformer::create(c, 11);
  Batch b;
  b.ids = Tensor::from_ints({1, 5, 9, 2, 7, 3, 8, 4, 6, 0, 11, 13, 17, 19, 23, 29}, {2, 8});
  b.targets = Tensor::from_ints({5, 9, 2, 7, 3, 8, 4, 6, 0, 11, 13, 17, 19, 23, 29, 31}, {2, 8});
  b.key_start = Tensor::from_ints({0, 0, 0, 3, 3, 3, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0}, {2, 8});
  auto gradients = [&](bool recompute, int64_t* kept) {
    Transformer m = model;
    m.set_activation_checkpointing(recompute);
    for (auto& [name, t] : m.named_parameters()) t.set_grad(Tensor());
    const int64_t before = Storage::live_bytes();
    Tensor loss = training_loss(m, b);
    *kept = Storage::live_bytes() - before;
    loss.backward();
    std::vector<std::vector<float>> out;
    for (auto& [name, t] : m.named_parameters()) out.push_back(t.grad().to_vector());
    return out;
  };
  int64_t kept_plain = 0, kept_recompute = 0;
  const auto plain = gradients(false, &kept_plain);
  const auto recomputed = gradients(true, &kept_recompute);
  ASSERT_EQ(plain.size(), recomputed.size());
  for (size_t i = 0; i < plain.size(); ++i)
    for (size_t j = 0; j < plain[i].size(); ++j) ASSERT_NEAR(plain[i][j], recomputed[i][j], 1e-6f) << "parameter " << i << " element " << j;
  EXPECT_LT(kept_recompute, kept_plain * 3 / 4) << "checkpointing kept " << kept_recompute << " of " << kept_plain << " bytes";
}

TEST(Training, SaveLoadGivesIdenticalLogits) {
  Transformer m = Transformer::create(tiny_config(), 11);
  const std::string dir = ::testing::TempDir() + "smelt_save_load";
  save_model_dir(dir, m);
  Transformer back = load_model_dir(dir);
  Tensor ids = Tensor::from_ints({1, 2, 3, 4, 5, 6}, {1, 6});
  NoGradGuard g;
  EXPECT_EQ(m.forward(ids).to_vector(), back.forward(ids).to_vector());
  // Saving again over an existing directory replaces it whole.
  save_model_dir(dir, back);
  EXPECT_FALSE(std::filesystem::exists(dir + ".tmp." + std::to_string(::getpid())));
}

TEST(Training, KvCacheDecodingMatchesFullForward) {
  Transformer m = Transformer::create(tiny_config(), 12);
  NoGradGuard g;
  Tensor ids = Tensor::from_ints({3, 1, 4, 1, 5, 9, 2, 6}, {1, 8});
  std::vector<float> full = m.forward(ids).to_vector();
  KVCache cache = m.make_cache(1, 8);
  m.forward(ops::slice(ids, 1, 0, 5), &cache);
  for (int64_t t = 5; t < 8; ++t) {
    std::vector<float> step = m.forward(ops::slice(ids, 1, t, t + 1), &cache).to_vector();
    for (int64_t v = 0; v < 32; ++v) EXPECT_NEAR(step[v], full[t * 32 + v], 1e-5) << "t=" << t;
  }
}

TEST(Training, CheckpointShapeMismatchNamesTensor) {
  Transformer m = Transformer::create(tiny_config(), 13);
  ModelConfig other = tiny_config();
  other.hidden_size = 48;
  other.num_attention_heads = 4;
  try {
    Transformer::from_tensors(other, m.named_parameters(), "model.safetensors");
    FAIL() << "expected a shape error";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("model.embed_tokens.weight"), std::string::npos) << e.message();
    EXPECT_NE(e.message().find("model.safetensors"), std::string::npos) << e.message();
  }
}

using testing::expect_error_mentions;
using testing::write_temp;

TEST(Config, BadRecipesNameFileAndField) {
  const std::string good_model =
      R"("model": {"vocab_size": 256, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4})";
  std::string p = write_temp("unknown.json", "{" + good_model + R"(, "train": {"stpes": 5}})");
  expect_error_mentions([&] { read_recipe(p); }, {"unknown.json", "train.stpes", "unknown field"});
  p = write_temp("missing.json", R"({"model": {"vocab_size": 256}})");
  expect_error_mentions([&] { read_recipe(p); }, {"missing.json", "model.hidden_size", "missing"});
  p = write_temp("type.json", "{" + good_model + R"(, "train": {"lr": "fast"}})");
  expect_error_mentions([&] { read_recipe(p); }, {"type.json", "train.lr", "number"});
  p = write_temp("heads.json", R"({"model": {"vocab_size": 256, "hidden_size": 30, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4}})");
  expect_error_mentions([&] { read_recipe(p); }, {"heads.json", "divisible"});
  p = write_temp("broken.json", "{\"model\": ");
  expect_error_mentions([&] { read_recipe(p); }, {"broken.json", "malformed JSON"});
  p = write_temp("huge.json", "{" + good_model + R"(, "train": {"lr": 1e605}})");  // found by fuzzing
  expect_error_mentions([&] { read_recipe(p); }, {"huge.json", "invalid JSON"});
  p = write_temp("vast.json", R"({"model": {"vocab_size": 256, "hidden_size": 888888888888888832, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}})");
  expect_error_mentions([&] { read_recipe(p); }, {"vast.json", "parameters", "1e15"});  // found by fuzzing: the count overflowed int64
  p = write_temp("precision.json", "{" + good_model + R"(, "train": {"precision": "fp8"}})");
  expect_error_mentions([&] { read_recipe(p); }, {"precision.json", "train.precision", "\"f32\" or \"bf16\""});
  p = write_temp("empty.json", "");
  expect_error_mentions([&] { read_recipe(p); }, {"empty.json", "empty"});
  expect_error_mentions([&] { read_recipe("/nonexistent/recipe.json"); }, {"/nonexistent/recipe.json"});
}

TEST(Data, MissingAndEmptyFilesAreRefused) {
  expect_error_mentions([] { TokenDataset::from_text_file("/nonexistent/corpus.txt"); }, {"/nonexistent/corpus.txt", "does not exist"});
  std::string p = write_temp("empty.txt", "");
  expect_error_mentions([&] { TokenDataset::from_text_file(p); }, {"empty.txt", "empty"});
}

TEST(Data, BatchesAreShiftedByOneAndReproducible) {
  TokenDataset d = TokenDataset::from_bytes("abcdefghijklmnopqrstuvwxyz", "alphabet");
  Philox r1(5), r2(5);
  Batch a = d.random_batch(3, 8, r1), b = d.random_batch(3, 8, r2);
  EXPECT_EQ(a.ids.to_int_vector(), b.ids.to_int_vector());
  auto ids = a.ids.to_int_vector(), tg = a.targets.to_int_vector();
  for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(tg[i], ids[i] + 1);
}

TEST(Files, ADirectorySmeltDidNotWriteIsNeverReplaced) {
  namespace fs = std::filesystem;
  const std::string root = ::testing::TempDir() + "atomic_foreign";
  fs::remove_all(root);
  fs::create_directories(root + "/photos");
  write_file_atomic(root + "/photos/holiday.jpg", "precious");
  write_file_atomic(root + "/notes.txt", "also precious");
  auto write_model = [](const std::string& tmp) { write_file_atomic(tmp + "/config.json", "{}"); };
  try {
    write_dir_atomic(root + "/photos", write_model);
    ADD_FAILURE() << "a directory without smelt's files was replaced";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("photos: exists and holds no config.json"), std::string::npos) << e.what();
  }
  EXPECT_THROW(write_dir_atomic(root + "/notes.txt", write_model), Error);
  EXPECT_EQ(read_file(root + "/photos/holiday.jpg"), "precious");
  EXPECT_EQ(read_file(root + "/notes.txt"), "also precious");
  // smelt's own output, or an empty directory, is replaced as before.
  fs::create_directories(root + "/empty");
  write_dir_atomic(root + "/empty", write_model);
  write_dir_atomic(root + "/empty", [](const std::string& tmp) { write_file_atomic(tmp + "/config.json", "again"); });
  EXPECT_EQ(read_file(root + "/empty/config.json"), "again");
}

}  // namespace
}  // namespace smelt

namespace smelt {
namespace {

TEST(Training, FreezeByPatternTrainsOnlyTheRest) {
  ModelConfig c = tiny_config();
  Transformer m = Transformer::create(c, 21);
  EXPECT_EQ(m.freeze({"*.self_attn.*", "model.embed_tokens.weight"}), 2 * 4 + 1);
  EXPECT_THROW(m.freeze({"*.no_such_weight"}), Error);
  std::vector<float> attn_before = m.layer(0).self_attn.q_proj.weight.to_vector();
  std::vector<float> mlp_before = m.layer(0).mlp.up_proj.weight.to_vector();
  Batch b{Tensor::from_ints({1, 2, 3, 4, 5, 6, 7, 8}, {1, 8}), Tensor::from_ints({2, 3, 4, 5, 6, 7, 8, 9}, {1, 8}), Tensor()};
  TrainConfig tc;
  Trainer t(m, tc);
  t.step(0, {b});
  EXPECT_EQ(m.layer(0).self_attn.q_proj.weight.to_vector(), attn_before);
  EXPECT_NE(m.layer(0).mlp.up_proj.weight.to_vector(), mlp_before);
}

TEST(Training, CaptureHooksRecordEveryLayer) {
  Transformer m = Transformer::create(tiny_config(), 22);
  m.set_capture(true);
  NoGradGuard g;
  Tensor ids = Tensor::from_ints({1, 2, 3, 4}, {1, 4});
  Tensor hidden = m.hidden_states(ids);
  const auto& cap = m.captured();
  ASSERT_EQ(cap.ffn_input.size(), 2u);
  ASSERT_EQ(cap.block_output.size(), 2u);
  // the block output is its input residual plus the FFN output; the final norm reads the last one
  EXPECT_EQ(cap.ffn_output[1].shape(), (Shape{1, 4, 32}));
  EXPECT_EQ(ops::rms_norm(cap.block_output[1], Tensor::ones({32}), 1e-5f).to_vector(), hidden.to_vector());
  m.set_capture(false);
  m.hidden_states(ids);
  EXPECT_TRUE(m.captured().ffn_input.empty());
}

}  // namespace
}  // namespace smelt

namespace smelt {
namespace {

TEST(Training, ShardedHuggingFaceLayoutLoads) {
  Transformer m = Transformer::create(tiny_config(), 23);
  const std::string dir = ::testing::TempDir() + "smelt_sharded";
  save_model_dir(dir, m);
  std::filesystem::remove(dir + "/model.safetensors");
  // Two shards and an index, as transformers writes them.
  NamedTensors all = m.state_dict(), first(all.begin(), all.begin() + all.size() / 2), second(all.begin() + all.size() / 2, all.end());
  write_safetensors(dir + "/model-00001-of-00002.safetensors", first);
  write_safetensors(dir + "/model-00002-of-00002.safetensors", second);
  json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", json::object()}};
  for (const auto& [name, t] : first) index["weight_map"][name] = "model-00001-of-00002.safetensors";
  for (const auto& [name, t] : second) index["weight_map"][name] = "model-00002-of-00002.safetensors";
  std::ofstream(dir + "/model.safetensors.index.json") << index.dump();
  Transformer back = load_model_dir(dir);
  NoGradGuard g;
  Tensor ids = Tensor::from_ints({4, 8, 15, 16, 23, 31}, {1, 6});
  EXPECT_EQ(m.forward(ids).to_vector(), back.forward(ids).to_vector());
  // A shard path that leaves the directory is refused.
  index["weight_map"][first[0].first] = "../elsewhere.safetensors";
  std::ofstream(dir + "/model.safetensors.index.json") << index.dump();
  EXPECT_THROW(load_model_dir(dir), Error);
}

}  // namespace
}  // namespace smelt

namespace smelt {
namespace {

TEST(Training, PackedDocumentsGiveTheLogitsOfSeparateForwards) {
  // RoPE makes attention depend on relative positions only, so a document packed after another
  // (with key_start hiding the first) gets the logits it gets alone.
  const ModelConfig c = testing::small_config(40, 16, 32, 2, 2, 1, 32);
  const Transformer m = Transformer::create(c, 7);
  NoGradGuard g;
  const std::vector<int64_t> a = {3, 14, 15, 9}, b = {2, 6, 5, 35, 8};
  std::vector<int64_t> packed = a;
  packed.insert(packed.end(), b.begin(), b.end());
  const Tensor starts = Tensor::from_ints({0, 0, 0, 0, 4, 4, 4, 4, 4}, {1, 9});
  const std::vector<float> both = m.forward(Tensor::from_ints(packed, {1, 9}), nullptr, Tensor(), starts).to_vector();
  const std::vector<float> first = m.forward(Tensor::from_ints(a, {1, 4})).to_vector();
  const std::vector<float> second = m.forward(Tensor::from_ints(b, {1, 5})).to_vector();
  for (size_t i = 0; i < first.size(); ++i) EXPECT_NEAR(both[i], first[i], 1e-5);
  for (size_t i = 0; i < second.size(); ++i) EXPECT_NEAR(both[first.size() + i], second[i], 1e-4) << i;
}

}  // namespace
}  // namespace smelt

namespace smelt {
namespace {

TEST(Files, LeftoversOfAKilledWriterAreCleanedAndThePreviousVersionRestored) {
  namespace fs = std::filesystem;
  const std::string root = ::testing::TempDir() + "atomic_dir";
  fs::remove_all(root);
  fs::create_directories(root);
  // A writer (a PID that cannot be alive) was killed after moving "model" aside as model.old.PID:
  // the next write must bring the previous version back before replacing it, and a stale
  // model.tmp.PID must go.
  const std::string dead = "999999999";
  fs::create_directories(root + "/model.old." + dead);
  write_file_atomic(root + "/model.old." + dead + "/config.json", "previous");
  fs::create_directories(root + "/model.tmp." + dead);
  EXPECT_THROW(write_dir_atomic(root + "/model", [](const std::string&) { SMELT_FAIL("disk full"); }), Error);
  EXPECT_EQ(read_file(root + "/model/config.json"), "previous");  // restored, and the failed write did not replace it
  EXPECT_FALSE(fs::exists(root + "/model.tmp." + dead));
  EXPECT_FALSE(fs::exists(root + "/model.old." + dead));
  write_dir_atomic(root + "/model", [](const std::string& tmp) { write_file_atomic(tmp + "/config.json", "new"); });
  EXPECT_EQ(read_file(root + "/model/config.json"), "new");
  size_t entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(root)) ++entries;
  EXPECT_EQ(entries, 1u);
}

}  // namespace
}  // namespace smelt
