// gemmaserve bench: a load generator for a running server.
//
//   gemmaserve bench --server HOST:PORT --api grpc|http --num-requests N --concurrency C
//                    --input-len L --output-len O [--seed S] [--json]
//
// C threads each keep one connection and send requests back to back until N have been sent.
// Every request has a prompt of L random token ids (seeded, ids in [kMinId, kMaxId), valid for
// every Gemma 4 vocabulary including the tiny test one) and generates exactly O tokens (EOS
// ignored). While it runs, a progress line on stderr shows requests done; at the end it prints
// request/s, output tokens/s, and TTFT and inter-token latency percentiles (p50/p90/p99, ms),
// as a table or, with --json, one JSON object.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "tools/bench_client.h"
#include "tools/commands.h"
#include "tools/flags.h"

namespace gemmaserve::tools {
namespace {

constexpr int32_t kMinId = 10;
constexpr int32_t kMaxId = 256;

struct BenchConfig {
  std::string server = "localhost:50051";
  std::string api = "grpc";
  int64_t num_requests = 64;
  int64_t concurrency = 8;
  int64_t input_len = 128;
  int64_t output_len = 128;
  int64_t seed = 0;
  bool json = false;
};

// Everything the threads record, under one mutex.
struct BenchResults {
  std::mutex mu;
  std::vector<double> ttft_ms;
  std::vector<double> inter_token_ms;
  int64_t output_tokens = 0;
  int64_t failed = 0;
  std::string first_error;
};

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t index = static_cast<size_t>(p / 100.0 * static_cast<double>(values.size() - 1) + 0.5);
  return values[std::min(index, values.size() - 1)];
}

void RunWorker(const BenchConfig& config, std::atomic<int64_t>* next, std::atomic<int64_t>* done,
               BenchResults* results) {
  std::unique_ptr<BenchClient> client = config.api == "http"
                                            ? NewHttpBenchClient(config.server)
                                            : NewGrpcBenchClient(config.server);
  while (true) {
    const int64_t index = next->fetch_add(1);
    if (index >= config.num_requests) return;
    std::mt19937 random(static_cast<uint32_t>(config.seed * 1000003 + index));
    std::uniform_int_distribution<int32_t> ids(kMinId, kMaxId - 1);
    std::vector<int32_t> prompt(static_cast<size_t>(config.input_len));
    for (int32_t& id : prompt) id = ids(random);
    absl::StatusOr<BenchTiming> timing = client->Run(prompt, config.output_len);
    {
      std::lock_guard<std::mutex> lock(results->mu);
      if (timing.ok()) {
        results->ttft_ms.push_back(timing->ttft_ms);
        results->inter_token_ms.insert(results->inter_token_ms.end(),
                                       timing->inter_token_ms.begin(),
                                       timing->inter_token_ms.end());
        results->output_tokens += timing->output_tokens;
      } else {
        if (results->failed++ == 0) results->first_error = std::string(timing.status().message());
      }
    }
    done->fetch_add(1);
  }
}

void Report(const BenchConfig& config, BenchResults& results, double elapsed_s) {
  const int64_t succeeded = config.num_requests - results.failed;
  const nlohmann::json report = {
      {"api", config.api},
      {"num_requests", config.num_requests},
      {"concurrency", config.concurrency},
      {"input_len", config.input_len},
      {"output_len", config.output_len},
      {"failed", results.failed},
      {"elapsed_s", elapsed_s},
      {"requests_per_s", succeeded / elapsed_s},
      {"output_tokens_per_s", static_cast<double>(results.output_tokens) / elapsed_s},
      {"ttft_ms", {{"p50", Percentile(results.ttft_ms, 50)},
                   {"p90", Percentile(results.ttft_ms, 90)},
                   {"p99", Percentile(results.ttft_ms, 99)}}},
      {"inter_token_ms", {{"p50", Percentile(results.inter_token_ms, 50)},
                          {"p90", Percentile(results.inter_token_ms, 90)},
                          {"p99", Percentile(results.inter_token_ms, 99)}}}};
  if (config.json) {
    std::cout << report.dump(2) << "\n";
    return;
  }
  std::cout << absl::StrFormat(
      "requests:          %d ok, %d failed in %.2f s\n"
      "request/s:         %.2f\n"
      "output tokens/s:   %.1f\n"
      "TTFT ms:           p50 %.1f  p90 %.1f  p99 %.1f\n"
      "inter-token ms:    p50 %.2f  p90 %.2f  p99 %.2f\n",
      succeeded, results.failed, elapsed_s, report["requests_per_s"].get<double>(),
      report["output_tokens_per_s"].get<double>(), report["ttft_ms"]["p50"].get<double>(),
      report["ttft_ms"]["p90"].get<double>(), report["ttft_ms"]["p99"].get<double>(),
      report["inter_token_ms"]["p50"].get<double>(), report["inter_token_ms"]["p90"].get<double>(),
      report["inter_token_ms"]["p99"].get<double>());
}

absl::Status Bench(const BenchConfig& config) {
  if (config.api != "grpc" && config.api != "http") {
    return absl::InvalidArgumentError("--api: expected grpc or http");
  }
  if (config.num_requests < 1 || config.concurrency < 1 || config.input_len < 1 ||
      config.output_len < 1) {
    return absl::InvalidArgumentError(
        "--num-requests, --concurrency, --input-len and --output-len must be >= 1");
  }
  BenchResults results;
  std::atomic<int64_t> next{0}, done{0};
  const absl::Time start = absl::Now();
  std::vector<std::thread> threads;
  for (int64_t i = 0; i < std::min(config.concurrency, config.num_requests); ++i) {
    threads.emplace_back(RunWorker, std::cref(config), &next, &done, &results);
  }
  absl::Notification finished;
  std::thread progress([&] {
    while (!finished.WaitForNotificationWithTimeout(absl::Milliseconds(500))) {
      std::fprintf(stderr, "\r[bench] %lld/%lld requests, %.1f s",
                   static_cast<long long>(done.load()), static_cast<long long>(config.num_requests),
                   absl::ToDoubleSeconds(absl::Now() - start));
    }
    std::fprintf(stderr, "\r[bench] %lld/%lld requests, %.1f s\n",
                 static_cast<long long>(done.load()), static_cast<long long>(config.num_requests),
                 absl::ToDoubleSeconds(absl::Now() - start));
  });
  for (std::thread& thread : threads) thread.join();
  const double elapsed_s = absl::ToDoubleSeconds(absl::Now() - start);
  finished.Notify();
  progress.join();
  Report(config, results, elapsed_s);
  if (results.failed == config.num_requests) {
    return absl::UnavailableError(absl::StrCat("every request failed; the first: ",
                                               results.first_error));
  }
  if (results.failed > 0) std::cerr << "first error: " << results.first_error << "\n";
  return absl::OkStatus();
}

}  // namespace

int BenchMain(int argc, char** argv) {
  BenchConfig config;
  FlagSet flags("bench", "Load a running server and report throughput and latency.");
  flags.String("server", &config.server, "HOST:PORT of the gRPC (default :50051) or HTTP API");
  flags.String("api", &config.api, "grpc or http");
  flags.Int("num-requests", &config.num_requests, "requests to send in all");
  flags.Int("concurrency", &config.concurrency, "requests in flight at once");
  flags.Int("input-len", &config.input_len, "prompt tokens per request");
  flags.Int("output-len", &config.output_len, "generated tokens per request (EOS ignored)");
  flags.Int("seed", &config.seed, "seed of the random prompts");
  flags.Bool("json", &config.json, "print one JSON object");
  const absl::Status parsed = flags.Parse(argc, argv);
  return RunCommand(flags, parsed, [&] { return Bench(config); });
}

}  // namespace gemmaserve::tools
