// Instruct data: conversations and the chat template that turns them into tokens.
//   <|system|>text<|end|><|user|>text<|end|><|assistant|>text<|end|> ... <|eos|>
// Every role marker and <|end|> is a special token; each content is encoded on its own, so text
// can never forge a marker. The loss mask is 1 on the assistant's content and its <|end|> (the
// model learns to answer and to stop) and 0 elsewhere. The same template in Jinja is stored in
// tokenizer_config.json for Hugging Face users (it yields the same ids there).
#pragma once
#include <string>
#include <vector>

#include "io/bpe_tokenizer.h"
#include "io/json_reader.h"

namespace smelt {

struct ChatMessage {
  std::string role;  // system, user or assistant
  std::string content;
};

// {"messages": [{"role", "content"}...]} or {"prompt", "response"} → messages. `where` names the
// record (file:line) in errors: unknown role, empty conversation, no assistant turn, wrong types.
std::vector<ChatMessage> parse_chat_record(const json& record, const std::string& where);
bool is_chat_record(const json& record);

// Appends the conversation's tokens, and one mask byte per token.
void render_chat(const BpeTokenizer& tokenizer, const std::vector<ChatMessage>& messages, std::vector<int32_t>& tokens,
                 std::vector<uint8_t>& mask);
// The tokens that ask the model for the next assistant turn after `messages` (no <|eos|>).
std::vector<int32_t> render_chat_prompt(const BpeTokenizer& tokenizer, const std::vector<ChatMessage>& messages);

// Throws naming `source` when the tokenizer lacks a special token the template needs.
void check_chat_tokens(const BpeTokenizer& tokenizer, const std::string& source);

// tokenizer_config.json for a smelt tokenizer: special tokens and the Jinja chat template.
std::string tokenizer_config_json();

}  // namespace smelt
