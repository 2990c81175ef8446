// The Gemma 4 chat template on conversations built from the input: up to eight messages of any
// role (unknown ones included) with text, tool calls whose arguments are arbitrary JSON (or
// strings), tool responses, and tool declarations, thinking on or off, in both template
// variants. Client text must never turn into structure tokens: the same conversation with every
// '<', '>' and '|' in its text replaced must render with exactly the same structure tokens.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/json_limits.h"
#include "tests/fuzz/fuzz_util.h"
#include "text/chat_template.h"

namespace text = gemmaserve::text;

namespace {

// Arbitrary JSON from the input, or its text as a string when it does not parse.
nlohmann::json JsonValue(FuzzedDataProvider& input) {
  const std::string text = input.ConsumeRandomLengthString(512);
  absl::StatusOr<nlohmann::json> json = gemmaserve::ParseJson(text, {.max_bytes = 4096});
  return json.ok() ? *std::move(json) : nlohmann::json(text);
}

text::ChatMessage Message(FuzzedDataProvider& input) {
  static const char* const kRoles[] = {"system", "developer", "user",   "assistant",
                                       "model",  "tool",      "wizard", ""};
  text::ChatMessage message;
  message.role = kRoles[input.ConsumeIntegralInRange<size_t>(0, std::size(kRoles) - 1)];
  message.content = input.ConsumeRandomLengthString(512);
  for (int i = input.ConsumeIntegralInRange(0, 2); i > 0; --i) {
    message.tool_calls.push_back({input.ConsumeRandomLengthString(64), JsonValue(input)});
  }
  for (int i = input.ConsumeIntegralInRange(0, 2); i > 0; --i) {
    message.tool_responses.push_back({input.ConsumeRandomLengthString(64), JsonValue(input)});
  }
  return message;
}

// `value` with '<', '>' and '|' escaped in every string (keys too, one to one so that no two keys
// merge), so no marker can be spelled.
std::string Defang(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '<') {
      out += "_lt";
    } else if (c == '>') {
      out += "_gt";
    } else if (c == '|') {
      out += "_bar";
    } else if (c == '_') {
      out += "__";
    } else {
      out += c;
    }
  }
  return out;
}
nlohmann::json Defang(const nlohmann::json& value) {  // at most kMaxJsonDepth deep (ParseJson)
  if (value.is_string()) return Defang(value.get<std::string>());
  if (value.is_array()) {
    nlohmann::json out = nlohmann::json::array();
    for (const nlohmann::json& item : value) out.push_back(Defang(item));
    return out;
  }
  if (value.is_object()) {
    nlohmann::json out = nlohmann::json::object();
    for (const auto& [key, item] : value.items()) out[Defang(key)] = Defang(item);
    return out;
  }
  return value;
}

// How often each structure token occurs in `ids`.
std::vector<long> StructureCounts(const text::ChatTemplate& chat, const std::vector<int32_t>& ids) {
  const text::ChatTemplate::Tokens& t = chat.tokens();
  std::vector<long> counts;
  for (int32_t token :
       {t.bos, t.turn_start, t.turn_end, t.think, t.channel_start, t.channel_end, t.tool_start,
        t.tool_end, t.call_start, t.call_end, t.response_start, t.response_end, t.quote}) {
    counts.push_back(static_cast<long>(std::count(ids.begin(), ids.end(), token)));
  }
  return counts;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider input(data, size);
  const text::ChatVariant variant =
      input.ConsumeBool() ? text::ChatVariant::kLarge : text::ChatVariant::kEdge;
  text::ChatOptions options;
  options.enable_thinking = input.ConsumeBool();
  options.add_generation_prompt = input.ConsumeBool();
  for (int i = input.ConsumeIntegralInRange(0, 2); i > 0; --i)
    options.tools.push_back(JsonValue(input));
  std::vector<text::ChatMessage> messages;
  for (int i = input.ConsumeIntegralInRange(1, 8); i > 0 && input.remaining_bytes() > 0; --i) {
    messages.push_back(Message(input));
  }

  const text::Tokenizer& tokenizer = gemmaserve::fuzz::TinyModel().tokenizer();
  absl::StatusOr<text::ChatTemplate> chat = text::ChatTemplate::Create(&tokenizer, variant);
  if (!chat.ok()) std::abort();  // the tiny tokenizer has every chat token
  absl::StatusOr<text::RenderedPrompt> prompt = chat->Render(messages, options);
  if (!prompt.ok()) return 0;

  for (text::ChatMessage& message : messages) {
    message.content = Defang(message.content);
    for (text::ToolCall& call : message.tool_calls) {
      call.name = Defang(call.name);
      call.arguments = Defang(call.arguments);
    }
    for (text::ToolResponse& response : message.tool_responses) {
      response.name = Defang(response.name);
      response.response = Defang(response.response);
    }
  }
  for (nlohmann::json& tool : options.tools) tool = Defang(tool);
  absl::StatusOr<text::RenderedPrompt> defanged = chat->Render(messages, options);
  // It may fail where the original did not: the template drops the thinking of model turns
  // (from <|channel>), which can hold text it would refuse (invalid UTF-8).
  if (!defanged.ok()) return 0;
  if (StructureCounts(*chat, prompt->ids) != StructureCounts(*chat, defanged->ids)) {
    std::fprintf(stderr, "client text changed the prompt's structure tokens:\n%s\n---\n%s\n",
                 prompt->text.c_str(), defanged->text.c_str());
    std::abort();
  }
  return 0;
}
