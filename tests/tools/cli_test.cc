// The `gemmaserve run` and `gemmaserve logits` commands as a user runs them: a real process, its
// stdout and exit code, checked against the golden references.
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util/child_process.h"

namespace gemmaserve {
namespace {

struct Output {
  int exit_code = -1;
  std::string out;  // stdout and stderr, interleaved
};

Output Gemmaserve(std::vector<std::string> args) {
  args.insert(args.begin(), GEMMASERVE_BINARY);
  const testing::ProcessResult run = testing::RunProcess(args, absl::Seconds(300));
  return {run.exit_code, run.output};
}

// The last non-empty line of `text`.
std::string LastLine(const std::string& text) {
  const size_t end = text.find_last_not_of('\n');
  if (end == std::string::npos) return "";
  const size_t newline = text.rfind('\n', end);
  const size_t begin = newline == std::string::npos ? 0 : newline + 1;
  return text.substr(begin, end + 1 - begin);
}

nlohmann::json Reference(const std::string& model) {
  std::ifstream in("tests/data/ref/" + model + ".json");
  return nlohmann::json::parse(in);
}

TEST(CliTest, RunGreedyPrintsTheGoldenTokens) {
  for (const std::string model : {"gemma4-tiny-dense", "gemma4-tiny-moe"}) {
    const nlohmann::json seq = Reference(model)["sequences"][2];
    const std::string ids = absl::StrJoin(seq["input_ids"].get<std::vector<int>>(), ",");
    Output run = Gemmaserve({"run", "--model", "tests/data/" + model, "--prompt-ids", ids,
                             "--max-tokens", "16", "--temperature", "0", "--ignore-eos", "--json"});
    ASSERT_EQ(run.exit_code, 0) << run.out;
    const nlohmann::json result = nlohmann::json::parse(run.out);
    EXPECT_EQ(result["output_ids"], seq["greedy_new_tokens"]) << model;
    EXPECT_EQ(result["finish_reason"], "length");
  }
}

TEST(CliTest, LogitsPrintsTheGoldenLastPosition) {
  const nlohmann::json seq = Reference("gemma4-tiny-moe")["sequences"][3];
  const std::string ids = absl::StrJoin(seq["input_ids"].get<std::vector<int>>(), ",");
  Output run = Gemmaserve({"logits", "--model", "tests/data/gemma4-tiny-moe", "--tokens", ids});
  ASSERT_EQ(run.exit_code, 0) << run.out;
  const auto logits = nlohmann::json::parse(run.out)["logits"];
  ASSERT_EQ(logits.size(), 1u);
  const auto expected = seq["last_logits"].get<std::vector<float>>();
  ASSERT_EQ(logits[0].size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_NEAR(logits[0][i].get<float>(), expected[i], 1e-3) << "logit " << i;
  }
}

TEST(CliTest, LogitsAllPositionsHasOneRowPerToken) {
  Output run = Gemmaserve({"logits", "--model", "tests/data/gemma4-tiny-dense", "--tokens",
                          "2,17,40", "--all-positions"});
  ASSERT_EQ(run.exit_code, 0) << run.out;
  EXPECT_EQ(nlohmann::json::parse(run.out)["logits"].size(), 3u);
}

TEST(CliTest, IgnoreEosGeneratesExactlyMaxTokens) {
  Output run = Gemmaserve({"run", "--model", "tests/data/gemma4-tiny-dense", "--prompt-ids",
                          "2,1,1", "--max-tokens", "24", "--temperature", "0", "--ignore-eos",
                          "--json"});
  ASSERT_EQ(run.exit_code, 0) << run.out;
  EXPECT_EQ(nlohmann::json::parse(run.out)["output_ids"].size(), 24u);
}

TEST(CliTest, RunTakesTextAndChatPrompts) {
  Output text = Gemmaserve({"run", "--model", "tests/data/gemma4-tiny-moe", "--prompt",
                           "The capital of France", "--max-tokens", "8", "--temperature", "0",
                           "--ignore-eos", "--json"});
  ASSERT_EQ(text.exit_code, 0) << text.out;
  const nlohmann::json result = nlohmann::json::parse(text.out);
  EXPECT_EQ(result["output_ids"].size(), 8u);
  EXPECT_TRUE(result["text"].is_string());
  EXPECT_GT(result["prompt_tokens"].get<int>(), 2);

  Output chat = Gemmaserve({"run", "--model", "tests/data/gemma4-tiny-dense", "--chat",
                           "Hello there", "--max-tokens", "8", "--temperature", "0", "--json"});
  ASSERT_EQ(chat.exit_code, 0) << chat.out;
  const nlohmann::json answer = nlohmann::json::parse(chat.out);
  // <bos><|turn>user\n Hello there <turn|>\n<|turn>model\n<|channel>thought\n<channel|>
  EXPECT_GT(answer["prompt_tokens"].get<int>(), 9);
  EXPECT_TRUE(answer["text"].is_string());
}

TEST(CliTest, ABf16KvCacheGivesTheSameTokensInProcessAndOverTwoWorkers) {
  // The workers learn the KV cache dtype from the coordinator; every rank rounds the same keys.
  const std::vector<std::string> run = {"run", "--model", "tests/data/gemma4-tiny-moe",
                                        "--prompt-ids", "2,17,40,99", "--max-tokens", "12",
                                        "--temperature", "0", "--ignore-eos", "--json",
                                        "--kv-cache-dtype", "bf16"};
  Output alone = Gemmaserve(run);
  std::vector<std::string> ep2 = run;
  ep2.insert(ep2.end(), {"--ep", "2"});
  Output sharded = Gemmaserve(ep2);
  ASSERT_EQ(alone.exit_code, 0) << alone.out;
  ASSERT_EQ(sharded.exit_code, 0) << sharded.out;
  // The answer is the last line; two workers of two threads on a 2-core machine log a warning
  // before it (tools/parallel_flags.h).
  EXPECT_EQ(nlohmann::json::parse(LastLine(alone.out))["output_ids"],
            nlohmann::json::parse(LastLine(sharded.out))["output_ids"]);
}

TEST(CliTest, ACudaDeviceWithoutAGpuIsAClearError) {
  // Where a GPU is visible this is not an error; everywhere else it names what is missing.
  Output run = Gemmaserve({"run", "--model", "tests/data/gemma4-tiny-moe", "--prompt-ids", "2",
                           "--max-tokens", "1", "--device", "cuda:7"});
  if (run.exit_code == 0) GTEST_SKIP() << "a GPU cuda:7 is visible";
  EXPECT_EQ(run.exit_code, 1) << run.out;
  EXPECT_TRUE(run.out.find("--device cuda:7: ") != std::string::npos &&
              (run.out.find("no usable CUDA GPU") != std::string::npos ||
               run.out.find("this build has no CUDA") != std::string::npos ||
               run.out.find("no such GPU") != std::string::npos))
      << run.out;
}

TEST(CliTest, BadInputGivesAClearErrorAndUsageExitCode) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
    int exit_code;
  };
  const std::string moe = "tests/data/gemma4-tiny-moe";
  const std::vector<Case> cases = {
      {{"run", "--model", moe, "--prompt-ids", "2,999"}, "token id 999", 2},
      {{"run", "--model", moe, "--prompt-ids", "2,x"}, "\"x\" is not an integer", 2},
      {{"run", "--model", moe}, "exactly one of --prompt-ids, --prompt and --chat", 2},
      {{"run", "--model", moe, "--prompt", "hi", "--chat", "hi"}, "exactly one of", 2},
      {{"run", "--model", moe, "--prompt-ids", "2", "--bogus"}, "unknown flag --bogus", 2},
      {{"run", "--model", "tests/data/no-such-model", "--prompt-ids", "2"},
       "no-such-model/config.json", 1},
      {{"logits", "--model", moe, "--tokens", "-5"}, "token id -5", 2},
      {{"run", "--model", moe, "--prompt-ids", "2", "--kv-cache-dtype", "f16"},
       "--kv-cache-dtype \"f16\": expected auto, f32 or bf16", 2},
      {{"run", "--model", moe, "--prompt-ids", "2", "--device", "gpu"},
       "--device \"gpu\": expected cpu, cuda or cuda:N", 2},
      {{"logits", "--model", moe, "--tokens", "2", "--precision", "bf16"},
       "--precision bf16 needs a GPU", 2},
      {{"logits", "--model", moe, "--tokens", "2", "--precision", "f16"},
       "--precision \"f16\": expected f32 or bf16", 2},
      {{"logits", "--model", moe, "--tokens", "2", "--gpu-memory-utilization", "1.5"},
       "--gpu-memory-utilization 1.5 is not in (0, 1]", 2},
      {{"worker", "--coordinator", "127.0.0.1:1", "--rank", "0", "--world-size", "1",
        "--metrics-port", "-1", "--precision", "bf16"},
       "--precision bf16 needs a GPU (--device cuda)", 2},
      {{"worker", "--coordinator", "127.0.0.1:1", "--rank", "0", "--world-size", "1",
        "--metrics-port", "-1", "--gpu-memory-utilization", "0"},
       "--gpu-memory-utilization 0 is not in (0, 1]", 2},
      {{"serve", "--model", moe, "--gpu-memory-utilization", "-1"},
       "--gpu-memory-utilization -1 is not in (0, 1]", 2},
      {{"frobnicate"}, "unknown command", 2},
  };
  for (const Case& c : cases) {
    Output run = Gemmaserve(c.args);
    const std::string args = absl::StrJoin(c.args, " ");
    EXPECT_EQ(run.exit_code, c.exit_code) << args << "\n" << run.out;
    EXPECT_NE(run.out.find(c.message), std::string::npos) << args << "\n" << run.out;
  }
}

}  // namespace
}  // namespace gemmaserve
