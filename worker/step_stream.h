// StepStream: a worker's end of the Attach stream (worker.proto): sends the hello, hands the
// coordinator's messages to the step loop one by one, and writes its replies.
//
// The stream is read on a thread of its own. A step blocked in a collective whose peer died or
// stopped can never finish, so when the stream ends while a step runs (the coordinator ended this
// worker's generation, or went away) the process exits at once instead of waiting out the
// collective's timeout: a replacement can join the next generation sooner, and a worker resumed
// after a SIGSTOP does not linger.
//
// Thread-safety: Next, Reply and Finish are called from one thread (the step loop).
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "gemmaserve/internal/v1/worker.grpc.pb.h"

namespace gemmaserve::worker {

class StepStream {
 public:
  // Opens the stream and sends the hello for `rank` of `generation`.
  static absl::StatusOr<std::unique_ptr<StepStream>> Open(internal::v1::Coordinator::Stub& stub,
                                                          int rank, uint64_t generation);
  ~StepStream();  // Finish()es if the caller did not

  // The next message, waiting for it; nullopt once the stream has ended. A step counts as
  // running from here until its Reply.
  std::optional<internal::v1::CoordinatorMessage> Next();
  // Writes a step's reply; false when the stream is broken.
  bool Reply(const internal::v1::StepResult& reply);
  // Closes this side and waits for the call to end: OK after a Shutdown (shutdown true), else why
  // the stream ended.
  absl::Status Finish(bool shutdown);

 private:
  explicit StepStream(int rank) : rank_(rank) {}
  void ReadLoop();

  const int rank_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<internal::v1::StepResult,
                                           internal::v1::CoordinatorMessage>>
      stream_;
  std::thread reader_;
  bool finished_ = false;

  absl::Mutex mu_;
  std::deque<internal::v1::CoordinatorMessage> inbox_ ABSL_GUARDED_BY(mu_);
  bool ended_ ABSL_GUARDED_BY(mu_) = false;      // the reader saw the stream end
  bool step_running_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace gemmaserve::worker
