#include "coordinator/api/http_connections.h"

#include <utility>

namespace gemmaserve::coordinator::api {

uint64_t ConnectionTable::Add(std::weak_ptr<HttpSession> session) {
  absl::MutexLock lock(&mu_);
  const uint64_t id = next_id_++;
  entries_[id] = Entry{std::move(session), 0};
  return id;
}

void ConnectionTable::Remove(uint64_t id) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  if (it->second.idle_since != 0) idle_.erase(it->second.idle_since);
  entries_.erase(it);
}

void ConnectionTable::MarkIdle(uint64_t id) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(id);
  if (it == entries_.end() || it->second.idle_since != 0) return;
  it->second.idle_since = next_idle_++;
  idle_[it->second.idle_since] = id;
}

void ConnectionTable::MarkBusy(uint64_t id) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(id);
  if (it == entries_.end() || it->second.idle_since == 0) return;
  idle_.erase(it->second.idle_since);
  it->second.idle_since = 0;
}

std::shared_ptr<HttpSession> ConnectionTable::TakeOldestIdle() {
  absl::MutexLock lock(&mu_);
  while (!idle_.empty()) {
    const uint64_t id = idle_.begin()->second;
    idle_.erase(idle_.begin());
    Entry& entry = entries_.at(id);
    entry.idle_since = 0;
    if (std::shared_ptr<HttpSession> session = entry.session.lock()) return session;
  }
  return nullptr;
}

std::vector<std::shared_ptr<HttpSession>> ConnectionTable::All() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::shared_ptr<HttpSession>> sessions;
  for (const auto& [id, entry] : entries_) {
    if (std::shared_ptr<HttpSession> session = entry.session.lock()) {
      sessions.push_back(std::move(session));
    }
  }
  return sessions;
}

int ConnectionTable::size() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(entries_.size());
}

bool ConnectionTable::AwaitEmpty(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto empty = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return entries_.empty(); };
  return mu_.AwaitWithTimeout(absl::Condition(&empty), timeout);
}

}  // namespace gemmaserve::coordinator::api
