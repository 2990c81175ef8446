// A server whose KV cache holds only a few sequences' worth of blocks: long and short requests
// together force preemption by recompute. Every request still completes with its greedy tokens,
// and afterwards no block is leaked.
#include <future>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/integration/api_clients.h"
#include "tests/integration/serve_process.h"
#include "tests/model/golden_reference.h"

namespace gemmaserve::testing {
namespace {

TEST(PreemptionTest, LongAndShortRequestsUnderATinyKvBudgetCompleteWithoutLeaks) {
  // 1 MiB per worker with 32-token blocks: 24 pages of one sliding or ten full blocks (the full
  // layers store values only).
  ServeProcess server;
  ASSERT_TRUE(server.Start({"--kv-cache-mb", "1", "--block-size", "32"})) << server.output();
  auto stub = NewInferenceStub(server.grpc_port());

  const GoldenReference golden = LoadGoldenReference("gemma4-tiny-moe");
  // Each long request ends at 100 tokens, 4 blocks of the full-attention group (a page) and at
  // least one sliding block (another); all of them together need more pages than exist, but
  // their prompts fit, so they are admitted and then preempted as they grow. Steps are slow here
  // (tens of milliseconds), so the requests stay short.
  const std::vector<int32_t>& long_prompt = golden.inputs[0];
  constexpr int kLongTokens = 60;
  const std::vector<int32_t>& short_prompt = golden.inputs[3];
  constexpr int kShortTokens = 8;
  constexpr int kNumLong = 16;
  constexpr int kNumShort = 4;
  const int long_blocks = (static_cast<int>(long_prompt.size()) + kLongTokens + server.block_size() - 1) /
                          server.block_size();
  const int long_pages = (long_blocks + server.full_per_page() - 1) / server.full_per_page() + 1;
  ASSERT_GT(kNumLong * long_pages, server.num_pages()) << "the budget no longer forces preemption";

  std::vector<std::future<GrpcResult>> long_results;
  std::vector<std::future<GrpcResult>> short_results;
  for (int i = 0; i < kNumLong; ++i) {
    long_results.push_back(std::async(std::launch::async, [&] {
      return GenerateAll(*stub, GreedyTokenRequest(long_prompt, kLongTokens));
    }));
  }
  for (int i = 0; i < kNumShort; ++i) {
    short_results.push_back(std::async(std::launch::async, [&] {
      return GenerateAll(*stub, GreedyTokenRequest(short_prompt, kShortTokens));
    }));
  }
  std::vector<int32_t> first_long;
  for (auto& future : long_results) {
    const GrpcResult result = future.get();
    ASSERT_TRUE(result.status.ok()) << result.status.error_message();
    EXPECT_EQ(result.final.finish_reason(), v1::FINISH_REASON_LENGTH);
    ASSERT_EQ(result.token_ids.size(), static_cast<size_t>(kLongTokens));
    // Recomputing a preempted sequence must not change its greedy tokens.
    EXPECT_EQ(std::vector<int32_t>(result.token_ids.begin(), result.token_ids.begin() + 16),
              golden.greedy[0]);
    if (first_long.empty()) first_long = result.token_ids;
    EXPECT_EQ(result.token_ids, first_long);
  }
  for (auto& future : short_results) {
    const GrpcResult result = future.get();
    ASSERT_TRUE(result.status.ok()) << result.status.error_message();
    EXPECT_EQ(result.token_ids,
              std::vector<int32_t>(golden.greedy[3].begin(), golden.greedy[3].begin() + kShortTokens));
  }

  EXPECT_TRUE(WaitIdle(*stub)) << GetLoad(*stub).DebugString();
  const v1::Load load = GetLoad(*stub);
  EXPECT_EQ(load.used_sliding_blocks(), 0);
  EXPECT_EQ(load.used_full_blocks(), 0);
  EXPECT_GT(load.preemptions(), 0) << "the workload did not force preemption";
  const std::string metrics = HttpClient(server.http_port()).Get("/metrics").body;
  EXPECT_EQ(SumSamples(metrics, "gemmaserve_preemptions_total"), load.preemptions());
}

}  // namespace
}  // namespace gemmaserve::testing
