// gemmaserve bench-model: prefill and decode throughput of the CPU forward pass in this process
// (batch 1), next to the machine's measured memory read bandwidth, so that decode efficiency =
// weight bytes read per token ÷ time per token ÷ bandwidth.
#include <cblas.h>

#include <chrono>
#include <cstdio>
#include <numeric>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "ops/linear.h"
#include "tools/commands.h"
#include "tools/flags.h"
#include "tools/model_session.h"

namespace gemmaserve::tools {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct BenchConfig {
  SessionOptions session;
  int64_t prompt_tokens = 128;
  int64_t decode_tokens = 32;
  int64_t bandwidth_mb = 1024;
  bool json = false;
};

// Best-of-5 read bandwidth in bytes/s: `threads` threads each stream their part of a buffer much
// larger than the caches through OpenBLAS's sasum, the same vectorised kernels (and access
// pattern) that stream the weights in a decode gemv.
double MeasureReadBandwidth(int64_t total_bytes, int threads) {
  const int64_t count = total_bytes / static_cast<int64_t>(sizeof(float));
  std::vector<float> buffer(count, 1.0f);
  ops::SetNumThreads(1);  // the probe's own threads do the splitting
  double best = 0.0;
  std::vector<float> sums(threads);
  for (int trial = 0; trial < 5; ++trial) {
    const auto start = Clock::now();
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        const int64_t begin = count * t / threads;
        const int64_t end = count * (t + 1) / threads;
        sums[t] = cblas_sasum(static_cast<blasint>(end - begin), buffer.data() + begin, 1);
      });
    }
    for (std::thread& w : workers) w.join();
    best = std::max(best, static_cast<double>(total_bytes) / SecondsSince(start));
  }
  CHECK_GT(std::accumulate(sums.begin(), sums.end(), 0.0f), 0.0f);  // keeps the loads alive
  ops::SetNumThreads(threads);
  return best;
}

// Bytes of weights one decode token reads: every dense weight once (the embedding matrix once,
// as the LM head), and for MoE layers only the top_k experts it is routed to.
int64_t WeightBytesPerToken(const model::Gemma4Model& model) {
  const model::ModelWeights& w = model.weights();
  int64_t bytes = w.embed_tokens.nbytes() + w.final_norm.nbytes();
  for (const model::LayerWeights& layer : w.layers) {
    const model::AttentionWeights& a = layer.attention;
    for (const Tensor* t : {&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj, &layer.mlp.gate_up,
                            &layer.mlp.down}) {
      if (t->defined()) bytes += t->nbytes();
    }
    if (layer.has_moe) {
      const int64_t experts = layer.moe.gate_up.dim(0);
      const int64_t top_k = model.config().top_k_experts;
      bytes += layer.moe.router_proj.nbytes() +
               (layer.moe.gate_up.nbytes() + layer.moe.down.nbytes()) / experts * top_k;
    }
  }
  return bytes;
}

absl::Status Bench(BenchConfig config) {
  RETURN_IF_ERROR(InitLogging("warn"));
  if (config.prompt_tokens <= 0 || config.decode_tokens <= 0) {
    return absl::InvalidArgumentError("--prompt-tokens and --decode-tokens must be positive");
  }
  if (config.session.parallel.tp > 1 || config.session.parallel.ep > 1) {
    return absl::InvalidArgumentError("bench-model measures the in-process forward; use --tp 1");
  }
  const double bandwidth =
      MeasureReadBandwidth(config.bandwidth_mb << 20, static_cast<int>(config.session.threads));

  config.session.max_context = config.prompt_tokens + 1 + config.decode_tokens;
  auto load_start = Clock::now();
  ASSIGN_OR_RETURN(auto session, ModelSession::Open(config.session));
  const double load_s = SecondsSince(load_start);
  const int64_t vocab = session->config().vocab_size;
  std::vector<int32_t> prompt(config.prompt_tokens);
  for (int64_t i = 0; i < config.prompt_tokens; ++i) {
    prompt[i] = static_cast<int32_t>((i * 7919 + 2) % vocab);
  }

  // One untimed prefill first: it touches the activation memory and the ops' scratch, as every
  // later step finds them. Then a timed prefill; then two generations that share the prefill and
  // its token, the longer one's extra time being decode_tokens decode steps.
  RETURN_IF_ERROR(session->driver().Logits({prompt}, false).status());
  auto prefill_start = Clock::now();
  RETURN_IF_ERROR(session->driver().Logits({prompt}, false).status());
  const double prefill_s = SecondsSince(prefill_start);
  internal::v1::SamplingParams greedy;
  auto short_start = Clock::now();
  RETURN_IF_ERROR(session->driver().Generate({prompt}, 1, greedy, {}).status());
  const double short_s = SecondsSince(short_start);
  auto long_start = Clock::now();
  RETURN_IF_ERROR(
      session->driver().Generate({prompt}, 1 + config.decode_tokens, greedy, {}).status());
  const double per_token_s =
      (SecondsSince(long_start) - short_s) / static_cast<double>(config.decode_tokens);

  const int64_t bytes = WeightBytesPerToken(session->local_shard()->model());
  const double efficiency = static_cast<double>(bytes) / per_token_s / bandwidth;
  nlohmann::json result = {
      {"model", config.session.model_dir},
      {"threads", config.session.threads},
      {"load_s", load_s},
      {"prompt_tokens", config.prompt_tokens},
      {"prefill_tokens_per_s", static_cast<double>(config.prompt_tokens) / prefill_s},
      {"decode_tokens", config.decode_tokens},
      {"decode_tokens_per_s", 1.0 / per_token_s},
      {"decode_ms_per_token", per_token_s * 1e3},
      {"weight_bytes_per_token", bytes},
      {"read_bandwidth_gb_per_s", bandwidth / 1e9},
      {"decode_bandwidth_gb_per_s", static_cast<double>(bytes) / per_token_s / 1e9},
      {"decode_efficiency", efficiency},
  };
  if (config.json) {
    std::printf("%s\n", result.dump().c_str());
  } else {
    std::printf("%s\n", result.dump(2).c_str());
  }
  return absl::OkStatus();
}

}  // namespace

int BenchModelMain(int argc, char** argv) {
  BenchConfig config;
  FlagSet flags("bench-model",
                "Prefill and decode tokens/s of the CPU forward (batch 1) against the measured "
                "memory read bandwidth.");
  config.session.AddFlags(flags);
  flags.Int("prompt-tokens", &config.prompt_tokens, "prompt length for the prefill measurement");
  flags.Int("decode-tokens", &config.decode_tokens, "tokens to decode");
  flags.Int("bandwidth-mb", &config.bandwidth_mb, "buffer size of the bandwidth probe, MiB");
  flags.Bool("json", &config.json, "print one line of JSON");
  const absl::Status parsed = flags.Parse(argc, argv);
  return RunCommand(flags, parsed, [&] { return Bench(config); });
}

}  // namespace gemmaserve::tools
