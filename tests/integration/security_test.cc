// Authentication against a real `gemmaserve serve`: API keys on the public ports (401 /
// UNAUTHENTICATED without one, the probes open), Abort reaching only the caller's own request,
// per-key prefix caching hiding one key's prompts from another's cached_tokens, the cluster
// secret on every internal RPC, and TLS: HTTPS and gRPC over TLS on the public ports, mutual TLS
// on the internal port (the local workers attach through it).
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "boost/asio/ssl.hpp"
#include "boost/beast/ssl.hpp"
#include "common/check.h"
#include "gemmaserve/internal/v1/worker.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "tests/integration/api_clients.h"
#include "tests/integration/serve_process.h"
#include "tests/model/golden_reference.h"
#include "tests/test_util/test_certs.h"

namespace gemmaserve::testing {
namespace {

using Json = nlohmann::json;
namespace pb = internal::v1;

constexpr char kKeyA[] = "sk-integration-alpha";
constexpr char kKeyB[] = "sk-integration-beta";  // from GEMMASERVE_API_KEY

std::vector<int32_t> GoldenPrompt() { return LoadGoldenReference("gemma4-tiny-moe").inputs[0]; }

class ApiKeyTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new ServeProcess();
    ChildOptions options;
    options.set_env = {{"GEMMASERVE_API_KEY", kKeyB}};
    ASSERT_TRUE(server_->Start({"--api-key", kKeyA, "--prefix-cache-per-key"}, 120, options))
        << server_->output();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override { ASSERT_GT(server_->http_port(), 0) << "the server did not start"; }

  static ServeProcess* server_;
};
ServeProcess* ApiKeyTest::server_ = nullptr;

TEST_F(ApiKeyTest, RequestsWithoutAKeyGet401OrUnauthenticatedWhileTheProbesStayOpen) {
  const std::string body = R"({"prompt": [2, 40], "max_tokens": 2})";
  for (const HttpClient& client :
       {HttpClient(server_->http_port()), HttpClient(server_->http_port(), "sk-wrong")}) {
    const HttpReply reply = client.Post("/v1/completions", body);
    EXPECT_EQ(reply.status, 401) << reply.body;
    const Json error = Json::parse(reply.body, nullptr, false);
    EXPECT_EQ(error["error"]["code"], 401) << reply.body;
    EXPECT_EQ(error["error"]["type"], "invalid_request_error") << reply.body;
  }
  EXPECT_EQ(HttpClient(server_->http_port(), kKeyA).Post("/v1/completions", body).status, 200);
  EXPECT_EQ(HttpClient(server_->http_port(), kKeyB).Post("/v1/completions", body).status, 200);
  const HttpClient anonymous(server_->http_port());
  for (const char* probe : {"/health", "/ready", "/metrics"}) {
    EXPECT_EQ(anonymous.Get(probe).status, 200) << probe;
  }

  auto stub = NewInferenceStub(server_->grpc_port());
  const GrpcResult refused = GenerateAll(*stub, GreedyTokenRequest({2, 40}, 2));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << refused.status.error_message();
  const GrpcResult wrong = GenerateAll(*stub, GreedyTokenRequest({2, 40}, 2), "sk-wrong");
  EXPECT_EQ(wrong.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  const GrpcResult served = GenerateAll(*stub, GreedyTokenRequest({2, 40}, 2), kKeyA);
  EXPECT_TRUE(served.status.ok()) << served.status.error_message();
  EXPECT_EQ(served.token_ids.size(), 2u);
}

TEST_F(ApiKeyTest, AbortOfAnotherClientsIdLeavesItsStreamRunning) {
  auto stub = NewInferenceStub(server_->grpc_port());
  constexpr int kMaxTokens = 60;
  v1::GenerateRequest request = GreedyTokenRequest(GoldenPrompt(), kMaxTokens);
  request.set_request_id("shared-id");
  grpc::ClientContext context;
  context.AddMetadata("authorization", std::string("Bearer ") + kKeyA);
  auto reader = stub->Generate(&context, request);
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  int num_tokens = response.delta().token_ids_size();

  // Key B aborts "shared-id" (and a guess at a generated id): A's stream runs on.
  for (const char* id : {"shared-id", "grpc-000000000000000000000001"}) {
    grpc::ClientContext abort_context;
    abort_context.AddMetadata("authorization", std::string("Bearer ") + kKeyB);
    v1::AbortRequest abort;
    abort.set_request_id(id);
    v1::AbortResponse aborted;
    ASSERT_TRUE(stub->Abort(&abort_context, abort, &aborted).ok());
  }
  v1::Final final;
  while (reader->Read(&response)) {
    num_tokens += response.delta().token_ids_size();
    if (response.has_final()) final = response.final();
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(final.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(num_tokens, kMaxTokens);

  // Key A's own Abort does end it.
  grpc::ClientContext again;
  again.AddMetadata("authorization", std::string("Bearer ") + kKeyA);
  auto second = stub->Generate(&again, request);
  ASSERT_TRUE(second->Read(&response));
  grpc::ClientContext abort_context;
  abort_context.AddMetadata("authorization", std::string("Bearer ") + kKeyA);
  v1::AbortRequest abort;
  abort.set_request_id("shared-id");
  v1::AbortResponse aborted;
  ASSERT_TRUE(stub->Abort(&abort_context, abort, &aborted).ok());
  while (second->Read(&response)) {
    if (response.has_final()) final = response.final();
  }
  EXPECT_TRUE(second->Finish().ok());
  EXPECT_EQ(final.finish_reason(), v1::FINISH_REASON_ABORT);
}

TEST_F(ApiKeyTest, PerKeyPrefixCacheKeepsOneKeysPromptsFromAnothersCachedTokens) {
  auto stub = NewInferenceStub(server_->grpc_port());
  // Three full blocks of 16 tokens, unlike any other test's prompt.
  std::vector<int32_t> prompt;
  for (int i = 0; i < 50; ++i) prompt.push_back(100 + i);
  const v1::GenerateRequest request = GreedyTokenRequest(prompt, 2);
  const GrpcResult first = GenerateAll(*stub, request, kKeyA);
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  const GrpcResult same_key = GenerateAll(*stub, request, kKeyA);
  ASSERT_TRUE(same_key.status.ok());
  EXPECT_GE(same_key.final.usage().cached_tokens(), 32) << "the key's own prefix was not reused";
  const GrpcResult other_key = GenerateAll(*stub, request, kKeyB);
  ASSERT_TRUE(other_key.status.ok());
  EXPECT_EQ(other_key.final.usage().cached_tokens(), 0)
      << "key B learned that key A had sent this prompt";
}

// A file only its owner can read, holding `text`; removed at destruction.
class SecretFile {
 public:
  explicit SecretFile(const std::string& text) {
    char path[] = "/tmp/gemmaserve-secret-XXXXXX";
    const int fd = mkstemp(path);
    CHECK_GE(fd, 0);
    close(fd);
    path_ = path;
    std::ofstream(path_) << text << "\n";
  }
  ~SecretFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

constexpr char kClusterSecret[] = "integration-cluster-secret-0123456789";

// Calls every internal RPC with `secret` ("" = none) and returns their status codes.
std::vector<grpc::StatusCode> CallEveryInternalRpc(pb::Coordinator::Stub& stub,
                                                   const std::string& secret) {
  auto context = [&secret](grpc::ClientContext& c) {
    c.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    if (!secret.empty()) c.AddMetadata("authorization", "Bearer " + secret);
  };
  std::vector<grpc::StatusCode> codes;
  {
    grpc::ClientContext c;
    context(c);
    pb::ClusterConfig config;
    codes.push_back(stub.GetClusterConfig(&c, {}, &config).error_code());
  }
  {
    grpc::ClientContext c;
    context(c);
    pb::RegisterRequest request;
    request.set_rank(0);
    pb::RegisterResponse response;
    codes.push_back(stub.Register(&c, request, &response).error_code());
  }
  {
    grpc::ClientContext c;
    context(c);
    auto stream = stub.Attach(&c);
    pb::StepResult hello;
    stream->Write(hello);
    stream->WritesDone();
    codes.push_back(stream->Finish().error_code());
  }
  {
    grpc::ClientContext c;
    context(c);
    pb::StoreSetRequest request;
    request.set_key("intruder");
    request.set_value("x");
    pb::StoreSetResponse response;
    codes.push_back(stub.StoreSet(&c, request, &response).error_code());
  }
  {
    grpc::ClientContext c;
    context(c);
    pb::StoreGetRequest request;
    request.add_keys("missing");
    request.set_timeout_ms(10);
    pb::StoreGetResponse response;
    codes.push_back(stub.StoreGet(&c, request, &response).error_code());
  }
  return codes;
}

TEST(InternalPortTest, EveryInternalRpcWithoutTheClusterSecretIsUnauthenticated) {
  const SecretFile secret(kClusterSecret);
  ServeProcess server;
  ASSERT_TRUE(server.Start({"--cluster-secret-file", secret.path()})) << server.output();
  auto stub = pb::Coordinator::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", server.internal_port()), grpc::InsecureChannelCredentials()));
  const std::vector<grpc::StatusCode> unauthenticated(5, grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(CallEveryInternalRpc(*stub, ""), unauthenticated);
  EXPECT_EQ(CallEveryInternalRpc(*stub, "not-the-secret"), unauthenticated);

  // With the secret the calls reach the service (the rendezvous store answers the one that
  // changes nothing), and the replica still serves.
  grpc::ClientContext context;
  context.AddMetadata("authorization", std::string("Bearer ") + kClusterSecret);
  pb::ClusterConfig config;
  EXPECT_TRUE(stub->GetClusterConfig(&context, {}, &config).ok());
  auto api = NewInferenceStub(server.grpc_port());
  const GrpcResult served = GenerateAll(*api, GreedyTokenRequest({2, 40}, 2));
  EXPECT_TRUE(served.status.ok()) << served.status.error_message() << server.output();

  // A worker given another secret cannot join; it exits saying why.
  const SecretFile wrong("not-the-cluster-secret");
  const ProcessResult worker = RunProcess(
      {GEMMASERVE_BINARY, "worker", "--coordinator",
       absl::StrCat("127.0.0.1:", server.internal_port()), "--rank", "0", "--world-size", "2",
       "--cluster-secret-file", wrong.path(), "--metrics-port", "-1", "--connect-timeout-s", "5"},
      absl::Seconds(60));
  EXPECT_NE(worker.exit_code, 0) << worker.output;
  EXPECT_NE(worker.output.find("cluster secret"), std::string::npos) << worker.output;
}

HttpReply HttpsGet(int port, const std::string& ca_file, const std::string& target) {
  namespace net = boost::asio;
  namespace http = boost::beast::http;
  net::io_context io;
  net::ssl::context tls(net::ssl::context::tls_client);
  tls.load_verify_file(ca_file);
  tls.set_verify_mode(net::ssl::verify_peer);
  boost::beast::ssl_stream<net::ip::tcp::socket> stream(io, tls);
  stream.set_verify_callback(net::ssl::rfc2818_verification("127.0.0.1"));
  boost::beast::error_code error;
  stream.next_layer().connect({net::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port)},
                              error);
  if (!error) stream.handshake(net::ssl::stream_base::client, error);
  if (error) return {};
  http::request<http::empty_body> request(http::verb::get, target, 11);
  request.set(http::field::host, "127.0.0.1");
  http::write(stream, request, error);
  boost::beast::flat_buffer buffer;
  http::response<http::string_body> response;
  if (!error) http::read(stream, buffer, response, error);
  if (error) return {};
  HttpReply reply;
  reply.status = static_cast<int>(response.result_int());
  reply.body = response.body();
  return reply;
}

TEST(TlsTest, PublicPortsSpeakTlsAndTheInternalPortMutualTlsWithTheSecret) {
  absl::StatusOr<std::unique_ptr<TestCertificates>> certs = TestCertificates::Create();
  ASSERT_TRUE(certs.ok()) << certs.status();
  const TestCertificates& c = **certs;
  ServeProcess server;
  // The replica gets ready only if its local workers attach over mutual TLS.
  ASSERT_TRUE(server.Start({"--tls-cert", c.server_cert, "--tls-key", c.server_key,
                            "--internal-tls-cert", c.server_cert, "--internal-tls-key",
                            c.server_key, "--internal-tls-ca", c.ca_cert}))
      << server.output();

  EXPECT_EQ(HttpsGet(server.http_port(), c.ca_cert, "/health").status, 200);
  EXPECT_EQ(HttpClient(server.http_port()).Get("/health").status, 0) << "plain HTTP was served";

  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadWholeFile(c.ca_cert);
  auto secure = v1::Inference::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", server.grpc_port()), grpc::SslCredentials(ssl)));
  const GrpcResult served = GenerateAll(*secure, GreedyTokenRequest({2, 40}, 2));
  EXPECT_TRUE(served.status.ok()) << served.status.error_message();
  auto plain = NewInferenceStub(server.grpc_port());
  grpc::ClientContext plain_context;
  plain_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::ModelInfo info;
  EXPECT_FALSE(plain->GetModelInfo(&plain_context, {}, &info).ok());

  // The internal port: no TLS, or TLS without a client certificate, gets no answer at all;
  // a certificate the CA signed without the cluster secret is still refused.
  const std::string internal = absl::StrCat("127.0.0.1:", server.internal_port());
  auto get_config = [](const std::shared_ptr<grpc::ChannelCredentials>& credentials,
                       const std::string& address) {
    auto stub = pb::Coordinator::NewStub(grpc::CreateChannel(address, credentials));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    pb::ClusterConfig config;
    return stub->GetClusterConfig(&context, {}, &config).error_code();
  };
  EXPECT_NE(get_config(grpc::InsecureChannelCredentials(), internal), grpc::StatusCode::OK);
  EXPECT_NE(get_config(grpc::SslCredentials(ssl), internal), grpc::StatusCode::OK);
  grpc::SslCredentialsOptions with_cert = ssl;
  with_cert.pem_cert_chain = ReadWholeFile(c.client_cert);
  with_cert.pem_private_key = ReadWholeFile(c.client_key);
  EXPECT_EQ(get_config(grpc::SslCredentials(with_cert), internal),
            grpc::StatusCode::UNAUTHENTICATED);
}

}  // namespace
}  // namespace gemmaserve::testing
