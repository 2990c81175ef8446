#include "text/output_parser.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gemmaserve::text {
namespace {

using Json = nlohmann::json;
using ::testing::HasSubstr;

TEST(OutputParserTest, PlainTextIsContent) {
  const ParsedOutput output = *ParseModelOutput("The answer is 4.");
  EXPECT_EQ(output.content, "The answer is 4.");
  EXPECT_EQ(output.reasoning, "");
  EXPECT_TRUE(output.tool_calls.empty());
}

TEST(OutputParserTest, SplitsThoughtChannelFromAnswer) {
  const ParsedOutput output =
      *ParseModelOutput("<|channel>thought\nAdd two and two.<channel|>The answer is 4.");
  EXPECT_EQ(output.reasoning, "Add two and two.");
  EXPECT_EQ(output.content, "The answer is 4.");
}

TEST(OutputParserTest, EmptyThoughtAndUnclosedThought) {
  EXPECT_EQ(ParseModelOutput("<|channel>thought\n<channel|>Hi")->content, "Hi");
  const ParsedOutput cut = *ParseModelOutput("<|channel>thought\nstill thinking");
  EXPECT_EQ(cut.reasoning, "still thinking");
  EXPECT_EQ(cut.content, "");
}

TEST(OutputParserTest, ParsesToolCallsWithNestedArguments) {
  const ParsedOutput output = *ParseModelOutput(
      "<|tool_call>call:get_weather{city:<|\"|>Paris, FR<|\"|>,days:3,ratio:-1.5e2,"
      "metric:true,extra:None,opts:{tags:[<|\"|>a<|\"|>,2,[false]],<|\"|>k<|\"|>:{}}}"
      "<tool_call|><|tool_call>call:now{}<tool_call|>");
  ASSERT_EQ(output.tool_calls.size(), 2u);
  EXPECT_EQ(output.tool_calls[0].name, "get_weather");
  EXPECT_EQ(output.tool_calls[0].arguments, Json::parse(R"({"city": "Paris, FR", "days": 3,
      "ratio": -150.0, "metric": true, "extra": null,
      "opts": {"tags": ["a", 2, [false]], "k": {}}})"));
  EXPECT_EQ(output.tool_calls[1].name, "now");
  EXPECT_EQ(output.tool_calls[1].arguments, Json::object());
  EXPECT_EQ(output.content, "");
}

TEST(OutputParserTest, KeepsContentAroundToolCalls) {
  const ParsedOutput output =
      *ParseModelOutput("Let me check.<|tool_call>call:f{x:1}<tool_call|>");
  EXPECT_EQ(output.content, "Let me check.");
  ASSERT_EQ(output.tool_calls.size(), 1u);
  EXPECT_EQ(output.tool_calls[0].arguments, Json::parse(R"({"x": 1})"));
}

TEST(OutputParserTest, MalformedCallsAreClearErrors) {
  const struct {
    const char* text;
    const char* message;
  } cases[] = {
      {"<|tool_call>call:f{x:1}", "not closed with <tool_call|>"},
      {"<|tool_call>f{x:1}<tool_call|>", "does not start with \"call:\""},
      {"<|tool_call>call:{x:1}<tool_call|>", "expected NAME{arguments}"},
      {"<|tool_call>call:f{x:<|\"|>open}<tool_call|>", "unterminated"},
      {"<|tool_call>call:f{x 1}<tool_call|>", "expected a key followed by ':'"},
      {"<|tool_call>call:f{x:1 y:2}<tool_call|>", "expected ',' or '}'"},
      {"<|tool_call>call:f{x:[1 2]}<tool_call|>", "expected ',' or ']'"},
      {"<|tool_call>call:f{x:1}trailing<tool_call|>", "unexpected text"},
      {"<|tool_call>call:f{x:nope}<tool_call|>", "expected a value"},
  };
  for (const auto& c : cases) {
    const absl::StatusOr<ParsedOutput> output = ParseModelOutput(c.text);
    ASSERT_FALSE(output.ok()) << c.text;
    EXPECT_EQ(output.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(output.status().message()), HasSubstr(c.message)) << c.text;
  }
}

TEST(OutputParserTest, DeepNestingIsAnErrorNotACrash) {
  const std::string text =
      "<|tool_call>call:f{x:" + std::string(100000, '[') + "<tool_call|>";
  const absl::StatusOr<ParsedOutput> output = ParseModelOutput(text);
  ASSERT_FALSE(output.ok());
  EXPECT_THAT(std::string(output.status().message()), HasSubstr("nested too deeply"));
}

}  // namespace
}  // namespace gemmaserve::text
