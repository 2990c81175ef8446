#include "model/generation_config.h"

#include "absl/strings/str_cat.h"
#include "common/mapped_file.h"
#include "nlohmann/json.hpp"

namespace gemmaserve::model {

absl::StatusOr<GenerationDefaults> GenerationDefaults::FromModelDir(const std::string& dir) {
  GenerationDefaults defaults;
  const std::string path = absl::StrCat(dir, "/generation_config.json");
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (absl::IsNotFound(text.status())) return defaults;
  if (!text.ok()) return text.status();
  const nlohmann::json json = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": malformed JSON"));
  }
  auto number = [&](const char* field, auto* out) -> absl::Status {
    auto it = json.find(field);
    if (it == json.end() || it->is_null()) return absl::OkStatus();
    if (!it->is_number()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": ", field, " is not a number"));
    }
    *out = it->get<std::remove_pointer_t<decltype(out)>>();
    return absl::OkStatus();
  };
  if (absl::Status s = number("temperature", &defaults.temperature); !s.ok()) return s;
  if (absl::Status s = number("top_k", &defaults.top_k); !s.ok()) return s;
  if (absl::Status s = number("top_p", &defaults.top_p); !s.ok()) return s;
  if (absl::Status s = number("min_p", &defaults.min_p); !s.ok()) return s;
  auto do_sample = json.find("do_sample");
  if (do_sample != json.end() && do_sample->is_boolean() && !do_sample->get<bool>()) {
    defaults.temperature = 0.0f;  // HF: do_sample false means greedy whatever the temperature
  }
  return defaults;
}

}  // namespace gemmaserve::model
