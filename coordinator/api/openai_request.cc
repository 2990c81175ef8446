#include "coordinator/api/openai_request.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "coordinator/api/api_error.h"
#include "coordinator/api/chat_messages.h"
#include "coordinator/api/json_fields.h"

namespace gemmaserve::coordinator::api {
namespace {

using Json = nlohmann::json;

// The OpenAI completions default for an unset max_tokens.
constexpr int64_t kCompletionsDefaultMaxTokens = 16;

absl::StatusOr<std::vector<std::string>> StopStrings(const JsonFields& fields) {
  const Json* stop = fields.Find("stop");
  if (stop == nullptr) return std::vector<std::string>();
  if (stop->is_string()) return std::vector<std::string>{stop->get<std::string>()};
  if (!stop->is_array()) {
    return InvalidField("stop", absl::StrCat("must be a string or an array of strings, got ",
                                             JsonTypeName(*stop)));
  }
  std::vector<std::string> strings;
  for (size_t i = 0; i < stop->size(); ++i) {
    if (!(*stop)[i].is_string()) {
      return InvalidField(absl::StrCat("stop[", i, "]"), "must be a string");
    }
    strings.push_back((*stop)[i].get<std::string>());
  }
  return strings;
}

absl::StatusOr<std::vector<int64_t>> IntegerList(const Json& list, const std::string& field) {
  if (!list.is_array()) {
    return InvalidField(field, absl::StrCat("must be an array of integers, got ",
                                            JsonTypeName(list)));
  }
  std::vector<int64_t> values;
  values.reserve(list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    if (!list[i].is_number_integer()) {
      return InvalidField(absl::StrCat(field, "[", i, "]"), "must be an integer");
    }
    values.push_back(list[i].get<int64_t>());
  }
  return values;
}

// Fields both endpoints share.
absl::Status ParseCommon(const JsonFields& f, const std::string& model_name, OpenAiRequest* r) {
  GenerateParams& p = r->params;
  ASSIGN_OR_RETURN(const std::optional<std::string> model, f.String("model"));
  if (model && *model != model_name) {
    return InvalidField("model", absl::StrCat("\"", *model, "\" is not served here; this server "
                                              "serves \"", model_name, "\""));
  }
  for (const char* field : {"n", "best_of"}) {
    ASSIGN_OR_RETURN(const std::optional<int64_t> n, f.Integer(field));
    if (n && *n != 1) {
      return InvalidField(field, absl::StrCat("only 1 is supported, got ", *n));
    }
  }
  ASSIGN_OR_RETURN(p.temperature, f.Number("temperature"));
  ASSIGN_OR_RETURN(p.top_p, f.Number("top_p"));
  ASSIGN_OR_RETURN(p.top_k, f.Integer("top_k"));
  ASSIGN_OR_RETURN(p.min_p, f.Number("min_p"));
  ASSIGN_OR_RETURN(p.repetition_penalty, f.Number("repetition_penalty"));
  ASSIGN_OR_RETURN(p.presence_penalty, f.Number("presence_penalty"));
  ASSIGN_OR_RETURN(p.frequency_penalty, f.Number("frequency_penalty"));
  ASSIGN_OR_RETURN(const std::optional<int64_t> seed, f.Integer("seed"));
  if (seed) p.seed = static_cast<uint64_t>(*seed);
  ASSIGN_OR_RETURN(p.stop, StopStrings(f));
  if (const Json* ids = f.Find("stop_token_ids")) {
    ASSIGN_OR_RETURN(p.stop_token_ids, IntegerList(*ids, "stop_token_ids"));
  }
  ASSIGN_OR_RETURN(const std::optional<bool> ignore_eos, f.Bool("ignore_eos"));
  p.ignore_eos = ignore_eos.value_or(false);
  ASSIGN_OR_RETURN(const std::optional<bool> stream, f.Bool("stream"));
  r->stream = stream.value_or(false);
  if (const Json* options = f.Find("stream_options")) {
    ASSIGN_OR_RETURN(const JsonFields stream_options, JsonFields::Of(*options, "stream_options"));
    ASSIGN_OR_RETURN(const std::optional<bool> include_usage,
                     stream_options.Bool("include_usage"));
    r->include_usage = include_usage.value_or(false);
  }
  return absl::OkStatus();
}

// prompt: a string, a list of one string, a list of token ids, or a list of one such list.
absl::Status ParsePrompt(const JsonFields& f, GenerateParams* p) {
  const Json* prompt = f.Find("prompt");
  if (prompt == nullptr) return InvalidField("prompt", "is required");
  const Json* single = prompt;
  if (prompt->is_array() && !prompt->empty() && !(*prompt)[0].is_number()) {
    if (prompt->size() != 1) {
      return InvalidField("prompt", absl::StrCat("only one prompt per request is supported, got ",
                                                 prompt->size()));
    }
    single = &(*prompt)[0];
  }
  if (single->is_string()) {
    p->input = TextInput{single->get<std::string>()};
    return absl::OkStatus();
  }
  if (!single->is_array()) {
    return InvalidField("prompt", absl::StrCat("must be a string or an array of token ids, got ",
                                               JsonTypeName(*single)));
  }
  ASSIGN_OR_RETURN(std::vector<int64_t> ids, IntegerList(*single, "prompt"));
  p->input = TokenInput{std::move(ids)};
  return absl::OkStatus();
}

absl::Status ParseCompletion(const JsonFields& f, OpenAiRequest* r) {
  GenerateParams& p = r->params;
  p.input_param = "prompt";
  RETURN_IF_ERROR(ParsePrompt(f, &p));
  ASSIGN_OR_RETURN(p.max_tokens, f.Integer("max_tokens"));
  p.default_max_tokens = kCompletionsDefaultMaxTokens;
  ASSIGN_OR_RETURN(const std::optional<int64_t> logprobs, f.Integer("logprobs"));
  p.logprobs = logprobs.has_value();
  p.top_logprobs = logprobs.value_or(0);
  p.top_logprobs_param = "logprobs";
  ASSIGN_OR_RETURN(const std::optional<bool> echo, f.Bool("echo"));
  r->echo = echo.value_or(false);
  p.prompt_logprobs = r->echo && p.logprobs;
  return absl::OkStatus();
}

// content: a string, null, or a list of {"type": "text", "text": ...} parts.
absl::StatusOr<std::string> MessageContent(const JsonFields& m) {
  const Json* content = m.Find("content");
  if (content == nullptr) return std::string();
  if (content->is_string()) return content->get<std::string>();
  if (!content->is_array()) {
    return InvalidField(m.Path("content"), absl::StrCat("must be a string or an array of parts, "
                                                        "got ", JsonTypeName(*content)));
  }
  std::string text;
  for (size_t i = 0; i < content->size(); ++i) {
    ASSIGN_OR_RETURN(const JsonFields part,
                     JsonFields::Of((*content)[i], absl::StrCat(m.Path("content"), "[", i, "]")));
    ASSIGN_OR_RETURN(const std::optional<std::string> type, part.String("type"));
    if (type != "text") {
      return InvalidField(part.Path("type"), "only text content parts are supported");
    }
    ASSIGN_OR_RETURN(const std::optional<std::string> part_text, part.String("text"));
    text += part_text.value_or("");
  }
  return text;
}

absl::StatusOr<std::vector<ToolCallInput>> MessageToolCalls(const JsonFields& m) {
  std::vector<ToolCallInput> calls;
  const Json* list = m.Find("tool_calls");
  if (list == nullptr) return calls;
  if (!list->is_array()) return InvalidField(m.Path("tool_calls"), "must be an array");
  for (size_t i = 0; i < list->size(); ++i) {
    ASSIGN_OR_RETURN(const JsonFields call,
                     JsonFields::Of((*list)[i], absl::StrCat(m.Path("tool_calls"), "[", i, "]")));
    ASSIGN_OR_RETURN(const std::optional<std::string> id, call.String("id"));
    const Json* function_json = call.Find("function");
    if (function_json == nullptr) return InvalidField(call.Path("function"), "is required");
    ASSIGN_OR_RETURN(const JsonFields function,
                     JsonFields::Of(*function_json, call.Path("function")));
    ASSIGN_OR_RETURN(const std::optional<std::string> name, function.String("name"));
    ASSIGN_OR_RETURN(const std::optional<std::string> arguments, function.String("arguments"));
    calls.push_back({id.value_or(""), name.value_or(""), arguments.value_or("")});
  }
  return calls;
}

absl::StatusOr<std::vector<text::ChatMessage>> ParseMessages(const JsonFields& f) {
  const Json* messages = f.Find("messages");
  if (messages == nullptr) return InvalidField("messages", "is required");
  if (!messages->is_array()) {
    return InvalidField("messages", absl::StrCat("must be an array, got ",
                                                 JsonTypeName(*messages)));
  }
  if (messages->empty()) return InvalidField("messages", "must not be empty");
  ChatMessagesBuilder builder;
  for (size_t i = 0; i < messages->size(); ++i) {
    const std::string field = absl::StrCat("messages[", i, "]");
    ASSIGN_OR_RETURN(const JsonFields m, JsonFields::Of((*messages)[i], field));
    MessageInput input;
    ASSIGN_OR_RETURN(const std::optional<std::string> role, m.String("role"));
    if (!role) return InvalidField(m.Path("role"), "is required");
    input.role = *role;
    ASSIGN_OR_RETURN(input.content, MessageContent(m));
    ASSIGN_OR_RETURN(input.tool_calls, MessageToolCalls(m));
    ASSIGN_OR_RETURN(const std::optional<std::string> call_id, m.String("tool_call_id"));
    ASSIGN_OR_RETURN(const std::optional<std::string> name, m.String("name"));
    input.tool_call_id = call_id.value_or("");
    if (input.role == "tool") input.name = name.value_or("");
    RETURN_IF_ERROR(builder.Add(std::move(input), field));
  }
  return builder.Finish();
}

absl::StatusOr<std::vector<Json>> Tools(const JsonFields& f) {
  std::vector<Json> tools;
  ASSIGN_OR_RETURN(const std::optional<std::string> choice, f.String("tool_choice"));
  if (choice && *choice != "auto" && *choice != "none") {
    return InvalidField("tool_choice", "only \"auto\" and \"none\" are supported");
  }
  if (f.Find("tool_choice") != nullptr && !choice) {
    return InvalidField("tool_choice", "only \"auto\" and \"none\" are supported");
  }
  const Json* list = f.Find("tools");
  if (list == nullptr || choice == "none") return tools;
  if (!list->is_array()) return InvalidField("tools", "must be an array");
  for (size_t i = 0; i < list->size(); ++i) {
    const std::string field = absl::StrCat("tools[", i, "]");
    ASSIGN_OR_RETURN(const JsonFields tool, JsonFields::Of((*list)[i], field));
    const Json* function_json = tool.Find("function");
    if (function_json == nullptr) return InvalidField(tool.Path("function"), "is required");
    ASSIGN_OR_RETURN(const JsonFields function,
                     JsonFields::Of(*function_json, tool.Path("function")));
    ASSIGN_OR_RETURN(const std::optional<std::string> name, function.String("name"));
    if (!name || name->empty()) return InvalidField(function.Path("name"), "is required");
    tools.push_back((*list)[i]);
  }
  return tools;
}

absl::Status ParseChat(const JsonFields& f, OpenAiRequest* r) {
  GenerateParams& p = r->params;
  p.input_param = "messages";
  ChatInput chat;
  ASSIGN_OR_RETURN(chat.messages, ParseMessages(f));
  ASSIGN_OR_RETURN(chat.tools, Tools(f));
  if (const Json* kwargs = f.Find("chat_template_kwargs")) {
    ASSIGN_OR_RETURN(const JsonFields template_fields,
                     JsonFields::Of(*kwargs, "chat_template_kwargs"));
    ASSIGN_OR_RETURN(const std::optional<bool> thinking, template_fields.Bool("enable_thinking"));
    chat.enable_thinking = thinking.value_or(false);
  }
  p.input = std::move(chat);
  ASSIGN_OR_RETURN(p.max_tokens, f.Integer("max_completion_tokens"));
  if (p.max_tokens) {
    p.max_tokens_param = "max_completion_tokens";
  } else {
    ASSIGN_OR_RETURN(p.max_tokens, f.Integer("max_tokens"));
  }
  ASSIGN_OR_RETURN(const std::optional<bool> logprobs, f.Bool("logprobs"));
  p.logprobs = logprobs.value_or(false);
  ASSIGN_OR_RETURN(const std::optional<int64_t> top_logprobs, f.Integer("top_logprobs"));
  p.top_logprobs = top_logprobs.value_or(0);
  if (p.top_logprobs > 0 && !p.logprobs) {
    return InvalidField("top_logprobs", "needs logprobs set to true");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiEndpoint endpoint, std::string_view body,
                                                 const std::string& model_name) {
  ASSIGN_OR_RETURN(const Json json, ParseJsonBody(body));
  ASSIGN_OR_RETURN(const JsonFields fields, JsonFields::Of(json, ""));
  OpenAiRequest request;
  request.endpoint = endpoint;
  RETURN_IF_ERROR(ParseCommon(fields, model_name, &request));
  if (endpoint == OpenAiEndpoint::kCompletions) {
    RETURN_IF_ERROR(ParseCompletion(fields, &request));
  } else {
    RETURN_IF_ERROR(ParseChat(fields, &request));
  }
  return request;
}

}  // namespace gemmaserve::coordinator::api
