#include "coordinator/api/api_error.h"


#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace gemmaserve::coordinator::api {
namespace {

constexpr char kParamPayload[] = "type.gemmaserve.dev/api.param";

}  // namespace

absl::Status InvalidField(const std::string& field, const std::string& message) {
  return WithParam(absl::InvalidArgumentError(absl::StrCat(field, ": ", message)), field);
}

absl::Status WithParam(absl::Status status, const std::string& field) {
  status.SetPayload(kParamPayload, absl::Cord(field));
  return status;
}

std::string ParamOf(const absl::Status& status) {
  const absl::optional<absl::Cord> param = status.GetPayload(kParamPayload);
  return param ? std::string(*param) : std::string();
}

int HttpStatusOf(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

nlohmann::json OpenAiErrorJson(const absl::Status& status) {
  return OpenAiErrorJson(status, HttpStatusOf(status));
}

nlohmann::json OpenAiErrorJson(const absl::Status& status, int http_status) {
  const char* type = http_status == 429  ? "rate_limit_error"
                     : http_status < 500 ? "invalid_request_error"
                                         : "server_error";
  const std::string param = ParamOf(status);
  return {{"error",
           {{"message", std::string(status.message())},
            {"type", type},
            {"param", param.empty() ? nlohmann::json(nullptr) : nlohmann::json(param)},
            {"code", http_status}}}};
}

std::string DumpJson(const nlohmann::json& json) {
  return json.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace gemmaserve::coordinator::api
