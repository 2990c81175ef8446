#include "coordinator/api/json_fields.h"

#include <cmath>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "coordinator/api/api_error.h"

namespace gemmaserve::coordinator::api {
namespace {

using Json = nlohmann::json;

// Tracks where the parser is (the path of the value being read) through nlohmann's callback, and
// where the body first went deeper than the limit. Values dropped for their depth report only
// starts and keys, so events beyond the limit are not tracked.
class PathTracker {
 public:
  explicit PathTracker(int max_depth) : max_depth_(max_depth) {}

  void OnEvent(int depth, Json::parse_event_t event, const Json& parsed) {
    if (IsBeyondJsonDepth(depth, event, max_depth_)) {
      if (!too_deep_path_) too_deep_path_ = Path();
      return;
    }
    switch (event) {
      case Json::parse_event_t::object_start:
        frames_.push_back({false, 0, ""});
        break;
      case Json::parse_event_t::array_start:
        frames_.push_back({true, 0, ""});
        break;
      case Json::parse_event_t::key:
        frames_.back().key = parsed.is_string() ? parsed.get_ref<const std::string&>() : "";
        break;
      case Json::parse_event_t::value:
        if (!frames_.empty() && frames_.back().is_array) ++frames_.back().index;
        break;
      case Json::parse_event_t::object_end:
      case Json::parse_event_t::array_end:
        frames_.pop_back();
        if (!frames_.empty() && frames_.back().is_array) ++frames_.back().index;
        break;
    }
  }

  // The path of the value being read; "" at the top level.
  std::string Path() const {
    std::string path;
    for (const Frame& frame : frames_) {
      if (frame.is_array) {
        absl::StrAppend(&path, "[", frame.index, "]");
      } else if (!frame.key.empty()) {
        absl::StrAppend(&path, path.empty() ? "" : ".", frame.key);
      }
    }
    return path;
  }

  // The path of the container holding the first value beyond the depth limit, if any.
  const std::optional<std::string>& too_deep_path() const { return too_deep_path_; }

 private:
  struct Frame {
    bool is_array;
    size_t index;
    std::string key;
  };
  int max_depth_;
  std::vector<Frame> frames_;
  std::optional<std::string> too_deep_path_;
};

}  // namespace

const char* JsonTypeName(const Json& value) {
  if (value.is_string()) return "string";
  if (value.is_number_integer()) return "integer";
  if (value.is_number()) return "number";
  if (value.is_boolean()) return "boolean";
  if (value.is_object()) return "object";
  if (value.is_array()) return "array";
  return "null";
}

absl::StatusOr<Json> ParseJsonBody(std::string_view body) {
  PathTracker tracker(kRequestBodyJsonLimits.max_depth);
  absl::StatusOr<Json> json = ParseJson(
      body, kRequestBodyJsonLimits, [&tracker](int depth, Json::parse_event_t event, Json& parsed) {
        tracker.OnEvent(depth, event, parsed);
        return true;
      });
  if (json.ok()) return json;
  // ParseJson reports nesting first; a syntax error stops the parser where the tracker is.
  const std::string path = tracker.too_deep_path().value_or(tracker.Path());
  if (path.empty()) return json.status();
  return InvalidField(path, std::string(json.status().message()));
}

absl::StatusOr<Json> ParseEmbeddedJson(std::string_view text, const std::string& field) {
  absl::StatusOr<Json> json = ParseJson(text, kEmbeddedJsonLimits);
  if (!json.ok()) return InvalidField(field, std::string(json.status().message()));
  return json;
}

absl::StatusOr<JsonFields> JsonFields::Of(const Json& object, std::string path) {
  if (!object.is_object()) {
    return InvalidField(path.empty() ? "body" : path,
                        absl::StrCat("must be a JSON object, got ", JsonTypeName(object)));
  }
  return JsonFields(&object, std::move(path));
}

const Json* JsonFields::Find(std::string_view name) const {
  auto it = object_->find(name);
  if (it == object_->end() || it->is_null()) return nullptr;
  return &*it;
}

std::string JsonFields::Path(std::string_view name) const {
  return path_.empty() ? std::string(name) : absl::StrCat(path_, ".", std::string(name));
}

absl::Status JsonFields::WrongType(std::string_view name, const Json& value,
                                   const std::string& expected) const {
  return InvalidField(Path(name), absl::StrCat("must be ", expected, ", got ",
                                               JsonTypeName(value)));
}

absl::StatusOr<std::optional<double>> JsonFields::Number(std::string_view name) const {
  const Json* value = Find(name);
  if (value == nullptr) return std::nullopt;
  if (!value->is_number()) return WrongType(name, *value, "a number");
  return value->get<double>();
}

absl::StatusOr<std::optional<int64_t>> JsonFields::Integer(std::string_view name) const {
  const Json* value = Find(name);
  if (value == nullptr) return std::nullopt;
  if (value->is_number_unsigned()) {
    const uint64_t v = value->get<uint64_t>();
    if (v > static_cast<uint64_t>(INT64_MAX)) return WrongType(name, *value, "a 64-bit integer");
    return static_cast<int64_t>(v);
  }
  if (value->is_number_integer()) return value->get<int64_t>();
  if (value->is_number_float()) {
    const double v = value->get<double>();
    if (std::trunc(v) == v && std::fabs(v) < 9.0e15) return static_cast<int64_t>(v);
  }
  return WrongType(name, *value, "an integer");
}

absl::StatusOr<std::optional<bool>> JsonFields::Bool(std::string_view name) const {
  const Json* value = Find(name);
  if (value == nullptr) return std::nullopt;
  if (!value->is_boolean()) return WrongType(name, *value, "a boolean");
  return value->get<bool>();
}

absl::StatusOr<std::optional<std::string>> JsonFields::String(std::string_view name) const {
  const Json* value = Find(name);
  if (value == nullptr) return std::nullopt;
  if (!value->is_string()) return WrongType(name, *value, "a string");
  return value->get<std::string>();
}

}  // namespace gemmaserve::coordinator::api
