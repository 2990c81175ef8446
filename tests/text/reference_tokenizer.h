// Test helpers that load the real Gemma 3 tokenizer.json (fetched by scripts/fetch_tokenizer.sh,
// never committed) and the Gemma-4-style fixture derived from it. Each is loaded once per test
// binary. A missing file is a test failure, not a skip: CI runs the fetch script first.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "text/tokenizer.h"

namespace gemmaserve::testing {

// $GEMMASERVE_TOKENIZER_JSON, else ${GEMMASERVE_CACHE:-$HOME/.cache/gemmaserve}/
// tokenizer-gemma3/tokenizer.json. NOT_FOUND (telling to run the fetch script) when absent.
absl::StatusOr<std::string> ReferenceTokenizerPath();

// The Gemma 3 tokenizer, or the load error.
absl::StatusOr<const text::Tokenizer*> Gemma3Tokenizer();

// The Gemma 3 tokenizer with the chat tokens renamed as GEMMA4.md §4 lists them (<|turn>=105,
// <turn|>=106, <|tool>=46 ... <|"|>=52, <|think|>=98, <|channel>=100, <channel|>=101), all
// marked special: the ids and names the Gemma 4 chat format uses.
absl::StatusOr<const text::Tokenizer*> Gemma4StyleTokenizer();

}  // namespace gemmaserve::testing
