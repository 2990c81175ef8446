#include "coordinator/sequence.h"

#include <utility>

namespace gemmaserve::coordinator {

const char* SequenceStatusName(SequenceStatus status) {
  switch (status) {
    case SequenceStatus::kWaiting:
      return "waiting";
    case SequenceStatus::kRunning:
      return "running";
    case SequenceStatus::kFinished:
      return "finished";
  }
  return "unknown";
}

Sequence::Sequence(uint64_t id, Request request)
    : id(id),
      request(std::move(request)),
      token_ids(this->request.prompt_ids),
      num_prompt_tokens(static_cast<int64_t>(token_ids.size())) {}

}  // namespace gemmaserve::coordinator
