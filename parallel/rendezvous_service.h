// RendezvousService: the coordinator's side of the StoreSet/StoreGet RPCs
// (gemmaserve.internal.v1.Coordinator), backed by an InMemoryKeyValueStore.
//
// It is a plain class rather than a Coordinator::Service so that the coordinator's one service
// implementation (which also serves GetClusterConfig, Register and Attach) forwards these two RPCs
// here:
//
//   grpc::Status StoreGet(grpc::ServerContext*, const StoreGetRequest* request,
//                         StoreGetResponse* response) override {
//     return rendezvous_.StoreGet(*request, response);
//   }
//
// Requests come from the network, so they are bounded (key and value sizes, keys per request,
// keys stored, wait time) and anything out of bounds is INVALID_ARGUMENT or RESOURCE_EXHAUSTED.
//
// Thread-safety: safe to call from many gRPC threads at once. StoreGet blocks its thread for up to
// the requested wait.
#pragma once

#include <cstdint>
#include <string>

#include <grpcpp/support/status.h>

#include "gemmaserve/internal/v1/worker.pb.h"
#include "parallel/key_value_store.h"

namespace gemmaserve::parallel {

// Bounds on what clients may ask of the store; each field's default suits one model replica.
struct RendezvousOptions {
  // Longest key accepted, bytes.
  int64_t max_key_bytes = 1024;
  // Largest value accepted, bytes (an ncclUniqueId is 128; a Gloo address list ~W·128).
  int64_t max_value_bytes = 1 << 20;
  // Most keys one StoreGet may wait for.
  int64_t max_keys_per_get = 4096;
  // Most keys the store holds; once full, every Set is RESOURCE_EXHAUSTED.
  int64_t max_keys = 1 << 16;
  // The wait of a StoreGet whose timeout_ms is 0.
  absl::Duration default_get_timeout = absl::Seconds(60);
  // The longest wait a StoreGet may ask for; longer requests are clamped to it.
  absl::Duration max_get_timeout = absl::Minutes(10);
};

class RendezvousService {
 public:
  explicit RendezvousService(RendezvousOptions options = {}) : options_(options) {}

  grpc::Status StoreSet(const internal::v1::StoreSetRequest& request,
                        internal::v1::StoreSetResponse* response);
  grpc::Status StoreGet(const internal::v1::StoreGetRequest& request,
                        internal::v1::StoreGetResponse* response);

  // The store itself, for in-process users (the coordinator's own ranks, tests).
  KeyValueStore& store() { return store_; }
  // Forgets the keys of a group incarnation that ended: those under "<key_namespace>/" (the
  // namespace its GrpcKeyValueStore clients used).
  void EraseNamespace(const std::string& key_namespace) { store_.ErasePrefix(key_namespace + "/"); }

 private:
  const RendezvousOptions options_;
  InMemoryKeyValueStore store_;
};

}  // namespace gemmaserve::parallel
