// ConnectionTable: the open connections of one HttpServer (http_server.h), for its connection
// limit, for closing the connection idle longest when it needs room, and for ending them all at
// shutdown. A connection is idle while it waits for a request (before the first, or between
// keep-alive requests); it is busy from a complete request until its response is written.
// Internal to api/.
//
// Thread-safety: every method may be called from any thread (sessions run on many strands).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace gemmaserve::coordinator::api {

class HttpSession;

class ConnectionTable {
 public:
  // A new connection, busy until MarkIdle; its id.
  uint64_t Add(std::weak_ptr<HttpSession> session) ABSL_LOCKS_EXCLUDED(mu_);
  void Remove(uint64_t id) ABSL_LOCKS_EXCLUDED(mu_);
  void MarkIdle(uint64_t id) ABSL_LOCKS_EXCLUDED(mu_);
  void MarkBusy(uint64_t id) ABSL_LOCKS_EXCLUDED(mu_);

  // The connection idle longest, now marked busy so that no one else picks it; null when none is
  // idle. The caller closes it (if it is still idle on its own strand).
  std::shared_ptr<HttpSession> TakeOldestIdle() ABSL_LOCKS_EXCLUDED(mu_);
  std::vector<std::shared_ptr<HttpSession>> All() const ABSL_LOCKS_EXCLUDED(mu_);
  int size() const ABSL_LOCKS_EXCLUDED(mu_);
  // Waits up to `timeout` until no connection is left; true if none is.
  bool AwaitEmpty(absl::Duration timeout) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Entry {
    std::weak_ptr<HttpSession> session;
    uint64_t idle_since = 0;  // key in idle_, 0 while busy
  };

  mutable absl::Mutex mu_;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_idle_ ABSL_GUARDED_BY(mu_) = 1;  // orders idle connections, oldest first
  absl::flat_hash_map<uint64_t, Entry> entries_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, uint64_t> idle_ ABSL_GUARDED_BY(mu_);  // idle_since → id
};

}  // namespace gemmaserve::coordinator::api
