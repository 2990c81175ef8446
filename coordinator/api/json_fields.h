// Reading untrusted JSON request bodies without exceptions escaping and with every error naming
// its field.
//
// ParseJsonBody parses a whole body; a syntax error or invalid UTF-8 is INVALID_ARGUMENT giving
// the byte offset and the path of the value being read ("messages[0].content"), which is also the
// error's param. Nesting deeper than kMaxJsonDepth is refused, since later stages (tool schemas)
// walk values recursively.
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
#include "nlohmann/json.hpp"

namespace gemmaserve::coordinator::api {

inline constexpr int kMaxJsonDepth = 64;

absl::StatusOr<nlohmann::json> ParseJsonBody(std::string_view body);

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
