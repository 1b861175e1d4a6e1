// Instruct data: conversations and the chat template that turns them into tokens. Two formats,
// chosen by the tokenizer's special tokens:
//   smelt's:  <|system|>text<|end|><|user|>text<|end|><|assistant|>text<|end|> ... <|eos|>
//   ChatML (SmolLM2, Qwen; a tokenizer with <|im_start|> and <|im_end|>):
//             <|im_start|>user\ntext<|im_end|>\n<|im_start|>assistant\ntext<|im_end|>\n ...
// Every marker is a special token; each content is encoded on its own, so text can never forge
// a marker (ChatML's "role\n" header is encoded apart from the content, which differs from HF's
// Jinja rendering only for content that starts with white space after the newline). The loss
// mask is 1 on the assistant's content and its end marker (the model learns to answer and to
// stop) and 0 elsewhere. smelt's template in Jinja is stored in tokenizer_config.json for Hugging
// Face users (it yields the same ids there); an imported model keeps its own template.
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

enum class ChatFormat { Smelt, ChatML };
// ChatML when the tokenizer has <|im_start|> and <|im_end|>, else smelt's.
ChatFormat chat_format(const BpeTokenizer& tokenizer);
// The token that ends an assistant turn (what generation stops at): <|end|> or <|im_end|>.
int32_t chat_turn_end(const BpeTokenizer& tokenizer);
// The token that ends a document of plain text: <|eos|>, else <|endoftext|>; throws naming
// `source` when the tokenizer has neither.
int32_t end_of_text_id(const BpeTokenizer& tokenizer, const std::string& source);
// The system prompt a Jinja chat template inserts when a conversation has none (SmolLM2's
// "You are a helpful AI assistant named SmolLM, ..."); empty when it inserts none.
std::string default_system_prompt(const std::string& jinja);

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
