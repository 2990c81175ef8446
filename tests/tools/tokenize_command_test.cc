// `gemmaserve tokenize` / `detokenize` end to end on the tiny checkpoint's tokenizer: the built
// binary (GEMMASERVE_BINARY) is run with stdin from a file and its stdout compared.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace gemmaserve {
namespace {

using Json = nlohmann::json;

struct Result {
  int exit_code;
  std::string out;
};

Result RunGemmaserve(const std::string& args, const std::string& input) {
  // Unique per process and call: ctest runs each test of this file as its own process, in parallel.
  static int calls = 0;
  const std::string input_path = ::testing::TempDir() + "/tokenize_command_input." +
                                 std::to_string(getpid()) + "." + std::to_string(calls++);
  std::ofstream(input_path, std::ios::binary) << input;
  const std::string command =
      std::string(GEMMASERVE_BINARY) + " " + args + " < " + input_path + " 2>/dev/null";
  FILE* pipe = popen(command.c_str(), "r");
  Result result{-1, ""};
  if (pipe == nullptr) return result;
  char buffer[4096];
  for (size_t n; (n = fread(buffer, 1, sizeof(buffer), pipe)) > 0;) result.out.append(buffer, n);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::filesystem::remove(input_path);
  return result;
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
