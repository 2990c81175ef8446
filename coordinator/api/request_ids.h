// Request ids for requests that arrive without one: "PREFIX-TAG-N", where TAG is random per
// server start (so ids from two coordinator runs never collide in logs) and N counts up.
// Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace gemmaserve::coordinator::api {

class RequestIdGenerator {
 public:
  explicit RequestIdGenerator(const std::string& prefix) {
    absl::BitGen random;
    prefix_ = absl::StrCat(prefix, "-", absl::StrFormat("%08x", absl::Uniform<uint32_t>(random)),
                           "-");
  }

  std::string Next() { return absl::StrCat(prefix_, next_.fetch_add(1)); }

 private:
  std::string prefix_;
  std::atomic<uint64_t> next_{1};
};

}  // namespace gemmaserve::coordinator::api
