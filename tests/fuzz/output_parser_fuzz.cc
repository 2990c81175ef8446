// The model-output parsers on arbitrary model text: ParseModelOutput (reasoning, tool calls and
// their argument syntax), and ChatOutputSplitter fed the same text in input-chosen deltas, which
// must split it exactly as when fed the whole text at once (what the non-streaming response does).
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "coordinator/api/chat_output.h"
#include "text/output_parser.h"

namespace api = gemmaserve::coordinator::api;

namespace {

// The pieces of `deltas` fed one by one, adjacent pieces of one kind merged, as comparable text.
std::string Split(const std::vector<std::string>& deltas) {
  api::ChatOutputSplitter splitter;
  std::vector<api::ChatPiece> pieces;
  for (const std::string& delta : deltas) {
    for (api::ChatPiece& piece : splitter.Add(delta)) pieces.push_back(std::move(piece));
  }
  for (api::ChatPiece& piece : splitter.Finish()) pieces.push_back(std::move(piece));
  std::vector<api::ChatPiece> merged;
  for (api::ChatPiece& piece : pieces) {
    if (!merged.empty() && piece.kind != api::ChatPiece::Kind::kToolCall &&
        merged.back().kind == piece.kind) {
      merged.back().text += piece.text;
    } else if (piece.kind == api::ChatPiece::Kind::kToolCall || !piece.text.empty()) {
      merged.push_back(std::move(piece));
    }
  }
  std::string out;
  for (const api::ChatPiece& piece : merged) {
    out +=
        std::to_string(static_cast<int>(piece.kind)) + "[" + piece.text + "|" +
        piece.tool_call.name + "|" +
        piece.tool_call.arguments.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
        "]";
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider input(data, size);
  std::vector<size_t> cuts;
  for (int i = input.ConsumeIntegralInRange(0, 8); i > 0; --i) {
    cuts.push_back(input.ConsumeIntegralInRange<size_t>(0, 64));
  }
  const std::string text = input.ConsumeRemainingBytesAsString();
  (void)gemmaserve::text::ParseModelOutput(text);

  std::vector<std::string> deltas;
  size_t at = 0;
  for (size_t cut : cuts) {
    const size_t length = std::min(cut, text.size() - at);
    deltas.push_back(text.substr(at, length));
    at += length;
  }
  deltas.push_back(text.substr(at));
  const std::string whole = Split({text});
  const std::string streamed = Split(deltas);
  if (whole != streamed) {
    std::fprintf(stderr, "split differs when streamed:\n  whole:    %s\n  streamed: %s\n",
                 whole.c_str(), streamed.c_str());
    std::abort();
  }
  return 0;
}
