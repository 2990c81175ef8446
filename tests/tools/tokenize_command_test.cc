// `gemmaserve tokenize` / `detokenize` end to end on the tiny checkpoint's tokenizer: the built
// binary (GEMMASERVE_BINARY) is run with the input on its stdin and its stdout compared.
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util/child_process.h"

namespace gemmaserve {
namespace {

using Json = nlohmann::json;

struct Result {
  int exit_code;
  std::string out;
};

// Runs `gemmaserve ARGS` (split at spaces) with `input` as its stdin; its stdout alone.
Result RunGemmaserve(const std::string& args, const std::string& input) {
  std::vector<std::string> argv = absl::StrSplit(args, ' ', absl::SkipEmpty());
  argv.insert(argv.begin(), GEMMASERVE_BINARY);
  testing::ChildOptions options;
  options.stdin_data = input;
  options.capture_stderr = false;
  const testing::ProcessResult run = testing::RunProcess(argv, absl::Seconds(300), options);
  return {run.exit_code, run.output};
}

constexpr char kModel[] = "--model tests/data/gemma4-tiny-dense";

TEST(TokenizeCommandTest, TokenizeThenDetokenizeRoundTrips) {
  const Result tokens = RunGemmaserve(std::string("tokenize ") + kModel + " --add-special-tokens",
                                      "Hello <|turn> world");
  ASSERT_EQ(tokens.exit_code, 0);
  const Json ids = Json::parse(tokens.out)["ids"];
  EXPECT_EQ(ids[0], 2);
  EXPECT_THAT(ids.get<std::vector<int>>(), ::testing::Contains(105));
  const Result text = RunGemmaserve(std::string("detokenize ") + kModel, Json{{"ids", ids}}.dump());
  ASSERT_EQ(text.exit_code, 0);
  EXPECT_EQ(Json::parse(text.out)["text"], "<bos>Hello <|turn> world");
  const Result skipped = RunGemmaserve(
      std::string("detokenize --skip-special-tokens --tokenizer ") +
          "tests/data/gemma4-tiny-dense/tokenizer.json",
      Json{{"ids", ids}}.dump());
  EXPECT_EQ(Json::parse(skipped.out)["text"], "Hello  world");
}

TEST(TokenizeCommandTest, SplitSpecialTokensKeepsMarkersAsText) {
  const Result tokens = RunGemmaserve(std::string("tokenize --split-special-tokens ") + kModel,
                                      "<|turn>");
  ASSERT_EQ(tokens.exit_code, 0);
  EXPECT_THAT(Json::parse(tokens.out)["ids"].get<std::vector<int>>(),
              ::testing::Not(::testing::Contains(105)));
}

TEST(TokenizeCommandTest, JsonlAnswersEveryLineAndReportsBadOnes) {
  const Result tokens = RunGemmaserve(std::string("tokenize --jsonl ") + kModel,
                                      "{\"text\": \"a b\"}\nnot json\n{\"text\": \"\\n\"}\n");
  ASSERT_EQ(tokens.exit_code, 0);
  std::vector<Json> lines;
  std::istringstream in(tokens.out);
  for (std::string line; std::getline(in, line);) lines.push_back(Json::parse(line));
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_TRUE(lines[0].contains("ids"));
  EXPECT_TRUE(lines[1].contains("error"));
  EXPECT_EQ(lines[2]["ids"], Json::array({107}));

  const Result texts = RunGemmaserve(std::string("detokenize --jsonl ") + kModel,
                                     "{\"ids\": [105, 107]}\n{\"ids\": [99999]}\n{\"ids\": \"x\"}\n");
  ASSERT_EQ(texts.exit_code, 0);
  std::istringstream text_in(texts.out);
  std::string first, second, third;
  std::getline(text_in, first);
  std::getline(text_in, second);
  std::getline(text_in, third);
  EXPECT_EQ(Json::parse(first)["text"], "<|turn>\n");
  EXPECT_THAT(Json::parse(second)["error"].get<std::string>(), ::testing::HasSubstr("99999"));
  EXPECT_TRUE(Json::parse(third).contains("error"));
}

TEST(TokenizeCommandTest, InvalidUtf8AndMissingSourceAreErrors) {
  EXPECT_NE(RunGemmaserve(std::string("tokenize ") + kModel, "bad \xFF").exit_code, 0);
  EXPECT_EQ(RunGemmaserve("tokenize", "x").exit_code, 2);
}

}  // namespace
}  // namespace gemmaserve
