#include "text/stop_conditions.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/json_limits.h"
#include "common/mapped_file.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "text/utf8.h"

namespace gemmaserve::text {
namespace {

using Json = nlohmann::json;

// config.json and generation_config.json are a few KB.
constexpr JsonLimits kConfigJsonLimits{.max_bytes = size_t{16} << 20};

// The eos_token_id field of `object` (or of its text_config), or nullptr.
const Json* FindEosField(const Json& object) {
  if (!object.is_object()) return nullptr;
  if (auto it = object.find("eos_token_id"); it != object.end() && !it->is_null()) return &*it;
  if (auto text = object.find("text_config"); text != object.end()) return FindEosField(*text);
  return nullptr;
}

// Reads eos_token_id from one JSON file; an empty list means the file does not name any.
absl::StatusOr<std::vector<int32_t>> ReadEosIds(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string text, ReadFileToString(path));
  absl::StatusOr<Json> root = ParseJson(text, kConfigJsonLimits);
  if (!root.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", root.status().message()));
  }
  const Json* field = FindEosField(*root);
  if (field == nullptr) return std::vector<int32_t>();
  const Json list = field->is_array() ? *field : Json::array({*field});
  std::vector<int32_t> ids;
  for (const Json& id : list) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": eos_token_id ", field->dump(), " is not an id or a list of ids"));
    }
    ids.push_back(id.get<int32_t>());
  }
  return ids;
}

}  // namespace

EosTokenIds::EosTokenIds(std::vector<int32_t> ids)
    : ids_(std::move(ids)), set_(ids_.begin(), ids_.end()) {}

absl::StatusOr<EosTokenIds> EosTokenIds::FromModelDir(const std::string& dir) {
  for (const char* name : {"generation_config.json", "config.json"}) {
    const std::string path = absl::StrCat(dir, "/", name);
    absl::StatusOr<std::vector<int32_t>> ids = ReadEosIds(path);
    if (absl::IsNotFound(ids.status())) continue;  // the file is optional
    RETURN_IF_ERROR(ids.status());
    if (!ids->empty()) return EosTokenIds(*std::move(ids));
  }
  return absl::NotFoundError(
      absl::StrCat(dir, ": neither generation_config.json nor config.json has an eos_token_id"));
}

absl::StatusOr<StopStringMatcher> StopStringMatcher::Create(std::vector<std::string> stop_strings) {
  std::vector<std::string> kept;
  for (std::string& stop : stop_strings) {
    if (!IsValidUtf8(stop)) {
      return absl::InvalidArgumentError(absl::StrCat("stop string \"", stop, "\" is not valid UTF-8"));
    }
    if (!stop.empty()) kept.push_back(std::move(stop));
  }
  return StopStringMatcher(std::move(kept));
}

StopStringMatcher::StopStringMatcher(std::vector<std::string> stop_strings)
    : stop_strings_(std::move(stop_strings)) {}

StopStringMatcher::Output StopStringMatcher::Add(std::string_view delta) {
  Output output;
  if (stopped_) return output;
  held_.append(delta.data(), delta.size());
  size_t first_match = std::string::npos;
  const std::string* matched = nullptr;
  for (const std::string& stop : stop_strings_) {
    const size_t at = held_.find(stop);
    if (at < first_match) {
      first_match = at;
      matched = &stop;
    }
  }
  if (matched != nullptr) {
    output.text = held_.substr(0, first_match);
    output.matched = *matched;
    output.stopped = stopped_ = true;
    held_.clear();
    return output;
  }
  const size_t keep = PartialMatchLength();
  output.text = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return output;
}

std::string StopStringMatcher::Finish() {
  std::string rest = stopped_ ? std::string() : std::move(held_);
  held_.clear();
  return rest;
}

size_t StopStringMatcher::PartialMatchLength() const {
  size_t longest = 0;
  for (const std::string& stop : stop_strings_) {
    const size_t max_length = std::min(stop.size() - 1, held_.size());
    for (size_t length = max_length; length > longest; --length) {
      if (std::string_view(held_).substr(held_.size() - length) ==
          std::string_view(stop).substr(0, length)) {
        longest = length;
        break;
      }
    }
  }
  return longest;
}

}  // namespace gemmaserve::text
