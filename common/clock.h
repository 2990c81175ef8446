// Clock: where code that measures or compares times (request arrival, deadlines, latencies) reads
// the time, injected so that tests can set it instead of sleeping. Production passes a RealClock;
// tests pass a ManualClock (tests/test_util/manual_clock.h) and advance it by hand.
//
// Thread-safety: Now() may be called from any thread.
#pragma once

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace gemmaserve {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
};

// The system's wall clock (absl::Now()).
class RealClock final : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
};

}  // namespace gemmaserve
