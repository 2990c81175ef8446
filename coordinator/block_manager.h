// BlockManager: owns the KV block ids of both KV groups (DESIGN.md, "KV cache groups") and decides
// which physical blocks each sequence's block tables name. The workers hold the same number of
// blocks, block_size slots each, in every group; they store whatever the tables say.
//
// Two things shape it:
//   * Sliding window. A sliding-layer query at position q reads keys q − W + 1 … q (GEMMA4.md
//     §2.8). Once every position of a sliding-group block is before the window of the sequence's
//     next token, the block is freed and its table entry becomes −1, so a long sequence holds
//     about W / block_size + 1 sliding blocks however long it grows.
//   * Prefix caching. Every complete block is named by a hash chain, hash(parent's hash, the
//     block's token ids), rooted in the request's cache salt, and both groups' blocks of that
//     prefix are cached under the name; requests with different salts share no block. A new
//     sequence starts from the longest cached prefix whose full-group blocks and the sliding-group
//     blocks its first computed token reads (those in its window) are all cached. A cached block
//     whose sequences are gone stays reusable until a new allocation evicts it (LRU).
//     Hash collisions (2^-64 per lookup) are not checked for.
//
// Callers ask before they change anything: CanAllocate before Allocate, CanAppend before Append.
//
// Ownership: the block tables live in Sequence, edited only here; the manager keeps no pointer to
// a sequence. Thread-safety: none; the engine loop (through the Scheduler) is the only caller.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "coordinator/block_pool.h"
#include "coordinator/sequence.h"
#include "model/config.h"

namespace gemmaserve::coordinator {

// The cached front of a sequence: table prefixes to start from. Valid until the next call that
// changes the manager.
struct PrefixHit {
  int64_t num_tokens = 0;  // a multiple of block_size, always less than the sequence's tokens
  // [num_tokens / block_size] per group, indexed by model::LayerKind; the sliding table holds −1
  // before the window of the first uncached token.
  std::array<std::vector<int32_t>, model::kNumKvGroups> tables;
};

class BlockManager {
 public:
  // `num_blocks` per KV group of `block_size` slots; `sliding_window` is W, the keys a sliding
  // query sees including its own.
  BlockManager(int32_t num_blocks, int64_t block_size, int64_t sliding_window,
               bool enable_prefix_caching);

  BlockManager(const BlockManager&) = delete;
  BlockManager& operator=(const BlockManager&) = delete;

  // The longest cached prefix `seq` can start from; empty when caching is off.
  PrefixHit FindCachedPrefix(const Sequence& seq) const;
  // Whether a sequence holding no blocks can start from `hit` and get blocks for the next
  // `num_new_tokens` tokens after it.
  bool CanAllocate(const PrefixHit& hit, int64_t num_new_tokens) const;
  // Gives `seq` (holding no blocks) the hit's blocks plus new ones for `num_new_tokens` more
  // tokens, and marks the hit's tokens computed. Requires CanAllocate.
  void Allocate(Sequence& seq, const PrefixHit& hit, int64_t num_new_tokens);

  // Whether a sequence holding blocks can get blocks for the next `num_new_tokens` tokens after
  // its computed ones.
  bool CanAppend(const Sequence& seq, int64_t num_new_tokens) const;
  // Extends both tables to cover them. Requires CanAppend.
  void Append(Sequence& seq, int64_t num_new_tokens);

  // Call after seq.num_computed advanced: caches the blocks it completed and frees the sliding
  // blocks that fell out of the window of its next token.
  void OnTokensComputed(Sequence& seq);
  // Drops every block `seq` holds (cached ones stay reusable) and empties its tables.
  void Free(Sequence& seq);
  // Forgets every cached prefix, when the workers lost the KV cache. Requires every block free.
  void ForgetCachedPrefixes();

  // The first logical block a sliding query at `position` reads; earlier ones may be freed.
  int64_t FirstWindowBlock(int64_t position) const;

  int64_t block_size() const { return block_size_; }
  int32_t num_blocks() const { return pools_[0].num_blocks(); }
  const BlockPool& pool(model::LayerKind group) const { return pools_[static_cast<int>(group)]; }
  int64_t num_used(model::LayerKind group) const { return pool(group).num_used(); }
  // Tokens looked up in the prefix cache at admissions, and of those the ones it served.
  int64_t prefix_queried_tokens() const { return prefix_queried_tokens_; }
  int64_t prefix_hit_tokens() const { return prefix_hit_tokens_; }

 private:
  static constexpr int kSliding = static_cast<int>(model::LayerKind::kSliding);
  static constexpr int kFull = static_cast<int>(model::LayerKind::kFull);

  int64_t NumBlocksFor(int64_t num_tokens) const;
  absl::Span<const int32_t> BlockTokens(const Sequence& seq, int64_t block) const;
  // Whether every sliding block a query at the end of the first `num_blocks` blocks reads is
  // cached under `hashes`.
  bool SlidingWindowCached(const std::vector<uint64_t>& hashes, int64_t num_blocks) const;
  void CacheCompleteBlocks(Sequence& seq);
  void FreeSlidingOutsideWindow(Sequence& seq);
  void Extend(Sequence& seq, int64_t num_tokens);

  const int64_t block_size_;
  const int64_t sliding_window_;
  const bool enable_prefix_caching_;
  std::array<BlockPool, model::kNumKvGroups> pools_;
  int64_t prefix_queried_tokens_ = 0;
  int64_t prefix_hit_tokens_ = 0;
};

}  // namespace gemmaserve::coordinator
