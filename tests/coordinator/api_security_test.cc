// Client authentication and request ownership of the HTTP and gRPC servers, in process against
// FakeEngine: API keys (401 / UNAUTHENTICATED, probes open), Abort reaching only the caller's
// own requests, random request ids, per-key prefix-cache salts; and ApiKeys' loading rules.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <future>
#include <regex>
#include <set>
#include <string>

#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "tests/coordinator/api_servers.h"

namespace gemmaserve::coordinator::api {
namespace {

using ::testing::EndsWith;
using ::testing::HasSubstr;

constexpr char kKeyA[] = "sk-alpha-0123456789";
constexpr char kKeyB[] = "sk-beta-9876543210";

Headers Bearer(const std::string& key) { return {{"Authorization", "Bearer " + key}}; }

void AddKey(grpc::ClientContext& context, const std::string& key) {
  context.AddMetadata("authorization", "Bearer " + key);
}

// grpc.health.v1.Health/Check on `channel`.
grpc::Status HealthCheck(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::GenericStub generic(channel);
  grpc::ClientContext context;
  grpc::Slice no_bytes(std::string(""));
  grpc::ByteBuffer empty(&no_bytes, 1), reply;
  std::promise<grpc::Status> done;
  generic.UnaryCall(&context, "/grpc.health.v1.Health/Check", {}, &empty, &reply,
                    [&done](grpc::Status status) { done.set_value(status); });
  return done.get_future().get();
}

// A second connection to the same server: gRPC would otherwise share the first one's.
std::unique_ptr<v1::Inference::Stub> StubOnNewConnection(int port) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return v1::Inference::NewStub(grpc::CreateCustomChannel(
      "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials(), args));
}

v1::GenerateRequest TextRequest(const std::string& request_id) {
  v1::GenerateRequest request;
  request.set_request_id(request_id);
  request.set_text("hello");
  return request;
}

grpc::Status Abort(v1::Inference::Stub& stub, const std::string& request_id,
                   const std::string& key = "") {
  grpc::ClientContext context;
  if (!key.empty()) AddKey(context, key);
  v1::AbortRequest abort;
  abort.set_request_id(request_id);
  v1::AbortResponse response;
  return stub.Abort(&context, abort, &response);
}

class ApiKeysTest : public ApiServersTest {
 protected:
  void SetUp() override { Start(/*prefix_cache_per_key=*/false); }
  void Start(bool prefix_cache_per_key) {
    ClientPolicy policy;
    policy.api_keys = ApiKeys::Load({kKeyA}, "", kKeyB).value();
    policy.prefix_cache_per_key = prefix_cache_per_key;
    HttpServerOptions http;
    http.policy = policy;
    GrpcApiServerOptions grpc;
    grpc.policy = policy;
    StartServers(std::move(http), std::move(grpc));
  }
};

TEST_F(ApiKeysTest, HttpNeedsAKeyExceptOnTheProbes) {
  const std::string body = R"({"prompt": [2, 40], "max_tokens": 2})";
  for (const Headers& headers :
       std::vector<Headers>{{},
                            Bearer("sk-wrong"),
                            {{"Authorization", std::string("Basic ") + kKeyA}},
                            Bearer(std::string(kKeyA) + "x")}) {
    const Reply reply = Post("/v1/completions", body, headers);
    ExpectError(reply, 401, "");
    EXPECT_EQ(Json::parse(reply.body)["error"]["type"], "invalid_request_error");
    EXPECT_EQ(reply.www_authenticate, "Bearer");
  }
  ExpectError(Get("/v1/models"), 401, "");
  ExpectError(Get("/no/such/route"), 401, "");  // routes are not revealed either
  EXPECT_TRUE(engine_->submitted().empty());

  EXPECT_EQ(Post("/v1/completions", body, Bearer(kKeyA)).status, 200);
  EXPECT_EQ(
      Post("/v1/completions", body, {{"authorization", std::string("bearer ") + kKeyB}}).status,
      200);
  EXPECT_EQ(Get("/v1/models", Bearer(kKeyB)).status, 200);
  for (const char* probe : {"/health", "/ready", "/metrics"}) {
    EXPECT_EQ(Get(probe).status, 200) << probe;
  }
}

TEST_F(ApiKeysTest, UnauthenticatedBodyGets401AndTheConnectionStaysUsable) {
  const std::string body = R"({"prompt": ")" + std::string(3000, 'a') + R"("})";
  ExpectError(Post("/v1/completions", body), 401, "");
  EXPECT_EQ(Get("/health").status, 200);
}

TEST_F(ApiKeysTest, GrpcNeedsAKeyExceptTheHealthService) {
  auto unauthenticated = [](const grpc::Status& status) {
    return status.error_code() == grpc::StatusCode::UNAUTHENTICATED;
  };
  {
    grpc::ClientContext context;
    auto reader = stub_->Generate(&context, TextRequest(""));
    v1::GenerateResponse response;
    EXPECT_FALSE(reader->Read(&response));
    EXPECT_TRUE(unauthenticated(reader->Finish()));
  }
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer sk-wrong");
    v1::ModelInfo info;
    EXPECT_TRUE(unauthenticated(stub_->GetModelInfo(&context, {}, &info)));
  }
  {
    grpc::ClientContext context;
    v1::Load load;
    EXPECT_TRUE(unauthenticated(stub_->GetLoad(&context, {}, &load)));
  }
  {
    grpc::ClientContext context;
    v1::TokenizeRequest tokenize;
    tokenize.set_text("hi");
    v1::TokenizeResponse tokens;
    EXPECT_TRUE(unauthenticated(stub_->Tokenize(&context, tokenize, &tokens)));
  }
  EXPECT_TRUE(unauthenticated(Abort(*stub_, "any")));
  EXPECT_TRUE(engine_->submitted().empty());
  EXPECT_TRUE(engine_->aborted().empty());

  grpc::ClientContext context;
  AddKey(context, kKeyB);
  v1::Load load;
  EXPECT_TRUE(stub_->GetLoad(&context, {}, &load).ok());
  EXPECT_TRUE(HealthCheck(channel_).ok());
}

TEST_F(ApiKeysTest, AbortReachesOnlyRequestsOfTheSameKey) {
  engine_->set_hold(true);
  grpc::ClientContext context;
  AddKey(context, kKeyA);
  auto reader = stub_->Generate(&context, TextRequest("mine"));
  ASSERT_TRUE(WaitFor([&] { return engine_->num_live() == 1; }));

  // Key B names the id: nothing of A's ends, and B may use the id for a request of its own.
  ASSERT_TRUE(Abort(*stub_, "mine", kKeyB).ok());
  grpc::ClientContext b_context;
  AddKey(b_context, kKeyB);
  auto b_reader = stub_->Generate(&b_context, TextRequest("mine"));
  ASSERT_TRUE(WaitFor([&] { return engine_->num_live() == 2; }));
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(engine_->num_live(), 2u);

  // Key A's own abort ends A's request only.
  ASSERT_TRUE(Abort(*stub_, "mine", kKeyA).ok());
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.request_id(), "mine");
  EXPECT_EQ(response.final().finish_reason(), v1::FINISH_REASON_ABORT);
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(engine_->num_live(), 1u);
  b_context.TryCancel();
  b_reader->Finish();
}

TEST_F(ApiKeysTest, PerKeyPrefixCachingSaltsRequestsWithTheirKey) {
  TearDown();
  Start(/*prefix_cache_per_key=*/true);
  const std::string body = R"({"prompt": [2, 40], "max_tokens": 1})";
  ASSERT_EQ(Post("/v1/completions", body, Bearer(kKeyA)).status, 200);
  ASSERT_EQ(Post("/v1/completions", body, Bearer(kKeyA)).status, 200);
  ASSERT_EQ(Post("/v1/completions", body, Bearer(kKeyB)).status, 200);
  grpc::ClientContext context;
  AddKey(context, kKeyB);
  auto reader = stub_->Generate(&context, TextRequest(""));
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
  }
  ASSERT_TRUE(reader->Finish().ok());
  const std::vector<Request> submitted = engine_->submitted();
  ASSERT_EQ(submitted.size(), 4u);
  EXPECT_THAT(submitted[0].cache_salt, ::testing::StartsWith("key-"));
  EXPECT_EQ(submitted[0].cache_salt, submitted[1].cache_salt);
  EXPECT_NE(submitted[0].cache_salt, submitted[2].cache_salt);
  EXPECT_EQ(submitted[2].cache_salt, submitted[3].cache_salt);  // same key over gRPC
}

TEST_F(ApiServersTest, WithoutKeysAbortReachesOnlyRequestsOfTheSameConnection) {
  engine_->set_hold(true);
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, TextRequest("mine"));
  ASSERT_TRUE(WaitFor([&] { return engine_->num_live() == 1; }));
  auto other = StubOnNewConnection(grpc_->port());
  ASSERT_TRUE(Abort(*other, "mine").ok());
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(engine_->num_live(), 1u) << "another connection's Abort ended the request";
  ASSERT_TRUE(Abort(*stub_, "mine").ok());
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.final().finish_reason(), v1::FINISH_REASON_ABORT);
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_TRUE(engine_->submitted()[0].cache_salt.empty());
}

TEST_F(ApiServersTest, GeneratedRequestIdsCarry96RandomBits) {
  std::set<std::string> ids;
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(Post("/v1/completions", R"({"prompt": [2], "max_tokens": 1})").status, 200);
  }
  for (const Request& request : engine_->submitted()) {
    EXPECT_TRUE(std::regex_match(request.request_id, std::regex("http-[0-9a-f]{24}")))
        << request.request_id;
    ids.insert(request.request_id);
  }
  EXPECT_EQ(ids.size(), 4u);
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, TextRequest(""));
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_TRUE(std::regex_match(response.request_id(), std::regex("grpc-[0-9a-f]{24}")))
      << response.request_id();
  while (reader->Read(&response)) {
  }
  reader->Finish();
}

TEST(ApiKeysLoadTest, KeysComeFromFlagsAFileAndTheEnvironment) {
  char path[] = "/tmp/gemmaserve-keys-XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  std::ofstream(path) << "# team keys\nsk-file-one\n\n  sk-file-two  \n";
  const ApiKeys keys = ApiKeys::Load({"sk-flag"}, path, "sk-env-1, sk-env-2").value();
  EXPECT_EQ(keys.size(), 5u);
  for (const char* key : {"sk-flag", "sk-file-one", "sk-file-two", "sk-env-1", "sk-env-2"}) {
    EXPECT_TRUE(keys.Authenticate(std::string("Bearer ") + key).ok()) << key;
  }
  EXPECT_EQ(keys.Authenticate("Bearer sk-file").status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_NE(*keys.Authenticate("Bearer sk-flag"), *keys.Authenticate("Bearer sk-env-1"));

  std::ofstream(path) << "sk-ok\nhas space\n";
  const absl::Status bad = ApiKeys::Load({}, path, "").status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.message()), HasSubstr("line 2"));
  std::remove(path);

  EXPECT_FALSE(ApiKeys::Load({}, "", "").value().enabled());
  EXPECT_EQ(ApiKeys().Authenticate("").value(), "");  // off: everyone is let in
}

}  // namespace
}  // namespace gemmaserve::coordinator::api
