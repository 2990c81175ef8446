#include "coordinator/api/chat_output.h"

#include <algorithm>
#include <utility>

#include "text/chat_markers.h"
#include "text/output_parser.h"

namespace gemmaserve::coordinator::api {
namespace {

namespace marker = text::marker;

void Append(ChatPiece::Kind kind, std::string_view text, std::vector<ChatPiece>* out) {
  if (text.empty()) return;
  if (!out->empty() && out->back().kind == kind) {
    out->back().text.append(text);
    return;
  }
  out->push_back(ChatPiece{.kind = kind, .text = std::string(text), .tool_call = {}});
}

// Length of the longest suffix of `text` that is a proper prefix of `marker`.
size_t PartialMarker(std::string_view text, std::string_view marker) {
  for (size_t length = std::min(text.size(), marker.size() - 1); length > 0; --length) {
    if (text.ends_with(marker.substr(0, length))) return length;
  }
  return 0;
}

}  // namespace

std::vector<ChatPiece> ChatOutputSplitter::Add(std::string_view delta) {
  pending_.append(delta);
  std::vector<ChatPiece> out;
  Process(/*final=*/false, &out);
  return out;
}

std::vector<ChatPiece> ChatOutputSplitter::Finish() {
  std::vector<ChatPiece> out;
  Process(/*final=*/true, &out);
  return out;
}

void ChatOutputSplitter::EmitToolCall(std::string_view body, std::vector<ChatPiece>* out) {
  const std::string raw =
      std::string(marker::kToolCallStart).append(body).append(marker::kToolCallEnd);
  absl::StatusOr<text::ParsedOutput> parsed = text::ParseModelOutput(raw);
  if (!parsed.ok() || parsed->tool_calls.size() != 1) {
    Append(ChatPiece::Kind::kContent, raw, out);
    return;
  }
  out->push_back(ChatPiece{.kind = ChatPiece::Kind::kToolCall,
                           .text = {},
                           .tool_call = std::move(parsed->tool_calls[0])});
}

void ChatOutputSplitter::Process(bool final, std::vector<ChatPiece>* out) {
  while (true) {
    const std::string_view text = pending_;
    switch (state_) {
      case State::kContent: {
        const size_t channel = text.find(marker::kChannelStart);
        const size_t call = text.find(marker::kToolCallStart);
        const size_t next = std::min(channel, call);
        if (next == std::string_view::npos) {
          const size_t keep = final ? 0
                                    : std::max(PartialMarker(text, marker::kChannelStart),
                                               PartialMarker(text, marker::kToolCallStart));
          Append(ChatPiece::Kind::kContent, text.substr(0, text.size() - keep), out);
          pending_.erase(0, text.size() - keep);
          return;
        }
        Append(ChatPiece::Kind::kContent, text.substr(0, next), out);
        const bool is_channel = next == channel;
        const std::string_view opener = is_channel ? marker::kChannelStart : marker::kToolCallStart;
        pending_.erase(0, next + opener.size());
        state_ = is_channel ? State::kThoughtLabel : State::kToolCall;
        break;
      }
      case State::kThoughtLabel:
        if (text.starts_with(marker::kThought)) {
          pending_.erase(0, marker::kThought.size());
        } else if (!final && marker::kThought.starts_with(text)) {
          return;  // too short to tell yet
        }
        state_ = State::kReasoning;
        break;
      case State::kReasoning: {
        const size_t end = text.find(marker::kChannelEnd);
        if (end == std::string_view::npos) {
          const size_t keep = final ? 0 : PartialMarker(text, marker::kChannelEnd);
          Append(ChatPiece::Kind::kReasoning, text.substr(0, text.size() - keep), out);
          pending_.erase(0, text.size() - keep);
          return;
        }
        Append(ChatPiece::Kind::kReasoning, text.substr(0, end), out);
        pending_.erase(0, end + marker::kChannelEnd.size());
        state_ = State::kContent;
        break;
      }
      case State::kToolCall: {
        const size_t end = text.find(marker::kToolCallEnd);
        if (end == std::string_view::npos) {
          if (!final) return;
          Append(ChatPiece::Kind::kContent, std::string(marker::kToolCallStart).append(text), out);
          pending_.clear();
          state_ = State::kContent;
          return;
        }
        EmitToolCall(text.substr(0, end), out);
        pending_.erase(0, end + marker::kToolCallEnd.size());
        state_ = State::kContent;
        break;
      }
    }
  }
}

}  // namespace gemmaserve::coordinator::api
