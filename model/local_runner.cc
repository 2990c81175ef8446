#include "model/local_runner.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "model/checkpoint.h"

namespace gemmaserve::model {

absl::StatusOr<std::unique_ptr<LocalRunner>> LocalRunner::Load(const std::string& dir,
                                                               int64_t max_context,
                                                               int64_t max_sequences) {
  if (max_context <= 0 || max_sequences <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_context ", max_context, " and max_sequences ",
                                                   max_sequences, " must be positive"));
  }
  ASSIGN_OR_RETURN(Gemma4Config config, Gemma4Config::FromModelDir(dir));
  if (max_context > config.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("context of ", max_context,
                                                   " tokens exceeds max_position_embeddings ",
                                                   config.max_position_embeddings));
  }
  ASSIGN_OR_RETURN(Checkpoint checkpoint, Checkpoint::Open(dir));
  ASSIGN_OR_RETURN(ModelWeights weights, LoadWeights(checkpoint, config));
  KvCacheOptions options;
  const int64_t blocks_per_sequence = (max_context + options.block_size - 1) / options.block_size;
  for (int64_t& n : options.num_blocks) n = blocks_per_sequence * max_sequences;
  auto comm = std::make_unique<parallel::LocalCommunicator>();
  KvCache cache(weights.layers, options);
  Gemma4Model model(std::move(config), std::move(weights), *comm);
  auto runner = std::unique_ptr<LocalRunner>(
      new LocalRunner(std::move(model), std::move(cache), blocks_per_sequence, std::move(comm)));
  runner->max_sequences_ = max_sequences;
  return runner;
}

LocalRunner::LocalRunner(Gemma4Model model, KvCache cache, int64_t blocks_per_sequence,
                         std::unique_ptr<parallel::Communicator> comm)
    : comm_(std::move(comm)),
      model_(std::move(model)),
      cache_(std::move(cache)),
      blocks_per_sequence_(blocks_per_sequence),
      max_sequences_(1) {}

BatchSequence LocalRunner::Entry(int64_t slot, int64_t num_cached, int64_t num_tokens,
                                 bool all_logits) const {
  BatchSequence seq;
  seq.num_cached = num_cached;
  seq.num_tokens = num_tokens;
  seq.all_logits = all_logits;
  for (auto& table : seq.block_tables) {
    for (int64_t b = 0; b < blocks_per_sequence_; ++b) {
      table.push_back(static_cast<int32_t>(slot * blocks_per_sequence_ + b));
    }
  }
  return seq;
}

absl::StatusOr<Tensor> LocalRunner::Run(ForwardBatch& batch) {
  const std::array<int64_t, kNumKvGroups> num_blocks = {cache_.num_blocks(LayerKind::kSliding),
                                                        cache_.num_blocks(LayerKind::kFull)};
  RETURN_IF_ERROR(batch.Finalize(model_.config(), cache_.block_size(), num_blocks));
  return model_.Forward(batch, cache_);
}

absl::StatusOr<Tensor> LocalRunner::Prefill(const std::vector<std::vector<int32_t>>& prompts,
                                            bool all_positions) {
  if (static_cast<int64_t>(prompts.size()) > max_sequences_) {
    return absl::InvalidArgumentError(absl::StrCat(prompts.size(), " prompts exceed the ",
                                                   max_sequences_, " sequences this runner holds"));
  }
  ForwardBatch batch;
  for (size_t s = 0; s < prompts.size(); ++s) {
    if (prompts[s].empty()) return absl::InvalidArgumentError(absl::StrCat("prompt ", s, " is empty"));
    const int64_t length = static_cast<int64_t>(prompts[s].size());
    if (length > blocks_per_sequence_ * cache_.block_size()) {
      return absl::InvalidArgumentError(absl::StrCat("prompt ", s, " has ", length,
                                                     " tokens; the context holds ",
                                                     blocks_per_sequence_ * cache_.block_size()));
    }
    batch.token_ids.insert(batch.token_ids.end(), prompts[s].begin(), prompts[s].end());
    batch.sequences.push_back(Entry(static_cast<int64_t>(s), 0, length, all_positions));
  }
  return Run(batch);
}

absl::StatusOr<std::vector<std::vector<int32_t>>> LocalRunner::Generate(
    const std::vector<std::vector<int32_t>>& prompts, int64_t max_new_tokens,
    const Sampler& sampler, const std::vector<int64_t>& stop_ids) {
  const int64_t vocab = model_.config().vocab_size;
  for (size_t s = 0; s < prompts.size(); ++s) {
    const int64_t needed = static_cast<int64_t>(prompts[s].size()) + max_new_tokens;
    if (needed > blocks_per_sequence_ * cache_.block_size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt ", s, " (", prompts[s].size(), " tokens) plus ", max_new_tokens,
          " new tokens exceeds the context of ", blocks_per_sequence_ * cache_.block_size()));
    }
  }
  std::vector<std::vector<int32_t>> outputs(prompts.size());
  if (max_new_tokens <= 0) return outputs;
  ASSIGN_OR_RETURN(Tensor logits, Prefill(prompts, /*all_positions=*/false));
  auto is_stop = [&](int32_t id) {
    return std::find(stop_ids.begin(), stop_ids.end(), id) != stop_ids.end();
  };
  std::vector<int64_t> active(prompts.size());
  for (size_t s = 0; s < prompts.size(); ++s) active[s] = static_cast<int64_t>(s);
  while (true) {
    // Sample one token for every sequence that took part in the last step.
    std::vector<int64_t> next_active;
    for (size_t row = 0; row < active.size(); ++row) {
      const int64_t s = active[row];
      const int32_t token = sampler(logits.data<float>() + row * vocab, vocab);
      outputs[s].push_back(token);
      if (static_cast<int64_t>(outputs[s].size()) < max_new_tokens && !is_stop(token)) {
        next_active.push_back(s);
      }
    }
    active = std::move(next_active);
    if (active.empty()) break;
    ForwardBatch batch;
    for (int64_t s : active) {
      batch.token_ids.push_back(outputs[s].back());
      const int64_t cached = static_cast<int64_t>(prompts[s].size() + outputs[s].size()) - 1;
      batch.sequences.push_back(Entry(s, cached, 1, false));
    }
    ASSIGN_OR_RETURN(logits, Run(batch));
  }
  return outputs;
}

}  // namespace gemmaserve::model
