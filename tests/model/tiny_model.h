// A tiny checkpoint of tests/data loaded in this process as a Gemma4Model with its own KV cache,
// and single-sequence steps to run on it: what the forward-pass tests drive directly, without
// the step executor. Test-only.
#pragma once

#include <cstdint>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/forward_batch.h"
#include "model/gemma4.h"
#include "model/kv_cache.h"
#include "model/kv_pages.h"
#include "model/weights.h"
#include "parallel/communicator.h"

namespace gemmaserve::testing {

inline constexpr int64_t kTinyBlockSize = 16;
inline constexpr int64_t kTinyNumBlocks = 16;  // 256 positions for one sequence, 64 for each of 4
inline constexpr int64_t kTinySlotBlocks = 4;  // TinyModel::Steps: 4 sequences of 64 positions

// The weights of tests/data/`model`, prepared for the CPU.
inline model::ModelWeights LoadTinyWeights(const std::string& model, model::Gemma4Config& config) {
  const std::string dir = "tests/data/" + model;
  auto parsed = model::Gemma4Config::FromModelDir(dir);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  config = *parsed;
  auto checkpoint = model::Checkpoint::Open(dir);
  EXPECT_TRUE(checkpoint.ok()) << checkpoint.status();
  auto weights = model::LoadWeights(*checkpoint, config);
  EXPECT_TRUE(weights.ok()) << weights.status();
  return std::move(*weights);
}

struct TinyModel {
  TinyModel(model::ModelWeights weights, model::Gemma4Config config,
            const model::StepLimits& limits = {}, DType kv_dtype = DType::kF32,
            const Device& device = Device::Cpu())
      : model(std::make_unique<model::Gemma4Model>(std::move(config), std::move(weights), comm,
                                                   limits)) {
    model::KvCacheOptions options;
    options.block_size = kTinyBlockSize;
    options.dtype = kv_dtype;
    const model::KvPageLayout layout =
        model::KvPageLayout::For(model->weights().layers, kTinyBlockSize, kv_dtype);
    blocks = std::make_unique<model::BlockRuns>(model::KvPages{0, layout.blocks_per_page},
                                                kTinyNumBlocks);
    options.num_pages = blocks->PagesPerRun();
    cache = std::make_unique<model::KvCache>(model->weights().layers, options, device);
  }

  static std::unique_ptr<TinyModel> Load(const std::string& name,
                                         const model::StepLimits& limits = {},
                                         DType kv_dtype = DType::kF32) {
    model::Gemma4Config config;
    model::ModelWeights weights = LoadTinyWeights(name, config);
    return std::make_unique<TinyModel>(std::move(weights), std::move(config), limits, kv_dtype);
  }

  // Fills `batch` with one sequence (blocks 0, 1, … of `blocks`) whose `tokens` follow
  // `num_cached` cached ones, and finalizes it.
  void Step(const std::vector<int32_t>& tokens, int64_t num_cached, bool all_logits,
            model::ForwardBatch& batch) const {
    batch.token_ids = tokens;
    batch.sequences.resize(1);
    model::BatchSequence& seq = batch.sequences[0];
    seq.num_cached = num_cached;
    seq.num_tokens = static_cast<int64_t>(tokens.size());
    seq.all_logits = all_logits;
    for (int g = 0; g < model::kNumKvGroups; ++g) {
      seq.block_tables[g].clear();
      for (int64_t b = 0; b < kTinyNumBlocks; ++b) {
        seq.block_tables[g].push_back(blocks->Block(0, static_cast<model::LayerKind>(g), b));
      }
    }
    const absl::Status status = batch.Finalize(model->config(), cache->geometry());
    ASSERT_TRUE(status.ok()) << status;
  }

  // Fills `batch` with one sequence per entry, each in its own slot: sequence slot s owns blocks
  // [s · kTinySlotBlocks, (s + 1) · kTinySlotBlocks) of each group (64 positions). Finalizes it.
  struct SlotStep {
    int64_t slot = 0;
    int64_t num_cached = 0;
    std::vector<int32_t> tokens;
  };
  void Steps(const std::vector<SlotStep>& steps, model::ForwardBatch& batch) const {
    batch.token_ids.clear();
    batch.sequences.clear();
    for (const SlotStep& step : steps) {
      batch.token_ids.insert(batch.token_ids.end(), step.tokens.begin(), step.tokens.end());
      model::BatchSequence seq;
      seq.num_cached = step.num_cached;
      seq.num_tokens = static_cast<int64_t>(step.tokens.size());
      for (int g = 0; g < model::kNumKvGroups; ++g) {
        for (int64_t b = 0; b < kTinySlotBlocks; ++b) {
          seq.block_tables[g].push_back(
              blocks->Block(0, static_cast<model::LayerKind>(g), step.slot * kTinySlotBlocks + b));
        }
      }
      batch.sequences.push_back(std::move(seq));
    }
    const absl::Status status = batch.Finalize(model->config(), cache->geometry());
    ASSERT_TRUE(status.ok()) << status;
  }

  parallel::LocalCommunicator comm;  // before the model, which holds a reference to it
  std::unique_ptr<model::Gemma4Model> model;
  std::unique_ptr<model::BlockRuns> blocks;  // one run of kTinyNumBlocks blocks of each group
  std::unique_ptr<model::KvCache> cache;
};

}  // namespace gemmaserve::testing
