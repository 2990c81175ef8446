// Formatting OpenAI-compatible responses from the engine's Events: the JSON body of a
// non-streaming /v1/completions or /v1/chat/completions response, and the Server-Sent Events of
// a streaming one (`data: {chunk}\n\n` ... `data: [DONE]\n\n`).
//
// Completions with `echo` send the prompt's text first (in a chunk of its own when streaming),
// and with logprobs its tokens' logprobs: null for the first, as OpenAI's legacy API has it.
// Chat output goes through ChatOutputSplitter, so reasoning comes back in `reasoning_content`
// and tool calls in `tool_calls` (finish_reason "tool_calls" when the model called one); a chunk
// carries one kind of delta. Usage: prompt_tokens, completion_tokens, total_tokens and
// prompt_tokens_details.cached_tokens; in a stream, only when stream_options.include_usage is
// set, in one last chunk with empty choices. An engine error mid-stream becomes a
// `data: {"error": ...}` event before [DONE].
//
// No I/O: the HTTP server writes what these return. Thread-compatible; the Tokenizer (for the
// token strings of logprobs) must outlive them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "coordinator/api/chat_output.h"
#include "coordinator/api/openai_request.h"
#include "coordinator/request.h"
#include "nlohmann/json.hpp"
#include "text/tokenizer.h"

namespace gemmaserve::coordinator::api {

// What every response of one request shares.
struct ResponseContext {
  std::string request_id;
  int64_t created_s = 0;
  std::string model;
  OpenAiEndpoint endpoint = OpenAiEndpoint::kCompletions;
  bool logprobs = false;
  bool include_usage = false;  // streaming only
  // Completions: the prompt's text (and, with logprobs, its tokens' logprobs) comes first.
  bool echo = false;
  std::vector<int32_t> prompt_ids = {};  // with echo
  const text::Tokenizer* tokenizer = nullptr;

  // The echoed prompt: its tokens' text, special tokens such as <bos> included, so that it
  // agrees with the logprobs' tokens and text offsets.
  std::string EchoText() const;

  // "cmpl-REQUEST_ID" or "chatcmpl-REQUEST_ID".
  std::string ResponseId() const;
  // "call_REQUEST_ID_INDEX", as the gRPC API names tool calls too.
  std::string ToolCallId(int index) const;
};

// A whole generation, gathered from its events.
struct GenerationResult {
  std::string text;
  std::vector<int32_t> token_ids;
  std::vector<internal::v1::TokenLogprob> logprobs;
  std::vector<std::vector<internal::v1::TokenLogprob>> top_logprobs;
  std::vector<internal::v1::TokenLogprob> prompt_logprobs;
  std::vector<std::vector<internal::v1::TokenLogprob>> prompt_top_logprobs;
  bool finished = false;
  FinishReason finish_reason = FinishReason::kStop;
  std::string error;
  absl::StatusCode error_code = absl::StatusCode::kInternal;
  Usage usage;

  void Add(const Event& event);
};

nlohmann::json UsageJson(const Usage& usage);

// "stop", "length", "abort" or "error"; chat requests whose output called a tool: "tool_calls".
std::string OpenAiFinishReason(FinishReason reason, bool called_tool);

// The non-streaming body: {"id", "object", "created", "model", "choices": [...], "usage"}.
nlohmann::json CompletionResponseJson(const ResponseContext& context,
                                      const GenerationResult& result);
nlohmann::json ChatResponseJson(const ResponseContext& context, const GenerationResult& result);

// One SSE event: "data: " + JSON + "\n\n".
std::string SseData(const nlohmann::json& json);
inline constexpr char kSseDone[] = "data: [DONE]\n\n";

// Turns one request's events into SSE text, in order. Not thread-safe; one per request.
class OpenAiStreamFormatter {
 public:
  explicit OpenAiStreamFormatter(ResponseContext context);

  // The SSE text for `event` (maybe empty); after the final event it ends with [DONE].
  std::string Format(const Event& event);

 private:
  nlohmann::json Chunk(nlohmann::json choice) const;
  void AppendCompletion(const Event& event, std::string* out);
  void AppendChat(const Event& event, std::string* out);
  void AppendChatPieces(const std::vector<ChatPiece>& pieces, std::string* out);
  nlohmann::json TakePendingLogprobs();  // and clears them
  void AppendFinal(const Event& event, std::string* out);

  ResponseContext context_;
  ChatOutputSplitter splitter_;
  bool sent_role_ = false;
  int num_tool_calls_ = 0;
  bool echoed_ = false;
  int64_t text_offset_ = 0;  // completions logprobs: bytes of text sent so far
  // Chat logprobs of tokens whose text the splitter still holds: they go out with the chunk that
  // carries it.
  std::vector<internal::v1::TokenLogprob> pending_logprobs_;
  std::vector<std::vector<internal::v1::TokenLogprob>> pending_top_logprobs_;
};

}  // namespace gemmaserve::coordinator::api
