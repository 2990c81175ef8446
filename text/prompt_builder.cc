#include "text/prompt_builder.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"

namespace gemmaserve::text {
namespace {

using Json = nlohmann::json;

const Json& Get(const Json& object, const char* key) {
  static const Json* const kNull = new Json();
  if (!object.is_object()) return *kNull;
  const auto it = object.find(key);
  return it == object.end() ? *kNull : *it;
}

// Jinja truthiness.
bool Truthy(const Json& value) {
  if (value.is_null()) return false;
  if (value.is_boolean()) return value.get<bool>();
  if (value.is_number()) return value != 0;
  return !value.empty();  // strings, arrays, objects
}

// How Jinja prints a scalar inside {{ }}: strings as is, a missing value as nothing.
std::string Str(const Json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_null()) return "";
  return value.dump();
}

// Jinja's dictsort: by key, case-insensitively.
std::vector<std::pair<std::string, const Json*>> DictSort(const Json& object) {
  std::vector<std::pair<std::string, const Json*>> items;
  if (!object.is_object()) return items;
  for (const auto& [key, value] : object.items()) items.emplace_back(key, &value);
  std::stable_sort(items.begin(), items.end(), [](const auto& a, const auto& b) {
    return absl::AsciiStrToLower(a.first) < absl::AsciiStrToLower(b.first);
  });
  return items;
}

bool IsStandardKey(const std::string& key) {
  return key == "description" || key == "type" || key == "properties" || key == "required" ||
         key == "nullable";
}

}  // namespace

PromptBuilder::PromptBuilder(const Tokenizer* tokenizer, int32_t quote_token)
    : tokenizer_(tokenizer), quote_token_(quote_token) {}

void PromptBuilder::Token(int32_t id) {
  FlushText();
  prompt_.ids.push_back(id);
  prompt_.text += *tokenizer_->IdToToken(id);
}

void PromptBuilder::Text(std::string_view text) {
  pending_text_.append(text);
  prompt_.text.append(text);
}

void PromptBuilder::FlushText() {
  if (pending_text_.empty()) return;
  absl::StatusOr<std::vector<int32_t>> ids =
      tokenizer_->Encode(pending_text_, {.split_special_tokens = true});
  if (ids.ok()) {
    prompt_.ids.insert(prompt_.ids.end(), ids->begin(), ids->end());
  } else if (status_.ok()) {
    status_ = ids.status();
  }
  pending_text_.clear();
}

absl::StatusOr<RenderedPrompt> PromptBuilder::Finish() {
  FlushText();
  if (!status_.ok()) return status_;
  return std::move(prompt_);
}

void PromptBuilder::Quoted(std::string_view text) {
  Token(quote_token_);
  Text(text);
  Token(quote_token_);
}

void PromptBuilder::Value(const Json& value, bool escape_keys) {
  if (value.is_string()) {
    Quoted(value.get_ref<const std::string&>());
  } else if (value.is_boolean()) {
    Text(value.get<bool>() ? "true" : "false");
  } else if (value.is_object()) {
    Text("{");
    bool first = true;
    for (const auto& [key, item] : DictSort(value)) {
      if (!first) Text(",");
      first = false;
      escape_keys ? Quoted(key) : Text(key);
      Text(":");
      Value(*item, escape_keys);
    }
    Text("}");
  } else if (value.is_array()) {
    Text("[");
    for (size_t i = 0; i < value.size(); ++i) {
      if (i > 0) Text(",");
      Value(value[i], escape_keys);
    }
    Text("]");
  } else if (value.is_null()) {
    Text("None");  // what Jinja prints for Python's None
  } else {
    Text(value.dump());
  }
}

void PromptBuilder::KeyValues(const Json& object) {
  bool first = true;
  for (const auto& [key, value] : DictSort(object)) {
    if (!first) Text(",");
    first = false;
    Text(key);
    Text(":");
    Value(*value, /*escape_keys=*/false);
  }
}

void PromptBuilder::ToolCallBody(const ToolCall& call) {
  Text("call:");
  Text(call.name);
  Text("{");
  if (call.arguments.is_object()) {
    KeyValues(call.arguments);
  } else if (call.arguments.is_string()) {
    Text(call.arguments.get_ref<const std::string&>());
  }
  Text("}");
}

void PromptBuilder::ToolResponseBody(const ToolResponse& response) {
  Text("response:");
  Text(response.name.empty() ? "unknown" : response.name);
  if (response.response.is_object()) {
    Text("{");
    KeyValues(response.response);
    Text("}");
  } else {
    Text("{value:");
    Value(response.response, /*escape_keys=*/false);
    Text("}");
  }
}

void PromptBuilder::QuotedList(const Json& list) {
  Text("[");
  for (size_t i = 0; list.is_array() && i < list.size(); ++i) {
    if (i > 0) Text(",");
    Quoted(Str(list[i]));
  }
  Text("]");
}

// The template's format_function_declaration, including its quirks: the parameters object is
// closed only when it has a type, and the response block likewise.
void PromptBuilder::Declaration(const Json& tool) {
  const Json& function = Get(tool, "function");
  Text("declaration:");
  Text(Str(Get(function, "name")));
  Text("{description:");
  Quoted(Str(Get(function, "description")));
  const Json& params = Get(function, "parameters");
  if (Truthy(params)) {
    Text(",parameters:{");
    if (Truthy(Get(params, "properties"))) {
      Text("properties:{");
      Parameters(Get(params, "properties"));
      Text("},");
    }
    if (Truthy(Get(params, "required"))) {
      Text("required:");
      QuotedList(Get(params, "required"));
      Text(",");
    }
    if (Truthy(Get(params, "type"))) {
      Text("type:");
      Quoted(absl::AsciiStrToUpper(Str(Get(params, "type"))));
      Text("}");
    }
  }
  if (function.is_object() && function.contains("response")) {
    const Json& response = function["response"];
    Text(",response:{");
    if (Truthy(Get(response, "description"))) {
      Text("description:");
      Quoted(Str(Get(response, "description")));
      Text(",");
    }
    if (absl::AsciiStrToUpper(Str(Get(response, "type"))) == "OBJECT") {
      Text("type:");
      Quoted("OBJECT");
      Text("}");
    }
  }
  Text("}");
}

// The template's format_parameters over a JSON-schema "properties" object.
void PromptBuilder::Parameters(const Json& properties) {
  bool first = true;
  for (const auto& [key, value] : DictSort(properties)) {
    if (IsStandardKey(key)) continue;
    if (!first) Text(",");
    first = false;
    Parameter(key, *value);
  }
}

void PromptBuilder::Parameter(const std::string& key, const Json& value) {
  Text(key);
  Text(":{");
  bool add_comma = false;
  const auto separate = [&] {
    if (add_comma) Text(",");
    add_comma = true;
  };
  if (Truthy(Get(value, "description"))) {
    Text("description:");
    Quoted(Str(Get(value, "description")));
    add_comma = true;
  }
  if (Truthy(Get(value, "nullable"))) {
    separate();
    Text("nullable:true");
  }
  const Json& type_field = Get(value, "type");
  const std::string type = absl::AsciiStrToUpper(
      type_field.is_array() && !type_field.empty() ? Str(type_field[0]) : Str(type_field));
  if (type == "STRING" && Truthy(Get(value, "enum"))) {
    separate();
    Text("enum:");
    Value(Get(value, "enum"), /*escape_keys=*/true);
  } else if (type == "OBJECT") {
    Text(",properties:{");
    const Json& nested = Get(value, "properties");
    Parameters(nested.is_object() ? nested : value);
    Text("}");
    if (Truthy(Get(value, "required"))) {
      Text(",required:");
      QuotedList(Get(value, "required"));
    }
  } else if (type == "ARRAY" && Get(value, "items").is_object() && Truthy(Get(value, "items"))) {
    Text(",items:{");
    ArrayItems(Get(value, "items"));
    Text("}");
  }
  separate();
  Text("type:");
  Quoted(type);
  Text("}");
}

void PromptBuilder::ArrayItems(const Json& items) {
  bool first = true;
  for (const auto& [key, value] : DictSort(items)) {
    if (value->is_null()) continue;
    if (!first) Text(",");
    first = false;
    if (key == "properties") {
      Text("properties:{");
      if (value->is_object()) Parameters(*value);
      Text("}");
    } else if (key == "required") {
      Text("required:");
      QuotedList(*value);
    } else if (key == "type") {
      Text("type:");
      if (value->is_string()) {
        Value(absl::AsciiStrToUpper(value->get<std::string>()), /*escape_keys=*/true);
      } else {
        Json upper = Json::array();
        for (const Json& type : *value) upper.push_back(absl::AsciiStrToUpper(Str(type)));
        Value(upper, /*escape_keys=*/true);
      }
    } else {
      Text(key);
      Text(":");
      Value(*value, /*escape_keys=*/true);
    }
  }
}

}  // namespace gemmaserve::text
