// LocalRunner: drives a Gemma4Model in this process without a scheduler: it gives each sequence
// its own contiguous run of KV blocks, prefills the prompt in one step and decodes token by token
// against the cache. It serves `gemmaserve run` / `gemmaserve logits` and the parity tests; the
// serving path schedules through the coordinator's block manager instead.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/gemma4.h"
#include "model/kv_cache.h"
#include "parallel/communicator.h"

namespace gemmaserve::model {

class LocalRunner {
 public:
  // Loads DIR (config.json + safetensors) and sizes a cache for `max_context` tokens per sequence
  // and up to `max_sequences` sequences at once.
  static absl::StatusOr<std::unique_ptr<LocalRunner>> Load(const std::string& dir,
                                                           int64_t max_context,
                                                           int64_t max_sequences = 1);

  const Gemma4Config& config() const { return model_.config(); }
  Gemma4Model& model() { return model_; }

  // Prefills each prompt (one step for all of them) and returns logits: the last position of each
  // prompt, or every position when all_positions. Rows follow the prompts in order.
  absl::StatusOr<Tensor> Prefill(const std::vector<std::vector<int32_t>>& prompts,
                                 bool all_positions);

  // Chooses the next token from a row of logits.
  using Sampler = std::function<int32_t(const float* logits, int64_t vocab_size)>;
  // Prefills the prompts, then decodes every sequence one token per step (batched) until each has
  // max_new_tokens tokens or, when stop_ids is non-empty, produced one of them (kept in the output).
  absl::StatusOr<std::vector<std::vector<int32_t>>> Generate(
      const std::vector<std::vector<int32_t>>& prompts, int64_t max_new_tokens,
      const Sampler& sampler, const std::vector<int64_t>& stop_ids = {});

 private:
  LocalRunner(Gemma4Model model, KvCache cache, int64_t blocks_per_sequence,
              std::unique_ptr<parallel::Communicator> comm);
  // A batch entry for sequence slot `slot` with `num_cached` tokens in the cache.
  BatchSequence Entry(int64_t slot, int64_t num_cached, int64_t num_tokens, bool all_logits) const;
  absl::StatusOr<Tensor> Run(ForwardBatch& batch);

  std::unique_ptr<parallel::Communicator> comm_;
  Gemma4Model model_;
  KvCache cache_;
  int64_t blocks_per_sequence_;
  int64_t max_sequences_;
};

}  // namespace gemmaserve::model
