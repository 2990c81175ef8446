// Soak: a real `gemmaserve serve` on the tiny MoE (EP 2) under 64 concurrent streams for
// GEMMASERVE_SOAK_SECONDS (600 by default; ctest runs 60, scripts/soak.sh the full run). Each
// client loops over a random mix: HTTP SSE completions and chats read to [DONE], non-streaming
// completions, HTTP streams dropped mid-way (disconnects), gRPC streams read to the end, ended by
// Abort, or cancelled. Passes when no request fails other than as asked (an abort, a cancel, a
// disconnect), no request ends in error, the coordinator's resident memory stays within ±10 % of
// its level after warm-up, and at the end nothing runs and every KV block is free.
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "boost/asio/ip/tcp.hpp"
#include "gtest/gtest.h"
#include "tests/integration/api_clients.h"
#include "tests/integration/serve_process.h"

namespace gemmaserve::testing {
namespace {

using Json = nlohmann::json;
namespace net = boost::asio;

constexpr int kStreams = 64;

// Resident memory of `pid`, MiB (0 once it is gone).
double RssMib(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  while (status >> key) {
    if (key == "VmRSS:") {
      double kib = 0;
      status >> kib;
      return kib / 1024;
    }
    std::string rest;
    std::getline(status, rest);
  }
  return 0;
}

// What a client saw; anything in `errors` fails the soak.
struct Tally {
  absl::Mutex mu;
  std::map<std::string, int64_t> outcomes ABSL_GUARDED_BY(mu);
  std::vector<std::string> errors ABSL_GUARDED_BY(mu);

  void Count(const std::string& outcome) {
    absl::MutexLock lock(&mu);
    ++outcomes[outcome];
  }
  void Error(const std::string& what) {
    absl::MutexLock lock(&mu);
    if (errors.size() < 20) errors.push_back(what);
    ++outcomes["error"];
  }
};

class SoakClient {
 public:
  SoakClient(const ServeProcess& server, v1::Inference::Stub* stub, Tally* tally, uint32_t seed)
      : server_(server), stub_(stub), tally_(tally), random_(seed) {}

  void RunUntil(absl::Time deadline) {
    while (absl::Now() < deadline) {
      switch (Uniform(0, 6)) {
        case 0:
          HttpStream("/v1/completions", /*disconnect_after=*/-1);
          break;
        case 1:
          HttpStream("/v1/chat/completions", -1);
          break;
        case 2:
          HttpStream("/v1/completions", Uniform(1, 6));
          break;
        case 3:
          GrpcStream(/*abort_after=*/-1, /*cancel=*/false);
          break;
        case 4:
          GrpcStream(Uniform(1, 6), /*cancel=*/false);
          break;
        case 5:
          GrpcStream(Uniform(1, 6), /*cancel=*/true);
          break;
        default:
          HttpWhole();
          break;
      }
    }
  }

 private:
  int Uniform(int low, int high) { return std::uniform_int_distribution<int>(low, high)(random_); }

  std::vector<int32_t> Prompt() {
    std::vector<int32_t> ids = {2};
    for (int i = Uniform(8, 64); i > 0; --i) ids.push_back(Uniform(10, 499));
    return ids;
  }

  Json Body(const std::string& path, bool stream) {
    Json body = {{"max_tokens", Uniform(4, 48)},
                 {"temperature", Uniform(0, 1)},
                 {"ignore_eos", true},
                 {"stream", stream}};
    if (path == "/v1/chat/completions") {
      body["messages"] = {
          {{"role", "user"}, {"content", absl::StrCat("Count to ", Uniform(1, 99))}}};
    } else {
      body["prompt"] = Prompt();
    }
    return body;
  }

  // An SSE request read to [DONE], or dropped after `disconnect_after` events.
  void HttpStream(const std::string& path, int disconnect_after) {
    net::io_context io;
    net::ip::tcp::socket socket(io);
    boost::system::error_code error;
    socket.connect({net::ip::make_address("127.0.0.1"), static_cast<uint16_t>(server_.http_port())},
                   error);
    if (error) return tally_->Error("HTTP connect: " + error.message());
    const std::string text = Body(path, true).dump();
    const std::string request =
        absl::StrCat("POST ", path, " HTTP/1.1\r\nHost: 127.0.0.1\r\n",
                     "Content-Type: application/json\r\nContent-Length: ", text.size(),
                     "\r\nConnection: close\r\n\r\n", text);
    net::write(socket, net::buffer(request), error);
    if (error) return tally_->Error("HTTP write: " + error.message());
    std::string received;
    char chunk[4096];
    while (!error && received.find("data: [DONE]") == std::string::npos) {
      received.append(chunk, socket.read_some(net::buffer(chunk), error));
      if (disconnect_after > 0) {
        size_t events = 0;
        for (size_t at = received.find("data: "); at != std::string::npos;
             at = received.find("data: ", at + 1)) {
          ++events;
        }
        if (static_cast<int>(events) >= disconnect_after) return tally_->Count("http disconnected");
      }
    }
    if (received.rfind("HTTP/1.1 200", 0) != 0) {
      return tally_->Error("HTTP " + received.substr(0, received.find('\r')));
    }
    if (received.find("data: [DONE]") == std::string::npos) {
      return tally_->Error("SSE ended without [DONE]: " + error.message());
    }
    if (received.find(R"("error")") != std::string::npos) return tally_->Error("SSE error event");
    tally_->Count("http stream completed");
  }

  void HttpWhole() {
    const HttpReply reply = HttpClient(server_.http_port())
                                .Post("/v1/completions", Body("/v1/completions", false).dump());
    if (reply.status != 200)
      return tally_->Error(absl::StrCat("HTTP ", reply.status, ": ", reply.body));
    const Json body = Json::parse(reply.body, nullptr, false);
    if (!body.is_object() || !body.contains("choices")) {
      return tally_->Error("HTTP body without choices: " + reply.body);
    }
    tally_->Count("http completed");
  }

  // A gRPC stream read to its end, or ended by Abort (or a cancel) after `stop_after` deltas.
  void GrpcStream(int stop_after, bool cancel) {
    v1::GenerateRequest request = GreedyTokenRequest(Prompt(), Uniform(4, 48));
    if (Uniform(0, 1) == 1) request.set_temperature(1);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(300));
    auto reader = stub_->Generate(&context, request);
    v1::GenerateResponse response;
    int deltas = 0;
    bool stopped = false;
    v1::Final final;
    bool has_final = false;
    while (reader->Read(&response)) {
      if (response.has_final()) {
        final = response.final();
        has_final = true;
        continue;
      }
      if (++deltas == stop_after && !stopped) {
        stopped = true;
        if (cancel) {
          context.TryCancel();
        } else {
          grpc::ClientContext abort_context;
          v1::AbortRequest abort;
          abort.set_request_id(response.request_id());
          v1::AbortResponse aborted;
          const grpc::Status status = stub_->Abort(&abort_context, abort, &aborted);
          if (!status.ok()) tally_->Error("Abort: " + status.error_message());
        }
      }
    }
    const grpc::Status status = reader->Finish();
    if (cancel && stopped) {
      // Cancelled, or finished just before the cancel took.
      if (status.ok() || status.error_code() == grpc::StatusCode::CANCELLED) {
        return tally_->Count("grpc cancelled");
      }
      return tally_->Error("cancelled call: " + status.error_message());
    }
    if (!status.ok()) return tally_->Error("Generate: " + status.error_message());
    if (!has_final) return tally_->Error("Generate ended without a final message");
    if (final.finish_reason() == v1::FINISH_REASON_ABORT && stopped) {
      return tally_->Count("grpc aborted");
    }
    if (final.finish_reason() != v1::FINISH_REASON_LENGTH) {
      return tally_->Error(absl::StrCat(
          "finish reason ", v1::FinishReason_Name(final.finish_reason()), " ", final.error()));
    }
    tally_->Count(stopped ? "grpc aborted" : "grpc completed");
  }

  const ServeProcess& server_;
  v1::Inference::Stub* stub_;
  Tally* tally_;
  std::mt19937 random_;
};

double SoakSeconds() {
  const char* text = std::getenv("GEMMASERVE_SOAK_SECONDS");
  double seconds = 600;
  if (text != nullptr && !absl::SimpleAtod(text, &seconds)) seconds = 600;
  return seconds;
}

TEST(SoakTest, SixtyFourStreamsWithAbortsAndDisconnectsLeakNothing) {
  const double duration_s = SoakSeconds();
  ServeProcess server;
  ASSERT_TRUE(server.Start({"--kv-cache-mb", "32", "--max-num-seqs", "128"})) << server.output();
  auto stub = NewInferenceStub(server.grpc_port());
  Tally tally;
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + absl::Seconds(duration_s);
  std::vector<std::thread> clients;
  for (int i = 0; i < kStreams; ++i) {
    clients.emplace_back([&, i] {
      SoakClient(server, stub.get(), &tally, 1234u + static_cast<uint32_t>(i)).RunUntil(deadline);
    });
  }
  // Warm-up: the first fifth of the run (allocator arenas, caches, connection pools settle).
  const absl::Time warm = start + absl::Seconds(duration_s / 5);
  std::vector<double> rss_after_warmup;
  while (absl::Now() < deadline) {
    absl::SleepFor(absl::Seconds(1));
    if (absl::Now() >= warm) rss_after_warmup.push_back(RssMib(server.pid()));
  }
  for (std::thread& client : clients) client.join();
  const double elapsed_s = absl::ToDoubleSeconds(absl::Now() - start);

  ASSERT_TRUE(WaitIdle(*stub, 60)) << "requests still running or KV blocks held after the soak";
  const v1::Load load = GetLoad(*stub);
  const std::string metrics = HttpClient(server.http_port()).Get("/metrics").body;
  const double tokens = SumSamples(metrics, "gemmaserve_generation_tokens_total");
  double failed = 0;
  for (const Sample& sample : Samples(metrics, "gemmaserve_requests_total")) {
    if (sample.labels.at("finish_reason") == "error") failed += sample.value;
  }

  ASSERT_FALSE(rss_after_warmup.empty());
  const double base = rss_after_warmup.front();
  const auto [low, high] = std::minmax_element(rss_after_warmup.begin(), rss_after_warmup.end());
  const double spread = std::max(high[0] - base, base - low[0]) / base;
  absl::MutexLock lock(&tally.mu);
  int64_t requests = 0;
  std::string outcomes;
  for (const auto& [outcome, count] : tally.outcomes) {
    requests += count;
    absl::StrAppend(&outcomes, outcomes.empty() ? "" : ", ", count, " ", outcome);
  }
  std::printf(
      "soak: %.0f s, %d streams: %lld requests (%s), %.0f tokens generated; coordinator RSS after "
      "warm-up %.1f MiB, min %.1f, max %.1f (%.1f %% from it); end: %lld running, %lld sliding "
      "and %lld full KV pages of %lld in use, %g requests ended in error\n",
      elapsed_s, kStreams, static_cast<long long>(requests), outcomes.c_str(), tokens, base, *low,
      *high, 100 * spread, static_cast<long long>(load.running_requests()),
      static_cast<long long>(load.used_sliding_pages()),
      static_cast<long long>(load.used_full_pages()), static_cast<long long>(load.total_pages()),
      failed);
  std::fflush(stdout);
  for (const std::string& error : tally.errors) ADD_FAILURE() << error;
  EXPECT_EQ(tally.outcomes["error"], 0);
  EXPECT_EQ(failed, 0) << "requests ended with finish reason error";
  EXPECT_LE(spread, 0.10) << "coordinator RSS moved more than 10 % after warm-up";
  EXPECT_GT(requests, kStreams) << "the soak did not get going";
  EXPECT_EQ(load.used_sliding_blocks(), 0);
  EXPECT_EQ(load.used_full_blocks(), 0);
}

}  // namespace
}  // namespace gemmaserve::testing
