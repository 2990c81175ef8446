#include "worker/step_stream.h"

#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "spdlog/spdlog.h"

namespace gemmaserve::worker {

namespace pb = internal::v1;

absl::StatusOr<std::unique_ptr<StepStream>> StepStream::Open(pb::Coordinator::Stub& stub, int rank,
                                                             uint64_t generation) {
  std::unique_ptr<StepStream> stream(new StepStream(rank));
  stream->stream_ = stub.Attach(&stream->context_);
  pb::StepResult hello;
  hello.set_rank(rank);
  hello.set_generation(generation);
  if (!stream->stream_->Write(hello)) {
    stream->finished_ = true;
    return FromGrpc(stream->stream_->Finish(), absl::StrCat("rank ", rank, ": Attach"));
  }
  stream->reader_ = std::thread([raw = stream.get()] { raw->ReadLoop(); });
  return stream;
}

StepStream::~StepStream() {
  if (!finished_) Finish(/*shutdown=*/false).IgnoreError();
}

void StepStream::ReadLoop() {
  pb::CoordinatorMessage message;
  while (stream_->Read(&message)) {
    absl::MutexLock lock(&mu_);
    inbox_.push_back(std::move(message));
  }
  absl::MutexLock lock(&mu_);
  ended_ = true;
  if (step_running_) {
    spdlog::error("rank {}: the coordinator stream ended during a step (its generation ended); "
                  "exiting now, since the step's collectives may never complete",
                  rank_);
    spdlog::default_logger()->flush();
    std::_Exit(EXIT_FAILURE);
  }
}

std::optional<pb::CoordinatorMessage> StepStream::Next() {
  absl::MutexLock lock(&mu_);
  auto available = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return ended_ || !inbox_.empty();
  };
  mu_.Await(absl::Condition(&available));
  if (inbox_.empty()) return std::nullopt;
  pb::CoordinatorMessage message = std::move(inbox_.front());
  inbox_.pop_front();
  step_running_ = message.has_step();
  return message;
}

bool StepStream::Reply(const pb::StepResult& reply) {
  {
    absl::MutexLock lock(&mu_);
    step_running_ = false;
  }
  return stream_->Write(reply);
}

absl::Status StepStream::Finish(bool shutdown) {
  finished_ = true;
  // Half-closing lets the coordinator end the call, which ends the reader's Read.
  stream_->WritesDone();
  if (reader_.joinable()) reader_.join();
  const grpc::Status status = stream_->Finish();
  if (shutdown) return absl::OkStatus();
  return FromGrpc(status.ok() ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "the stream ended")
                              : status,
                  absl::StrCat("rank ", rank_, ": lost the coordinator stream"));
}

}  // namespace gemmaserve::worker
