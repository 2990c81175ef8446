// The BlockManager invariants the scheduler and block manager tests check after every call:
//   * per KV group, free + used + withdrawn == total, and the free count is the number of blocks
//     no one holds that are not withdrawn;
//   * pages: each belongs to at most one group (its blocks there not withdrawn, all withdrawn in
//     the other), the unowned and used page counts match the blocks';
//   * every refcount equals the number of live block-table entries naming the block (so none is
//     negative, and a block in two tables is shared through the prefix cache: it holds a hash);
//   * no table names a block twice; both tables of a sequence have the same length;
//   * sliding entries before the window of the sequence's next token are −1, the rest are blocks.
#pragma once

#include <array>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "coordinator/block_manager.h"
#include "coordinator/sequence.h"
#include "gtest/gtest.h"

namespace gemmaserve::coordinator {

inline ::testing::AssertionResult CheckTables(const BlockManager& manager, const Sequence& seq) {
  const auto& sliding = seq.block_tables[static_cast<int>(model::LayerKind::kSliding)];
  const auto& full = seq.block_tables[static_cast<int>(model::LayerKind::kFull)];
  if (sliding.size() != full.size()) {
    return ::testing::AssertionFailure() << "sequence " << seq.id << ": tables of " << sliding.size()
                                         << " and " << full.size() << " blocks";
  }
  if (static_cast<int64_t>(full.size()) * manager.block_size() < seq.num_computed) {
    return ::testing::AssertionFailure() << "sequence " << seq.id << ": " << seq.num_computed
                                         << " computed tokens in " << full.size() << " blocks";
  }
  const int64_t first_window_block = manager.FirstWindowBlock(seq.num_computed);
  for (int64_t b = 0; b < static_cast<int64_t>(full.size()); ++b) {
    const bool in_window = b >= first_window_block;
    if (full[b] < 0 || (sliding[b] >= 0) != in_window) {
      return ::testing::AssertionFailure()
             << "sequence " << seq.id << " (" << seq.num_computed << " computed) block " << b
             << ": sliding " << sliding[b] << ", full " << full[b] << ", window starts at block "
             << first_window_block;
    }
  }
  return ::testing::AssertionSuccess();
}

inline ::testing::AssertionResult CheckBlockInvariants(const BlockManager& manager,
                                                       const std::vector<const Sequence*>& live) {
  for (int g = 0; g < model::kNumKvGroups; ++g) {
    const BlockPool& pool = manager.pool(static_cast<model::LayerKind>(g));
    absl::flat_hash_map<int32_t, int32_t> references;
    for (const Sequence* seq : live) {
      absl::flat_hash_map<int32_t, int32_t> in_table;
      for (int32_t block : seq->block_tables[g]) {
        if (block < 0) continue;
        if (++in_table[block] > 1) {
          return ::testing::AssertionFailure()
                 << "sequence " << seq->id << " names block " << block << " twice (group " << g << ")";
        }
        ++references[block];
      }
    }
    int32_t num_unreferenced = 0;
    for (int32_t block = 0; block < pool.num_blocks(); ++block) {
      if (pool.withdrawn(block)) {
        if (references.contains(block)) {
          return ::testing::AssertionFailure() << "group " << g << " block " << block
                                               << " is withdrawn but a table names it";
        }
        continue;
      }
      const int32_t expected = references.contains(block) ? references[block] : 0;
      if (pool.refcount(block) != expected) {
        return ::testing::AssertionFailure() << "group " << g << " block " << block << ": refcount "
                                             << pool.refcount(block) << ", tables name it "
                                             << expected << " times";
      }
      if (expected >= 2 && !pool.has_hash(block)) {
        return ::testing::AssertionFailure()
               << "group " << g << " block " << block << " is shared but caches no prefix";
      }
      if (expected == 0) ++num_unreferenced;
    }
    if (pool.num_free() != num_unreferenced ||
        pool.num_free() + pool.num_used() + pool.num_withdrawn() != pool.num_blocks()) {
      return ::testing::AssertionFailure()
             << "group " << g << ": " << pool.num_free() << " free + " << pool.num_used()
             << " used + " << pool.num_withdrawn() << " withdrawn of " << pool.num_blocks() << ", "
             << num_unreferenced << " unreferenced";
    }
  }
  const model::KvPages& pages = manager.pages();
  int64_t num_unowned = 0;
  std::array<int64_t, model::kNumKvGroups> num_used_pages{};
  for (int64_t page = 0; page < pages.num_pages; ++page) {
    int owners = 0;
    for (int g = 0; g < model::kNumKvGroups; ++g) {
      const BlockPool& pool = manager.pool(static_cast<model::LayerKind>(g));
      const int64_t per_page = pages.blocks_per_page[g];
      int64_t withdrawn = 0;
      bool used = false;
      for (int64_t k = 0; k < per_page; ++k) {
        const int32_t block = static_cast<int32_t>(page * per_page + k);
        withdrawn += pool.withdrawn(block);
        used = used || pool.refcount(block) > 0;
      }
      if (withdrawn != 0 && withdrawn != per_page) {
        return ::testing::AssertionFailure() << "page " << page << ": " << withdrawn << " of "
                                             << per_page << " blocks of group " << g
                                             << " withdrawn";
      }
      owners += withdrawn == 0;
      num_used_pages[g] += used;
    }
    if (owners > 1) {
      return ::testing::AssertionFailure() << "page " << page << " belongs to both groups";
    }
    num_unowned += owners == 0;
  }
  if (num_unowned != manager.num_unowned_pages()) {
    return ::testing::AssertionFailure() << num_unowned << " pages unowned, the manager counts "
                                         << manager.num_unowned_pages();
  }
  for (int g = 0; g < model::kNumKvGroups; ++g) {
    if (num_used_pages[g] != manager.num_used_pages(static_cast<model::LayerKind>(g))) {
      return ::testing::AssertionFailure()
             << "group " << g << ": " << num_used_pages[g] << " pages in use, the manager counts "
             << manager.num_used_pages(static_cast<model::LayerKind>(g));
    }
  }
  for (const Sequence* seq : live) {
    if (::testing::AssertionResult tables = CheckTables(manager, *seq); !tables) return tables;
  }
  return ::testing::AssertionSuccess();
}

}  // namespace gemmaserve::coordinator
