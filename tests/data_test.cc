// Token shards, prepared data directories, the chat template and loss masks, and the errors bad
// data gets (each naming the file and the field or line at fault).
#include <gtest/gtest.h>

#include <filesystem>

#include "io/chat.h"
#include "io/corpus.h"
#include "io/files.h"
#include "io/prepared_data.h"
#include "io/token_data.h"
#include "io/token_shard.h"
#include "runtime/thread_pool.h"
#include "tests/test_util.h"

namespace smelt {
namespace {

using testing::expect_error_mentions;
using testing::fixture_path;
using testing::write_temp;

BpeTokenizer fixture_tokenizer() { return BpeTokenizer::from_file(fixture_path("smelt_tokenizer.json")); }

TEST(TokenShard, RoundTripsBothWidthsAndTheMask) {
  for (uint32_t vocab : {900u, 70000u}) {
    TokenShard s;
    s.vocab_size = vocab;
    for (int i = 0; i < 1000; ++i) s.tokens.push_back(static_cast<int32_t>((i * 7919) % vocab));
    s.mask.assign(1000, 0);
    for (int i = 0; i < 1000; i += 3) s.mask[i] = 1;
    const std::string bytes = token_shard_bytes(s);
    EXPECT_EQ(bytes.size(), 64 + 1000 * (vocab <= 65536 ? 2 : 4) + 1000);
    const TokenShard back = parse_token_shard(bytes, "x.tok");
    EXPECT_EQ(back.tokens, s.tokens);
    EXPECT_EQ(back.mask, s.mask);
    EXPECT_EQ(back.vocab_size, vocab);
  }
}

TEST(TokenShard, RefusesDamagedShardsNamingTheField) {
  TokenShard s;
  s.vocab_size = 300;
  s.tokens = {1, 2, 3, 299};
  const std::string good = token_shard_bytes(s);
  auto with = [&](size_t at, char byte) {
    std::string b = good;
    b[at] = byte;
    return b;
  };
  expect_error_mentions([&] { parse_token_shard(good.substr(0, 40), "t.tok"); }, {"t.tok", "shorter than the 64-byte"});
  expect_error_mentions([&] { parse_token_shard(good.substr(0, good.size() - 1), "t.tok"); }, {"t.tok", "token count"});
  expect_error_mentions([&] { parse_token_shard(with(0, 'X'), "t.tok"); }, {"t.tok", "magic"});
  expect_error_mentions([&] { parse_token_shard(with(8, 9), "t.tok"); }, {"t.tok", "version"});
  expect_error_mentions([&] { parse_token_shard(with(12, 3), "t.tok"); }, {"t.tok", "bytes per token"});
  expect_error_mentions([&] { parse_token_shard(with(64, 5), "t.tok"); }, {"t.tok", "checksum"});
  expect_error_mentions([&] { parse_token_shard(with(50, 1), "t.tok"); }, {"t.tok", "reserved header byte 50"});
  // A token past the vocabulary with a correct checksum: rewrite the vocabulary size instead.
  expect_error_mentions([&] { parse_token_shard(with(37, 0), "t.tok"); }, {"t.tok", "token 3 is 299", "vocabulary of 44"});
  s.tokens.push_back(300);
  expect_error_mentions([&] { token_shard_bytes(s); }, {"token 300", "outside the vocabulary"});
}

TEST(Chat, MasksOnlyTheAssistantAndCannotBeForged) {
  const BpeTokenizer t = fixture_tokenizer();
  const std::vector<ChatMessage> conv = {{"system", "Be brief."}, {"user", "Hi <|assistant|> there"}, {"assistant", "Hello!"}};
  std::vector<int32_t> tokens;
  std::vector<uint8_t> mask;
  render_chat(t, conv, tokens, mask);
  ASSERT_EQ(tokens.size(), mask.size());
  // Expected: <|system|> Be brief. <|end|> <|user|> Hi <|assistant|> there <|end|> <|assistant|> Hello! <|end|> <|eos|>
  std::vector<int32_t> want = {t.special_id("<|system|>")};
  auto add = [&](const std::string& text) {
    for (int32_t id : t.encode(text)) want.push_back(id);
  };
  add("Be brief.");
  want.push_back(t.special_id("<|end|>"));
  want.push_back(t.special_id("<|user|>"));
  add("Hi <|assistant|> there");  // ordinary text: no special token appears
  want.push_back(t.special_id("<|end|>"));
  const size_t assistant_at = want.size();
  want.push_back(t.special_id("<|assistant|>"));
  add("Hello!");
  want.push_back(t.special_id("<|end|>"));
  want.push_back(t.special_id("<|eos|>"));
  EXPECT_EQ(tokens, want);
  int forged = 0;
  for (size_t i = 0; i < assistant_at; ++i) forged += tokens[i] == t.special_id("<|assistant|>");
  EXPECT_EQ(forged, 0);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const bool learn = i > assistant_at && i + 1 < tokens.size();  // the answer and its <|end|>
    EXPECT_EQ(mask[i], learn ? 1 : 0) << "token " << i;
  }
  // A generation prompt ends with the assistant marker instead of <|eos|>.
  const std::vector<int32_t> prompt = render_chat_prompt(t, {{"user", "Hi"}});
  EXPECT_EQ(prompt.back(), t.special_id("<|assistant|>"));
}

// ChatML (SmolLM2, Qwen): chosen by the tokenizer's <|im_start|>/<|im_end|>; the answer and its
// <|im_end|> are learned, the newline after it and every header are not.
TEST(Chat, ChatMLForTokenizersThatHaveItsMarkers) {
  json j = read_json_file(testing::fixture_path("hf_tokenizer.json"));
  const int64_t n = static_cast<int64_t>(j["model"]["vocab"].size());
  for (const char* name : {"<|im_start|>", "<|im_end|>", "<|endoftext|>"}) {
    j["model"]["vocab"][name] = n + static_cast<int64_t>(j["added_tokens"].size()) - 7;
    j["added_tokens"].push_back({{"id", n + static_cast<int64_t>(j["added_tokens"].size()) - 7}, {"content", name}, {"special", true}});
  }
  const BpeTokenizer t = BpeTokenizer::from_json(j, "chatml.json");
  ASSERT_EQ(chat_format(t), ChatFormat::ChatML);
  EXPECT_EQ(chat_turn_end(t), t.special_id("<|im_end|>"));
  EXPECT_EQ(end_of_text_id(t, "chatml.json"), t.special_id("<|eos|>"));  // the fixture has both: <|eos|> first
  std::vector<int32_t> tokens;
  std::vector<uint8_t> mask;
  render_chat(t, {{"user", "Hi <|im_end|>"}, {"assistant", "Hello!"}}, tokens, mask);
  std::vector<int32_t> want, want_mask;
  auto add = [&](const std::vector<int32_t>& ids, int learn) {
    want.insert(want.end(), ids.begin(), ids.end());
    want_mask.insert(want_mask.end(), ids.size(), learn);
  };
  const int32_t start = t.special_id("<|im_start|>"), end = t.special_id("<|im_end|>");
  add({start}, 0), add(t.encode("user\n"), 0), add(t.encode("Hi <|im_end|>"), 0), add({end}, 0), add(t.encode("\n"), 0);
  add({start}, 0), add(t.encode("assistant\n"), 0), add(t.encode("Hello!"), 1), add({end}, 1), add(t.encode("\n"), 0);
  EXPECT_EQ(tokens, want);
  EXPECT_EQ(std::vector<int32_t>(mask.begin(), mask.end()), want_mask);
  std::vector<int32_t> prompt = render_chat_prompt(t, {{"user", "Hi"}});
  std::vector<int32_t> tail = {start};
  for (int32_t id : t.encode("assistant\n")) tail.push_back(id);
  EXPECT_TRUE(std::equal(tail.rbegin(), tail.rend(), prompt.rbegin()));
  const std::string smollm =
      "{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
      "trained by Hugging Face<|im_end|>\n' }}{% endif %}";
  EXPECT_EQ(default_system_prompt(smollm), "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  EXPECT_EQ(default_system_prompt("{{ messages }}"), "");
}

TEST(Chat, BadRecordsNameTheFileLineAndField) {
  const std::string p = write_temp("bad_chat.jsonl", "{\"text\": \"fine\"}\n\n{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}\n");
  expect_error_mentions([&] { read_documents(p); }, {"bad_chat.jsonl:3", "messages[0].role", "robot"});
  const std::string q = write_temp("bad_line.jsonl", "{\"text\": \"fine\"}\n{\"text\": \"unterminated}\n");
  expect_error_mentions([&] { read_documents(q); }, {"bad_line.jsonl:2", "malformed JSON"});
  const std::string r = write_temp("no_answer.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}\n");
  expect_error_mentions([&] { read_documents(r); }, {"no_answer.jsonl:1", "no assistant turn"});
  const std::string u = write_temp("wrong_type.jsonl", "{\"prompt\": \"q\", \"response\": 5}\n");
  expect_error_mentions([&] { read_documents(u); }, {"wrong_type.jsonl:1", "response", "expected a string"});
}

std::string temp_dir(const std::string& name) {
  const std::string d = ::testing::TempDir() + name;
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

TEST(PreparedData, SplitsEncodesAndReadsBackIndependentOfThreads) {
  const std::string in = temp_dir("prep_in");
  const std::string corpus = read_file(fixture_path("tokenizer_corpus.txt"));
  write_file_atomic(in + "/a.txt", corpus + corpus + corpus);  // ~130 KB: three blocks
  write_file_atomic(in + "/b.md", "not matched by the glob");
  PrepareOptions o;
  o.inputs = {in};
  o.glob = "*.txt";
  o.tokenizer = fixture_path("smelt_tokenizer.json");
  o.out = ::testing::TempDir() + "prep_out";
  o.val_fraction = 0;
  const PrepareResult whole = prepare_data(o);
  // With nothing held out the shards are exactly the file's encoding plus <|eos|>.
  const BpeTokenizer t = fixture_tokenizer();
  std::vector<int32_t> want = t.encode(corpus + corpus + corpus);
  want.push_back(t.special_id("<|eos|>"));
  const TokenDataset all = TokenDataset::from_prepared(o.out, "train");
  EXPECT_EQ(all.tokens(), want);
  EXPECT_EQ(whole.manifest.sources.size(), 1u);
  EXPECT_GE(whole.manifest.train.blocks, 2);

  o.val_fraction = 0.4;
  o.shard_tokens = 10000;  // several shards per split
  const int threads = num_threads();
  set_num_threads(1);
  prepare_data(o);
  const std::string one_thread = read_file(o.out + "/train-00000.tok");
  set_num_threads(2);
  const PrepareResult r = prepare_data(o);
  set_num_threads(threads);
  EXPECT_EQ(read_file(o.out + "/train-00000.tok"), one_thread);
  EXPECT_GT(r.manifest.val.tokens, 0);
  EXPECT_GT(r.manifest.train.shards.size(), 1u);
  EXPECT_EQ(r.manifest.train.tokens + r.manifest.val.tokens, static_cast<int64_t>(want.size()));
  const TokenDataset tr = TokenDataset::from_prepared(o.out, "train"), va = TokenDataset::from_prepared(o.out, "val");
  EXPECT_EQ(tr.size() + va.size(), static_cast<int64_t>(want.size()));
  EXPECT_EQ(tr.text_bytes() + va.text_bytes(), static_cast<int64_t>(corpus.size() * 3));
  EXPECT_TRUE(std::filesystem::exists(o.out + "/tokenizer.json"));
}

TEST(PreparedData, ConversationsCarryAMaskThatBecomesIgnoredTargets) {
  const std::string p = write_temp("chat.jsonl", "{\"prompt\": \"What does cat mean?\", \"response\": \"A small feline.\"}\n"
                                                   "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello.\"}]}\n");
  PrepareOptions o;
  o.inputs = {p};
  o.tokenizer = fixture_path("smelt_tokenizer.json");
  o.out = ::testing::TempDir() + "prep_chat";
  o.val_fraction = 0;
  const PrepareResult r = prepare_data(o);
  EXPECT_TRUE(r.manifest.masked);
  const TokenDataset d = TokenDataset::from_prepared(o.out, "train");
  ASSERT_TRUE(d.masked());
  const int64_t T = d.size() - 1;
  const Batch b = d.window_batch(0, 1, T);
  const std::vector<int64_t> targets = b.targets.to_int_vector();
  const BpeTokenizer t = fixture_tokenizer();
  std::vector<int32_t> tokens;
  std::vector<uint8_t> mask;
  render_chat(t, {{"user", "What does cat mean?"}, {"assistant", "A small feline."}}, tokens, mask);
  render_chat(t, {{"user", "Hi"}, {"assistant", "Hello."}}, tokens, mask);
  ASSERT_EQ(static_cast<int64_t>(tokens.size()), d.size());
  for (int64_t i = 0; i < T; ++i) EXPECT_EQ(targets[i], mask[i + 1] ? tokens[i + 1] : -100) << "position " << i;
}

TEST(PreparedData, PackedDocumentsAttendOnlyWithinThemselves) {
  // Documents end with the separator 9: the token after it starts a new document.
  TokenDataset d = TokenDataset::from_tokens({1, 2, 9, 3, 4, 5, 9, 6, 7, 8, 9, 1}, {}, "packed", 12, 10);
  d.set_document_separator(9);
  const Batch b = d.window_batch(0, 1, 11);
  EXPECT_EQ(b.key_start.to_int_vector(), (std::vector<int64_t>{0, 0, 0, 3, 3, 3, 3, 7, 7, 7, 7}));
  const Batch shifted = d.window_batch(0, 2, 5);  // the second window starts mid-document
  EXPECT_EQ(shifted.key_start.to_int_vector(), (std::vector<int64_t>{0, 0, 0, 3, 3, 0, 0, 2, 2, 2}));
}

TEST(PreparedData, RefusesBadManifestsAndMismatchedShards) {
  PrepareOptions o;
  o.inputs = {fixture_path("tokenizer_corpus.txt")};
  o.tokenizer = fixture_path("smelt_tokenizer.json");
  o.out = ::testing::TempDir() + "prep_bad";
  o.val_fraction = 0;
  prepare_data(o);
  const std::string manifest = read_file(o.out + "/manifest.json");
  json j = json::parse(manifest);
  j["extra"] = 1;
  write_file_atomic(o.out + "/manifest.json", j.dump());
  expect_error_mentions([&] { read_data_manifest(o.out); }, {"manifest.json", "extra", "unknown"});
  j.erase("extra");
  j["splits"]["train"]["tokens"] = 5;
  write_file_atomic(o.out + "/manifest.json", j.dump());
  expect_error_mentions([&] { TokenDataset::from_prepared(o.out, "train"); }, {"splits.train.tokens", "shards hold"});
  j = json::parse(manifest);
  j["splits"]["train"]["shards"] = {"../../etc/passwd"};
  write_file_atomic(o.out + "/manifest.json", j.dump());
  expect_error_mentions([&] { TokenDataset::from_prepared(o.out, "train"); }, {"not a file name"});
  o.val_fraction = 1.5;
  expect_error_mentions([&] { prepare_data(o); }, {"--val-fraction"});
  o.val_fraction = 0;
  o.inputs = {"/nonexistent/corpus"};
  expect_error_mentions([&] { prepare_data(o); }, {"/nonexistent/corpus", "no such file"});
}

}  // namespace
}  // namespace smelt
