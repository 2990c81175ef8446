// The one pair of conversions between absl::Status (our code) and grpc::Status (the wire).
// The canonical codes are the same numbers in both libraries, so a code survives a round trip
// unchanged; only the message moves. Header-only so that every library that already links gRPC
// can use it without gs_common depending on gRPC. Pure functions; thread-safe.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/support/status.h"

namespace gemmaserve {

inline grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

// `what` (e.g. "Generate") prefixes the message so an error says which call failed; empty = none.
inline absl::Status FromGrpc(const grpc::Status& status, const std::string& what = "") {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      what.empty() ? status.error_message()
                                   : absl::StrCat(what, ": ", status.error_message()));
}

}  // namespace gemmaserve
