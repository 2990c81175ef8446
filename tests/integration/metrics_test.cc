// The coordinator's /metrics after a known workload on a real MoE cluster (tiny MoE, EP 2):
// request and token counters, and the expert-load series (tokens per expert sum to the tokens
// the model processed × top_k × MoE layers; balancedness in (0, 1]); and the expert-load series
// moving while requests run. Prefix caching is off so that every prompt token is processed.
#include <future>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/integration/api_clients.h"
#include "tests/integration/serve_process.h"
#include "tests/model/golden_reference.h"

namespace gemmaserve::testing {
namespace {

constexpr int kTopK = 2;           // tests/data/gemma4-tiny-moe/config.json: top_k_experts
constexpr int kNumMoeLayers = 6;   // every layer of the tiny MoE has routed experts
constexpr int kNumExperts = 8;

class ServeMetricsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new ServeProcess();
    ASSERT_TRUE(server_->Start({"--no-prefix-caching"})) << server_->output();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    ASSERT_GT(server_->http_port(), 0) << "the server did not start";
    stub_ = NewInferenceStub(server_->grpc_port());
  }
  std::string Scrape() const { return HttpClient(server_->http_port()).Get("/metrics").body; }

  static ServeProcess* server_;
  std::unique_ptr<v1::Inference::Stub> stub_;
};

ServeProcess* ServeMetricsTest::server_ = nullptr;

TEST_F(ServeMetricsTest, CountersMatchAKnownWorkload) {
  const GoldenReference golden = LoadGoldenReference("gemma4-tiny-moe");
  ASSERT_TRUE(WaitIdle(*stub_));
  const std::string before = Scrape();
  constexpr int kNumRequests = 10;
  std::vector<std::future<GrpcResult>> futures;
  for (int i = 0; i < kNumRequests; ++i) {
    futures.push_back(std::async(std::launch::async, [&, i] {
      return GenerateAll(*stub_, GreedyTokenRequest(golden.inputs[i % 4], 1 + 3 * i));
    }));
  }
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t processed_tokens = 0;  // prompt tokens prefilled + one per decode step
  for (auto& future : futures) {
    const GrpcResult result = future.get();
    ASSERT_TRUE(result.status.ok()) << result.status.error_message();
    const v1::Usage& usage = result.final.usage();
    EXPECT_EQ(usage.cached_tokens(), 0);
    prompt_tokens += usage.prompt_tokens();
    completion_tokens += usage.completion_tokens();
    // The first token comes from the prefill; each later one from a decode step of its
    // predecessor. The last token is never fed back.
    processed_tokens += usage.prompt_tokens() + usage.completion_tokens() - 1;
  }
  ASSERT_TRUE(WaitIdle(*stub_));
  const std::string after = Scrape();
  auto delta = [&](const std::string& name) {
    return SumSamples(after, name) - SumSamples(before, name);
  };
  EXPECT_EQ(delta("gemmaserve_requests_total"), kNumRequests);
  EXPECT_EQ(delta("gemmaserve_prompt_tokens_total"), prompt_tokens);
  EXPECT_EQ(delta("gemmaserve_generation_tokens_total"), completion_tokens);
  EXPECT_EQ(delta("gemmaserve_preemptions_total"), 0);
  EXPECT_EQ(delta("gemmaserve_moe_expert_tokens_total"),
            processed_tokens * kTopK * kNumMoeLayers);
  EXPECT_EQ(delta("gemmaserve_moe_rank_tokens_total"), processed_tokens * kTopK * kNumMoeLayers);
  EXPECT_EQ(Samples(after, "gemmaserve_moe_expert_tokens_total").size(),
            static_cast<size_t>(kNumMoeLayers * kNumExperts));
  const std::vector<Sample> balancedness = Samples(after, "gemmaserve_moe_balancedness");
  EXPECT_EQ(balancedness.size(), static_cast<size_t>(kNumMoeLayers + 1));  // + layer="all"
  for (const Sample& s : balancedness) {
    EXPECT_GT(s.value, 0.0) << "layer " << s.labels.at("layer");
    EXPECT_LE(s.value, 1.0) << "layer " << s.labels.at("layer");
  }
}

// Scrapes between stream messages of a request that cannot have finished (it may run to the
// context length), so the check holds however slow the steps are; the request is then cancelled.
TEST_F(ServeMetricsTest, ExpertLoadSeriesMoveWhileRequestsRun) {
  const std::vector<int32_t> prompt = LoadGoldenReference("gemma4-tiny-moe").inputs[0];
  const int max_tokens = server_->max_model_len() - static_cast<int>(prompt.size());
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, GreedyTokenRequest(prompt, max_tokens));
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  const std::vector<Sample> first = Samples(Scrape(), "gemmaserve_moe_expert_tokens_total");
  // Each message is one step's token; its step was recorded before the next step ran.
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(reader->Read(&response) && response.has_delta());
  const std::vector<Sample> second = Samples(Scrape(), "gemmaserve_moe_expert_tokens_total");
  EXPECT_EQ(GetLoad(*stub_).running_requests(), 1);
  context.TryCancel();
  while (reader->Read(&response)) {
  }
  reader->Finish();

  ASSERT_EQ(first.size(), second.size());
  double first_sum = 0;
  double second_sum = 0;
  for (size_t i = 0; i < first.size(); ++i) {
    EXPECT_EQ(first[i].labels, second[i].labels);
    EXPECT_GE(second[i].value, first[i].value) << "a counter went down";
    first_sum += first[i].value;
    second_sum += second[i].value;
  }
  // At least the two decode steps before the last read message, top_k experts in every layer.
  EXPECT_GE(second_sum - first_sum, 2 * kTopK * kNumMoeLayers);
  EXPECT_TRUE(WaitIdle(*stub_));
}

}  // namespace
}  // namespace gemmaserve::testing
