// Status propagation macros with the names abseil later versions use, so that an upgrade of
// Debian's abseil (20220623 has none of them) becomes a rename.
//
//   RETURN_IF_ERROR(expr);             // expr is an absl::Status; returns it when not OK.
//   ASSIGN_OR_RETURN(auto x, expr);    // expr is an absl::StatusOr<T>; moves the value into x.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define GS_STATUS_CONCAT_INNER_(a, b) a##b
#define GS_STATUS_CONCAT_(a, b) GS_STATUS_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr)                             \
  do {                                                    \
    ::absl::Status gs_status_ = (expr);                   \
    if (!gs_status_.ok()) return gs_status_;              \
  } while (false)

#define ASSIGN_OR_RETURN(lhs, expr) \
  GS_ASSIGN_OR_RETURN_IMPL_(GS_STATUS_CONCAT_(gs_statusor_, __LINE__), lhs, expr)

#define GS_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                              \
  if (!statusor.ok()) return statusor.status();        \
  lhs = std::move(statusor).value()
