#include "parallel/key_value_store.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace gemmaserve::parallel {

absl::Status InMemoryKeyValueStore::Set(const std::string& key, const std::string& value) {
  absl::MutexLock lock(&mu_);
  values_[key] = value;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> InMemoryKeyValueStore::Get(
    const std::vector<std::string>& keys, absl::Duration timeout) {
  const auto has_all = [&]() { return HasAll(keys); };
  if (!mu_.LockWhenWithTimeout(absl::Condition(&has_all), timeout)) {
    std::vector<std::string> missing;
    for (const std::string& key : keys) {
      if (!values_.contains(key)) missing.push_back(key);
    }
    mu_.Unlock();
    return absl::DeadlineExceededError(
        absl::StrCat("rendezvous store: keys [", absl::StrJoin(missing, ", "),
                     "] still missing after ", absl::FormatDuration(timeout)));
  }
  std::vector<std::string> values;
  values.reserve(keys.size());
  for (const std::string& key : keys) values.push_back(values_.at(key));
  mu_.Unlock();
  return values;
}

int64_t InMemoryKeyValueStore::num_keys() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(values_.size());
}

void InMemoryKeyValueStore::ErasePrefix(const std::string& prefix) {
  absl::MutexLock lock(&mu_);
  auto it = values_.lower_bound(prefix);
  while (it != values_.end() && it->first.compare(0, prefix.size(), prefix) == 0) {
    it = values_.erase(it);
  }
}

bool InMemoryKeyValueStore::HasAll(const std::vector<std::string>& keys) const {
  for (const std::string& key : keys) {
    if (!values_.contains(key)) return false;
  }
  return true;
}

}  // namespace gemmaserve::parallel
