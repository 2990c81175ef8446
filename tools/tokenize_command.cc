// gemmaserve tokenize / detokenize: the tokenizer from the command line.
//
//   echo -n "Hello" | gemmaserve tokenize --model DIR [--add-special-tokens]
//       [--split-special-tokens]                              -> {"ids": [...]}
//   echo '{"ids": [2, 9259]}' | gemmaserve detokenize --tokenizer FILE [--skip-special-tokens]
//                                                             -> {"text": "..."}
//
// Without --jsonl all of stdin is one request: raw UTF-8 text for tokenize (byte for byte,
// a trailing newline included), one JSON object for detokenize. With --jsonl every stdin line
// is a JSON object ({"text": ...} or {"ids": [...]}) answered by one line; a bad line is
// answered with {"error": "..."} and the rest go on. The tokenizer is loaded once.
#include <iostream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/json_limits.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "text/tokenizer.h"
#include "tools/commands.h"
#include "tools/flags.h"

namespace gemmaserve::tools {
namespace {

using Json = nlohmann::json;

struct TokenizeConfig {
  std::string tokenizer_path;
  std::string model_dir;
  bool add_special_tokens = false;
  bool split_special_tokens = false;
  bool skip_special_tokens = false;
  bool jsonl = false;
};

void AddSourceFlags(FlagSet* flags, TokenizeConfig* config) {
  flags->String("tokenizer", &config->tokenizer_path, "a tokenizer.json file");
  flags->String("model", &config->model_dir, "a checkpoint directory holding tokenizer.json");
  flags->Bool("jsonl", &config->jsonl, "one JSON request per stdin line, one answer per line");
}

absl::StatusOr<std::unique_ptr<text::Tokenizer>> LoadTokenizer(const TokenizeConfig& config) {
  if (config.tokenizer_path.empty() == config.model_dir.empty()) {
    return absl::InvalidArgumentError("give exactly one of --tokenizer FILE and --model DIR");
  }
  if (!config.model_dir.empty()) return text::Tokenizer::LoadFromModelDir(config.model_dir);
  return text::Tokenizer::LoadFile(config.tokenizer_path);
}

void PrintJson(const Json& json) {
  // Decoded text is valid UTF-8 (bad byte runs decode to U+FFFD); `replace` is a safety net.
  std::cout << json.dump(-1, ' ', false, Json::error_handler_t::replace) << "\n" << std::flush;
}

// One request: a line of --jsonl, or all of stdin.
absl::StatusOr<Json> ParseRequest(const std::string& text) {
  constexpr JsonLimits kRequestLimits{.max_bytes = size_t{1} << 30};
  absl::StatusOr<Json> json = ParseJson(text, kRequestLimits);
  if (json.ok()) return json;
  return absl::InvalidArgumentError(absl::StrCat("input: ", json.status().message()));
}

absl::StatusOr<Json> Tokenize(const text::Tokenizer& tokenizer, const std::string& text,
                              const TokenizeConfig& config) {
  ASSIGN_OR_RETURN(std::vector<int32_t> ids,
                   tokenizer.Encode(text, {.add_special_tokens = config.add_special_tokens,
                                           .split_special_tokens = config.split_special_tokens}));
  return Json{{"ids", ids}};
}

absl::StatusOr<Json> Detokenize(const text::Tokenizer& tokenizer, const Json& request,
                                const TokenizeConfig& config) {
  const auto ids_field = request.is_object() ? request.find("ids") : request.end();
  if (!request.is_object() || ids_field == request.end() || !ids_field->is_array()) {
    return absl::InvalidArgumentError("expected {\"ids\": [...]}");
  }
  std::vector<int32_t> ids;
  for (const Json& id : *ids_field) {
    if (!id.is_number_integer() || id.get<int64_t>() < INT32_MIN || id.get<int64_t>() > INT32_MAX) {
      return absl::InvalidArgumentError(absl::StrCat("ids: ", id.dump(), " is not a token id"));
    }
    ids.push_back(id.get<int32_t>());
  }
  ASSIGN_OR_RETURN(std::string text, tokenizer.Decode(ids, config.skip_special_tokens));
  return Json{{"text", std::move(text)}};
}

// One --jsonl line of tokenize: {"text": "..."}.
absl::StatusOr<Json> TokenizeLine(const text::Tokenizer& tokenizer, const std::string& line,
                                  const TokenizeConfig& config) {
  ASSIGN_OR_RETURN(const Json request, ParseRequest(line));
  const auto text = request.is_object() ? request.find("text") : request.end();
  if (!request.is_object() || text == request.end() || !text->is_string()) {
    return absl::InvalidArgumentError("expected {\"text\": \"...\"}");
  }
  return Tokenize(tokenizer, text->get<std::string>(), config);
}

absl::StatusOr<Json> DetokenizeLine(const text::Tokenizer& tokenizer, const std::string& line,
                                    const TokenizeConfig& config) {
  ASSIGN_OR_RETURN(const Json request, ParseRequest(line));
  return Detokenize(tokenizer, request, config);
}

// Answers each stdin line; errors become {"error": ...} lines.
template <typename Handle>
void ServeLines(const Handle& handle) {
  for (std::string line; std::getline(std::cin, line);) {
    if (line.empty()) continue;
    absl::StatusOr<Json> answer = handle(line);
    PrintJson(answer.ok() ? *answer : Json{{"error", std::string(answer.status().message())}});
  }
}

std::string ReadStdin() {
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

absl::Status RunTokenize(const TokenizeConfig& config) {
  ASSIGN_OR_RETURN(const std::unique_ptr<text::Tokenizer> tokenizer, LoadTokenizer(config));
  if (config.jsonl) {
    ServeLines([&](const std::string& line) { return TokenizeLine(*tokenizer, line, config); });
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(const Json answer, Tokenize(*tokenizer, ReadStdin(), config));
  PrintJson(answer);
  return absl::OkStatus();
}

absl::Status RunDetokenize(const TokenizeConfig& config) {
  ASSIGN_OR_RETURN(const std::unique_ptr<text::Tokenizer> tokenizer, LoadTokenizer(config));
  if (config.jsonl) {
    ServeLines([&](const std::string& line) { return DetokenizeLine(*tokenizer, line, config); });
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(const Json request, ParseRequest(ReadStdin()));
  ASSIGN_OR_RETURN(const Json answer, Detokenize(*tokenizer, request, config));
  PrintJson(answer);
  return absl::OkStatus();
}

}  // namespace

int TokenizeMain(int argc, char** argv) {
  TokenizeConfig config;
  FlagSet flags("tokenize", "Read UTF-8 text from stdin and print {\"ids\": [...]}.");
  AddSourceFlags(&flags, &config);
  flags.Bool("add-special-tokens", &config.add_special_tokens,
             "add the post-processor's tokens (Gemma's BOS), as HF add_special_tokens");
  flags.Bool("split-special-tokens", &config.split_special_tokens,
             "encode special-token text as plain characters, as HF split_special_tokens");
  const absl::Status parsed = flags.Parse(argc, argv);
  return RunCommand(flags, parsed, [&] { return RunTokenize(config); });
}

int DetokenizeMain(int argc, char** argv) {
  TokenizeConfig config;
  FlagSet flags("detokenize", "Read {\"ids\": [...]} from stdin and print {\"text\": \"...\"}.");
  AddSourceFlags(&flags, &config);
  flags.Bool("skip-special-tokens", &config.skip_special_tokens,
             "leave out tokens marked special, as HF skip_special_tokens");
  const absl::Status parsed = flags.Parse(argc, argv);
  return RunCommand(flags, parsed, [&] { return RunDetokenize(config); });
}

}  // namespace gemmaserve::tools
