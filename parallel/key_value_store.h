// KeyValueStore: the rendezvous store through which the ranks of one collective group find each
// other (Gloo publishes its TCP addresses, NCCL rank 0 its ncclUniqueId). In a cluster the store
// lives in the coordinator and workers reach it over gRPC, so a worker needs nothing but the
// coordinator's address to join its group.
//
// Keys are written once per group incarnation; a later Set of the same key overwrites. Values are
// opaque bytes. Get blocks until every requested key exists, which is what lets ranks start in
// any order.
//
// Implementations:
//   InMemoryKeyValueStore  the store itself (the coordinator's, and the one tests share between
//                          rank threads);
//   GrpcKeyValueStore      a client of the coordinator's StoreSet/StoreGet RPCs
//                          (grpc_key_value_store.h).
//
// Thread-safety: every implementation is safe to call from many threads at once.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace gemmaserve::parallel {

class KeyValueStore {
 public:
  virtual ~KeyValueStore() = default;

  // Stores `value` under `key`, replacing any earlier value.
  virtual absl::Status Set(const std::string& key, const std::string& value) = 0;

  // Waits until every key exists, then returns their values in the order of `keys`.
  // DEADLINE_EXCEEDED naming the missing keys when `timeout` passes first.
  virtual absl::StatusOr<std::vector<std::string>> Get(const std::vector<std::string>& keys,
                                                       absl::Duration timeout) = 0;
};

// A store in this process's memory. Waiters sleep on the mutex's condition, not in a poll loop.
class InMemoryKeyValueStore final : public KeyValueStore {
 public:
  absl::Status Set(const std::string& key, const std::string& value) override;
  absl::StatusOr<std::vector<std::string>> Get(const std::vector<std::string>& keys,
                                               absl::Duration timeout) override;

  // Number of keys stored; lets the coordinator bound what a client may write.
  int64_t num_keys() const;
  // Removes every key that starts with `prefix` (a group incarnation that ended).
  void ErasePrefix(const std::string& prefix);

 private:
  bool HasAll(const std::vector<std::string>& keys) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::map<std::string, std::string> values_ ABSL_GUARDED_BY(mu_);
};

}  // namespace gemmaserve::parallel
