#include "common/json_limits.h"

#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gemmaserve {
namespace {

using Json = nlohmann::json;
using ::testing::HasSubstr;

constexpr JsonLimits kLimits{.max_bytes = 1 << 20, .max_depth = 4};

std::string NestedArrays(int levels) {
  const size_t n = static_cast<size_t>(levels);
  return std::string(n, '[') + std::string(n, ']');
}

// `levels` arrays, one inside the other, built without parsing.
Json NestedArrayValue(int levels) {
  Json value = Json::array();
  for (int i = 1; i < levels; ++i) {
    Json outer = Json::array();
    outer.push_back(std::move(value));
    value = std::move(outer);
  }
  return value;
}

TEST(JsonLimitsTest, ParsesJsonWithinTheLimits) {
  const absl::StatusOr<Json> json = ParseJson(R"({"a": [1, {"b": [true]}], "c": "x"})", kLimits);
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_EQ((*json)["a"][1]["b"][0], true);
  EXPECT_EQ((*json)["c"], "x");
  EXPECT_TRUE(ParseJson("7", kLimits).ok());
}

TEST(JsonLimitsTest, NestingExactlyAtTheLimitIsAcceptedAndOneMoreIsRefused) {
  EXPECT_TRUE(ParseJson(NestedArrays(4), kLimits).ok());
  EXPECT_TRUE(ParseJson(R"({"a": {"b": {"c": {"d": 1}}}})", kLimits).ok());
  for (const std::string& text : {NestedArrays(5), std::string(R"({"a": {"b": {"c": {"d": {}}}}})"),
                                 std::string(R"([1, {"a": [[{"deep": 1}]]}, 2])")}) {
    const absl::StatusOr<Json> json = ParseJson(text, kLimits);
    EXPECT_EQ(json.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_EQ(json.status().message(), "JSON nested deeper than 4 levels") << text;
  }
}

TEST(JsonLimitsTest, TwoHundredThousandLevelsAreRefusedWithoutBuildingThem) {
  int deepest_event = 0;
  const absl::StatusOr<Json> json =
      ParseJson(NestedArrays(200000), {.max_bytes = 1 << 20, .max_depth = 64},
                [&](int depth, Json::parse_event_t, Json&) {
                  deepest_event = std::max(deepest_event, depth);
                  return true;
                });
  EXPECT_THAT(json.status().message(), HasSubstr("nested deeper than 64 levels"));
  EXPECT_GT(deepest_event, 64);  // the callback still sees the starts of the dropped part
}

TEST(JsonLimitsTest, TextLongerThanMaxBytesIsRefusedBeforeParsing) {
  const std::string text = "[" + std::string(100, ' ') + "]";
  EXPECT_TRUE(ParseJson(text, {.max_bytes = text.size()}).ok());
  const absl::StatusOr<Json> json = ParseJson(text, {.max_bytes = text.size() - 1});
  EXPECT_EQ(json.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(json.status().message(), "JSON of 102 bytes is longer than the limit of 101 bytes");
}

TEST(JsonLimitsTest, MalformedJsonAndInvalidUtf8GiveTheByte) {
  const absl::StatusOr<Json> json = ParseJson(R"({"a": tru})", kLimits);
  EXPECT_EQ(json.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(json.status().message(), HasSubstr("malformed JSON at byte "));
  EXPECT_THAT(ParseJson("\"a\xff\"", kLimits).status().message(),
              HasSubstr("malformed JSON at byte"));
  EXPECT_THAT(ParseJson("", kLimits).status().message(), HasSubstr("malformed JSON"));
}

TEST(JsonLimitsTest, NestingIsReportedBeforeALaterSyntaxError) {
  EXPECT_EQ(ParseJson(NestedArrays(10) + "x", kLimits).status().message(),
            "JSON nested deeper than 4 levels");
}

TEST(JsonLimitsTest, TheCallbackCanDropValuesButNotKeepTooDeepOnes) {
  // Drops the member "drop" as nlohmann's callbacks do; keeping everything else.
  const absl::StatusOr<Json> json =
      ParseJson(R"({"keep": 1, "drop": [1, 2]})", kLimits,
                [](int, Json::parse_event_t event, Json& parsed) {
                  return !(event == Json::parse_event_t::key && parsed == "drop");
                });
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_EQ(*json, Json::parse(R"({"keep": 1})"));
  EXPECT_FALSE(ParseJson(NestedArrays(5), kLimits, [](int, Json::parse_event_t, Json&) {
                 return true;
               }).ok());
}

TEST(JsonLimitsTest, IsBeyondJsonDepthMatchesWhatParseJsonDrops) {
  using Event = Json::parse_event_t;
  // With max_depth 2: a container starting inside two others is the third level.
  EXPECT_FALSE(IsBeyondJsonDepth(1, Event::array_start, 2));
  EXPECT_TRUE(IsBeyondJsonDepth(2, Event::array_start, 2));
  EXPECT_TRUE(IsBeyondJsonDepth(2, Event::object_start, 2));
  // Keys and scalars inside the second level are within it.
  EXPECT_FALSE(IsBeyondJsonDepth(2, Event::key, 2));
  EXPECT_FALSE(IsBeyondJsonDepth(2, Event::value, 2));
  EXPECT_FALSE(IsBeyondJsonDepth(1, Event::array_end, 2));
  // Anything inside a dropped container.
  EXPECT_TRUE(IsBeyondJsonDepth(3, Event::key, 2));
}

TEST(JsonLimitsTest, JsonDepthCountsNestedContainers) {
  EXPECT_EQ(JsonDepth(Json(3)), 0);
  EXPECT_EQ(JsonDepth(Json::array()), 1);
  EXPECT_EQ(JsonDepth(Json::parse(R"({"a": [1, {"b": {}}], "c": [[[[]]]]})")), 5);
  EXPECT_EQ(JsonDepth(NestedArrayValue(200000)), 200000);  // no recursion
}

}  // namespace
}  // namespace gemmaserve
