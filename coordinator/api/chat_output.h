// ChatOutputSplitter: splits a chat generation, fed as the text deltas the engine streams
// (special tokens kept), into the OpenAI parts as it arrives:
//
//   <|channel>thought\n ... <channel|>             -> reasoning_content
//   <|tool_call>call:NAME{...}<tool_call|>         -> one tool call, emitted once it is closed
//   anything else                                  -> content
//
// Text that may be the beginning of a marker is held back until the next delta decides it, so a
// marker split across deltas is still recognised. Tool call bodies are parsed by
// ParseModelOutput (output_parser.h); a call that does not parse, or is still open at the end,
// is passed on as content, markers included, rather than lost. A thought block still open at
// the end counts as reasoning, as the output parser does. The non-streaming response feeds the
// whole text at once, so both paths split the same way.
//
// One per sequence, one thread.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "text/chat_template.h"

namespace gemmaserve::coordinator::api {

struct ChatPiece {
  enum class Kind { kContent, kReasoning, kToolCall };
  Kind kind = Kind::kContent;
  std::string text;    // kContent, kReasoning
  text::ToolCall tool_call;  // kToolCall
};

class ChatOutputSplitter {
 public:
  // Pieces completed by `delta`; adjacent pieces of one kind are merged.
  std::vector<ChatPiece> Add(std::string_view delta);
  // Whatever is held back, at the end of the sequence.
  std::vector<ChatPiece> Finish();

 private:
  enum class State { kContent, kThoughtLabel, kReasoning, kToolCall };

  // Consumes as much of pending_ as can be decided; `final` decides everything.
  void Process(bool final, std::vector<ChatPiece>* out);
  // Emits the tool call whose body (between the markers) is `body`.
  static void EmitToolCall(std::string_view body, std::vector<ChatPiece>* out);

  State state_ = State::kContent;
  // Received, not yet emitted. In kToolCall: the open call's text after <|tool_call>.
  std::string pending_;
};

}  // namespace gemmaserve::coordinator::api
