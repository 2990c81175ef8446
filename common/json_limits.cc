#include "common/json_limits.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace gemmaserve {

using Json = nlohmann::json;

bool IsBeyondJsonDepth(int depth, Json::parse_event_t event, int max_depth) {
  const bool is_start =
      event == Json::parse_event_t::object_start || event == Json::parse_event_t::array_start;
  return depth > max_depth || (is_start && depth >= max_depth);
}

absl::StatusOr<Json> ParseJson(std::string_view text, const JsonLimits& limits,
                               const Json::parser_callback_t& callback) {
  if (text.size() > limits.max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("JSON of ", text.size(),
                                                   " bytes is longer than the limit of ",
                                                   limits.max_bytes, " bytes"));
  }
  bool too_deep = false;
  const Json::parser_callback_t limited = [&](int depth, Json::parse_event_t event,
                                              Json& parsed) {
    const bool keep = callback == nullptr || callback(depth, event, parsed);
    if (!IsBeyondJsonDepth(depth, event, limits.max_depth)) return keep;
    too_deep = true;
    return false;
  };
  Json json;
  absl::Status malformed;
  try {
    json = Json::parse(text.begin(), text.end(), limited);
  } catch (const Json::exception& e) {
    // nlohmann's messages read "[json.exception.parse_error.101] parse error at ...: DETAIL".
    std::string_view detail = e.what();
    if (const size_t colon = detail.rfind(": "); colon != std::string_view::npos) {
      detail.remove_prefix(colon + 2);
    }
    const auto* parse_error = dynamic_cast<const Json::parse_error*>(&e);
    malformed = absl::InvalidArgumentError(absl::StrCat(
        "malformed JSON", parse_error ? absl::StrCat(" at byte ", parse_error->byte) : "", ": ",
        std::string(detail)));
  }
  if (too_deep) {
    return absl::InvalidArgumentError(
        absl::StrCat("JSON nested deeper than ", limits.max_depth, " levels"));
  }
  if (!malformed.ok()) return malformed;
  return json;
}

int JsonDepth(const Json& value) {
  int max_depth = 0;
  std::vector<std::pair<const Json*, int>> pending = {{&value, 0}};  // a value and its depth
  while (!pending.empty()) {
    const auto [item, depth] = pending.back();
    pending.pop_back();
    if (!item->is_structured()) continue;
    max_depth = std::max(max_depth, depth + 1);
    for (const Json& child : *item) pending.emplace_back(&child, depth + 1);
  }
  return max_depth;
}

}  // namespace gemmaserve
