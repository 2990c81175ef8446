#include "text/output_parser.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/json_limits.h"
#include "common/status_macros.h"
#include "text/chat_markers.h"

namespace gemmaserve::text {
namespace {

using Json = nlohmann::json;

// Recursive-descent parser for one call's arguments. Errors name the offset into `text_`. `depth`
// counts the enclosing containers; nesting is capped at kMaxJsonDepth, like every JSON the server
// reads: hostile output can neither exhaust the stack nor yield JSON a client cannot send back.
class ArgumentParser {
 public:
  explicit ArgumentParser(std::string_view text) : text_(text) {}

  absl::StatusOr<Json> ParseObjectToEnd() {
    ASSIGN_OR_RETURN(Json object, ParseObject(0));
    SkipSpace();
    if (pos_ != text_.size()) return Error("unexpected text after the arguments");
    return object;
  }

 private:
  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(std::string(what), " at offset ", pos_));
  }
  void SkipSpace() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\n' ||
                                   text_[pos_] == '\t' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }
  bool Consume(std::string_view token) {
    SkipSpace();
    if (!text_.substr(pos_).starts_with(token)) return false;
    pos_ += token.size();
    return true;
  }

  absl::StatusOr<std::string> ParseQuoted() {
    const size_t end = text_.find(marker::kQuote, pos_);
    if (end == std::string_view::npos) {
      return Error(absl::StrCat("unterminated ", std::string(marker::kQuote), " string"));
    }
    std::string value(text_.substr(pos_, end - pos_));
    pos_ = end + marker::kQuote.size();
    return value;
  }

  absl::StatusOr<std::string> ParseKey() {
    if (Consume(marker::kQuote)) return ParseQuoted();
    const size_t end = text_.find_first_of(":{}[],", pos_);
    if (end == std::string_view::npos || text_[end] != ':' || end == pos_) {
      return Error("expected a key followed by ':'");
    }
    std::string key(text_.substr(pos_, end - pos_));
    pos_ = end;
    return key;
  }

  absl::StatusOr<Json> ParseObject(int depth) {
    if (depth >= kMaxJsonDepth) return Error("arguments nested too deeply");
    if (!Consume("{")) return Error("expected '{'");
    Json object = Json::object();
    if (Consume("}")) return object;
    while (true) {
      SkipSpace();
      ASSIGN_OR_RETURN(std::string key, ParseKey());
      if (!Consume(":")) return Error("expected ':'");
      ASSIGN_OR_RETURN(object[key], ParseValue(depth + 1));
      if (Consume("}")) return object;
      if (!Consume(",")) return Error("expected ',' or '}'");
    }
  }

  absl::StatusOr<Json> ParseArray(int depth) {
    if (depth >= kMaxJsonDepth) return Error("arguments nested too deeply");
    Json array = Json::array();
    if (Consume("]")) return array;
    while (true) {
      ASSIGN_OR_RETURN(Json value, ParseValue(depth + 1));
      array.push_back(std::move(value));
      if (Consume("]")) return array;
      if (!Consume(",")) return Error("expected ',' or ']'");
    }
  }

  absl::StatusOr<Json> ParseValue(int depth) {
    SkipSpace();
    if (Consume(marker::kQuote)) return ParseQuoted();
    if (text_.substr(pos_).starts_with("{")) return ParseObject(depth);
    if (Consume("[")) return ParseArray(depth);
    if (Consume("true")) return Json(true);
    if (Consume("false")) return Json(false);
    if (Consume("null") || Consume("None")) return Json(nullptr);
    return ParseNumber();
  }

  absl::StatusOr<Json> ParseNumber() {
    const size_t end = text_.find_first_not_of("+-0123456789.eE", pos_);
    const std::string_view number =
        text_.substr(pos_, (end == std::string_view::npos ? text_.size() : end) - pos_);
    Json value = Json::parse(number, nullptr, /*allow_exceptions=*/false);
    if (number.empty() || value.is_discarded()) return Error("expected a value");
    pos_ += number.size();
    return value;
  }

  std::string_view text_;
  size_t pos_ = 0;
};

// "call:NAME{...}" -> ToolCall.
absl::StatusOr<ToolCall> ParseCall(std::string_view body, size_t index) {
  const std::string where = absl::StrCat("tool call ", index);
  if (!body.starts_with("call:")) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": does not start with \"call:\""));
  }
  body.remove_prefix(5);
  const size_t brace = body.find('{');
  if (brace == 0 || brace == std::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": expected NAME{arguments}"));
  }
  ToolCall call;
  call.name = std::string(body.substr(0, brace));
  absl::StatusOr<Json> arguments = ArgumentParser(body.substr(brace)).ParseObjectToEnd();
  if (!arguments.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(where, " (", call.name, "): ",
                                                   arguments.status().message(),
                                                   " of its arguments"));
  }
  call.arguments = *std::move(arguments);
  return call;
}

}  // namespace

absl::StatusOr<ParsedOutput> ParseModelOutput(std::string_view text) {
  ParsedOutput output;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t channel = text.find(marker::kChannelStart, pos);
    const size_t call = text.find(marker::kToolCallStart, pos);
    const size_t next = std::min(channel, call);
    output.content.append(text.substr(pos, next - pos));
    if (next == std::string_view::npos) break;
    if (next == channel) {
      size_t begin = channel + marker::kChannelStart.size();
      if (text.substr(begin).starts_with(marker::kThought)) begin += marker::kThought.size();
      const size_t end = text.find(marker::kChannelEnd, begin);
      output.reasoning.append(text.substr(begin, end - begin));
      if (end == std::string_view::npos) break;
      pos = end + marker::kChannelEnd.size();
    } else {
      const size_t begin = call + marker::kToolCallStart.size();
      const size_t end = text.find(marker::kToolCallEnd, begin);
      if (end == std::string_view::npos) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tool call ", output.tool_calls.size(), ": not closed with ",
                         std::string(marker::kToolCallEnd)));
      }
      ASSIGN_OR_RETURN(ToolCall parsed,
                       ParseCall(text.substr(begin, end - begin), output.tool_calls.size()));
      output.tool_calls.push_back(std::move(parsed));
      pos = end + marker::kToolCallEnd.size();
    }
  }
  return output;
}

}  // namespace gemmaserve::text
