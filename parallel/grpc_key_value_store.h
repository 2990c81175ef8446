// GrpcKeyValueStore: a KeyValueStore whose data lives in the coordinator, reached through the
// StoreSet/StoreGet RPCs of gemmaserve.internal.v1.Coordinator (served by RendezvousService).
//
// Every key is prefixed with "<key_namespace>/" so that several groups, or several incarnations of
// one group after a worker restart, share the coordinator's store without reading each other's
// stale addresses: the caller picks a namespace that is fresh for each group incarnation.
//
// A coordinator that is not up yet, or restarting, answers UNAVAILABLE; calls retry that code with
// exponential backoff (bounded by GrpcRetryOptions) and return every other error at once.
//
// Ownership: shares the channel. Thread-safety: safe to call from many threads at once.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/channel.h>

#include "gemmaserve/internal/v1/worker.grpc.pb.h"
#include "parallel/key_value_store.h"

namespace gemmaserve::parallel {

// How GrpcKeyValueStore retries a coordinator that answers UNAVAILABLE.
struct GrpcRetryOptions {
  // First pause after an UNAVAILABLE answer; doubles after each further one.
  absl::Duration initial_backoff = absl::Milliseconds(50);
  // Longest pause between two attempts.
  absl::Duration max_backoff = absl::Seconds(2);
  // How long Set keeps retrying an unreachable coordinator. Get retries within its own timeout.
  absl::Duration set_timeout = absl::Seconds(60);
};

class GrpcKeyValueStore final : public KeyValueStore {
 public:
  GrpcKeyValueStore(std::shared_ptr<grpc::ChannelInterface> channel, std::string key_namespace,
                    GrpcRetryOptions options = {});

  absl::Status Set(const std::string& key, const std::string& value) override;
  absl::StatusOr<std::vector<std::string>> Get(const std::vector<std::string>& keys,
                                               absl::Duration timeout) override;

 private:
  std::string Namespaced(const std::string& key) const;

  std::unique_ptr<internal::v1::Coordinator::Stub> stub_;
  const std::string key_prefix_;  // "<key_namespace>/", or empty
  const GrpcRetryOptions options_;
};

}  // namespace gemmaserve::parallel
