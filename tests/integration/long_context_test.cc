// Long contexts on the tiny models: a prompt of 4,096 or 16,384 tokens gives the same last-position
// logits (within 1e-4) however it is computed — one whole-prompt forward in one process, TP=2 and
// EP=2 over worker processes, a chunked prefill through `serve` (512-token steps), and incremental
// decoding through `serve` (one prompt token per step). `serve`'s answers are the top-20 logprobs
// of the first generated token, compared with the log-softmax of the whole-prompt logits. And the
// max model length comes from the checkpoint unless the KV cache holds less, which `serve` says
// with both numbers.
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/api_clients.h"
#include "tests/integration/serve_process.h"
#include "tests/test_util/child_process.h"

namespace gemmaserve::testing {
namespace {

using ::testing::HasSubstr;

constexpr float kTolerance = 1e-4f;
constexpr int kTopLogprobs = 20;

// A prompt of `length` ids of the tiny models' 512-token vocabulary: <bos>, then a fixed
// pseudo-random walk that never repeats a short period.
std::vector<int32_t> LongPrompt(int length) {
  std::vector<int32_t> tokens = {2};
  for (int i = 1; i < length; ++i) tokens.push_back(3 + static_cast<int32_t>((i * 7919L) % 509));
  return tokens;
}

// `gemmaserve logits` (the last position) over `tokens` with `layout_flags`.
std::vector<float> LastLogits(const std::string& model_dir, const std::vector<int32_t>& tokens,
                              const std::vector<std::string>& layout_flags) {
  std::vector<std::string> argv = {GEMMASERVE_BINARY, "logits",    "--model", model_dir,
                                   "--threads",       "1",         "--tokens",
                                   absl::StrJoin(tokens, ",")};
  argv.insert(argv.end(), layout_flags.begin(), layout_flags.end());
  ChildOptions options;
  options.capture_stderr = false;  // stdout is the JSON
  const ProcessResult run = RunProcess(argv, absl::Seconds(300), options);
  EXPECT_EQ(run.exit_code, 0) << absl::StrJoin(layout_flags, " ") << ": "
                              << run.output.substr(0, 2000);
  if (run.exit_code != 0) return {};
  return nlohmann::json::parse(run.output)["logits"][0].get<std::vector<float>>();
}

float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float worst = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    worst = std::max(worst, std::abs(a[i] - b[i]));
  }
  return worst;
}

// The first generated token's top logprobs from `serve` (tiny MoE, EP 2) with `extra_flags`,
// compared with the log-softmax of `logits` at the same ids.
void ExpectServeMatches(const std::vector<int32_t>& prompt, const std::vector<float>& logits,
                        const std::vector<std::string>& extra_flags) {
  SCOPED_TRACE(absl::StrJoin(extra_flags, " "));
  ServeProcess server;
  std::vector<std::string> flags = {"--kv-cache-mb", "40"};
  flags.insert(flags.end(), extra_flags.begin(), extra_flags.end());
  ASSERT_TRUE(server.Start(flags)) << server.output();
  auto stub = NewInferenceStub(server.grpc_port());
  v1::GenerateRequest request = GreedyTokenRequest(prompt, 1);
  request.set_logprobs(true);
  request.set_top_logprobs(kTopLogprobs);
  // One token per step over 16,384 tokens takes 150 s alone on 2 vCPUs (EP 2: about 9 ms a
  // step, mostly the two workers' exchanges), more beside other tests.
  const GrpcResult result = GenerateAll(*stub, request, "", std::chrono::seconds(600));
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();

  double max_logit = -INFINITY;
  for (float l : logits) max_logit = std::max<double>(max_logit, l);
  double sum = 0;
  for (float l : logits) sum += std::exp(l - max_logit);
  const double log_normaliser = max_logit + std::log(sum);
  ASSERT_EQ(result.top_logprobs.size(), 1u);
  const v1::TopLogprobs& top = result.top_logprobs[0];
  ASSERT_EQ(top.alternatives_size(), kTopLogprobs);
  float worst = 0;
  for (const v1::TokenLogprob& alternative : top.alternatives()) {
    const double expected = logits.at(alternative.token_id()) - log_normaliser;
    worst = std::max(worst, static_cast<float>(std::abs(alternative.logprob() - expected)));
  }
  EXPECT_LE(worst, kTolerance);
  EXPECT_EQ(result.token_ids.at(0), top.alternatives(0).token_id());
}

class LongContextTest : public ::testing::TestWithParam<int> {};

TEST_P(LongContextTest, DenseWholePromptAndTp2Agree) {
  const std::vector<int32_t> prompt = LongPrompt(GetParam());
  const std::vector<float> whole = LastLogits("tests/data/gemma4-tiny-dense", prompt, {});
  const std::vector<float> tp2 = LastLogits("tests/data/gemma4-tiny-dense", prompt, {"--tp", "2"});
  ASSERT_EQ(whole.size(), 512u);
  EXPECT_LE(MaxAbsDiff(tp2, whole), kTolerance);
}

TEST_P(LongContextTest, MoeWholePromptEp2ChunkedAndIncrementalServeAgree) {
  const std::vector<int32_t> prompt = LongPrompt(GetParam());
  const std::vector<float> whole = LastLogits("tests/data/gemma4-tiny-moe", prompt, {});
  const std::vector<float> ep2 = LastLogits("tests/data/gemma4-tiny-moe", prompt, {"--ep", "2"});
  ASSERT_EQ(whole.size(), 512u);
  EXPECT_LE(MaxAbsDiff(ep2, whole), kTolerance);
  // 512-token steps: a chunked prefill of 8 or 32 steps.
  ExpectServeMatches(prompt, whole, {"--max-tokens-per-step", "512"});
  // One prompt token per step: every position attends to the cache alone, as a decode does.
  ExpectServeMatches(prompt, whole, {"--max-tokens-per-step", "1", "--max-num-seqs", "1"});
}

INSTANTIATE_TEST_SUITE_P(Tokens, LongContextTest, ::testing::Values(4096, 16384));

TEST(MaxModelLenTest, IsTheCheckpointsUnlessTheKvCacheHoldsLessWhichServeSays) {
  ServeProcess server;
  ASSERT_TRUE(server.Start({})) << server.output();  // --kv-cache-mb 8: some thousand tokens
  EXPECT_LT(server.max_model_len(), 262144);
  // Past the window a sequence grows by full blocks alone, several to a page.
  ASSERT_GT(server.full_per_page(), 1);
  EXPECT_GT(server.max_model_len(), server.num_pages() * server.block_size());
  EXPECT_LE(server.max_model_len(),
            server.num_pages() * server.full_per_page() * server.block_size());
  EXPECT_THAT(server.output(),
              HasSubstr(absl::StrCat("the KV cache holds one sequence of at most ",
                                     server.max_model_len(), " tokens (", server.num_pages(),
                                     " pages of ", server.block_size(),
                                     "-token blocks), fewer than the max model length of 262144 "
                                     "(the checkpoint's max_position_embeddings)")));
  server.Stop();

  ServeProcess asked_for;
  ASSERT_TRUE(asked_for.Start({"--max-model-len", "1000"})) << asked_for.output();
  EXPECT_EQ(asked_for.max_model_len(), 1000);

  ServeProcess too_long;
  EXPECT_FALSE(too_long.Start({"--max-model-len", "262145"}));
  EXPECT_THAT(too_long.output(),
              HasSubstr("--max-model-len 262145 exceeds the checkpoint's max_position_embeddings "
                        "(262144)"));
}

}  // namespace
}  // namespace gemmaserve::testing
