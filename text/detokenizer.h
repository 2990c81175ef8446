// StreamingDetokenizer: turns the token ids of one sequence, fed one at a time as they are
// generated, into text deltas for streaming. Every delta is complete UTF-8, and the deltas of a
// whole sequence (including Finish()) concatenate to exactly Tokenizer::Decode(all ids).
//
// Why ids are held back: with a ByteFallback decoder a run of `<0xNN>` byte tokens decodes as a
// unit, to its bytes when the whole run is valid UTF-8 and to one U+FFFD per byte otherwise, so a
// later byte can change how earlier ones decode. A run is therefore emitted only once a
// non-byte token ends it, or by Finish(). All other tokens decode on their own.
//
// Thread-safety: one instance per sequence, used by one thread at a time. The Tokenizer must
// outlive it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "text/tokenizer.h"

namespace gemmaserve::text {

class StreamingDetokenizer {
 public:
  StreamingDetokenizer(const Tokenizer* tokenizer, bool skip_special_tokens);

  // The text this id completes (often empty while a byte run is open). INVALID_ARGUMENT for an
  // id that is not a token; the detokenizer is then unchanged.
  absl::StatusOr<std::string> Add(int32_t id);

  // The text still held back (an unterminated byte run); call once at the end of the sequence.
  std::string Finish();

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_tokens_;
  std::vector<int32_t> pending_;  // an open run of byte tokens
};

}  // namespace gemmaserve::text
