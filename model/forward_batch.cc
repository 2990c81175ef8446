#include "model/forward_batch.h"

#include <algorithm>
#include <array>
#include <bit>
#include <limits>

#include "absl/strings/str_cat.h"
#include "ops/copy.h"

namespace gemmaserve::model {
namespace {

// The window of keys a group's layers read: every position for full layers, the last
// sliding_window positions (including the first query's own) for sliding ones.
int64_t FirstReadPosition(const Gemma4Config& config, LayerKind group, int64_t num_cached) {
  if (group == LayerKind::kFull) return 0;
  return std::max<int64_t>(0, num_cached - config.sliding_window + 1);
}

int64_t BlocksFor(int64_t num_tokens, int64_t block_size) {
  return (num_tokens + block_size - 1) / block_size;
}

}  // namespace

absl::Status ForwardBatch::Finalize(const Gemma4Config& config, const KvGeometry& geometry) {
  const int64_t block_size = geometry.block_size;
  const std::array<int64_t, kNumKvGroups>& num_blocks = geometry.num_blocks;
  auto Name = [this](size_t s) {
    return absl::StrCat("sequence ", s < sequence_ids.size() ? sequence_ids[s] : s);
  };
  for (int g = 0; g < kNumKvGroups; ++g) {
    // Slots are i32 on the device: every slot of the pool must be one.
    if (num_blocks[g] * geometry.block_stride[g] > std::numeric_limits<int32_t>::max()) {
      return absl::InvalidArgumentError(absl::StrCat(
          LayerKindName(static_cast<LayerKind>(g)), " pool of ", num_blocks[g], " blocks ",
          geometry.block_stride[g], " rows apart exceeds 2^31 rows"));
    }
  }
  kv_block_size = block_size;
  positions.clear();
  token_begin.clear();
  query_lens.clear();
  context_lens.clear();
  logits_rows.clear();
  max_context_len = 0;
  for (auto& slots : slot_mapping) slots.assign(token_ids.size(), -1);

  int64_t next_token = 0;
  for (size_t s = 0; s < sequences.size(); ++s) {
    const BatchSequence& seq = sequences[s];
    if (seq.num_tokens <= 0 || seq.num_cached < 0) {
      return absl::InvalidArgumentError(absl::StrCat(Name(s), ": num_tokens ", seq.num_tokens,
                                                     ", num_cached ", seq.num_cached));
    }
    const int64_t end = seq.num_cached + seq.num_tokens;
    if (end > config.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat(Name(s), ": context of ", end,
                                                     " tokens exceeds max_position_embeddings ",
                                                     config.max_position_embeddings));
    }
    if (next_token + seq.num_tokens > num_tokens()) {
      return absl::InvalidArgumentError(absl::StrCat(Name(s), " needs ", seq.num_tokens,
                                                     " tokens but only ", num_tokens() - next_token,
                                                     " remain in token_ids"));
    }
    for (int g = 0; g < kNumKvGroups; ++g) {
      const LayerKind group = static_cast<LayerKind>(g);
      if (config.NumLayersOfKind(group) == 0) continue;
      const std::vector<int32_t>& table = seq.block_tables[g];
      const int64_t needed = BlocksFor(end, block_size);
      if (static_cast<int64_t>(table.size()) < needed) {
        return absl::InvalidArgumentError(absl::StrCat(Name(s), ": ", LayerKindName(group),
                                                       " block table has ", table.size(),
                                                       " blocks, needs ", needed));
      }
      for (int64_t b = FirstReadPosition(config, group, seq.num_cached) / block_size; b < needed; ++b) {
        if (table[b] < 0 || table[b] >= num_blocks[g]) {
          return absl::InvalidArgumentError(absl::StrCat(Name(s), ": ", LayerKindName(group),
                                                         " block ", b, " is ", table[b],
                                                         ", outside the pool of ", num_blocks[g]));
        }
      }
      for (int64_t i = 0; i < seq.num_tokens; ++i) {
        const int64_t position = seq.num_cached + i;
        slot_mapping[g][next_token + i] = static_cast<int32_t>(
            table[position / block_size] * geometry.block_stride[g] + position % block_size);
      }
    }
    token_begin.push_back(static_cast<int32_t>(next_token));
    query_lens.push_back(static_cast<int32_t>(seq.num_tokens));
    context_lens.push_back(static_cast<int32_t>(end));
    max_context_len = std::max(max_context_len, end);
    for (int64_t i = 0; i < seq.num_tokens; ++i) {
      const int32_t id = token_ids[next_token + i];
      if (id < 0 || id >= config.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(Name(s), ": token id ", id,
                                                       " outside the vocabulary [0, ",
                                                       config.vocab_size, ")"));
      }
      positions.push_back(static_cast<int32_t>(seq.num_cached + i));
      if (seq.all_logits || i == seq.num_tokens - 1) {
        logits_rows.push_back(static_cast<int32_t>(next_token + i));
      }
    }
    next_token += seq.num_tokens;
  }
  if (next_token != num_tokens()) {
    return absl::InvalidArgumentError(absl::StrCat("token_ids has ", num_tokens(),
                                                   " tokens but the sequences take ", next_token));
  }
  // Block tables as [S, max_blocks] per group, each row the blocks of its context then −1.
  for (int g = 0; g < kNumKvGroups; ++g) {
    const bool used = config.NumLayersOfKind(static_cast<LayerKind>(g)) > 0;
    max_blocks[g] = used ? BlocksFor(max_context_len, block_size) : 0;
    block_tables[g].assign(sequences.size() * max_blocks[g], -1);
    if (!used) continue;
    for (size_t s = 0; s < sequences.size(); ++s) {
      const std::vector<int32_t>& table = sequences[s].block_tables[g];
      std::copy_n(table.begin(), BlocksFor(context_lens[s], block_size),
                  block_tables[g].begin() + s * max_blocks[g]);
    }
  }
  return absl::OkStatus();
}

bool IsPlainDecode(const ForwardBatch& batch) {
  const size_t num_sequences = batch.context_lens.size();
  if (batch.token_ids.size() != num_sequences || batch.logits_rows.size() != num_sequences) {
    return false;
  }
  return std::all_of(batch.query_lens.begin(), batch.query_lens.end(),
                     [](int32_t tokens) { return tokens == 1; });
}

int64_t GraphBatchSize(int64_t num_sequences) {
  if (num_sequences <= 2) return std::max<int64_t>(num_sequences, 1);
  if (num_sequences <= 4) return 4;
  return (num_sequences + 7) / 8 * 8;
}

GraphShape GraphShapeFor(const ForwardBatch& batch, const Gemma4Config& config) {
  constexpr int64_t kMinTableWidth = 16;
  const int64_t block_size = batch.kv_block_size;
  const int64_t widest = std::max(batch.max_blocks[0], batch.max_blocks[1]);
  GraphShape shape;
  shape.num_sequences = GraphBatchSize(static_cast<int64_t>(batch.context_lens.size()));
  shape.table_width = std::max(
      kMinTableWidth,
      static_cast<int64_t>(std::bit_ceil(static_cast<uint64_t>(std::max<int64_t>(widest, 1)))));
  shape.max_context_len = std::min(shape.table_width * block_size, config.max_position_embeddings);
  return shape;
}

void PadForGraph(const ForwardBatch& batch, const GraphShape& shape, ForwardBatch& padded) {
  const int64_t num_sequences = static_cast<int64_t>(batch.context_lens.size());
  CHECK(IsPlainDecode(batch) && num_sequences <= shape.num_sequences &&
        batch.max_blocks[0] <= shape.table_width && batch.max_blocks[1] <= shape.table_width &&
        batch.max_context_len <= shape.max_context_len)
      << "PadForGraph: " << num_sequences << " sequences, tables " << batch.max_blocks[0] << " and "
      << batch.max_blocks[1] << " wide, into a graph of " << shape.num_sequences << " by "
      << shape.table_width;
  const size_t padding = static_cast<size_t>(shape.num_sequences - num_sequences);
  auto padded_copy = [padding](const std::vector<int32_t>& from, int32_t fill,
                               std::vector<int32_t>& to) {
    to.assign(from.begin(), from.end());
    to.insert(to.end(), padding, fill);
  };
  padded.sequences.clear();
  padded.sequence_ids.clear();
  padded_copy(batch.token_ids, 0, padded.token_ids);
  padded_copy(batch.positions, 0, padded.positions);
  for (int g = 0; g < kNumKvGroups; ++g) {
    padded_copy(batch.slot_mapping[g], ops::kPaddingSlot, padded.slot_mapping[g]);
  }
  padded_copy(batch.token_begin, 0, padded.token_begin);
  padded_copy(batch.query_lens, 0, padded.query_lens);
  padded_copy(batch.context_lens, 0, padded.context_lens);
  padded.logits_rows.assign(batch.logits_rows.begin(), batch.logits_rows.end());
  for (int64_t s = num_sequences; s < shape.num_sequences; ++s) {
    padded.token_begin[s] = static_cast<int32_t>(s);  // an empty span at its own row
    padded.logits_rows.push_back(static_cast<int32_t>(s));
  }
  padded.max_context_len = shape.max_context_len;
  padded.kv_block_size = batch.kv_block_size;
  for (int g = 0; g < kNumKvGroups; ++g) {
    const int64_t width = batch.max_blocks[g] > 0 ? shape.table_width : 0;
    padded.max_blocks[g] = width;
    padded.block_tables[g].assign(static_cast<size_t>(shape.num_sequences * width), -1);
    for (int64_t s = 0; s < num_sequences; ++s) {
      std::copy_n(batch.block_tables[g].begin() + s * batch.max_blocks[g], batch.max_blocks[g],
                  padded.block_tables[g].begin() + s * width);
    }
  }
}

namespace {

constexpr int kNumFields = 10;

// The fields of a batch in upload order, each a vector of i32.
std::array<const std::vector<int32_t>*, kNumFields> Fields(const ForwardBatch& batch) {
  return {&batch.token_ids,        &batch.positions,        &batch.slot_mapping[0],
          &batch.slot_mapping[1],  &batch.token_begin,      &batch.query_lens,
          &batch.context_lens,     &batch.block_tables[0],  &batch.block_tables[1],
          &batch.logits_rows};
}

}  // namespace

StepMetadata UploadBatch(const ForwardBatch& batch, const Device& device, UploadBuffers& buffers) {
  const std::array<const std::vector<int32_t>*, kNumFields> fields = Fields(batch);
  std::array<Tensor, kNumFields> tensors;  // one per field, in Fields' order
  if (device.is_cpu()) {
    for (int f = 0; f < kNumFields; ++f) tensors[f] = Tensor::BorrowVector(*fields[f]);
  } else {
    buffers.staging.clear();
    for (const std::vector<int32_t>* field : fields) {
      buffers.staging.insert(buffers.staging.end(), field->begin(), field->end());
    }
    const int64_t total = static_cast<int64_t>(buffers.staging.size());
    if (!buffers.device.defined() || buffers.device.numel() < total) {
      buffers.device = Tensor::Empty(DType::kI32, {2 * total}, device);
    }
    Tensor destination = buffers.device.Rows(total);
    ops::Copy(Tensor::BorrowVector(buffers.staging), destination);
    int64_t offset = 0;
    for (int f = 0; f < kNumFields; ++f) {
      const int64_t size = static_cast<int64_t>(fields[f]->size());
      tensors[f] = buffers.device.Slice(offset, offset + size);
      offset += size;
    }
  }
  const int64_t num_sequences = static_cast<int64_t>(batch.context_lens.size());
  StepMetadata step;
  step.token_ids = tensors[0];
  step.positions = tensors[1];
  step.slots = {tensors[2], tensors[3]};
  for (int g = 0; g < kNumKvGroups; ++g) {
    ops::AttentionMetadata& attention = step.attention[g];
    attention.token_begin = tensors[4];
    attention.num_tokens = tensors[5];
    attention.context_lens = tensors[6];
    attention.block_tables = tensors[7 + g].View({num_sequences, batch.max_blocks[g]});
    attention.max_context_len = batch.max_context_len;
    attention.block_size = batch.kv_block_size;
  }
  step.logits_rows = tensors[9];
  return step;
}

}  // namespace gemmaserve::model
