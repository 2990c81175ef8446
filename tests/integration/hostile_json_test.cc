// Hostile JSON against a real `gemmaserve serve`: JSON nested 200,000 levels deep, in an HTTP body,
// in the JSON text that requests carry inside strings (tool-call arguments, a tool message's
// content) and in gRPC's tools_json, over both APIs. Each is refused with 400 / INVALID_ARGUMENT
// naming the field, and the coordinator (the same process, and its workers) keeps serving.
// Before the limits, the chat renderer recursed once per level and overflowed the stack.
#include <signal.h>
#include <sys/types.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/api_clients.h"
#include "tests/integration/serve_process.h"

namespace gemmaserve::testing {
namespace {

using Json = nlohmann::json;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr int kLevels = 200000;

// "[[[...]]]" nested `levels` deep: 400 KB of text.
std::string NestedArrays(int levels) {
  const size_t n = static_cast<size_t>(levels);
  return std::string(n, '[') + std::string(n, ']');
}

// A JSON object whose one member is nested `levels` deep: passes "must be an object" checks.
std::string DeepObject(int levels) { return "{\"a\": " + NestedArrays(levels) + "}"; }

// One tool declaration whose parameters are nested `levels` deep, as JSON text.
std::string DeepToolDeclaration(int levels) {
  return R"({"type": "function", "function": {"name": "f", "parameters": )" +
         NestedArrays(levels) + "}}";
}

// Whether `pid` is running (not exited, and not a zombie waiting to be reaped).
bool IsRunning(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  const size_t close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] != 'Z';
}

class HostileJsonTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new ServeProcess();
    ASSERT_TRUE(server_->Start({})) << server_->output();
    pid_ = server_->pid();
    workers_ = server_->Children();
    std::sort(workers_.begin(), workers_.end());
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

  // The same coordinator process with the same workers, and it still generates.
  void ExpectStillServing() {
    EXPECT_EQ(server_->pid(), pid_);
    ASSERT_TRUE(IsRunning(pid_)) << server_->output();
    std::vector<pid_t> workers = server_->Children();
    std::sort(workers.begin(), workers.end());
    EXPECT_EQ(workers, workers_);
    const HttpReply reply = http_->Post(
        "/v1/chat/completions",
        R"({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})");
    EXPECT_EQ(reply.status, 200) << reply.body;
    const GrpcResult result = GenerateAll(*stub_, GreedyTokenRequest({2, 40}, 2));
    EXPECT_TRUE(result.status.ok()) << result.status.error_message();
  }

  // A 400 in OpenAI's error shape whose param starts with `param`.
  static void ExpectBadRequest(const HttpReply& reply, const std::string& param) {
    EXPECT_EQ(reply.status, 400) << reply.body.substr(0, 1000);
    const Json body = Json::parse(reply.body, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(body.is_object()) << reply.body.substr(0, 1000);
    EXPECT_EQ(body["error"]["type"], "invalid_request_error");
    ASSERT_TRUE(body["error"]["param"].is_string()) << reply.body.substr(0, 1000);
    EXPECT_THAT(body["error"]["param"].get<std::string>(), StartsWith(param));
    EXPECT_THAT(body["error"]["message"].get<std::string>(), HasSubstr("nested deeper than"));
  }

  static void ExpectInvalidArgument(const grpc::Status& status, const std::string& field) {
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
    EXPECT_THAT(status.error_message(), StartsWith(field));
    EXPECT_THAT(status.error_message(), HasSubstr("nested deeper than"));
  }

  static ServeProcess* server_;
  static pid_t pid_;
  static std::vector<pid_t> workers_;
  std::unique_ptr<HttpClient> http_;
  std::unique_ptr<v1::Inference::Stub> stub_;
};

ServeProcess* HostileJsonTest::server_ = nullptr;
pid_t HostileJsonTest::pid_ = -1;
std::vector<pid_t> HostileJsonTest::workers_;

TEST_F(HostileJsonTest, HttpToolsNestedTooDeepAre400) {
  const std::string body = R"({"messages": [{"role": "user", "content": "Hi"}], "tools": [)" +
                           DeepToolDeclaration(kLevels) + "]}";
  ExpectBadRequest(http_->Post("/v1/chat/completions", body), "tools[0].function.parameters");
  ExpectStillServing();
}

TEST_F(HostileJsonTest, HttpToolCallArgumentsNestedTooDeepAre400) {
  const Json body = {
      {"messages",
       {{{"role", "user"}, {"content", "Hi"}},
        {{"role", "assistant"},
         {"tool_calls",
          {{{"id", "c1"},
            {"type", "function"},
            {"function", {{"name", "f"}, {"arguments", DeepObject(kLevels)}}}}}}}}}};
  ExpectBadRequest(http_->Post("/v1/chat/completions", body.dump()),
                   "messages[1].tool_calls[0].function.arguments");
  ExpectStillServing();
}

TEST_F(HostileJsonTest, HttpToolMessageContentNestedTooDeepIs400) {
  const Json body = {{"messages",
                      {{{"role", "user"}, {"content", "Hi"}},
                       {{"role", "tool"}, {"name", "f"}, {"content", DeepObject(kLevels)}}}}};
  ExpectBadRequest(http_->Post("/v1/chat/completions", body.dump()), "messages[1].content");
  ExpectStillServing();
}

TEST_F(HostileJsonTest, GrpcTokenizeWithToolsJsonNestedTooDeepIsInvalidArgument) {
  v1::TokenizeRequest request;
  v1::ChatMessage* message = request.mutable_chat()->add_messages();
  message->set_role("user");
  message->set_content("Hi");
  request.set_tools_json("[" + DeepToolDeclaration(kLevels) + "]");
  grpc::ClientContext context;
  v1::TokenizeResponse response;
  ExpectInvalidArgument(stub_->Tokenize(&context, request, &response), "tools_json");
  ExpectStillServing();
}

TEST_F(HostileJsonTest, GrpcTokenizeWithToolCallArgumentsNestedTooDeepIsInvalidArgument) {
  v1::TokenizeRequest request;
  v1::ChatMessage* user = request.mutable_chat()->add_messages();
  user->set_role("user");
  user->set_content("Hi");
  v1::ChatMessage* assistant = request.mutable_chat()->add_messages();
  assistant->set_role("assistant");
  v1::ToolCall* call = assistant->add_tool_calls();
  call->set_name("f");
  call->set_arguments_json(DeepObject(kLevels));
  grpc::ClientContext context;
  v1::TokenizeResponse response;
  ExpectInvalidArgument(stub_->Tokenize(&context, request, &response),
                        "chat.messages[1].tool_calls[0].function.arguments");
  ExpectStillServing();
}

TEST_F(HostileJsonTest, GrpcGenerateWithToolsJsonNestedTooDeepIsInvalidArgument) {
  v1::GenerateRequest request;
  v1::ChatMessage* message = request.mutable_chat()->add_messages();
  message->set_role("user");
  message->set_content("Hi");
  request.set_max_tokens(2);
  request.set_tools_json("[" + DeepToolDeclaration(kLevels) + "]");
  const GrpcResult result = GenerateAll(*stub_, request);
  ExpectInvalidArgument(result.status, "tools_json");
  EXPECT_EQ(result.num_deltas, 0);
  ExpectStillServing();
}

}  // namespace
}  // namespace gemmaserve::testing
