// The layout decode graphs replay (model/forward_batch.h, PadForGraph): graph batch sizes, the
// shape of a batch, the padded fields, and, on the CPU, that a padded decode step gives the
// batch's own logits on its rows and caches nothing for its padding (the GPU tests replay it as a
// graph: tests/kernels/gpu_golden_test.cc).
#include <algorithm>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "ops/attention.h"
#include "ops/copy.h"
#include "tests/model/golden_reference.h"
#include "tests/model/tiny_model.h"

namespace gemmaserve::testing {
namespace {

using SlotStep = TinyModel::SlotStep;

TEST(GraphBatchSizeTest, PowersOfTwoToEightThenMultiplesOfEight) {
  const std::vector<std::pair<int64_t, int64_t>> cases = {
      {0, 1}, {1, 1}, {2, 2}, {3, 4}, {4, 4}, {5, 8}, {8, 8}, {9, 16}, {17, 24}, {256, 256}};
  for (const auto& [sequences, size] : cases) {
    EXPECT_EQ(model::GraphBatchSize(sequences), size) << sequences << " sequences";
  }
}

class DecodeGraphLayoutTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { tiny_ = TinyModel::Load(GetParam()); }
  std::unique_ptr<TinyModel> tiny_;
};

TEST_P(DecodeGraphLayoutTest, OnlyOneTokenASequenceWithItsOwnLogitsIsAPlainDecode) {
  model::ForwardBatch batch;
  tiny_->Steps({{0, 5, {7}}, {2, 9, {8}}}, batch);
  EXPECT_TRUE(model::IsPlainDecode(batch));
  tiny_->Steps({{0, 5, {7}}, {2, 0, {8, 9}}}, batch);
  EXPECT_FALSE(model::IsPlainDecode(batch));
  tiny_->Step({7}, 5, /*all_logits=*/true, batch);
  EXPECT_TRUE(model::IsPlainDecode(batch));  // one token: its logits are the last token's
  tiny_->Step({7, 8}, 5, /*all_logits=*/true, batch);
  EXPECT_FALSE(model::IsPlainDecode(batch));
}

TEST_P(DecodeGraphLayoutTest, TablesArePowersOfTwoOfAtLeastSixteenBlocks) {
  model::ForwardBatch batch;
  tiny_->Steps({{0, 20, {7}}, {1, 40, {8}}, {3, 2, {9}}}, batch);  // contexts 21, 41, 3
  ASSERT_EQ(batch.max_blocks[0], 3);
  const model::GraphShape shape = model::GraphShapeFor(batch, tiny_->model->config());
  EXPECT_EQ(shape.num_sequences, 4);
  EXPECT_EQ(shape.table_width, 16);
  EXPECT_EQ(shape.max_context_len,
            std::min<int64_t>(16 * kTinyBlockSize, tiny_->model->config().max_position_embeddings));

  model::Gemma4Config config = tiny_->model->config();
  batch.max_blocks = {17, 17};
  EXPECT_EQ(model::GraphShapeFor(batch, config).table_width, 32);
  config.max_position_embeddings = 300;
  EXPECT_EQ(model::GraphShapeFor(batch, config).max_context_len, 300);
}

TEST_P(DecodeGraphLayoutTest, PaddingTokensAndSequencesAreReadByNothingAndCachedNowhere) {
  model::ForwardBatch batch;
  tiny_->Steps({{0, 20, {7}}, {1, 40, {8}}, {3, 2, {9}}}, batch);
  const model::GraphShape shape = model::GraphShapeFor(batch, tiny_->model->config());
  model::ForwardBatch padded;
  model::PadForGraph(batch, shape, padded);
  using Ints = std::vector<int32_t>;
  EXPECT_EQ(padded.token_ids, (Ints{7, 8, 9, 0}));
  EXPECT_EQ(padded.positions, (Ints{20, 40, 2, 0}));
  for (int g = 0; g < model::kNumKvGroups; ++g) {
    ASSERT_EQ(padded.slot_mapping[g].size(), 4u);
    EXPECT_TRUE(std::equal(batch.slot_mapping[g].begin(), batch.slot_mapping[g].end(),
                           padded.slot_mapping[g].begin()));
    EXPECT_EQ(padded.slot_mapping[g][3], ops::kPaddingSlot);
    ASSERT_EQ(padded.max_blocks[g], 16);
    ASSERT_EQ(padded.block_tables[g].size(), 4u * 16);
    for (int64_t s = 0; s < 4; ++s) {
      for (int64_t b = 0; b < 16; ++b) {
        const int32_t expected = s < 3 && b < batch.max_blocks[g]
                                     ? batch.block_tables[g][s * batch.max_blocks[g] + b]
                                     : -1;
        EXPECT_EQ(padded.block_tables[g][s * 16 + b], expected) << "group " << g << " row " << s;
      }
    }
  }
  EXPECT_EQ(padded.token_begin, (Ints{0, 1, 2, 3}));
  EXPECT_EQ(padded.query_lens, (Ints{1, 1, 1, 0}));
  EXPECT_EQ(padded.context_lens, (Ints{21, 41, 3, 0}));
  EXPECT_EQ(padded.logits_rows, (Ints{0, 1, 2, 3}));
  EXPECT_EQ(padded.max_context_len, shape.max_context_len);
  EXPECT_EQ(padded.num_tokens(), 4);
}

// Logits rows of one step, on the host.
std::vector<std::vector<float>> Rows(const Tensor& logits, int64_t count) {
  const Tensor host = ops::ToHost(logits);
  std::vector<std::vector<float>> rows;
  for (int64_t r = 0; r < count; ++r) {
    const float* row = host.data<float>() + r * host.dim(1);
    rows.emplace_back(row, row + host.dim(1));
  }
  return rows;
}

// Decodes the same steps on two copies of the model, one of them through padded batches: the
// batch's rows are the same bits, and so is every later step (the padding cached nothing).
TEST_P(DecodeGraphLayoutTest, APaddedDecodeGivesTheBatchsOwnLogits) {
  auto padded_model = TinyModel::Load(GetParam());
  const GoldenReference ref = LoadGoldenReference(GetParam());
  std::vector<int64_t> cached(3, 0);
  std::vector<int32_t> last(3, 0);
  model::ForwardBatch batch;
  for (int64_t s = 0; s < 3; ++s) {  // prefill three sequences, one at a time
    const std::vector<int32_t>& prompt = ref.inputs[static_cast<size_t>(s)];
    for (TinyModel* tiny : {tiny_.get(), padded_model.get()}) {
      tiny->Steps({{s, 0, prompt}}, batch);
      const std::vector<float> logits = Rows(tiny->model->Forward(batch, *tiny->cache), 1)[0];
      last[s] =
          static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    }
    cached[s] = static_cast<int64_t>(prompt.size());
  }
  // Decode steps of 3, 1 and 2 sequences (graph sizes 4, 1 and 2), then one unpadded step.
  const std::vector<std::vector<int64_t>> schedule = {{0, 1, 2}, {1}, {2, 0}, {0, 1, 2}};
  for (size_t step = 0; step < schedule.size(); ++step) {
    std::vector<SlotStep> steps;
    for (int64_t s : schedule[step]) steps.push_back({s, cached[s], {last[s]}});
    tiny_->Steps(steps, batch);
    const int64_t rows = static_cast<int64_t>(steps.size());
    const std::vector<std::vector<float>> expected =
        Rows(tiny_->model->Forward(batch, *tiny_->cache), rows);
    padded_model->Steps(steps, batch);
    model::ForwardBatch padded;
    const bool pad = step + 1 < schedule.size();
    if (pad) model::PadForGraph(batch, model::GraphShapeFor(batch, tiny_->model->config()), padded);
    const std::vector<std::vector<float>> actual =
        Rows(padded_model->model->Forward(pad ? padded : batch, *padded_model->cache), rows);
    for (int64_t r = 0; r < rows; ++r) {
      EXPECT_EQ(actual[r], expected[r]) << "step " << step << " row " << r;
      const int64_t s = schedule[step][r];
      last[s] = static_cast<int32_t>(std::max_element(expected[r].begin(), expected[r].end()) -
                                     expected[r].begin());
      ++cached[s];
    }
  }
}

// Graphs are recorded on a GPU only: on the CPU, asking for them changes no step.
TEST_P(DecodeGraphLayoutTest, OnTheCpuDecodeGraphsChangeNothing) {
  auto with_graphs = TinyModel::Load(GetParam());
  with_graphs->model->UseDecodeGraphs(true);
  model::ForwardBatch batch;
  const std::vector<int32_t> prompt = {2, 17, 40, 9};
  std::vector<std::vector<float>> logits;
  for (TinyModel* tiny : {tiny_.get(), with_graphs.get()}) {
    tiny->Steps({{0, 0, prompt}}, batch);
    tiny->model->Forward(batch, *tiny->cache);
    tiny->Steps({{0, 4, {11}}}, batch);
    logits.push_back(Rows(tiny->model->Forward(batch, *tiny->cache), 1)[0]);
  }
  EXPECT_EQ(logits[0], logits[1]);
  const model::Gemma4Model::GraphStats stats = with_graphs->model->graph_stats();
  EXPECT_EQ(stats.recorded, 0);
  EXPECT_EQ(stats.replayed, 0);
  EXPECT_EQ(stats.graphs, 0);
}

INSTANTIATE_TEST_SUITE_P(TinyModels, DecodeGraphLayoutTest, ::testing::ValuesIn(TinyModelNames()),
                         TinyModelTestName());

}  // namespace
}  // namespace gemmaserve::testing
