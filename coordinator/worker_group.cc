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

// Tokens the step computes: what its deadline grows with.
int64_t NumTokens(const pb::StepPlan& plan) {
  int64_t tokens = 0;
  for (const pb::SequencePlan& seq : plan.sequences()) tokens += seq.token_ids_size();
  return tokens;
}

bool UsesCachedKv(const pb::StepPlan& plan) {
  return std::any_of(plan.sequences().begin(), plan.sequences().end(),
                     [](const pb::SequencePlan& seq) { return seq.num_cached() > 0; });
}

}  // namespace

WorkerGroup::WorkerGroup(ClusterSpec spec)
    : spec_(std::move(spec)), session_id_(NewSessionId()), ranks_(spec_.layout.world_size()) {
  for (int r = 0; r < spec_.layout.world_size(); ++r) {
    write_mu_.push_back(std::make_unique<absl::Mutex>());
  }
  watchdog_ = std::thread([this] { Watch(); });
}

WorkerGroup::~WorkerGroup() {
  {
    absl::MutexLock lock(&mu_);
    stop_watchdog_ = true;
  }
  watchdog_.join();
}

void WorkerGroup::SetFailureCallback(FailureCallback on_failure) {
  on_failure_ = std::move(on_failure);
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

std::string WorkerGroup::Namespace(uint64_t generation) const {
  return absl::StrCat(session_id_, "/gen-", generation);
}

bool WorkerGroup::ready() const {
  absl::MutexLock lock(&mu_);
  return !shutting_down_ && AllAttached();
}

bool WorkerGroup::healthy() const {
  absl::MutexLock lock(&mu_);
  return shutting_down_ || AllAttached() ||
         absl::Now() - unready_since_ <= spec_.recovery_timeout;
}

uint64_t WorkerGroup::generation() const {
  absl::MutexLock lock(&mu_);
  return generation_;
}

model::KvPages WorkerGroup::kv_pages() const {
  absl::MutexLock lock(&mu_);
  return kv_pages_;
}

absl::Status WorkerGroup::WaitReady(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto attached = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return shutting_down_ || AllAttached();
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&attached), timeout)) {
    return absl::DeadlineExceededError(absl::StrCat("workers not attached after ",
                                                    absl::FormatDuration(timeout),
                                                    "; missing ranks: ", MissingRanks(true)));
  }
  if (shutting_down_) return absl::UnavailableError("the coordinator is shutting down");
  return absl::OkStatus();
}

WorkerGroup::Failure WorkerGroup::FailLocked(const std::string& reason) {
  CancelStreams();
  step_deadline_ = absl::InfiniteFuture();
  if (shutting_down_) return {};
  const uint64_t ended = generation_++;
  last_failure_ = absl::StrCat("generation ", ended, " ended: ", reason);
  for (RankState& rank : ranks_) rank = RankState();
  if (unready_since_ == absl::InfiniteFuture()) unready_since_ = absl::Now();
  rendezvous_.EraseNamespace(Namespace(ended));
  spdlog::warn("{}; the replica is not ready until every rank has joined generation {}",
               last_failure_, generation_);
  return {generation_, last_failure_};
}

void WorkerGroup::CancelStreams() {
  for (RankState& rank : ranks_) {
    if (rank.context != nullptr) rank.context->TryCancel();
  }
}

void WorkerGroup::Report(const Failure& failure) {
  if (failure.generation != 0 && on_failure_) on_failure_(failure.generation, failure.reason);
}

void WorkerGroup::Fail(const std::string& reason, uint64_t generation) {
  Failure failure;
  {
    absl::MutexLock lock(&mu_);
    if (generation == 0 || generation == generation_) failure = FailLocked(reason);
  }
  Report(failure);
}

void WorkerGroup::Watch() {
  while (true) {
    Failure failure;
    {
      absl::MutexLock lock(&mu_);
      const absl::Time step_deadline = step_deadline_;
      const absl::Time cancel_at = cancel_at_;
      auto changed = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_watchdog_ || step_deadline_ != step_deadline || cancel_at_ != cancel_at;
      };
      mu_.AwaitWithDeadline(absl::Condition(&changed), std::min(step_deadline, cancel_at));
      if (stop_watchdog_) return;
      const absl::Time now = absl::Now();
      if (step_deadline_ <= now) {
        std::vector<int> silent;
        for (int r = 0; r < static_cast<int>(ranks_.size()); ++r) {
          if (!ranks_[r].has_result) silent.push_back(r);
        }
        failure = FailLocked(absl::StrCat("step ", awaited_step_, ": rank(s) ",
                                          absl::StrJoin(silent, ", "),
                                          " did not answer by the step's deadline"));
      }
      if (cancel_at_ <= now) {
        cancel_at_ = absl::InfiniteFuture();
        CancelStreams();
      }
    }
    Report(failure);
  }
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
  response->set_max_message_bytes(spec_.max_message_bytes);
  absl::MutexLock lock(&mu_);
  response->set_generation(generation_);
  response->set_rendezvous_namespace(Namespace(generation_));
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
  const uint64_t generation = generation_;
  if (shutting_down_) {
    return Failed(grpc::StatusCode::UNAVAILABLE, "the coordinator is shutting down");
  }
  if (request->generation() != generation) {
    return Failed(grpc::StatusCode::ABORTED,
                  absl::StrCat("rank ", rank, " fetched the config of generation ",
                               request->generation(), ", but the replica is at generation ",
                               generation, " (", last_failure_, "); start over"));
  }
  if (ranks_[rank].registered) {
    return Failed(grpc::StatusCode::FAILED_PRECONDITION,
                  absl::StrCat("rank ", rank, " is already registered (by ", ranks_[rank].host, ")"));
  }
  const model::KvPages capacity = {
      .num_pages = request->kv_pages(),
      .blocks_per_page = {request->sliding_blocks_per_page(), request->full_blocks_per_page()}};
  if (capacity.num_pages < 1 || capacity.blocks_per_page[0] < 1 ||
      capacity.blocks_per_page[1] < 1 ||
      (capacity.blocks_per_page[0] != 1 && capacity.blocks_per_page[1] != 1)) {
    return Failed(grpc::StatusCode::INVALID_ARGUMENT,
                  absl::StrCat("rank ", rank, " reports ", capacity.num_pages, " KV pages of ",
                               capacity.blocks_per_page[0], " sliding or ",
                               capacity.blocks_per_page[1], " full blocks"));
  }
  // Pages must be alike on every rank, in every generation: the block ids name the same tokens.
  const model::KvPages* reference = kv_pages_.num_pages > 0 ? &kv_pages_ : nullptr;
  for (const RankState& other : ranks_) {
    if (reference == nullptr && other.registered) reference = &other.capacity;
  }
  if (reference != nullptr && reference->blocks_per_page != capacity.blocks_per_page) {
    return Failed(grpc::StatusCode::FAILED_PRECONDITION,
                  absl::StrCat("rank ", rank, " holds ", capacity.blocks_per_page[0],
                               " sliding or ", capacity.blocks_per_page[1],
                               " full blocks per KV page, but the replica's pages hold ",
                               reference->blocks_per_page[0], " or ",
                               reference->blocks_per_page[1]));
  }
  if (kv_pages_.num_pages > 0 && capacity.num_pages < kv_pages_.num_pages) {
    return Failed(grpc::StatusCode::RESOURCE_EXHAUSTED,
                  absl::StrCat("rank ", rank, " holds ", capacity.num_pages,
                               " KV pages, but the replica runs with ", kv_pages_.num_pages));
  }
  ranks_[rank].registered = true;
  ranks_[rank].capacity = capacity;
  ranks_[rank].host = request->host();
  spdlog::info("rank {} registered for generation {} from {}: {} KV pages ({} MiB), {} MiB of "
               "weights",
               rank, generation, request->host(), capacity.num_pages,
               request->kv_cache_bytes() >> 20, request->weight_bytes() >> 20);
  // Answer once every rank is in, so each learns the capacity the whole replica agrees on.
  auto settled = [this, generation]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return generation_ != generation || shutting_down_ || AllRegistered();
  };
  const absl::Time deadline =
      std::min(absl::Now() + spec_.join_timeout, absl::FromChrono(context->deadline()));
  const bool settled_in_time = mu_.AwaitWithDeadline(absl::Condition(&settled), deadline);
  if (generation_ != generation || shutting_down_) {
    return Failed(grpc::StatusCode::ABORTED,
                  absl::StrCat("rank ", rank, ": generation ", generation,
                               " ended while it registered (", last_failure_, ")"));
  }
  if (!settled_in_time) {
    ranks_[rank].registered = false;
    return Failed(grpc::StatusCode::DEADLINE_EXCEEDED,
                  absl::StrCat("rank ", rank, ": ranks ", MissingRanks(false),
                               " did not register in time"));
  }
  if (kv_pages_.num_pages == 0) {
    kv_pages_ = ranks_[0].capacity;
    for (const RankState& r : ranks_) {
      kv_pages_.num_pages = std::min(kv_pages_.num_pages, r.capacity.num_pages);
    }
  }
  response->set_kv_pages(kv_pages_.num_pages);
  return grpc::Status::OK;
}

grpc::Status WorkerGroup::Attach(grpc::ServerContext* context, Stream* stream) {
  pb::StepResult hello;
  if (!stream->Read(&hello)) return grpc::Status::OK;
  const int rank = hello.rank();
  {
    absl::MutexLock lock(&mu_);
    if (rank < 0 || rank >= spec_.layout.world_size()) {
      return Failed(grpc::StatusCode::FAILED_PRECONDITION,
                    absl::StrCat("rank ", rank, " is not a rank of this replica"));
    }
    if (hello.generation() != generation_) {
      return Failed(grpc::StatusCode::ABORTED,
                    absl::StrCat("rank ", rank, " registered for generation ", hello.generation(),
                                 ", but the replica is at generation ", generation_));
    }
    RankState& state = ranks_[rank];
    if (!state.registered || state.stream != nullptr) {
      return Failed(grpc::StatusCode::FAILED_PRECONDITION,
                    absl::StrCat("rank ", rank, " is not registered or already attached"));
    }
    state.stream = stream;
    state.context = context;
    spdlog::info("rank {} attached (generation {})", rank, generation_);
    if (AllAttached() && unready_since_ != absl::InfiniteFuture()) {
      spdlog::info("generation {} is ready after {}", generation_,
                   absl::FormatDuration(absl::Now() - unready_since_));
      unready_since_ = absl::InfiniteFuture();
    }
  }
  pb::StepResult result;
  while (stream->Read(&result)) {
    absl::MutexLock lock(&mu_);
    RankState& state = ranks_[rank];
    if (state.stream == stream && result.step_id() == awaited_step_) {
      state.result = std::move(result);
      state.has_result = true;
    }
  }
  Failure failure;
  {
    // No Send may be writing to the stream once the handler returns.
    absl::MutexLock write_lock(write_mu_[rank].get());
    absl::MutexLock lock(&mu_);
    RankState& state = ranks_[rank];
    if (state.stream == stream) {  // else its generation has already ended
      state.stream = nullptr;
      state.context = nullptr;
      if (shutting_down_) {
        spdlog::info("rank {} detached", rank);
      } else {
        failure = FailLocked(absl::StrCat("rank ", rank, "'s stream ended (the worker exited or "
                                          "its connection broke)"));
      }
    }
  }
  Report(failure);
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
  const int64_t plan_bytes = static_cast<int64_t>(plan.ByteSizeLong());
  if (plan_bytes > spec_.max_message_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("step ", plan.step_id(), ": its plan takes ", plan_bytes,
                     " bytes, more than the step message limit of ", spec_.max_message_bytes,
                     " bytes"));
  }
  uint64_t generation;
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) {
      return absl::UnavailableError(absl::StrCat("step ", plan.step_id(),
                                                 ": the coordinator is shutting down"));
    }
    if (!AllAttached()) {
      return absl::UnavailableError(absl::StrCat(
          "step ", plan.step_id(), ": the replica is not ready (generation ", generation_,
          ", missing ranks: ", MissingRanks(true), ")"));
    }
    if (kv_generation_ != generation_ && UsesCachedKv(plan)) {
      return absl::UnavailableError(absl::StrCat(
          "step ", plan.step_id(), ": its plan uses KV cached by generation ", kv_generation_,
          ", whose workers are gone; it must be recomputed"));
    }
    generation = kv_generation_ = generation_;
    awaited_step_ = plan.step_id();
    for (RankState& r : ranks_) r.has_result = false;
    step_deadline_ = absl::Now() + spec_.step_timeout +
                     spec_.step_timeout_per_token * static_cast<double>(NumTokens(plan));
  }
  pb::CoordinatorMessage message;
  *message.mutable_step() = plan;
  for (int r = 0; r < spec_.layout.world_size(); ++r) {
    if (!Send(r, message)) {
      Fail(absl::StrCat("step ", plan.step_id(), ": rank ", r, "'s stream is broken"), generation);
      absl::MutexLock lock(&mu_);
      return absl::UnavailableError(absl::StrCat("step ", plan.step_id(), ": ", last_failure_));
    }
  }
  absl::MutexLock lock(&mu_);
  auto settled = [this, generation]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return generation_ != generation || shutting_down_ ||
           std::all_of(ranks_.begin(), ranks_.end(), [](const RankState& r) { return r.has_result; });
  };
  // No timeout here: the watchdog ends the generation at the step's deadline.
  mu_.Await(absl::Condition(&settled));
  step_deadline_ = absl::InfiniteFuture();
  if (generation_ != generation) {
    return absl::UnavailableError(absl::StrCat("step ", plan.step_id(), ": ", last_failure_));
  }
  if (shutting_down_) {
    return absl::UnavailableError(absl::StrCat("step ", plan.step_id(),
                                               ": the coordinator is shutting down"));
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
    if (shutting_down_) return;
    shutting_down_ = true;
    step_deadline_ = absl::InfiniteFuture();
    // The watchdog cancels what is still open then, writes blocked on a stalled worker included.
    cancel_at_ = absl::Now() + grace;
  }
  pb::CoordinatorMessage message;
  message.mutable_shutdown()->set_reason(reason);
  for (int r = 0; r < spec_.layout.world_size(); ++r) Send(r, message);
  absl::MutexLock lock(&mu_);
  auto detached = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return std::all_of(ranks_.begin(), ranks_.end(),
                       [](const RankState& r) { return r.stream == nullptr; });
  };
  // The cancelled handlers return at once; a second is plenty for them to detach.
  mu_.AwaitWithTimeout(absl::Condition(&detached), grace + absl::Seconds(1));
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
