#include "coordinator/api/openai_response.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "coordinator/api/api_error.h"

namespace gemmaserve::coordinator::api {
namespace {

using Json = nlohmann::json;
using internal::v1::TokenLogprob;

std::string TokenText(const text::Tokenizer& tokenizer, int32_t id) {
  absl::StatusOr<std::string> text = tokenizer.Decode({id});
  return text.ok() ? *std::move(text) : std::string();
}

// The raw bytes of a token: the byte of a <0xNN> token, else its text's bytes.
Json TokenBytes(const text::Tokenizer& tokenizer, int32_t id, const std::string& text) {
  Json bytes = Json::array();
  const std::optional<std::string_view> token = tokenizer.IdToToken(id);
  if (tokenizer.IsByteToken(id) && token) {
    if (const std::optional<uint8_t> byte = text::ParseByteToken(*token)) {
      bytes.push_back(*byte);
      return bytes;
    }
  }
  for (unsigned char c : text) bytes.push_back(c);
  return bytes;
}

// Legacy completions logprobs: {"tokens", "token_logprobs", "top_logprobs", "text_offset"}.
Json EmptyCompletionLogprobs() {
  return {{"tokens", Json::array()},
          {"token_logprobs", Json::array()},
          {"top_logprobs", Json::array()},
          {"text_offset", Json::array()}};
}

// Appends one token to completions logprobs; a null logprob (the first prompt token) has null
// alternatives too.
void AppendCompletionToken(const text::Tokenizer& tokenizer, int32_t token_id,
                           const TokenLogprob* logprob,
                           const std::vector<TokenLogprob>* alternatives, int64_t* text_offset,
                           Json* out) {
  const std::string text = TokenText(tokenizer, token_id);
  (*out)["tokens"].push_back(text);
  (*out)["text_offset"].push_back(*text_offset);
  *text_offset += static_cast<int64_t>(text.size());
  if (logprob == nullptr) {
    (*out)["token_logprobs"].push_back(nullptr);
    (*out)["top_logprobs"].push_back(nullptr);
    return;
  }
  (*out)["token_logprobs"].push_back(logprob->logprob());
  Json top = Json::object();
  if (alternatives != nullptr) {
    for (const TokenLogprob& alternative : *alternatives) {
      top[TokenText(tokenizer, alternative.token_id())] = alternative.logprob();
    }
  }
  (*out)["top_logprobs"].push_back(std::move(top));
}

void AppendCompletionLogprobs(const text::Tokenizer& tokenizer,
                              const std::vector<TokenLogprob>& logprobs,
                              const std::vector<std::vector<TokenLogprob>>& top_logprobs,
                              int64_t* text_offset, Json* out) {
  for (size_t i = 0; i < logprobs.size(); ++i) {
    AppendCompletionToken(tokenizer, logprobs[i].token_id(), &logprobs[i],
                          i < top_logprobs.size() ? &top_logprobs[i] : nullptr, text_offset, out);
  }
}

// The echoed prompt's tokens: the first has no logprob; token j's is prompt_logprobs[j − 1].
void AppendPromptLogprobs(const text::Tokenizer& tokenizer, const std::vector<int32_t>& prompt_ids,
                          const std::vector<TokenLogprob>& logprobs,
                          const std::vector<std::vector<TokenLogprob>>& top_logprobs,
                          int64_t* text_offset, Json* out) {
  for (size_t j = 0; j < prompt_ids.size(); ++j) {
    const bool known = j > 0 && j - 1 < logprobs.size();
    AppendCompletionToken(tokenizer, prompt_ids[j], known ? &logprobs[j - 1] : nullptr,
                          known && j - 1 < top_logprobs.size() ? &top_logprobs[j - 1] : nullptr,
                          text_offset, out);
  }
}

Json ChatTokenLogprob(const text::Tokenizer& tokenizer, const TokenLogprob& logprob) {
  std::string text = TokenText(tokenizer, logprob.token_id());
  Json bytes = TokenBytes(tokenizer, logprob.token_id(), text);
  return {{"token", std::move(text)}, {"logprob", logprob.logprob()}, {"bytes", std::move(bytes)}};
}

// Chat logprobs: {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}.
Json ChatLogprobs(const text::Tokenizer& tokenizer, const std::vector<TokenLogprob>& logprobs,
                  const std::vector<std::vector<TokenLogprob>>& top_logprobs) {
  Json content = Json::array();
  for (size_t i = 0; i < logprobs.size(); ++i) {
    Json entry = ChatTokenLogprob(tokenizer, logprobs[i]);
    Json top = Json::array();
    if (i < top_logprobs.size()) {
      for (const TokenLogprob& alternative : top_logprobs[i]) {
        top.push_back(ChatTokenLogprob(tokenizer, alternative));
      }
    }
    entry["top_logprobs"] = std::move(top);
    content.push_back(std::move(entry));
  }
  return {{"content", std::move(content)}};
}

Json ToolCallJson(const text::ToolCall& call, const std::string& id, int index) {
  return {{"index", index},
          {"id", id},
          {"type", "function"},
          {"function", {{"name", call.name}, {"arguments", DumpJson(call.arguments)}}}};
}

}  // namespace

std::string ResponseContext::EchoText() const {
  absl::StatusOr<std::string> text = tokenizer->Decode(prompt_ids);
  return text.ok() ? *std::move(text) : std::string();
}

std::string ResponseContext::ResponseId() const {
  return absl::StrCat(endpoint == OpenAiEndpoint::kChatCompletions ? "chatcmpl-" : "cmpl-",
                      request_id);
}

std::string ResponseContext::ToolCallId(int index) const {
  return absl::StrCat("call_", request_id, "_", index);
}

void GenerationResult::Add(const Event& event) {
  text += event.text;
  token_ids.insert(token_ids.end(), event.token_ids.begin(), event.token_ids.end());
  logprobs.insert(logprobs.end(), event.logprobs.begin(), event.logprobs.end());
  top_logprobs.insert(top_logprobs.end(), event.top_logprobs.begin(), event.top_logprobs.end());
  prompt_logprobs.insert(prompt_logprobs.end(), event.prompt_logprobs.begin(),
                         event.prompt_logprobs.end());
  prompt_top_logprobs.insert(prompt_top_logprobs.end(), event.prompt_top_logprobs.begin(),
                             event.prompt_top_logprobs.end());
  if (event.finished) {
    finished = true;
    finish_reason = event.finish_reason;
    error = event.error;
    error_code = event.error_code;
    usage = event.usage;
  }
}

Json UsageJson(const Usage& usage) {
  return {{"prompt_tokens", usage.prompt_tokens},
          {"completion_tokens", usage.completion_tokens},
          {"total_tokens", usage.prompt_tokens + usage.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", usage.cached_tokens}}}};
}

std::string OpenAiFinishReason(FinishReason reason, bool called_tool) {
  if (reason == FinishReason::kStop && called_tool) return "tool_calls";
  return FinishReasonName(reason);
}

Json CompletionResponseJson(const ResponseContext& context, const GenerationResult& result) {
  Json choice = {{"index", 0},
                 {"text", context.echo ? context.EchoText() + result.text : result.text},
                 {"logprobs", nullptr},
                 {"finish_reason", OpenAiFinishReason(result.finish_reason, false)}};
  if (context.logprobs) {
    int64_t offset = 0;
    Json logprobs = EmptyCompletionLogprobs();
    if (context.echo) {
      AppendPromptLogprobs(*context.tokenizer, context.prompt_ids, result.prompt_logprobs,
                           result.prompt_top_logprobs, &offset, &logprobs);
    }
    AppendCompletionLogprobs(*context.tokenizer, result.logprobs, result.top_logprobs, &offset,
                             &logprobs);
    choice["logprobs"] = std::move(logprobs);
  }
  return {{"id", context.ResponseId()},
          {"object", "text_completion"},
          {"created", context.created_s},
          {"model", context.model},
          {"choices", Json::array({std::move(choice)})},
          {"usage", UsageJson(result.usage)}};
}

Json ChatResponseJson(const ResponseContext& context, const GenerationResult& result) {
  ChatOutputSplitter splitter;
  std::vector<ChatPiece> pieces = splitter.Add(result.text);
  for (ChatPiece& piece : splitter.Finish()) pieces.push_back(std::move(piece));
  std::string content, reasoning;
  Json tool_calls = Json::array();
  for (const ChatPiece& piece : pieces) {
    if (piece.kind == ChatPiece::Kind::kContent) content += piece.text;
    if (piece.kind == ChatPiece::Kind::kReasoning) reasoning += piece.text;
    if (piece.kind == ChatPiece::Kind::kToolCall) {
      const int index = static_cast<int>(tool_calls.size());
      tool_calls.push_back(ToolCallJson(piece.tool_call, context.ToolCallId(index), index));
    }
  }
  const bool called_tool = !tool_calls.empty();
  Json message = {{"role", "assistant"},
                  {"content", content.empty() && called_tool ? Json(nullptr) : Json(content)}};
  if (!reasoning.empty()) message["reasoning_content"] = reasoning;
  if (called_tool) message["tool_calls"] = std::move(tool_calls);
  Json choice = {{"index", 0},
                 {"message", std::move(message)},
                 {"logprobs", nullptr},
                 {"finish_reason", OpenAiFinishReason(result.finish_reason, called_tool)}};
  if (context.logprobs) {
    choice["logprobs"] = ChatLogprobs(*context.tokenizer, result.logprobs, result.top_logprobs);
  }
  return {{"id", context.ResponseId()},
          {"object", "chat.completion"},
          {"created", context.created_s},
          {"model", context.model},
          {"choices", Json::array({std::move(choice)})},
          {"usage", UsageJson(result.usage)}};
}

std::string SseData(const Json& json) { return absl::StrCat("data: ", DumpJson(json), "\n\n"); }

OpenAiStreamFormatter::OpenAiStreamFormatter(ResponseContext context)
    : context_(std::move(context)) {}

Json OpenAiStreamFormatter::Chunk(Json choice) const {
  const bool chat = context_.endpoint == OpenAiEndpoint::kChatCompletions;
  Json chunk = {{"id", context_.ResponseId()},
                {"object", chat ? "chat.completion.chunk" : "text_completion"},
                {"created", context_.created_s},
                {"model", context_.model},
                {"choices", Json::array({std::move(choice)})}};
  if (context_.include_usage) chunk["usage"] = nullptr;
  return chunk;
}

std::string OpenAiStreamFormatter::Format(const Event& event) {
  std::string out;
  if (context_.endpoint == OpenAiEndpoint::kChatCompletions) {
    AppendChat(event, &out);
  } else {
    AppendCompletion(event, &out);
  }
  if (event.finished) AppendFinal(event, &out);
  return out;
}

void OpenAiStreamFormatter::AppendCompletion(const Event& event, std::string* out) {
  if (event.text.empty() && event.token_ids.empty()) return;
  if (context_.echo && !echoed_) {
    // The prompt goes first, in a chunk of its own, with its logprobs.
    echoed_ = true;
    Json choice = {{"index", 0}, {"text", context_.EchoText()}, {"logprobs", nullptr},
                   {"finish_reason", nullptr}};
    if (context_.logprobs) {
      Json logprobs = EmptyCompletionLogprobs();
      AppendPromptLogprobs(*context_.tokenizer, context_.prompt_ids, event.prompt_logprobs,
                           event.prompt_top_logprobs, &text_offset_, &logprobs);
      choice["logprobs"] = std::move(logprobs);
    }
    out->append(SseData(Chunk(std::move(choice))));
  }
  Json choice = {{"index", 0}, {"text", event.text}, {"logprobs", nullptr},
                 {"finish_reason", nullptr}};
  if (context_.logprobs) {
    Json logprobs = EmptyCompletionLogprobs();
    AppendCompletionLogprobs(*context_.tokenizer, event.logprobs, event.top_logprobs,
                             &text_offset_, &logprobs);
    choice["logprobs"] = std::move(logprobs);
  }
  out->append(SseData(Chunk(std::move(choice))));
}

void OpenAiStreamFormatter::AppendChat(const Event& event, std::string* out) {
  if (!sent_role_) {
    sent_role_ = true;
    out->append(SseData(Chunk({{"index", 0},
                               {"delta", {{"role", "assistant"}, {"content", ""}}},
                               {"logprobs", nullptr},
                               {"finish_reason", nullptr}})));
  }
  if (context_.logprobs) {
    pending_logprobs_.insert(pending_logprobs_.end(), event.logprobs.begin(),
                             event.logprobs.end());
    pending_top_logprobs_.insert(pending_top_logprobs_.end(), event.top_logprobs.begin(),
                                 event.top_logprobs.end());
  }
  std::vector<ChatPiece> pieces = splitter_.Add(event.text);
  if (event.finished) {
    for (ChatPiece& piece : splitter_.Finish()) pieces.push_back(std::move(piece));
  }
  AppendChatPieces(pieces, out);
  if (event.finished && !pending_logprobs_.empty()) {
    // Tokens with no text to carry them (a stop token, a turn marker): a chunk of their own.
    out->append(SseData(Chunk({{"index", 0},
                               {"delta", Json::object()},
                               {"logprobs", TakePendingLogprobs()},
                               {"finish_reason", nullptr}})));
  }
}

Json OpenAiStreamFormatter::TakePendingLogprobs() {
  Json logprobs = ChatLogprobs(*context_.tokenizer, pending_logprobs_, pending_top_logprobs_);
  pending_logprobs_.clear();
  pending_top_logprobs_.clear();
  return logprobs;
}

void OpenAiStreamFormatter::AppendChatPieces(const std::vector<ChatPiece>& pieces,
                                             std::string* out) {
  for (const ChatPiece& piece : pieces) {
    Json delta;
    switch (piece.kind) {
      case ChatPiece::Kind::kContent:
        delta = {{"content", piece.text}};
        break;
      case ChatPiece::Kind::kReasoning:
        delta = {{"reasoning_content", piece.text}};
        break;
      case ChatPiece::Kind::kToolCall: {
        const int index = num_tool_calls_++;
        delta = {{"tool_calls",
                  Json::array({ToolCallJson(piece.tool_call, context_.ToolCallId(index), index)})}};
        break;
      }
    }
    // The tokens so far ride with the last piece they produced (several pieces from one event
    // cannot be told apart token by token).
    const bool last = &piece == &pieces.back();
    Json logprobs = last && !pending_logprobs_.empty() ? TakePendingLogprobs() : Json(nullptr);
    out->append(SseData(Chunk({{"index", 0},
                               {"delta", std::move(delta)},
                               {"logprobs", std::move(logprobs)},
                               {"finish_reason", nullptr}})));
  }
}

void OpenAiStreamFormatter::AppendFinal(const Event& event, std::string* out) {
  if (event.finish_reason == FinishReason::kError) {
    out->append(SseData(OpenAiErrorJson(absl::Status(
        event.error_code, event.error.empty() ? "the request failed" : event.error))));
  } else {
    const bool chat = context_.endpoint == OpenAiEndpoint::kChatCompletions;
    Json choice = {{"index", 0},
                   {"logprobs", nullptr},
                   {"finish_reason", OpenAiFinishReason(event.finish_reason, num_tool_calls_ > 0)}};
    if (chat) {
      choice["delta"] = Json::object();
    } else {
      choice["text"] = "";
    }
    out->append(SseData(Chunk(std::move(choice))));
    if (context_.include_usage) {
      Json usage_chunk = Chunk(nullptr);
      usage_chunk["choices"] = Json::array();
      usage_chunk["usage"] = UsageJson(event.usage);
      out->append(SseData(usage_chunk));
    }
  }
  out->append(kSseDone);
}

}  // namespace gemmaserve::coordinator::api
