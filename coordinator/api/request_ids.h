// Request ids. A generated id carries 96 random bits from a CSPRNG ("http-" or "grpc-" plus 24
// hex digits), so ids say nothing about other requests and cannot be guessed. Ids reach the
// engine scoped by their owner (client_auth.h): a client may pick its own ids over gRPC without
// ever meeting another client's. Pure functions; thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "common/secrets.h"

namespace gemmaserve::coordinator::api {

inline std::string NewRequestId(const std::string& prefix) {
  return absl::StrCat(prefix, "-", RandomHex(12));
}

// The engine's id of a request that `owner` calls `request_id`. Length-prefixed, so no choice of
// owner and id spells another pair's scoped id.
inline std::string ScopedRequestId(const std::string& owner, const std::string& request_id) {
  return absl::StrCat(owner.size(), ":", owner, "/", request_id);
}

}  // namespace gemmaserve::coordinator::api
