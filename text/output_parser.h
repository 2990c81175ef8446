// Splits a finished model output, decoded with special tokens kept, into its parts:
//
//   <|channel>thought\n...<channel|>            -> reasoning (every block, concatenated)
//   <|tool_call>call:NAME{key:value,...}<tool_call|>  -> tool_calls, arguments as JSON
//   everything else                              -> content
//
// Argument syntax (the Gemma 4 template's format_argument): keys bare (or <|"|>-quoted),
// strings wrapped in <|"|>, numbers, true/false, null/None, nested {...} and [...].
// A reasoning block cut off by the length limit counts as reasoning up to the end; a tool call
// that is not closed, or whose arguments do not parse, is INVALID_ARGUMENT naming the call and
// the offset. Pure function; thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "text/chat_template.h"

namespace gemmaserve::text {

struct ParsedOutput {
  std::string reasoning;
  std::string content;
  std::vector<ToolCall> tool_calls;
};

absl::StatusOr<ParsedOutput> ParseModelOutput(std::string_view text);

}  // namespace gemmaserve::text
