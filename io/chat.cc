#include "io/chat.h"

namespace smelt {
namespace {

const char* const kRoles[] = {"system", "user", "assistant"};

std::string marker(const std::string& role) { return "<|" + role + "|>"; }

}  // namespace

bool is_chat_record(const json& r) { return r.is_object() && (r.contains("messages") || r.contains("prompt")); }

std::vector<ChatMessage> parse_chat_record(const json& r, const std::string& where) {
  SMELT_CHECK(r.is_object(), where, ": expected a JSON object");
  auto str = [&](const json& v, const std::string& field) {
    SMELT_CHECK(v.is_string(), where, ": ", field, ": expected a string, got ", v.type_name());
    return v.get<std::string>();
  };
  std::vector<ChatMessage> out;
  if (r.contains("messages")) {
    const json& m = r["messages"];
    SMELT_CHECK(m.is_array() && !m.empty(), where, ": messages: expected a non-empty array");
    for (size_t i = 0; i < m.size(); ++i) {
      const std::string field = "messages[" + std::to_string(i) + "]";
      SMELT_CHECK(m[i].is_object() && m[i].contains("role") && m[i].contains("content"), where, ": ", field,
                  ": expected {\"role\": ..., \"content\": ...}");
      ChatMessage msg{str(m[i]["role"], field + ".role"), str(m[i]["content"], field + ".content")};
      bool known = false;
      for (const char* role : kRoles) known = known || msg.role == role;
      SMELT_CHECK(known, where, ": ", field, ".role: unknown role \"", msg.role, "\" (expected system, user or assistant)");
      out.push_back(std::move(msg));
    }
  } else {
    SMELT_CHECK(r.contains("prompt") && r.contains("response"), where, ": expected \"messages\", or \"prompt\" with \"response\"");
    out.push_back({"user", str(r["prompt"], "prompt")});
    out.push_back({"assistant", str(r["response"], "response")});
  }
  bool has_assistant = false;
  for (const ChatMessage& m : out) has_assistant = has_assistant || m.role == "assistant";
  SMELT_CHECK(has_assistant, where, ": messages: no assistant turn, so nothing to learn from");
  return out;
}

ChatFormat chat_format(const BpeTokenizer& t) {
  return t.has_special("<|im_start|>") && t.has_special("<|im_end|>") ? ChatFormat::ChatML : ChatFormat::Smelt;
}

int32_t chat_turn_end(const BpeTokenizer& t) { return t.special_id(chat_format(t) == ChatFormat::ChatML ? "<|im_end|>" : "<|end|>"); }

int32_t end_of_text_id(const BpeTokenizer& t, const std::string& source) {
  for (const char* name : {"<|eos|>", "<|endoftext|>"})
    if (t.has_special(name)) return t.special_id(name);
  SMELT_FAIL(source, ": the tokenizer has no <|eos|> or <|endoftext|> token to end documents with");
}

std::string default_system_prompt(const std::string& jinja) {
  // The template's literal '<|im_start|>system\n...<|im_end|>' (a real newline, or Jinja's \n).
  for (const std::string open : {"'<|im_start|>system\n", "'<|im_start|>system\\n"}) {
    const size_t at = jinja.find(open);
    if (at == std::string::npos) continue;
    const size_t begin = at + open.size(), end = jinja.find("<|im_end|>", begin);
    if (end != std::string::npos && jinja.find('\'', begin) > end) return jinja.substr(begin, end - begin);
  }
  return "";
}

void check_chat_tokens(const BpeTokenizer& t, const std::string& source) {
  if (chat_format(t) == ChatFormat::ChatML) {
    end_of_text_id(t, source);
    return;
  }
  for (const char* name : {"<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|eos|>"})
    SMELT_CHECK(t.has_special(name), source, ": the tokenizer has no special token ", name, ", which the chat template needs");
}

namespace {

// ChatML: <|im_start|>role\n content <|im_end|>\n per message; no end-of-text token after.
void render_chatml(const BpeTokenizer& t, const std::vector<ChatMessage>& messages, std::vector<int32_t>& tokens,
                   std::vector<uint8_t>& mask) {
  const int32_t start = t.special_id("<|im_start|>"), end = t.special_id("<|im_end|>");
  const std::vector<int32_t> newline = t.encode("\n");
  std::vector<int32_t> part;
  for (const ChatMessage& m : messages) {
    const uint8_t learn = m.role == "assistant" ? 1 : 0;
    part.assign(1, start);
    t.encode_append(m.role + "\n", false, part);
    tokens.insert(tokens.end(), part.begin(), part.end());
    mask.insert(mask.end(), part.size(), 0);
    part.clear();
    t.encode_append(m.content, false, part);
    part.push_back(end);
    tokens.insert(tokens.end(), part.begin(), part.end());
    mask.insert(mask.end(), part.size(), learn);
    tokens.insert(tokens.end(), newline.begin(), newline.end());
    mask.insert(mask.end(), newline.size(), 0);
  }
}

}  // namespace

void render_chat(const BpeTokenizer& t, const std::vector<ChatMessage>& messages, std::vector<int32_t>& tokens, std::vector<uint8_t>& mask) {
  if (chat_format(t) == ChatFormat::ChatML) return render_chatml(t, messages, tokens, mask);
  const int32_t end = t.special_id("<|end|>");
  std::vector<int32_t> content;
  for (const ChatMessage& m : messages) {
    const uint8_t learn = m.role == "assistant" ? 1 : 0;
    tokens.push_back(t.special_id(marker(m.role)));
    mask.push_back(0);
    content.clear();
    t.encode_append(m.content, false, content);
    tokens.insert(tokens.end(), content.begin(), content.end());
    mask.insert(mask.end(), content.size(), learn);
    tokens.push_back(end);
    mask.push_back(learn);
  }
  tokens.push_back(t.special_id("<|eos|>"));
  mask.push_back(0);
}

std::vector<int32_t> render_chat_prompt(const BpeTokenizer& t, const std::vector<ChatMessage>& messages) {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> mask;
  render_chat(t, messages, tokens, mask);
  if (chat_format(t) == ChatFormat::ChatML) {
    tokens.push_back(t.special_id("<|im_start|>"));
    t.encode_append("assistant\n", false, tokens);
  } else {
    tokens.back() = t.special_id("<|assistant|>");  // replace <|eos|>: the model answers next
  }
  return tokens;
}

std::string tokenizer_config_json() {
  const json j = {{"tokenizer_class", "PreTrainedTokenizerFast"},
                  {"bos_token", "<|bos|>"},
                  {"eos_token", "<|eos|>"},
                  {"pad_token", "<|pad|>"},
                  {"model_max_length", 1000000},
                  {"chat_template",
                   "{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '<|end|>' }}{% endfor %}"
                   "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}"}};
  return j.dump(2) + "\n";
}

}  // namespace smelt
