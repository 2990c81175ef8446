#include "parallel/rendezvous_service.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"

namespace gemmaserve::parallel {
namespace {

grpc::Status InvalidArgument(const std::string& message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message);
}

}  // namespace

grpc::Status RendezvousService::StoreSet(const internal::v1::StoreSetRequest& request,
                                         internal::v1::StoreSetResponse* /*response*/) {
  const std::string& key = request.key();
  if (key.empty()) return InvalidArgument("StoreSet: empty key");
  if (static_cast<int64_t>(key.size()) > options_.max_key_bytes) {
    return InvalidArgument(absl::StrCat("StoreSet: key of ", key.size(), " bytes, at most ",
                                        options_.max_key_bytes));
  }
  if (static_cast<int64_t>(request.value().size()) > options_.max_value_bytes) {
    return InvalidArgument(absl::StrCat("StoreSet: value of key ", key, " has ",
                                        request.value().size(), " bytes, at most ",
                                        options_.max_value_bytes));
  }
  // A soft bound: concurrent Sets may pass it by a few keys, which is all it has to stop.
  if (store_.num_keys() >= options_.max_keys) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat("StoreSet: the store is full (", options_.max_keys,
                                     " keys); key ", key, " refused"));
  }
  return ToGrpc(store_.Set(key, request.value()));
}

grpc::Status RendezvousService::StoreGet(const internal::v1::StoreGetRequest& request,
                                         internal::v1::StoreGetResponse* response) {
  if (request.keys_size() > options_.max_keys_per_get) {
    return InvalidArgument(absl::StrCat("StoreGet: ", request.keys_size(), " keys, at most ",
                                        options_.max_keys_per_get));
  }
  if (request.timeout_ms() < 0) {
    return InvalidArgument(absl::StrCat("StoreGet: negative timeout_ms ", request.timeout_ms()));
  }
  const absl::Duration timeout =
      request.timeout_ms() == 0
          ? options_.default_get_timeout
          : std::min(absl::Milliseconds(request.timeout_ms()), options_.max_get_timeout);
  const std::vector<std::string> keys(request.keys().begin(), request.keys().end());
  absl::StatusOr<std::vector<std::string>> values = store_.Get(keys, timeout);
  if (!values.ok()) return ToGrpc(values.status());
  for (std::string& value : *values) response->add_values(std::move(value));
  return grpc::Status::OK;
}

}  // namespace gemmaserve::parallel
