// Logging goes through spdlog (spdlog::info(...), spdlog::warn(...)). This sets it up once per
// process: stderr sink, a pattern with time and level, and the level from a flag.
#pragma once

#include <string_view>

#include "absl/status/status.h"

namespace gemmaserve {

// `level` is one of trace, debug, info, warn, error, off.
absl::Status InitLogging(std::string_view level);

}  // namespace gemmaserve
