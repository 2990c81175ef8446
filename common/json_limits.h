// Parsing JSON that may be hostile, within limits on its size and nesting: client request bodies,
// JSON carried inside their strings (tool-call arguments, tool results, gRPC tools_json), the
// files of a model directory.
//
// nlohmann's parser keeps its own stacks, but most of what is done with a parsed value afterwards
// recurses once per nesting level: copies, comparisons, dump() and our renderers. ParseJson
// therefore refuses text longer than max_bytes before reading it, and drops every container nested
// deeper than max_depth as it reads (the deep part is never built) and then refuses the text. A
// value ParseJson returns is at most max_depth deep, so anything walking it recurses at most
// max_depth levels. Code handed a json from elsewhere checks JsonDepth first.
//
// Pure functions; thread-safe.
#pragma once

#include <cstddef>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace gemmaserve {

// The nesting that every JSON the servers accept stays within, and that every recursive walk over
// such JSON may assume. Tool schemas, arguments and results in practice nest fewer than 10 levels.
inline constexpr int kMaxJsonDepth = 64;

struct JsonLimits {
  // Longest text accepted, in bytes.
  size_t max_bytes = 0;
  // Deepest nesting of arrays and objects accepted: a scalar is depth 0, [] depth 1, [{}] depth 2.
  int max_depth = kMaxJsonDepth;
};

// Whether a parse event (nlohmann's `depth` counts the enclosing containers) belongs to a container
// nested deeper than max_depth: such a container's start, and the starts and keys inside it
// (nlohmann reports no other events inside a dropped value).
bool IsBeyondJsonDepth(int depth, nlohmann::json::parse_event_t event, int max_depth);

// Parses `text` as one JSON value. `callback`, if given, sees every parse event as nlohmann's
// parser_callback_t does and returns whether to keep the value; containers beyond max_depth are
// dropped whatever it returns. INVALID_ARGUMENT, without a field name (callers prefix their own):
//   "JSON of N bytes is longer than the limit of M bytes"
//   "malformed JSON at byte N: DETAIL"          (also invalid UTF-8 in a string)
//   "JSON nested deeper than M levels"       (reported first when the text is also malformed)
absl::StatusOr<nlohmann::json> ParseJson(
    std::string_view text, const JsonLimits& limits,
    const nlohmann::json::parser_callback_t& callback = nullptr);

// The nesting depth of `value` (0 for a scalar), without recursion. Walks the whole value.
int JsonDepth(const nlohmann::json& value);

}  // namespace gemmaserve
