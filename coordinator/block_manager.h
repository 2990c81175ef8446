// BlockManager: owns the KV block ids of both KV groups (DESIGN.md, "KV cache groups") and decides
// which physical blocks each sequence's block tables name. The workers store whatever the tables
// say.
//
// Three things shape it:
//   * Shared pages. The workers' KV memory is a number of pages, each holding one block of one
//     group or model::KvPages::blocks_per_page blocks of the other (model/kv_cache.h), so the
//     groups draw on one pool: a long sequence's full-attention blocks use the memory that short
//     sequences' sliding blocks would, and the other way round. A page belongs to no group until
//     one takes a block in it, and goes back when its blocks are all free and cache nothing. A
//     group needing a block takes, in order: a free block of its own pages that caches nothing,
//     an unowned page, its least recently freed cached block, an idle page of the other group (all
//     its blocks free; their prefixes are forgotten).
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

#include "absl/container/btree_set.h"
#include "absl/types/span.h"
#include "coordinator/block_pool.h"
#include "coordinator/sequence.h"
#include "model/config.h"
#include "model/kv_pages.h"

namespace gemmaserve::coordinator {

// The cached front of a sequence: table prefixes to start from. Valid until the next call that
// changes the manager.
struct PrefixHit {
  int64_t num_tokens = 0;  // a multiple of block_size, always less than the sequence's tokens
  // [num_tokens / block_size] per group, indexed by model::LayerKind; the sliding table holds −1
  // before the window of the first uncached token.
  std::array<std::vector<int32_t>, model::kNumKvGroups> tables;
};

// The most pages one sequence of `num_tokens` tokens holds at once, computing at most
// `max_step_tokens` of them per step: a full block per block_size tokens, sliding blocks for the
// window and the step's tokens. A sequence alone in the cache always fits in these.
int64_t SequencePages(const model::KvPages& pages, int64_t block_size, int64_t sliding_window,
                      int64_t num_tokens, int64_t max_step_tokens);

class BlockManager {
 public:
  // The workers' `pages`, in blocks of `block_size` slots; `sliding_window` is W, the keys a
  // sliding query sees including its own.
  BlockManager(const model::KvPages& pages, int64_t block_size, int64_t sliding_window,
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
  // SequencePages with this manager's geometry.
  int64_t PagesFor(int64_t num_tokens, int64_t max_step_tokens) const {
    return SequencePages(pages_, block_size_, sliding_window_, num_tokens, max_step_tokens);
  }

  int64_t block_size() const { return block_size_; }
  const model::KvPages& pages() const { return pages_; }
  int64_t num_pages() const { return pages_.num_pages; }
  const BlockPool& pool(model::LayerKind group) const { return pools_[static_cast<int>(group)]; }
  int64_t num_used(model::LayerKind group) const { return pool(group).num_used(); }
  // Pages of `group` with a block some sequence holds (idle pages, whose blocks only cache
  // prefixes, are not counted: they are free to take).
  int64_t num_used_pages(model::LayerKind group) const {
    return used_pages_[static_cast<int>(group)];
  }
  // Pages no group owns.
  int64_t num_unowned_pages() const { return static_cast<int64_t>(unowned_.size()); }
  // Tokens looked up in the prefix cache at admissions, and of those the ones it served.
  int64_t prefix_queried_tokens() const { return prefix_queried_tokens_; }
  int64_t prefix_hit_tokens() const { return prefix_hit_tokens_; }

 private:
  static constexpr int kSliding = static_cast<int>(model::LayerKind::kSliding);
  static constexpr int kFull = static_cast<int>(model::LayerKind::kFull);

  int64_t NumBlocksFor(int64_t num_tokens) const;
  // Whether `needed` more blocks of each group can be had, once the free blocks of `revived` (a
  // prefix hit's tables) are used.
  bool CanTake(int64_t needed,
               const std::array<std::vector<int32_t>, model::kNumKvGroups>* revived) const;
  // A block of group `g` (see the order above), with refcount 1.
  int32_t TakeBlock(int g);
  void RefBlock(int g, int32_t block);
  void UnrefBlock(int g, int32_t block);
  // `page` joins group g: its blocks become free blocks of g.
  void Claim(int g, int32_t page);
  // The idle `page` of group g leaves it, its cached prefixes forgotten.
  void Release(int g, int32_t page);
  int32_t PageOf(int g, int32_t block) const {
    return static_cast<int32_t>(block / pages_.blocks_per_page[g]);
  }
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
  const model::KvPages pages_;
  int big_;    // the group with one block per page; its blocks are taken first in a step
  int small_;  // the other
  std::array<BlockPool, model::kNumKvGroups> pools_;
  std::vector<int8_t> owner_;   // per page: the group that owns it, −1 for none
  std::vector<int32_t> used_;   // per page: its blocks with a reference
  std::vector<int32_t> unowned_;  // pages no group owns, the next one to claim last
  std::array<absl::btree_set<int32_t>, model::kNumKvGroups> idle_pages_;  // owned, none used
  std::array<int64_t, model::kNumKvGroups> used_pages_{};
  int64_t prefix_queried_tokens_ = 0;
  int64_t prefix_hit_tokens_ = 0;
};

}  // namespace gemmaserve::coordinator
