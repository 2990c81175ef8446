// Errors of the client APIs. A rejected request is an absl::Status whose message starts with the
// offending field ("top_p: must be in (0, 1], got 1.5") and which carries that field's name as a
// payload, so the OpenAI error body can fill "param" and gRPC clients read the same message.
// This file also maps canonical codes to HTTP statuses, in one place for every HTTP route.
// Pure functions; thread-safe.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"

namespace gemmaserve::coordinator::api {

// INVALID_ARGUMENT "FIELD: MESSAGE" with FIELD attached as the param payload.
absl::Status InvalidField(const std::string& field, const std::string& message);

// `status` with `field` attached as its param, message unchanged.
absl::Status WithParam(absl::Status status, const std::string& field);

// The field an InvalidField error names, or "" for any other status.
std::string ParamOf(const absl::Status& status);

// 400 bad input, 401 no valid API key, 403 forbidden, 404 not found, 409 id in use, 413 too
// large, 429 queue full, 503 not ready or draining, 504 deadline, 501 unimplemented, 500
// anything else.
int HttpStatusOf(const absl::Status& status);

// {"error": {"message", "type", "param", "code"}} as OpenAI sends it: type is
// "invalid_request_error" for 4xx (except "rate_limit_error" for 429) and "server_error" for 5xx;
// code is the HTTP status; param is the field or null.
nlohmann::json OpenAiErrorJson(const absl::Status& status);
// The same with an explicit HTTP status (413, which has no canonical code of its own).
nlohmann::json OpenAiErrorJson(const absl::Status& status, int http_status);

// JSON text that never throws: invalid UTF-8 in strings is replaced by U+FFFD.
std::string DumpJson(const nlohmann::json& json);

}  // namespace gemmaserve::coordinator::api
