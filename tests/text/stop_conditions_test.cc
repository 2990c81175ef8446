#include "text/stop_conditions.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gemmaserve::text {
namespace {

using ::testing::ElementsAre;

// A fresh directory under the test's temp dir holding the given files.
std::string ModelDir(const std::string& name,
                     const std::vector<std::pair<std::string, std::string>>& files) {
  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  for (const auto& [file, text] : files) std::ofstream(dir / file) << text;
  return dir.string();
}

TEST(EosTokenIdsTest, ReadsTinyCheckpointGenerationConfig) {
  const absl::StatusOr<EosTokenIds> eos = EosTokenIds::FromModelDir("tests/data/gemma4-tiny-dense");
  ASSERT_TRUE(eos.ok()) << eos.status();
  EXPECT_THAT(eos->ids(), ElementsAre(1));
}

TEST(EosTokenIdsTest, ListInGenerationConfigWins) {
  const std::string dir = ModelDir("eos_list", {{"generation_config.json", R"({"eos_token_id": [1, 106]})"},
                                                {"config.json", R"({"eos_token_id": 7})"}});
  const EosTokenIds eos = *EosTokenIds::FromModelDir(dir);
  EXPECT_THAT(eos.ids(), ElementsAre(1, 106));
  EXPECT_TRUE(eos.Contains(106));
  EXPECT_FALSE(eos.Contains(2));
}

TEST(EosTokenIdsTest, FallsBackToConfigTextConfig) {
  const std::string dir = ModelDir("eos_config", {{"config.json", R"({"text_config": {"eos_token_id": 1}})"}});
  EXPECT_THAT(EosTokenIds::FromModelDir(dir)->ids(), ElementsAre(1));
}

TEST(EosTokenIdsTest, BadOrMissingValuesAreErrors) {
  EXPECT_EQ(EosTokenIds::FromModelDir(ModelDir("eos_bad", {{"config.json", R"({"eos_token_id": "x"})"}}))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EosTokenIds::FromModelDir(ModelDir("eos_none", {{"config.json", "{}"}})).status().code(),
            absl::StatusCode::kNotFound);
}

// Feeds deltas one by one and returns what reached the client, with "|" after a stop.
std::string Stream(StopStringMatcher matcher, const std::vector<std::string>& deltas) {
  std::string out;
  for (const std::string& delta : deltas) {
    const StopStringMatcher::Output output = matcher.Add(delta);
    out += output.text;
    if (output.stopped) return out + "|";
  }
  return out + matcher.Finish();
}

TEST(StopStringMatcherTest, MatchesAcrossDeltasAndDropsTheStopString) {
  const StopStringMatcher matcher = *StopStringMatcher::Create({"STOP"});
  EXPECT_EQ(Stream(matcher, {"Hello S", "TO", "P and more"}), "Hello |");
  EXPECT_EQ(Stream(matcher, {"abcSTOPdef"}), "abc|");
  EXPECT_EQ(Stream(matcher, {"STOP"}), "|");
}

TEST(StopStringMatcherTest, HoldsBackAPossiblePrefixUntilDecided) {
  StopStringMatcher matcher = *StopStringMatcher::Create({"\n\nUser:"});
  EXPECT_EQ(matcher.Add("Answer.\n").text, "Answer.");
  EXPECT_EQ(matcher.Add("\nUs").text, "");
  const StopStringMatcher::Output output = matcher.Add("e it");
  EXPECT_EQ(output.text, "\n\nUse it");
  EXPECT_FALSE(output.stopped);
  EXPECT_EQ(matcher.Finish(), "");
}

TEST(StopStringMatcherTest, FinishReleasesHeldTextAndEarliestStopWins) {
  StopStringMatcher matcher = *StopStringMatcher::Create({"END", "x"});
  EXPECT_EQ(matcher.Add("abcEN").text, "abc");
  EXPECT_EQ(matcher.Finish(), "EN");
  EXPECT_EQ(Stream(*StopStringMatcher::Create({"bc", "a"}), {"zabc"}), "z|");
  EXPECT_EQ(Stream(*StopStringMatcher::Create({"", "é"}), {"caf\xC3", "\xA9!"}), "caf|");
}

TEST(StopStringMatcherTest, NoStopStringsPassesEverything) {
  EXPECT_EQ(Stream(*StopStringMatcher::Create({}), {"a", "b"}), "ab");
  EXPECT_FALSE(StopStringMatcher::Create({"\xFF"}).ok());
}

}  // namespace
}  // namespace gemmaserve::text
