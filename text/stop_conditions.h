// When a sequence stops: on an end-of-sequence token id, or when the generated text contains one
// of the user's stop strings.
//
// EOS ids come from the checkpoint: generation_config.json's `eos_token_id` when present, else
// config.json's (top level, then text_config), each either one integer or a list ([1, 106]).
//
// Stop strings are matched on the detokenized text, so they match across token boundaries.
// StopStringMatcher sits between the StreamingDetokenizer and the client: it passes text through,
// holds back a tail that could still be the start of a stop string until the next delta decides
// it, and on a match returns only the text before the stop string (the stop string itself is
// never returned). Held text is valid UTF-8 at every point because stop strings are.
//
// Thread-safety: EosTokenIds is immutable; a StopStringMatcher is per sequence, one thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"

namespace gemmaserve::text {

class EosTokenIds {
 public:
  // From DIR/generation_config.json, else DIR/config.json. NOT_FOUND when neither names an
  // eos_token_id; INVALID_ARGUMENT when the value is neither an integer nor a list of them.
  static absl::StatusOr<EosTokenIds> FromModelDir(const std::string& dir);
  explicit EosTokenIds(std::vector<int32_t> ids);

  bool Contains(int32_t id) const { return set_.contains(id); }
  const std::vector<int32_t>& ids() const { return ids_; }

 private:
  std::vector<int32_t> ids_;
  absl::flat_hash_set<int32_t> set_;
};

class StopStringMatcher {
 public:
  struct Output {
    std::string text;      // safe to send now
    bool stopped = false;  // a stop string matched; `text` ends just before it
    std::string matched;   // the stop string that matched (the earliest in the text)
  };

  // Empty strings are ignored. INVALID_ARGUMENT if a stop string is not valid UTF-8.
  static absl::StatusOr<StopStringMatcher> Create(std::vector<std::string> stop_strings);

  // Feeds the next text delta. After a stop, further calls return nothing.
  Output Add(std::string_view delta);
  // The held-back tail, at the end of the sequence (EOS or length limit).
  std::string Finish();

 private:
  explicit StopStringMatcher(std::vector<std::string> stop_strings);
  // Length of the longest suffix of held_ that is a proper prefix of some stop string.
  size_t PartialMatchLength() const;

  std::vector<std::string> stop_strings_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace gemmaserve::text
