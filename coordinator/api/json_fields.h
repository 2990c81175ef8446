// Reading untrusted JSON request bodies without exceptions escaping and with every error naming
// its field.
//
// ParseJsonBody parses a whole body within kRequestBodyJsonLimits (common/json_limits.h): a syntax
// error, invalid UTF-8 or nesting deeper than kMaxJsonDepth is INVALID_ARGUMENT naming the path of
// the value being read ("messages[0].content"), which is also the error's param. ParseEmbeddedJson
// does the same for JSON text carried inside a string field (tool-call arguments, a tool result,
// gRPC tools_json), naming that field.
//
// JsonFields reads the fields of one object with type checks: an absent field or JSON null is
// nullopt; a value of the wrong type is INVALID_ARGUMENT naming the field and the type it has.
// Pure functions / a view over a json the caller keeps alive; thread-compatible.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/json_limits.h"
#include "nlohmann/json.hpp"

namespace gemmaserve::coordinator::api {

// Whole request bodies. The HTTP server refuses a body over its max_body_bytes (413) before this.
inline constexpr JsonLimits kRequestBodyJsonLimits{.max_bytes = size_t{16} << 20};
// JSON text inside a request's strings; 4 MiB is more text than any Gemma 4 context holds.
inline constexpr JsonLimits kEmbeddedJsonLimits{.max_bytes = size_t{4} << 20};

absl::StatusOr<nlohmann::json> ParseJsonBody(std::string_view body);

// The JSON in string field `field` (e.g. "messages[1].tool_calls[0].function.arguments"); errors
// are InvalidField(field, ...).
absl::StatusOr<nlohmann::json> ParseEmbeddedJson(std::string_view text, const std::string& field);

// "string", "integer", "number", "boolean", "object", "array" or "null".
const char* JsonTypeName(const nlohmann::json& value);

class JsonFields {
 public:
  // INVALID_ARGUMENT naming `path` (or "body" when empty) when `object` is not an object.
  static absl::StatusOr<JsonFields> Of(const nlohmann::json& object, std::string path);

  // The value, or null when absent or JSON null.
  const nlohmann::json* Find(std::string_view name) const;
  // `path.name`, as errors name it.
  std::string Path(std::string_view name) const;

  absl::StatusOr<std::optional<double>> Number(std::string_view name) const;
  // Integers; a number with a fractional part is refused.
  absl::StatusOr<std::optional<int64_t>> Integer(std::string_view name) const;
  absl::StatusOr<std::optional<bool>> Bool(std::string_view name) const;
  absl::StatusOr<std::optional<std::string>> String(std::string_view name) const;

 private:
  JsonFields(const nlohmann::json* object, std::string path)
      : object_(object), path_(std::move(path)) {}

  absl::Status WrongType(std::string_view name, const nlohmann::json& value,
                         const std::string& expected) const;

  const nlohmann::json* object_;
  std::string path_;
};

}  // namespace gemmaserve::coordinator::api
