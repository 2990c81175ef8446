// The sampling defaults a checkpoint ships in generation_config.json (GEMMA4.md §1.1: do_sample
// true, temperature 1.0, top_k 64, top_p 0.95 for the released models). Requests that leave a
// sampling field unset get these values.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace gemmaserve::model {

struct GenerationDefaults {
  float temperature = 1.0f;  // 0 when do_sample is false
  int32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;

  // Reads DIR/generation_config.json; a missing file gives the defaults above.
  static absl::StatusOr<GenerationDefaults> FromModelDir(const std::string& dir);
};

}  // namespace gemmaserve::model
