// Worker recovery with nothing lost, on a real `gemmaserve serve` (tiny MoE, EP 2). While 16
// greedy streams run, a worker is killed (SIGKILL) or stopped (SIGSTOP, found at its step's
// deadline, then resumed): the replica turns not ready at once, new requests get 503 with
// Retry-After over HTTP and UNAVAILABLE over gRPC, the workers are replaced, /ready is 200 again
// within 60 s, and every stream ends normally with exactly the tokens and text of an undisturbed
// run (nothing repeated, nothing lost). And a stalled worker does not hold shutdown beyond the
// drain timeout plus 15 s.
#include <signal.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "tests/integration/api_clients.h"
#include "tests/integration/serve_process.h"
#include "tests/model/golden_reference.h"

namespace gemmaserve::testing {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kNumStreams = 16;
constexpr int kMaxTokens = 40;
// A stall is found at the step's deadline: 3 s plus 10 ms per token of the step.
const std::vector<std::string> kServeFlags = {"--step-timeout-s", "3",
                                              "--step-timeout-per-token-ms", "10"};

// 16 distinct prompts cut from the golden inputs.
std::vector<std::vector<int32_t>> Prompts() {
  const GoldenReference golden = LoadGoldenReference("gemma4-tiny-moe");
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < kNumStreams; ++i) {
    const std::vector<int32_t>& input = golden.inputs[i % golden.inputs.size()];
    prompts.emplace_back(input.begin(), input.end() - i / 4);
  }
  return prompts;
}

// One greedy Generate stream per prompt, each read to its end on a thread of its own.
class Streams {
 public:
  Streams(v1::Inference::Stub& stub, const std::vector<std::vector<int32_t>>& prompts)
      : results_(prompts.size()), received_(prompts.size(), 0) {
    for (size_t i = 0; i < prompts.size(); ++i) {
      threads_.emplace_back([this, &stub, request = GreedyTokenRequest(prompts[i], kMaxTokens), i] {
        Read(stub, request, i);
      });
    }
  }
  ~Streams() { Join(); }

  // Waits until every stream has received at least `count` tokens; false after `timeout`.
  bool AwaitTokens(size_t count, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, count]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return std::all_of(received_.begin(), received_.end(),
                         [count](size_t n) { return n >= count; });
    };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
  }

  const std::vector<GrpcResult>& Join() {
    for (std::thread& thread : threads_) {
      if (thread.joinable()) thread.join();
    }
    return results_;
  }

 private:
  void Read(v1::Inference::Stub& stub, const v1::GenerateRequest& request, size_t i) {
    GrpcResult& result = results_[i];
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(240));
    auto reader = stub.Generate(&context, request);
    v1::GenerateResponse response;
    while (reader->Read(&response)) {
      if (response.has_delta()) {
        result.text += response.delta().text();
        result.token_ids.insert(result.token_ids.end(), response.delta().token_ids().begin(),
                                response.delta().token_ids().end());
        absl::MutexLock lock(&mu_);
        received_[i] = result.token_ids.size();
      } else if (response.has_final()) {
        result.has_final = true;
        result.final = response.final();
      }
    }
    result.status = reader->Finish();
  }

  std::vector<GrpcResult> results_;  // each written by its thread only
  absl::Mutex mu_;
  std::vector<size_t> received_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_;
};

// Polls /ready until it answers `status`; false after `timeout`.
bool AwaitReadyStatus(const HttpClient& http, int status, Clock::duration timeout) {
  const Clock::time_point give_up = Clock::now() + timeout;
  while (Clock::now() < give_up) {
    if (http.Get("/ready").status == status) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

void ExpectEveryStreamComplete(const std::vector<GrpcResult>& results) {
  for (size_t i = 0; i < results.size(); ++i) {
    EXPECT_TRUE(results[i].status.ok()) << "stream " << i << ": " << results[i].status.error_message();
    EXPECT_TRUE(results[i].has_final) << "stream " << i;
    EXPECT_EQ(results[i].final.finish_reason(), v1::FINISH_REASON_LENGTH) << "stream " << i;
    EXPECT_EQ(results[i].token_ids.size(), static_cast<size_t>(kMaxTokens)) << "stream " << i;
  }
}

// Runs the 16 streams undisturbed, then again while `signal` hits worker rank 1, and checks
// everything the file comment promises.
void ExpectRecoveryFrom(int signal) {
  ServeProcess server;
  ASSERT_TRUE(server.Start(kServeFlags)) << server.output();
  auto stub = NewInferenceStub(server.grpc_port());
  const HttpClient http(server.http_port());
  const std::vector<std::vector<int32_t>> prompts = Prompts();

  const std::vector<GrpcResult> reference = Streams(*stub, prompts).Join();
  ExpectEveryStreamComplete(reference);
  if (::testing::Test::HasFailure()) return;

  Streams streams(*stub, prompts);
  ASSERT_TRUE(streams.AwaitTokens(4, absl::Seconds(60)));
  const pid_t victim = server.WorkerPid(1);
  ASSERT_NE(victim, 0) << "no worker of rank 1";
  const Clock::time_point disturbed = Clock::now();
  ASSERT_EQ(kill(victim, signal), 0);

  // Found at once (a broken stream) or at the step's deadline (a stall).
  ASSERT_TRUE(AwaitReadyStatus(http, 503, std::chrono::seconds(30))) << server.output();
  const HttpReply refused = http.Post("/v1/completions", R"({"prompt": [2, 40], "max_tokens": 2})");
  EXPECT_EQ(refused.status, 503) << refused.body;
  EXPECT_FALSE(refused.retry_after.empty());
  const GrpcResult refused_grpc = GenerateAll(*stub, GreedyTokenRequest({2, 40}, 2));
  EXPECT_EQ(refused_grpc.status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << refused_grpc.status.error_message();
  // A stopped worker of the ended generation resumes: it must not disturb the new one.
  if (signal == SIGSTOP) kill(victim, SIGCONT);

  EXPECT_TRUE(AwaitReadyStatus(http, 200, disturbed + std::chrono::seconds(60) - Clock::now()))
      << server.output();
  const std::vector<GrpcResult>& results = streams.Join();
  ExpectEveryStreamComplete(results);
  for (size_t i = 0; i < results.size(); ++i) {
    EXPECT_EQ(results[i].token_ids, reference[i].token_ids) << "stream " << i;
    EXPECT_EQ(results[i].text, reference[i].text) << "stream " << i;
  }
  EXPECT_EQ(http.Get("/health").status, 200);
  EXPECT_TRUE(WaitIdle(*stub)) << "a KV block is still held";
  EXPECT_FALSE(IsRunning(victim)) << "the lost worker was not replaced";
  EXPECT_NE(server.WorkerPid(0), 0);
  EXPECT_NE(server.WorkerPid(1), 0);
  // The replica serves new requests as before.
  const GrpcResult after = GenerateAll(*stub, GreedyTokenRequest(prompts[0], kMaxTokens));
  EXPECT_EQ(after.token_ids, reference[0].token_ids);
}

TEST(WorkerRecoveryTest, KilledWorkerIsReplacedAndEveryStreamEndsWithTheUndisturbedTokens) {
  ExpectRecoveryFrom(SIGKILL);
}

TEST(WorkerRecoveryTest, StoppedWorkerIsReplacedAndEveryStreamEndsWithTheUndisturbedTokens) {
  ExpectRecoveryFrom(SIGSTOP);
}

TEST(StalledShutdownTest, StoppedWorkerDoesNotHoldShutdownPastTheDrainTimeoutPlus15s) {
  constexpr int kDrainTimeoutS = 5;
  ServeProcess server;
  // A step timeout far longer than the bound: shutdown must not wait for it.
  ASSERT_TRUE(server.Start({"--drain-timeout-s", std::to_string(kDrainTimeoutS),
                            "--step-timeout-s", "600"}))
      << server.output();
  const std::vector<pid_t> workers = server.Children();
  auto stub = NewInferenceStub(server.grpc_port());
  grpc::ClientContext context;
  auto reader = stub->Generate(&context, GreedyTokenRequest(Prompts()[0], 1000));
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  const pid_t victim = server.WorkerPid(1);
  ASSERT_NE(victim, 0);
  ASSERT_EQ(kill(victim, SIGSTOP), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // a step now waits for it

  const Clock::time_point terminated = Clock::now();
  server.Terminate();
  const std::optional<int> exit_code = server.WaitExit(kDrainTimeoutS + 30);
  const double elapsed_s = std::chrono::duration<double>(Clock::now() - terminated).count();
  EXPECT_EQ(exit_code, 0) << server.output();
  EXPECT_LE(elapsed_s, kDrainTimeoutS + 15) << server.output();
  for (pid_t worker : workers) EXPECT_FALSE(IsRunning(worker)) << "worker " << worker;
  context.TryCancel();
}

}  // namespace
}  // namespace gemmaserve::testing
