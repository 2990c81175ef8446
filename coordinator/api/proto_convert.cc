#include "coordinator/api/proto_convert.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "coordinator/api/api_error.h"
#include "coordinator/api/chat_messages.h"
#include "coordinator/api/chat_output.h"
#include "coordinator/api/json_fields.h"
#include "nlohmann/json.hpp"

namespace gemmaserve::coordinator::api {
namespace {

using Json = nlohmann::json;

absl::StatusOr<ChatInput> ChatFromProto(const v1::ChatInput& chat, bool thinking,
                                        const std::string& tools_json) {
  ChatInput input;
  input.enable_thinking = thinking;
  if (!tools_json.empty()) {
    ASSIGN_OR_RETURN(const Json tools, ParseEmbeddedJson(tools_json, "tools_json"));
    if (!tools.is_array()) {
      return InvalidField("tools_json", "must be a JSON array of function declarations");
    }
    for (size_t i = 0; i < tools.size(); ++i) {
      const Json& tool = tools[i];
      if (!tool.is_object() || !tool.contains("function") || !tool["function"].is_object() ||
          !tool["function"].contains("name") || !tool["function"]["name"].is_string()) {
        return InvalidField(absl::StrCat("tools_json[", i, "]"),
                            "must be {\"type\": \"function\", \"function\": {\"name\": ...}}");
      }
      input.tools.push_back(tool);
    }
  }
  ChatMessagesBuilder builder;
  for (int i = 0; i < chat.messages_size(); ++i) {
    const v1::ChatMessage& message = chat.messages(i);
    MessageInput converted{.role = message.role(), .content = message.content(),
                           .tool_call_id = message.tool_call_id(), .name = message.name()};
    for (const v1::ToolCall& call : message.tool_calls()) {
      converted.tool_calls.push_back({call.id(), call.name(), call.arguments_json()});
    }
    RETURN_IF_ERROR(builder.Add(std::move(converted), absl::StrCat("chat.messages[", i, "]")));
  }
  input.messages = builder.Finish();
  return input;
}

}  // namespace

absl::StatusOr<GenerateParams> ParamsFromProto(const v1::GenerateRequest& request) {
  GenerateParams p;
  p.request_id = request.request_id();
  switch (request.input_case()) {
    case v1::GenerateRequest::kText:
      p.input = TextInput{request.text()};
      p.input_param = "text";
      break;
    case v1::GenerateRequest::kChat: {
      p.input_param = "chat.messages";
      ASSIGN_OR_RETURN(p.input, ChatFromProto(request.chat(), request.thinking(),
                                              request.tools_json()));
      break;
    }
    case v1::GenerateRequest::kTokenIds:
      p.input = TokenInput{{request.token_ids().ids().begin(), request.token_ids().ids().end()}};
      p.input_param = "token_ids.ids";
      break;
    default:
      return InvalidField("input", "set one of text, chat or token_ids");
  }
  if (request.has_temperature()) p.temperature = request.temperature();
  if (request.has_top_k()) p.top_k = request.top_k();
  if (request.has_top_p()) p.top_p = request.top_p();
  if (request.has_min_p()) p.min_p = request.min_p();
  if (request.has_seed()) p.seed = request.seed();
  if (request.has_repetition_penalty()) p.repetition_penalty = request.repetition_penalty();
  if (request.has_presence_penalty()) p.presence_penalty = request.presence_penalty();
  if (request.has_frequency_penalty()) p.frequency_penalty = request.frequency_penalty();
  if (request.has_max_tokens()) p.max_tokens = request.max_tokens();
  p.stop.assign(request.stop().begin(), request.stop().end());
  p.stop_token_ids.assign(request.stop_token_ids().begin(), request.stop_token_ids().end());
  p.ignore_eos = request.ignore_eos();
  p.logprobs = request.logprobs();
  p.top_logprobs = request.top_logprobs();
  p.prompt_logprobs = request.prompt_logprobs();
  return p;
}

absl::StatusOr<GenerateParams> ParamsFromProto(const v1::TokenizeRequest& request) {
  GenerateParams p;
  if (request.input_case() == v1::TokenizeRequest::kText) {
    p.input = TextInput{request.text()};
    p.input_param = "text";
  } else if (request.input_case() == v1::TokenizeRequest::kChat) {
    p.input_param = "chat.messages";
    ASSIGN_OR_RETURN(p.input,
                     ChatFromProto(request.chat(), request.thinking(), request.tools_json()));
  } else {
    return InvalidField("input", "set one of text or chat");
  }
  return p;
}

v1::FinishReason FinishReasonToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return v1::FINISH_REASON_STOP;
    case FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case FinishReason::kAbort:
      return v1::FINISH_REASON_ABORT;
    case FinishReason::kError:
      return v1::FINISH_REASON_ERROR;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

namespace {

void SetLogprob(const internal::v1::TokenLogprob& from, const text::Tokenizer& tokenizer,
                v1::TokenLogprob* to) {
  to->set_token_id(from.token_id());
  to->set_logprob(from.logprob());
  absl::StatusOr<std::string> text = tokenizer.Decode({from.token_id()});
  if (text.ok()) to->set_token(*std::move(text));
}

void AddTopLogprobs(const std::vector<std::vector<internal::v1::TokenLogprob>>& positions,
                    const text::Tokenizer& tokenizer,
                    google::protobuf::RepeatedPtrField<v1::TopLogprobs>* to) {
  for (const auto& alternatives : positions) {
    v1::TopLogprobs* top = to->Add();
    for (const auto& logprob : alternatives) {
      SetLogprob(logprob, tokenizer, top->add_alternatives());
    }
  }
}

}  // namespace

v1::Delta DeltaFromEvent(const Event& event, const text::Tokenizer& tokenizer) {
  v1::Delta delta;
  delta.set_text(event.text);
  delta.mutable_token_ids()->Add(event.token_ids.begin(), event.token_ids.end());
  for (const auto& logprob : event.logprobs) SetLogprob(logprob, tokenizer, delta.add_logprobs());
  AddTopLogprobs(event.top_logprobs, tokenizer, delta.mutable_top_logprobs());
  for (const auto& logprob : event.prompt_logprobs) {
    SetLogprob(logprob, tokenizer, delta.add_prompt_logprobs());
  }
  AddTopLogprobs(event.prompt_top_logprobs, tokenizer, delta.mutable_prompt_top_logprobs());
  return delta;
}

v1::Final FinalFromEvent(const Event& event, const std::string* chat_text,
                         const std::string& request_id) {
  v1::Final final;
  final.set_finish_reason(FinishReasonToProto(event.finish_reason));
  final.set_matched_stop(event.matched_stop);
  final.set_error(event.error);
  final.mutable_usage()->set_prompt_tokens(event.usage.prompt_tokens);
  final.mutable_usage()->set_completion_tokens(event.usage.completion_tokens);
  final.mutable_usage()->set_cached_tokens(event.usage.cached_tokens);
  final.mutable_timings()->set_queue_ms(event.usage.queue_ms);
  final.mutable_timings()->set_ttft_ms(event.usage.ttft_ms);
  final.mutable_timings()->set_total_ms(event.usage.total_ms);
  if (chat_text == nullptr) return final;
  v1::ChatOutput* chat = final.mutable_chat();
  ChatOutputSplitter splitter;
  std::vector<ChatPiece> pieces = splitter.Add(*chat_text);
  for (ChatPiece& piece : splitter.Finish()) pieces.push_back(std::move(piece));
  for (const ChatPiece& piece : pieces) {
    if (piece.kind == ChatPiece::Kind::kContent) chat->mutable_content()->append(piece.text);
    if (piece.kind == ChatPiece::Kind::kReasoning) chat->mutable_reasoning()->append(piece.text);
    if (piece.kind == ChatPiece::Kind::kToolCall) {
      v1::ToolCall* call = chat->add_tool_calls();
      call->set_id(absl::StrCat("call_", request_id, "_", chat->tool_calls_size() - 1));
      call->set_name(piece.tool_call.name);
      call->set_arguments_json(DumpJson(piece.tool_call.arguments));
    }
  }
  return final;
}

v1::Load LoadToProto(const LoadInfo& load, bool ready) {
  v1::Load proto;
  proto.set_ready(ready);
  proto.set_running_requests(load.running_requests);
  proto.set_waiting_requests(load.waiting_requests);
  proto.set_total_pages(load.total_pages);
  proto.set_used_sliding_pages(load.used_sliding_pages);
  proto.set_used_full_pages(load.used_full_pages);
  proto.set_used_sliding_blocks(load.used_sliding_blocks);
  proto.set_used_full_blocks(load.used_full_blocks);
  proto.set_prefix_cache_queried_tokens(load.prefix_cache_queried_tokens);
  proto.set_prefix_cache_hit_tokens(load.prefix_cache_hit_tokens);
  proto.set_preemptions(load.preemptions);
  proto.set_max_model_len(load.max_model_len);
  return proto;
}

}  // namespace gemmaserve::coordinator::api
