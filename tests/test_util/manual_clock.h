// ManualClock: a Clock that stands still until a test moves it, so that deadlines and latencies
// are tested without sleeping. Test-only.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"

namespace gemmaserve::testing {

class ManualClock final : public Clock {
 public:
  // Starts at an arbitrary fixed time (2026-01-01 UTC), far from absl's infinite past and future.
  explicit ManualClock(absl::Time start = absl::FromUnixSeconds(1767225600)) : now_(start) {}

  absl::Time Now() const override {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration duration) {
    absl::MutexLock lock(&mu_);
    now_ += duration;
  }

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace gemmaserve::testing
