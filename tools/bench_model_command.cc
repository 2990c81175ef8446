// gemmaserve bench-model: prefill and decode throughput of the forward pass in this process
// (batch 1), next to the machine's measured memory read bandwidth, so that decode efficiency =
// bytes a decode token reads (weights and KV) ÷ time per token ÷ bandwidth.
#include <omp.h>

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
#include "worker/model_shard.h"
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
  bool warmup = true;
  bool json = false;
};

// Best-of-5 read bandwidth in bytes/s: `threads` OpenMP threads each stream their slice of a
// buffer far larger than the caches, summing it into 16 independent accumulators (vectorised by
// the compiler), so neither an addition chain nor one thread's loads bound it: what a decode step
// streaming its weights could read at most.
double MeasureReadBandwidth(int64_t total_bytes, int threads) {
  const int64_t count = total_bytes / static_cast<int64_t>(sizeof(float));
  Tensor buffer = Tensor::Empty(DType::kF32, {count});
  float* data = buffer.data<float>();
#pragma omp parallel for num_threads(threads)
  for (int64_t i = 0; i < count; ++i) data[i] = 1.0f;  // every page in memory, on its thread
  double best = 0.0;
  double total = 0.0;
  for (int trial = 0; trial < 5; ++trial) {
    const auto start = Clock::now();
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
      const int64_t t = omp_get_thread_num(), n = omp_get_num_threads();
      const int64_t begin = count * t / n / 16 * 16, end = count * (t + 1) / n / 16 * 16;
      float acc[16] = {};
      for (int64_t i = begin; i < end; i += 16) {
        for (int j = 0; j < 16; ++j) acc[j] += data[i + j];
      }
      for (float a : acc) total += a;
    }
    best = std::max(best, static_cast<double>(total_bytes) / SecondsSince(start));
  }
  CHECK_GT(total, 0.0);  // keeps the loads alive
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

// Bytes of KV cache one decode token at `context` reads: every layer's keys (where stored) and
// values of the positions it attends to (a sliding layer at most its window).
int64_t KvBytesPerToken(const model::Gemma4Model& model, DType kv_dtype, int64_t context) {
  int64_t bytes = 0;
  for (const model::LayerWeights& layer : model.weights().layers) {
    const int64_t window = layer.geometry.sliding_window;
    const int64_t positions = window > 0 ? std::min(context, window) : context;
    const int64_t rows = model::StoresKeys(layer.geometry) ? 2 : 1;
    bytes += rows * positions * layer.num_kv_heads_local * layer.geometry.head_dim *
             static_cast<int64_t>(DTypeSize(kv_dtype));
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

  // One untimed prefill first (unless --warmup=false, which saves a long prompt's minutes): it
  // touches the activation memory and the ops' scratch, as every later step finds them. Then a
  // timed prefill, and a generation whose decode steps (after its own prefill and first token)
  // are timed apart from that prefill.
  if (config.warmup) RETURN_IF_ERROR(session->driver().Logits({prompt}, false).status());
  auto prefill_start = Clock::now();
  RETURN_IF_ERROR(session->driver().Logits({prompt}, false).status());
  const double prefill_s = SecondsSince(prefill_start);
  internal::v1::SamplingParams greedy;
  ASSIGN_OR_RETURN(
      const std::vector<coordinator::SequenceDriver::Generation> generated,
      session->driver().Generate({prompt}, 1 + config.decode_tokens, greedy, {}));
  const double per_token_s =
      generated[0].decode_seconds / static_cast<double>(config.decode_tokens);

  // A decode token sees, on average, the prompt, the first token and half
  // of the decoded ones.
  worker::ModelShard& shard = *session->local_shard();
  const int64_t weight_bytes = WeightBytesPerToken(shard.model());
  const int64_t kv_bytes = KvBytesPerToken(shard.model(), shard.cache().dtype(),
                                           config.prompt_tokens + 1 + config.decode_tokens / 2);
  const int64_t bytes = weight_bytes + kv_bytes;
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
      {"weight_bytes_per_token", weight_bytes},
      {"kv_bytes_per_token", kv_bytes},
      {"resident_weight_bytes", shard.model().weights().TotalBytes()},
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
  flags.Bool("warmup", &config.warmup, "prefill once untimed before the timed prefill");
  flags.Bool("json", &config.json, "print one line of JSON");
  const absl::Status parsed = flags.Parse(argc, argv);
  return RunCommand(flags, parsed, [&] { return Bench(config); });
}

}  // namespace gemmaserve::tools
