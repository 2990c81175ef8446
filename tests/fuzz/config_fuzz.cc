// config.json as the coordinator and workers read it: ParseJson within the limits, then
// Gemma4Config::FromJson, which must refuse what it cannot use rather than misread it.
#include <cstdint>
#include <string_view>

#include "common/json_limits.h"
#include "model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<nlohmann::json> json = gemmaserve::ParseJson(text, {.max_bytes = size_t{1} << 20});
  if (!json.ok()) return 0;
  absl::StatusOr<gemmaserve::model::Gemma4Config> config =
      gemmaserve::model::Gemma4Config::FromJson(*json);
  if (config.ok()) (void)config->is_moe();
  return 0;
}
