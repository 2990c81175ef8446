// The marker strings of the Gemma 4 chat format (GEMMA4.md §4), spelled here once. Each but
// kThought is one special added token of a Gemma 4 tokenizer: ChatTemplate emits them as ids (never
// as text, so client text cannot forge them), and the output parser and the streaming chat splitter
// find them in decoded model output.
//
//   <bos><|turn>system\n<|think|>...<|tool>declaration:NAME{...}<tool|><turn|>\n
//   <|turn>model\n<|channel>thought\n...<channel|><|tool_call>call:NAME{k:<|"|>v<|"|>}<tool_call|>
//   <|tool_response>response:NAME{...}<tool_response|>...<turn|>\n
#pragma once

#include <string_view>

namespace gemmaserve::text::marker {

// Starts every prompt.
inline constexpr std::string_view kBos = "<bos>";
// A turn: kTurnStart, the role ("system", "user", "model"), "\n", its content, kTurnEnd. Chat
// answers stop at kTurnEnd.
inline constexpr std::string_view kTurnStart = "<|turn>";
inline constexpr std::string_view kTurnEnd = "<turn|>";
// At the start of the system turn: the model reasons before answering.
inline constexpr std::string_view kThink = "<|think|>";
// A channel; with the kThought label, the model's reasoning.
inline constexpr std::string_view kChannelStart = "<|channel>";
inline constexpr std::string_view kChannelEnd = "<channel|>";
// One tool declaration, in the system turn.
inline constexpr std::string_view kToolStart = "<|tool>";
inline constexpr std::string_view kToolEnd = "<tool|>";
// One call the model makes, in a model turn.
inline constexpr std::string_view kToolCallStart = "<|tool_call>";
inline constexpr std::string_view kToolCallEnd = "<tool_call|>";
// One tool result given back to the model, in a model turn.
inline constexpr std::string_view kToolResponseStart = "<|tool_response>";
inline constexpr std::string_view kToolResponseEnd = "<tool_response|>";
// Around strings in the tool syntax (declarations, arguments, responses).
inline constexpr std::string_view kQuote = "<|\"|>";

// Plain text, not a token: the label after kChannelStart that makes the channel reasoning.
inline constexpr std::string_view kThought = "thought\n";

}  // namespace gemmaserve::text::marker
