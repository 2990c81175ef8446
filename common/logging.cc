#include "common/logging.h"

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"

namespace gemmaserve {

absl::Status InitLogging(std::string_view level) {
  const spdlog::level::level_enum parsed = spdlog::level::from_str(std::string(level));
  if (parsed == spdlog::level::off && level != "off") {
    return absl::InvalidArgumentError(
        absl::StrCat("--log-level: unknown level \"", std::string(level),
                     "\" (expected trace, debug, info, warn, error or off)"));
  }
  std::shared_ptr<spdlog::logger> logger = spdlog::get("gemmaserve");
  if (logger == nullptr) logger = spdlog::stderr_logger_mt("gemmaserve");
  logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ [%P] %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(parsed);
  return absl::OkStatus();
}

}  // namespace gemmaserve
