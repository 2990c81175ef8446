// Engine: what the API layer (gRPC Inference service, OpenAI-compatible HTTP) needs from the
// coordinator's engine loop. Implemented by EngineLoop; API code depends only on this interface.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "coordinator/request.h"

namespace gemmaserve::coordinator {

struct LoadInfo {
  int64_t running_requests = 0;
  int64_t waiting_requests = 0;
  int64_t total_pages = 0;           // KV pages, shared by both groups
  int64_t used_sliding_pages = 0;    // pages holding a sliding block in use
  int64_t used_full_pages = 0;       // pages holding a full block in use
  int64_t used_sliding_blocks = 0;
  int64_t used_full_blocks = 0;
  int64_t prefix_cache_queried_tokens = 0;
  int64_t prefix_cache_hit_tokens = 0;
  int64_t preemptions = 0;
  int64_t max_model_len = 0;         // prompt + new tokens a request may have
};

class Engine {
 public:
  virtual ~Engine() = default;

  // Queues a request. INVALID_ARGUMENT when it can never run (prompt plus max_tokens beyond the
  // context, or more KV blocks than the replica has), RESOURCE_EXHAUSTED when the waiting queue is
  // full, UNAVAILABLE while draining or not ready, ALREADY_EXISTS for a live request_id.
  virtual absl::StatusOr<std::shared_ptr<RequestStream>> Submit(Request request) = 0;
  // Ends a request early (client cancel, deadline, disconnect); its stream gets a final event with
  // finish reason kAbort and its KV blocks are freed. Unknown ids are ignored.
  virtual void Abort(const std::string& request_id) = 0;
  virtual LoadInfo Load() const = 0;
  // Workers attached and not draining.
  virtual bool Ready() const = 0;
};

}  // namespace gemmaserve::coordinator
