// One streaming request of `gemmaserve bench`, timed, against the gRPC Inference API or the
// OpenAI-compatible HTTP API. A BenchClient belongs to one load-generating thread and keeps its
// connection (gRPC channel or HTTP keep-alive socket) across requests.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace gemmaserve::tools {

struct BenchTiming {
  double ttft_ms = 0;                  // send → first output
  std::vector<double> inter_token_ms;  // gaps between later outputs (a delta or an SSE chunk)
  double total_ms = 0;
  int64_t output_tokens = 0;           // as the server's usage reports
};

class BenchClient {
 public:
  virtual ~BenchClient() = default;
  // Generates `output_len` tokens (EOS ignored) after the prompt `prompt_ids`.
  virtual absl::StatusOr<BenchTiming> Run(const std::vector<int32_t>& prompt_ids,
                                          int64_t output_len) = 0;
};

std::unique_ptr<BenchClient> NewGrpcBenchClient(const std::string& server);
// `server` is HOST:PORT; the client sends streaming /v1/completions with include_usage.
std::unique_ptr<BenchClient> NewHttpBenchClient(const std::string& server);

}  // namespace gemmaserve::tools
