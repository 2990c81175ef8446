// `gemmaserve serve` on the tiny MoE model (EP 2) as a real process, exercised through its gRPC
// and OpenAI-compatible HTTP APIs: concurrent greedy requests against the golden references,
// abort freeing blocks, the prefix cache, bad requests, and a streamed chat. One server for the
// whole suite (ctest runs the suite as one process, see CMakeLists.txt).
#include <cmath>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/api_clients.h"
#include "tests/integration/serve_process.h"
#include "tests/model/golden_reference.h"

namespace gemmaserve::testing {
namespace {

using Json = nlohmann::json;
using ::testing::StartsWith;

class ServeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new ServeProcess();
    ASSERT_TRUE(server_->Start({})) << server_->output();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    ASSERT_GT(server_->http_port(), 0) << "the server did not start";
    http_ = std::make_unique<HttpClient>(server_->http_port());
    stub_ = NewInferenceStub(server_->grpc_port());
  }

  // A completions request body for prompt token ids, greedy, exactly max_tokens new tokens.
  static std::string CompletionBody(const std::vector<int32_t>& ids, int max_tokens,
                                    bool stream = false) {
    return Json{{"prompt", ids}, {"max_tokens", max_tokens}, {"temperature", 0},
                {"ignore_eos", true}, {"stream", stream}}.dump();
  }

  // 400 with the OpenAI error shape; `param` empty = no param to check.
  static void ExpectBadRequest(const HttpReply& reply, const std::string& param) {
    EXPECT_EQ(reply.status, 400) << reply.body;
    const Json body = Json::parse(reply.body, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(body.is_object()) << reply.body;
    EXPECT_EQ(body["error"]["code"], 400) << reply.body;
    EXPECT_EQ(body["error"]["type"], "invalid_request_error") << reply.body;
    EXPECT_TRUE(body["error"]["message"].is_string()) << reply.body;
    if (!param.empty()) {
      ASSERT_TRUE(body["error"]["param"].is_string()) << reply.body;
      EXPECT_THAT(body["error"]["param"].get<std::string>(), StartsWith(param)) << reply.body;
    }
  }

  // gemmaserve_requests_total{finish_reason="abort"} from /metrics.
  double AbortedRequests() const {
    for (const Sample& s : Samples(http_->Get("/metrics").body, "gemmaserve_requests_total")) {
      if (s.labels.count("finish_reason") && s.labels.at("finish_reason") == "abort") return s.value;
    }
    return 0;
  }

  static ServeProcess* server_;
  std::unique_ptr<HttpClient> http_;
  std::unique_ptr<v1::Inference::Stub> stub_;
};

ServeProcess* ServeTest::server_ = nullptr;

TEST_F(ServeTest, ConcurrentGreedyRequestsMatchGoldenAndRunningAlone) {
  const GoldenReference golden = LoadGoldenReference("gemma4-tiny-moe");
  const size_t num_prompts = golden.inputs.size();
  const int max_tokens = static_cast<int>(golden.greedy[0].size());
  // Each prompt alone, through HTTP: the reference for the concurrent HTTP requests.
  std::vector<std::string> alone_text(num_prompts);
  for (size_t p = 0; p < num_prompts; ++p) {
    const HttpReply reply = http_->Post("/v1/completions", CompletionBody(golden.inputs[p], max_tokens));
    ASSERT_EQ(reply.status, 200) << reply.body;
    alone_text[p] = Json::parse(reply.body)["choices"][0]["text"];
  }

  constexpr int kPerApi = 64;
  std::vector<std::future<GrpcResult>> grpc_results;
  std::vector<std::future<HttpReply>> http_results;
  for (int i = 0; i < kPerApi; ++i) {
    const std::vector<int32_t>& ids = golden.inputs[i % num_prompts];
    grpc_results.push_back(std::async(std::launch::async, [this, &ids, max_tokens] {
      return GenerateAll(*stub_, GreedyTokenRequest(ids, max_tokens));
    }));
    http_results.push_back(std::async(std::launch::async, [this, &ids, max_tokens] {
      return http_->Post("/v1/completions", CompletionBody(ids, max_tokens));
    }));
  }
  for (int i = 0; i < kPerApi; ++i) {
    const size_t p = i % num_prompts;
    const GrpcResult g = grpc_results[i].get();
    ASSERT_TRUE(g.status.ok()) << g.status.error_message();
    EXPECT_EQ(g.token_ids, golden.greedy[p]) << "gRPC request " << i;
    EXPECT_EQ(g.text, alone_text[p]) << "gRPC request " << i;
    EXPECT_EQ(g.final.finish_reason(), v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(g.final.usage().prompt_tokens(), static_cast<int64_t>(golden.inputs[p].size()));
    EXPECT_EQ(g.final.usage().completion_tokens(), max_tokens);

    const HttpReply h = http_results[i].get();
    ASSERT_EQ(h.status, 200) << h.body;
    const Json body = Json::parse(h.body);
    EXPECT_EQ(body["choices"][0]["text"], alone_text[p]) << "HTTP request " << i;
    EXPECT_EQ(body["choices"][0]["finish_reason"], "length");
    EXPECT_EQ(body["usage"]["completion_tokens"], max_tokens);
  }
  EXPECT_TRUE(WaitIdle(*stub_));
}

TEST_F(ServeTest, EchoedCompletionGivesThePromptsGoldenLogprobs) {
  // The lm-eval style of request: the prompt's logprobs through /v1/completions with echo.
  const GoldenReference golden = LoadGoldenReference("gemma4-tiny-moe");
  const std::vector<int32_t>& prompt = golden.inputs[0];
  Json body = Json::parse(CompletionBody(prompt, 1));
  body["echo"] = true;
  body["logprobs"] = 1;
  const HttpReply reply = http_->Post("/v1/completions", body.dump());
  ASSERT_EQ(reply.status, 200) << reply.body;
  const Json logprobs = Json::parse(reply.body)["choices"][0]["logprobs"];
  ASSERT_EQ(logprobs["token_logprobs"].size(), prompt.size() + 1) << reply.body;
  EXPECT_TRUE(logprobs["token_logprobs"][0].is_null());
  for (size_t j = 1; j < prompt.size(); ++j) {
    const std::vector<float>& logits = golden.seq0_all_logits[j - 1];
    double sum = 0.0;
    for (float logit : logits) sum += std::exp(static_cast<double>(logit));
    EXPECT_NEAR(logprobs["token_logprobs"][j].get<double>(), logits[prompt[j]] - std::log(sum),
                2e-3)
        << "prompt token " << j;
    EXPECT_EQ(logprobs["top_logprobs"][j].size(), 1u);
  }
  EXPECT_TRUE(WaitIdle(*stub_));
}

TEST_F(ServeTest, TemperatureTooSmallForF32IsGreedyWithFiniteLogprobs) {
  const GoldenReference golden = LoadGoldenReference("gemma4-tiny-moe");
  Json body = Json::parse(CompletionBody(golden.inputs[1], 4));
  body["temperature"] = 3e-39;  // passes validation as a double, is denormal as a float
  body["logprobs"] = 2;
  const HttpReply reply = http_->Post("/v1/completions", body.dump());
  ASSERT_EQ(reply.status, 200) << reply.body;
  const Json logprobs = Json::parse(reply.body)["choices"][0]["logprobs"];
  ASSERT_EQ(logprobs["token_logprobs"].size(), 4u) << reply.body;
  for (const Json& logprob : logprobs["token_logprobs"]) {
    EXPECT_TRUE(logprob.is_number()) << reply.body;  // NaN would print as null
  }
  const GrpcResult greedy = GenerateAll(*stub_, GreedyTokenRequest(golden.inputs[1], 4));
  EXPECT_EQ(Json::parse(reply.body)["choices"][0]["text"], greedy.text);
}

// A second server given the ports of a running one fails to start, naming the port: with
// SO_REUSEPORT the kernel would have split the connections between the two.
TEST_F(ServeTest, SecondServerOnAPortInUseFailsNamingIt) {
  const std::vector<std::pair<std::string, int>> taken = {
      {"--grpc-port", server_->grpc_port()},
      {"--internal-port", server_->internal_port()},
      {"--http-port", server_->http_port()}};
  for (const auto& [flag, port] : taken) {
    SCOPED_TRACE(flag);
    std::vector<std::string> argv = {GEMMASERVE_BINARY, "serve", "--model",
                                     "tests/data/gemma4-tiny-moe", "--ep", "2",
                                     "--host", "127.0.0.1", "--worker-metrics-port", "-1",
                                     "--kv-cache-mb", "8"};
    for (const char* other : {"--grpc-port", "--internal-port", "--http-port"}) {
      argv.insert(argv.end(), {other, other == flag ? std::to_string(port) : "0"});
    }
    const ProcessResult run = RunProcess(argv, absl::Seconds(60));
    EXPECT_FALSE(run.timed_out);
    EXPECT_EQ(run.exit_code, 1) << run.output;
    EXPECT_THAT(run.output, ::testing::HasSubstr(absl::StrCat("cannot listen on 127.0.0.1:", port)));
  }
  // The first server was not disturbed.
  EXPECT_EQ(http_->Get("/ready").status, 200);
  const GrpcResult result = GenerateAll(*stub_, GreedyTokenRequest({2, 40}, 2));
  EXPECT_TRUE(result.status.ok()) << result.status.error_message();
}

// Both requests below could run to the context length: only an abort ends them early.
TEST_F(ServeTest, CancelledGrpcStreamFreesItsBlocks) {
  const double aborted_before = AbortedRequests();
  const std::vector<int32_t> prompt = LoadGoldenReference("gemma4-tiny-moe").inputs[0];
  const int max_tokens = server_->max_model_len() - static_cast<int>(prompt.size());
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, GreedyTokenRequest(prompt, max_tokens));
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  context.TryCancel();
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitIdle(*stub_)) << GetLoad(*stub_).DebugString();
  EXPECT_EQ(AbortedRequests(), aborted_before + 1);
}

TEST_F(ServeTest, HttpClientDisconnectMidStreamFreesItsBlocks) {
  const double aborted_before = AbortedRequests();
  const std::vector<int32_t> prompt = LoadGoldenReference("gemma4-tiny-moe").inputs[1];
  const int max_tokens = server_->max_model_len() - static_cast<int>(prompt.size());
  ASSERT_TRUE(http_->PostAndDisconnectWhen(
      "/v1/completions", CompletionBody(prompt, max_tokens, /*stream=*/true),
      [](const std::string& received) { return received.find("\"text\"") != std::string::npos; }));
  EXPECT_TRUE(WaitIdle(*stub_)) << GetLoad(*stub_).DebugString();
  EXPECT_EQ(AbortedRequests(), aborted_before + 1);
}

TEST_F(ServeTest, RepeatedPromptHitsThePrefixCache) {
  // A prompt no other test sends: three full blocks and a partial one.
  std::vector<int32_t> prompt = {2};
  for (int i = 0; i < 3 * server_->block_size() + 5; ++i) prompt.push_back(300 + (i * 7) % 200);
  const HttpReply first = http_->Post("/v1/completions", CompletionBody(prompt, 4));
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(Json::parse(first.body)["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
  const HttpReply second = http_->Post("/v1/completions", CompletionBody(prompt, 4));
  ASSERT_EQ(second.status, 200) << second.body;
  const Json second_body = Json::parse(second.body);
  EXPECT_GE(second_body["usage"]["prompt_tokens_details"]["cached_tokens"].get<int64_t>(),
            3 * server_->block_size());
  EXPECT_EQ(second_body["choices"][0]["text"], Json::parse(first.body)["choices"][0]["text"]);
  EXPECT_GT(SumSamples(http_->Get("/metrics").body, "gemmaserve_prefix_cache_hit_tokens_total"), 0);
  EXPECT_TRUE(WaitIdle(*stub_));
}

TEST_F(ServeTest, BadRequestsGet400NamingTheFieldAndTheServerKeepsServing) {
  const std::string too_long =
      Json{{"prompt", std::vector<int32_t>(server_->max_model_len() + 1, 40)}}.dump();
  ExpectBadRequest(http_->Post("/v1/completions", "{\"prompt\": [2, 40"), "");
  ExpectBadRequest(http_->Post("/v1/completions", R"({"prompt": "hi", "max_tokens": "3"})"),
                   "max_tokens");
  ExpectBadRequest(http_->Post("/v1/completions", R"({"prompt": "hi", "temperature": "hot"})"),
                   "temperature");
  ExpectBadRequest(http_->Post("/v1/chat/completions", R"({"messages": "hi"})"), "messages");
  ExpectBadRequest(http_->Post("/v1/completions", R"({"prompt": "hi", "max_tokens": -1})"),
                   "max_tokens");
  ExpectBadRequest(http_->Post("/v1/completions", R"({"prompt": "hi", "top_p": 1.5})"), "top_p");
  ExpectBadRequest(http_->Post("/v1/completions", too_long), "prompt");
  ExpectBadRequest(
      http_->Post("/v1/chat/completions",
                  "{\"messages\": [{\"role\": \"user\", \"content\": \"bad \xff\xfe bytes\"}]}"),
      "messages");
  ExpectBadRequest(http_->Post("/v1/completions", "{\"prompt\": \"\xc3\x28\"}"), "prompt");
  ExpectBadRequest(http_->Post("/v1/chat/completions", R"({"messages": []})"), "messages");
  ExpectBadRequest(http_->Post("/v1/completions", R"({"model": "gpt-4", "prompt": "hi"})"),
                   "model");

  auto expect_invalid = [this](const v1::GenerateRequest& request, const std::string& field) {
    const GrpcResult result = GenerateAll(*stub_, request);
    EXPECT_EQ(result.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << request.DebugString();
    EXPECT_THAT(result.status.error_message(), StartsWith(field));
    EXPECT_EQ(result.num_deltas, 0);
  };
  v1::GenerateRequest request = GreedyTokenRequest({2, 40}, -1);
  expect_invalid(request, "max_tokens");
  request = GreedyTokenRequest({2, 40}, 4);
  request.set_top_p(1.5f);
  expect_invalid(request, "top_p");
  expect_invalid(GreedyTokenRequest(std::vector<int32_t>(server_->max_model_len() + 1, 40), 4),
                 "token_ids");
  expect_invalid(GreedyTokenRequest({2, 4000}, 4), "token_ids");
  request = v1::GenerateRequest();
  request.mutable_chat();  // no messages
  expect_invalid(request, "chat");

  const GrpcResult good = GenerateAll(*stub_, GreedyTokenRequest({2, 40}, 3));
  EXPECT_TRUE(good.status.ok()) << good.status.error_message();
  EXPECT_EQ(good.token_ids.size(), 3u);
  const HttpReply good_http = http_->Post("/v1/completions", CompletionBody({2, 40}, 3));
  EXPECT_EQ(good_http.status, 200) << good_http.body;
  EXPECT_EQ(http_->Get("/health").status, 200);
  EXPECT_TRUE(WaitIdle(*stub_));
}

// The serving issue's "done when": a streamed OpenAI chat answer.
TEST_F(ServeTest, StreamedChatIsServerSentEventsEndingWithDone) {
  const HttpReply reply = http_->Post("/v1/chat/completions", R"({
      "messages": [{"role": "user", "content": "Tell me a story."}],
      "stream": true, "max_tokens": 12, "temperature": 0, "ignore_eos": true})");
  ASSERT_EQ(reply.status, 200) << reply.body;
  EXPECT_EQ(reply.content_type, "text/event-stream");
  const std::vector<std::string> events = SseEvents(reply.body);
  ASSERT_GE(events.size(), 3u) << reply.body;
  EXPECT_EQ(events.back(), "[DONE]");
  int num_deltas = 0;
  std::string text;
  std::string finish_reason;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const Json chunk = Json::parse(events[i]);
    EXPECT_EQ(chunk["object"], "chat.completion.chunk");
    const Json& choice = chunk["choices"][0];
    for (const char* key : {"content", "reasoning_content"}) {
      if (choice["delta"].contains(key) && choice["delta"][key].is_string()) {
        const std::string piece = choice["delta"][key];
        if (!piece.empty()) ++num_deltas;
        text += piece;
      }
    }
    if (choice["finish_reason"].is_string()) finish_reason = choice["finish_reason"];
  }
  EXPECT_GE(num_deltas, 2) << reply.body;
  EXPECT_FALSE(text.empty());
  EXPECT_THAT(finish_reason, ::testing::AnyOf("length", "stop"));
}

}  // namespace
}  // namespace gemmaserve::testing
