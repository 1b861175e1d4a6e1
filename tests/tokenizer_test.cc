// Byte-level BPE against Hugging Face `tokenizers` (fixtures from
// tests/fixtures/make_tokenizer_fixture.py), the GPT-2 pre-tokenisation rules one by one, and
// the errors a broken tokenizer.json gets.
#include <gtest/gtest.h>

#include "io/bpe_tokenizer.h"
#include "io/files.h"
#include "io/json_reader.h"
#include "io/pretokenize.h"
#include "io/unicode.h"
#include "tests/test_util.h"

namespace smelt {
namespace {

using testing::fixture_path;

std::vector<int32_t> ids_of(const json& j) { return j.get<std::vector<int32_t>>(); }

std::vector<std::string> pieces(std::string_view text) {
  std::vector<std::string_view> v;
  split_gpt2(text, v);
  return {v.begin(), v.end()};
}

TEST(Unicode, DecodesAndClassifies) {
  uint32_t cp;
  EXPECT_EQ(decode_utf8("é", 0, cp), 2);
  EXPECT_EQ(cp, 0xE9u);
  EXPECT_EQ(decode_utf8("😀", 0, cp), 4);
  EXPECT_EQ(cp, 0x1F600u);
  EXPECT_EQ(decode_utf8("\xC3", 0, cp), 1);  // truncated
  EXPECT_EQ(cp, 0xFFFDu);
  EXPECT_EQ(decode_utf8("\xC0\xAF", 0, cp), 1);  // overlong '/'
  EXPECT_EQ(decode_utf8("\xED\xA0\x80", 0, cp), 1);  // surrogate
  EXPECT_EQ(char_class('a'), CharClass::Letter);
  EXPECT_EQ(char_class(0x65E5), CharClass::Letter);  // 日
  EXPECT_EQ(char_class(0x0663), CharClass::Number);  // Arabic-Indic three
  EXPECT_EQ(char_class(0x216B), CharClass::Number);  // Roman numeral twelve (Nl)
  EXPECT_EQ(char_class(0x00BD), CharClass::Number);  // ½ (No)
  EXPECT_EQ(char_class(0x3000), CharClass::Space);
  EXPECT_EQ(char_class(0x00A0), CharClass::Space);
  EXPECT_EQ(char_class(0x1C), CharClass::Other);  // not White_Space, though Python's isspace says so
  EXPECT_EQ(char_class(0x1F600), CharClass::Other);
}

TEST(Pretokenize, FollowsTheGpt2RegexRuleByRule) {
  using V = std::vector<std::string>;
  EXPECT_EQ(pieces("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(pieces("it's they're I'll 'LL"), (V{"it", "'s", " they", "'re", " I", "'ll", " '", "LL"}));
  EXPECT_EQ(pieces("abc123 456"), (V{"abc", "123", " 456"}));
  EXPECT_EQ(pieces("a  b"), (V{"a", " ", " b"}));          // \s+(?!\S) leaves one space for the word
  EXPECT_EQ(pieces("a\n\nb"), (V{"a", "\n", "\n", "b"}));  // a newline never joins the word
  EXPECT_EQ(pieces("a   "), (V{"a", "   "}));              // trailing run is whole
  EXPECT_EQ(pieces("x !!? y"), (V{"x", " !!?", " y"}));
  EXPECT_EQ(pieces("\tx"), (V{"\t", "x"}));
  EXPECT_EQ(pieces("日本語 テキスト"), (V{"日本語", " テキスト"}));
  std::string joined;
  for (const std::string& p : pieces("mixed\t \r\n text 😀👍🏽 ½² ...")) joined += p;
  EXPECT_EQ(joined, "mixed\t \r\n text 😀👍🏽 ½² ...");
}

TEST(Pretokenize, ChunkBoundariesDoNotChangeThePieces) {
  const std::string text = read_file(fixture_path("tokenizer_corpus.txt"));
  const std::vector<std::string> whole = pieces(text);
  std::vector<std::string> chunked;
  for (size_t pos = 0; pos < text.size();) {
    const size_t end = next_piece_boundary(text, pos + 997);
    for (std::string& p : pieces(std::string_view(text).substr(pos, end - pos))) chunked.push_back(std::move(p));
    pos = end;
  }
  EXPECT_EQ(whole, chunked);
}

TEST(Tokenizer, LoadsHuggingFaceTrainedTokenizerWithTheSameIds) {
  const json expected = read_json_file(fixture_path("tokenizer_expected.json"));
  const BpeTokenizer hf = BpeTokenizer::from_file(fixture_path("hf_tokenizer.json"));
  const std::string text = expected["text"].get<std::string>();
  const std::vector<int32_t> ids = hf.encode(text);
  EXPECT_EQ(ids, ids_of(expected["hf_tokenizer_ids"]));
  EXPECT_EQ(hf.decode(ids), text);
  EXPECT_EQ(hf.vocab_size(), 900);
}

TEST(Tokenizer, OursLoadsInHuggingFaceWithTheSameIdsAndRetrainsIdentically) {
  const json expected = read_json_file(fixture_path("tokenizer_expected.json"));
  const BpeTokenizer ours = BpeTokenizer::from_file(fixture_path("smelt_tokenizer.json"));
  const std::string text = expected["text"].get<std::string>();
  EXPECT_EQ(ours.encode(text), ids_of(expected["smelt_tokenizer_ids"]));
  EXPECT_EQ(ours.encode(expected["specials_text"].get<std::string>(), true), ids_of(expected["smelt_tokenizer_ids_with_specials"]));
  // Without allow_special, "<|bos|>" in text is ordinary text (no injection of control tokens).
  const std::vector<int32_t> plain = ours.encode("<|bos|>");
  EXPECT_GT(plain.size(), 1u);
  for (int32_t id : plain) EXPECT_FALSE(ours.is_special(id));
  EXPECT_EQ(ours.decode(plain), "<|bos|>");

  BpeTrainOptions options;
  options.vocab_size = 900;
  options.special_tokens = BpeTokenizer::default_special_tokens();
  options.show_progress = false;
  const std::string corpus = read_file(fixture_path("tokenizer_corpus.txt"));
  const BpeTokenizer retrained = BpeTokenizer::train({corpus}, options);
  EXPECT_TRUE(retrained.same_as(ours));
  EXPECT_EQ(retrained.special_id("<|bos|>"), 893);
  // JSON round trip keeps everything.
  EXPECT_TRUE(BpeTokenizer::from_json(json::parse(retrained.to_json().dump()), "round trip").same_as(retrained));
}

TEST(Tokenizer, TrainingMergesTheMostFrequentPairFirst) {
  BpeTrainOptions options;
  options.vocab_size = 256 + 2;
  options.show_progress = false;
  // Pieces "abab" ×3 and "cd" ×3 (newlines are pieces of their own): (a, b) is seen 6 times and
  // merges first; then (ab, ab) and (c, d) are seen 3 times each, and the tie goes to the pair
  // with the smaller ids: c, d (99, 100) are below the new token 256.
  const BpeTokenizer t = BpeTokenizer::train({"abab\nabab\nabab\ncd\ncd\ncd"}, options);
  EXPECT_EQ(t.token_bytes(256), "ab");
  EXPECT_EQ(t.token_bytes(257), "cd");
  EXPECT_EQ(t.encode("abab\ncd"), (std::vector<int32_t>{256, 256, '\n', 257}));
}

void expect_refused(const std::string& text, const std::string& needle) {
  try {
    BpeTokenizer::from_json(json::parse(text), "bad.json");
    ADD_FAILURE() << "accepted: " << text;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << needle << " not in: " << e.what();
    EXPECT_NE(std::string(e.what()).find("bad.json"), std::string::npos) << e.what();
  }
}

TEST(Tokenizer, RefusesWhatItCannotReproduceNamingTheField) {
  json good = json::parse(read_file(fixture_path("smelt_tokenizer.json")));
  auto with = [&](const std::function<void(json&)>& edit) {
    json j = good;
    edit(j);
    return j.dump();
  };
  expect_refused(with([](json& j) { j["normalizer"] = {{"type", "NFKC"}}; }), "normalizer");
  expect_refused(with([](json& j) { j["pre_tokenizer"] = {{"type", "Whitespace"}}; }), "pre_tokenizer");
  expect_refused(with([](json& j) { j["model"]["type"] = "WordPiece"; }), "model.type");
  expect_refused(with([](json& j) { j["model"]["merges"][0] = "nosuchtoken Ġ"; }), "model.merges[0]");
  expect_refused(with([](json& j) { j["model"]["merges"][3] = 17; }), "model.merges[3]");
  expect_refused(with([](json& j) { j["model"]["vocab"]["\x01"] = 5000; }), "model.vocab");
  expect_refused(with([](json& j) { j["model"]["vocab"].erase("a"); }), "no token has id 97");
  expect_refused(with([](json& j) { j["model"]["vocab"]["Ġthe"] = 10; }), "id 10");
  expect_refused(with([](json& j) { j["model"]["byte_fallback"] = true; }), "byte_fallback");
  expect_refused("[1, 2]", "JSON object");
  EXPECT_THROW(BpeTokenizer::from_file("/nonexistent/tokenizer.json"), Error);
}

}  // namespace
}  // namespace smelt

namespace smelt {
namespace {

// Every pre-tokenizer smelt reproduces, against HF `tokenizers` on the same vocabulary
// (tests/fixtures/make_pretokenizer_fixture.py), and through a tokenizer.json round trip.
TEST(Pretokenize, EachVariantGivesHfIds) {
  const json expected = read_json_file(testing::fixture_path("pretokenizer_expected.json"));
  const json base = read_json_file(testing::fixture_path("hf_tokenizer.json"));
  const std::vector<std::string> texts = expected["texts"].get<std::vector<std::string>>();
  for (auto it = expected["variants"].begin(); it != expected["variants"].end(); ++it) {
    json j = base;
    j["pre_tokenizer"] = (*it)["pre_tokenizer"];
    if (it->contains("normalizer")) j["normalizer"] = (*it)["normalizer"];
    if (it->contains("renamed")) {
      json& vocab = j["model"]["vocab"];
      const std::string from = (*it)["renamed"][0], to = (*it)["renamed"][1];
      vocab[to] = vocab[from];
      vocab.erase(from);
    }
    const BpeTokenizer t = BpeTokenizer::from_json(j, it.key());
    const BpeTokenizer again = BpeTokenizer::from_json(json::parse(t.to_json().dump()), it.key() + " (written back)");
    EXPECT_TRUE(t.same_as(again)) << it.key();
    for (size_t k = 0; k < texts.size(); ++k) {
      const std::vector<int32_t> want = (*it)["ids"][k].get<std::vector<int32_t>>();
      EXPECT_EQ(t.encode(texts[k]), want) << it.key() << " text " << k;
      EXPECT_EQ(again.encode(texts[k]), want) << it.key() << " text " << k << " after the round trip";
    }
  }
}

TEST(Pretokenize, RefusesSequencesItCannotReproduce) {
  json j = read_json_file(testing::fixture_path("hf_tokenizer.json"));
  j["pre_tokenizer"] = json::parse(R"({"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\w+"},
      "behavior": "Isolated", "invert": false}, {"type": "ByteLevel", "use_regex": false}]})");
  testing::expect_error_mentions([&] { BpeTokenizer::from_json(j, "t.json"); },
                                 {"t.json: pre_tokenizer.pretokenizers[0].pattern: only the Llama-3 and Qwen2 split regexes"});
  j["pre_tokenizer"] = json::parse(R"({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": false},
      {"type": "ByteLevel"}]})");
  testing::expect_error_mentions([&] { BpeTokenizer::from_json(j, "t.json"); }, {"Digits without individual_digits"});
}

}  // namespace
}  // namespace smelt
