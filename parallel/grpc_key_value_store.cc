#include "parallel/grpc_key_value_store.h"

#include <algorithm>
#include <functional>
#include <utility>

#include <grpcpp/client_context.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/grpc_status.h"

namespace gemmaserve::parallel {
namespace {

using internal::v1::StoreGetRequest;
using internal::v1::StoreGetResponse;
using internal::v1::StoreSetRequest;
using internal::v1::StoreSetResponse;

// How much longer than the requested wait the StoreGet RPC may take, so that the server's
// DEADLINE_EXCEEDED (which names the missing keys) arrives before the client's own deadline.
constexpr absl::Duration kGetRpcGrace = absl::Seconds(5);

// Runs `call` with a fresh context until it answers something other than UNAVAILABLE, or until
// the next attempt would start after `deadline`. `call` sets its own RPC deadline.
grpc::Status CallRetryingUnavailable(absl::Time deadline,
                                     const GrpcRetryOptions& options,
                                     const std::function<grpc::Status(grpc::ClientContext&)>& call) {
  absl::Duration backoff = options.initial_backoff;
  while (true) {
    grpc::ClientContext context;
    const grpc::Status status = call(context);
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE) return status;
    if (absl::Now() + backoff >= deadline) return status;
    absl::SleepFor(backoff);
    backoff = std::min(2 * backoff, options.max_backoff);
  }
}

}  // namespace

GrpcKeyValueStore::GrpcKeyValueStore(std::shared_ptr<grpc::ChannelInterface> channel,
                                     std::string key_namespace, GrpcRetryOptions options)
    : stub_(internal::v1::Coordinator::NewStub(std::move(channel))),
      key_prefix_(key_namespace.empty() ? "" : key_namespace + "/"),
      options_(options) {}

std::string GrpcKeyValueStore::Namespaced(const std::string& key) const {
  return key_prefix_ + key;
}

absl::Status GrpcKeyValueStore::Set(const std::string& key, const std::string& value) {
  StoreSetRequest request;
  request.set_key(Namespaced(key));
  request.set_value(value);
  const absl::Time deadline = absl::Now() + options_.set_timeout;
  const grpc::Status status =
      CallRetryingUnavailable(deadline, options_, [&](grpc::ClientContext& context) {
        context.set_deadline(absl::ToChronoTime(deadline));
        StoreSetResponse response;
        return stub_->StoreSet(&context, request, &response);
      });
  if (status.ok()) return absl::OkStatus();
  return FromGrpc(status, absl::StrCat("rendezvous StoreSet of key ", request.key()));
}

absl::StatusOr<std::vector<std::string>> GrpcKeyValueStore::Get(
    const std::vector<std::string>& keys, absl::Duration timeout) {
  StoreGetRequest request;
  for (const std::string& key : keys) request.add_keys(Namespaced(key));
  const absl::Time deadline = absl::Now() + timeout;
  StoreGetResponse response;
  const grpc::Status status =
      CallRetryingUnavailable(deadline, options_, [&](grpc::ClientContext& context) {
        // Never 0: the server reads 0 as "its default".
        const absl::Duration remaining =
            std::max(deadline - absl::Now(), absl::Milliseconds(1));
        request.set_timeout_ms(absl::ToInt64Milliseconds(remaining));
        context.set_deadline(absl::ToChronoTime(absl::Now() + remaining + kGetRpcGrace));
        response.Clear();
        return stub_->StoreGet(&context, request, &response);
      });
  if (!status.ok()) {
    return FromGrpc(status, absl::StrCat("rendezvous StoreGet of keys [",
                                         absl::StrJoin(request.keys(), ", "), "]"));
  }
  if (response.values_size() != static_cast<int>(keys.size())) {
    return absl::InternalError(absl::StrCat("rendezvous StoreGet: ", response.values_size(),
                                            " values for ", keys.size(), " keys"));
  }
  return std::vector<std::string>(response.values().begin(), response.values().end());
}

}  // namespace gemmaserve::parallel
