#include "coordinator/worker_group.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "spdlog/spdlog.h"

namespace gemmaserve::coordinator {

namespace pb = internal::v1;

namespace {

std::string NewSessionId() {
  std::random_device random;
  return absl::StrCat("session-", std::uniform_int_distribution<uint64_t>()(random));
}

grpc::Status Failed(grpc::StatusCode code, const std::string& message) {
  return grpc::Status(code, message);
}

}  // namespace

WorkerGroup::WorkerGroup(ClusterSpec spec)
    : spec_(std::move(spec)), session_id_(NewSessionId()), ranks_(spec_.layout.world_size()) {
  for (int r = 0; r < spec_.layout.world_size(); ++r) {
    write_mu_.push_back(std::make_unique<absl::Mutex>());
  }
}

bool WorkerGroup::AllRegistered() const {
  return std::all_of(ranks_.begin(), ranks_.end(), [](const RankState& r) { return r.registered; });
}

bool WorkerGroup::AllAttached() const {
  return std::all_of(ranks_.begin(), ranks_.end(),
                     [](const RankState& r) { return r.stream != nullptr; });
}

std::string WorkerGroup::MissingRanks(bool attached) const {
  std::vector<int> missing;
  for (int r = 0; r < static_cast<int>(ranks_.size()); ++r) {
    if (attached ? ranks_[r].stream == nullptr : !ranks_[r].registered) missing.push_back(r);
  }
  return absl::StrJoin(missing, ", ");
}

bool WorkerGroup::ready() const {
  absl::MutexLock lock(&mu_);
  return !broken_ && AllAttached();
}

int64_t WorkerGroup::num_blocks() const {
  absl::MutexLock lock(&mu_);
  if (!AllRegistered()) return 0;
  int64_t blocks = ranks_[0].num_blocks;
  for (const RankState& r : ranks_) blocks = std::min(blocks, r.num_blocks);
  return blocks;
}

absl::Status WorkerGroup::WaitReady(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto attached = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return broken_ || AllAttached(); };
  if (!mu_.AwaitWithTimeout(absl::Condition(&attached), timeout)) {
    return absl::DeadlineExceededError(absl::StrCat("workers not attached after ",
                                                    absl::FormatDuration(timeout),
                                                    "; missing ranks: ", MissingRanks(true)));
  }
  if (broken_) return absl::UnavailableError("a worker left while the group was starting");
  return absl::OkStatus();
}

grpc::Status WorkerGroup::GetClusterConfig(grpc::ServerContext*, const pb::GetClusterConfigRequest*,
                                           pb::ClusterConfig* response) {
  response->set_model_dir(spec_.model_dir);
  response->set_tp_size(spec_.layout.tp());
  response->set_ep_size(spec_.layout.ep());
  response->set_block_size(spec_.block_size);
  response->set_session_id(session_id_);
  response->set_max_tokens_per_step(spec_.max_tokens_per_step);
  response->set_kv_cache_dtype(spec_.kv_cache_dtype);
  return grpc::Status::OK;
}

grpc::Status WorkerGroup::Register(grpc::ServerContext* context, const pb::RegisterRequest* request,
                                   pb::RegisterResponse* response) {
  const int rank = request->rank();
  const int world_size = spec_.layout.world_size();
  if (request->world_size() != world_size || rank < 0 || rank >= world_size) {
    return Failed(grpc::StatusCode::FAILED_PRECONDITION,
                  absl::StrCat("rank ", rank, " of world size ", request->world_size(),
                               " does not fit this replica of ", world_size, " ranks"));
  }
  if (request->session_id() != session_id_) {
    return Failed(grpc::StatusCode::FAILED_PRECONDITION,
                  absl::StrCat("rank ", rank, " loaded for session ", request->session_id(),
                               ", but this coordinator runs ", session_id_));
  }
  absl::MutexLock lock(&mu_);
  if (ranks_[rank].registered) {
    return Failed(grpc::StatusCode::FAILED_PRECONDITION,
                  absl::StrCat("rank ", rank, " is already registered (by ", ranks_[rank].host, ")"));
  }
  ranks_[rank].registered = true;
  ranks_[rank].num_blocks = std::min(request->sliding_blocks(), request->full_blocks());
  ranks_[rank].host = request->host();
  spdlog::info("rank {} registered from {}: {} KV blocks ({} MiB), {} MiB of weights", rank,
               request->host(), ranks_[rank].num_blocks, request->kv_cache_bytes() >> 20,
               request->weight_bytes() >> 20);
  // Answer once every rank is in, so each learns the capacity the whole replica agrees on.
  auto all = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return AllRegistered(); };
  const absl::Time deadline =
      std::min(absl::Now() + spec_.join_timeout, absl::FromChrono(context->deadline()));
  if (!mu_.AwaitWithDeadline(absl::Condition(&all), deadline)) {
    ranks_[rank].registered = false;
    return Failed(grpc::StatusCode::DEADLINE_EXCEEDED,
                  absl::StrCat("rank ", rank, ": ranks ", MissingRanks(false),
                               " did not register in time"));
  }
  int64_t blocks = ranks_[0].num_blocks;
  for (const RankState& r : ranks_) blocks = std::min(blocks, r.num_blocks);
  response->set_sliding_blocks(blocks);
  response->set_full_blocks(blocks);
  return grpc::Status::OK;
}

grpc::Status WorkerGroup::Attach(grpc::ServerContext*, Stream* stream) {
  pb::StepResult hello;
  if (!stream->Read(&hello)) return grpc::Status::OK;
  const int rank = hello.rank();
  {
    absl::MutexLock lock(&mu_);
    if (rank < 0 || rank >= spec_.layout.world_size() || !ranks_[rank].registered ||
        ranks_[rank].stream != nullptr) {
      return Failed(grpc::StatusCode::FAILED_PRECONDITION,
                    absl::StrCat("rank ", rank, " is not registered or already attached"));
    }
    ranks_[rank].stream = stream;
  }
  spdlog::info("rank {} attached", rank);
  pb::StepResult result;
  while (stream->Read(&result)) {
    absl::MutexLock lock(&mu_);
    if (result.step_id() == awaited_step_) {
      ranks_[rank].result = std::move(result);
      ranks_[rank].has_result = true;
    }
  }
  absl::MutexLock write_lock(write_mu_[rank].get());
  absl::MutexLock lock(&mu_);
  ranks_[rank].stream = nullptr;
  ranks_[rank].registered = false;
  broken_ = true;
  if (shutting_down_) {
    spdlog::info("rank {} detached", rank);
  } else {
    spdlog::warn("rank {} detached; the replica is not ready", rank);
  }
  return grpc::Status::OK;
}

bool WorkerGroup::Send(int rank, const pb::CoordinatorMessage& message) {
  absl::MutexLock write_lock(write_mu_[rank].get());
  Stream* stream;
  {
    absl::MutexLock lock(&mu_);
    stream = ranks_[rank].stream;
  }
  return stream != nullptr && stream->Write(message);
}

absl::StatusOr<pb::StepResult> WorkerGroup::Step(const pb::StepPlan& plan) {
  {
    absl::MutexLock lock(&mu_);
    if (broken_ || !AllAttached()) {
      return absl::UnavailableError(absl::StrCat("step ", plan.step_id(),
                                                 ": the replica is not ready (missing ranks: ",
                                                 MissingRanks(true), ")"));
    }
    awaited_step_ = plan.step_id();
    for (RankState& r : ranks_) r.has_result = false;
  }
  pb::CoordinatorMessage message;
  *message.mutable_step() = plan;
  for (int r = 0; r < spec_.layout.world_size(); ++r) {
    if (!Send(r, message)) {
      absl::MutexLock lock(&mu_);
      broken_ = true;
      return absl::UnavailableError(absl::StrCat("step ", plan.step_id(), ": rank ", r,
                                                 "'s stream is broken"));
    }
  }
  absl::MutexLock lock(&mu_);
  auto answered = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (broken_) return true;
    return std::all_of(ranks_.begin(), ranks_.end(), [](const RankState& r) { return r.has_result; });
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&answered), spec_.step_timeout)) {
    broken_ = true;
    return absl::UnavailableError(absl::StrCat("step ", plan.step_id(), ": no answer within ",
                                               absl::FormatDuration(spec_.step_timeout)));
  }
  if (broken_) {
    return absl::UnavailableError(absl::StrCat("step ", plan.step_id(), ": a worker left (ranks ",
                                               MissingRanks(true), ")"));
  }
  for (int r = 0; r < spec_.layout.world_size(); ++r) {
    if (!ranks_[r].result.error().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("step ", plan.step_id(), ": rank ", r, ": ", ranks_[r].result.error()));
    }
  }
  return ranks_[0].result;
}

void WorkerGroup::Shutdown(const std::string& reason, absl::Duration grace) {
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
  }
  pb::CoordinatorMessage message;
  message.mutable_shutdown()->set_reason(reason);
  for (int r = 0; r < spec_.layout.world_size(); ++r) Send(r, message);
  absl::MutexLock lock(&mu_);
  auto detached = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return std::all_of(ranks_.begin(), ranks_.end(),
                       [](const RankState& r) { return r.stream == nullptr; });
  };
  mu_.AwaitWithTimeout(absl::Condition(&detached), grace);
}

grpc::Status WorkerGroup::StoreSet(grpc::ServerContext*, const pb::StoreSetRequest* request,
                                   pb::StoreSetResponse* response) {
  return rendezvous_.StoreSet(*request, response);
}

grpc::Status WorkerGroup::StoreGet(grpc::ServerContext*, const pb::StoreGetRequest* request,
                                   pb::StoreGetResponse* response) {
  return rendezvous_.StoreGet(*request, response);
}

}  // namespace gemmaserve::coordinator
