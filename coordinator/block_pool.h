// BlockPool: the block ids of one KV group (sliding or full) with their reference counts, and the
// prefix cache of that group: which block holds the KV of which token prefix, named by a 64-bit
// hash (BlockManager computes the hash chain; this class only stores it).
//
// A block is used while some sequence's block table refers to it (refcount > 0) and free
// otherwise. A free block may still cache a prefix: it stays findable by its hash until Take()
// hands it out again. Free blocks are kept in eviction order: blocks that cache nothing are taken
// first, then cached blocks least recently freed first (LRU). A free block can also be withdrawn:
// neither free nor used, its memory lent to the other group (the groups share pages, see
// BlockManager) until Restore() makes it free again.
//
// Ownership: the pool owns only integers; block tables live in Sequence and are edited by
// BlockManager, the pool's only user. Thread-safety: none; one thread (the engine loop) owns it.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace gemmaserve::coordinator {

class BlockPool {
 public:
  explicit BlockPool(int32_t num_blocks);

  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  int32_t num_blocks() const { return num_blocks_; }
  // Blocks no table refers to, including those that still cache a prefix; not withdrawn ones.
  int32_t num_free() const { return num_free_; }
  int32_t num_withdrawn() const { return num_withdrawn_; }
  int32_t num_used() const { return num_blocks_ - num_free_ - num_withdrawn_; }
  bool withdrawn(int32_t block) const { return withdrawn_[block]; }
  // Whether Take() would hand out a block that caches nothing.
  bool HasUncachedFree() const { return num_free_ > 0 && !IsFindable(next_[num_blocks_]); }
  // Whether `block` is free and findable by its prefix.
  bool IsCachedFree(int32_t block) const { return refcount_[block] == 0 && IsFindable(block); }
  // Prefixes findable by Find().
  int64_t num_cached() const { return static_cast<int64_t>(cached_.size()); }
  int32_t refcount(int32_t block) const { return refcount_[block]; }
  // Whether `block` holds a complete, hashed prefix; hash() is valid only then.
  bool has_hash(int32_t block) const { return has_hash_[block]; }
  uint64_t hash(int32_t block) const { return hash_[block]; }

  // Hands out the next free block with refcount 1, forgetting the prefix it cached.
  // Requires num_free() > 0.
  int32_t Take();
  // The block caching the prefix `hash`, used or free; −1 when none does.
  int32_t Find(uint64_t hash) const;
  // Adds a reference to a block found by Find(); a free block stops being free.
  void Ref(int32_t block);
  // Drops a reference; the block becomes free when none remain.
  void Unref(int32_t block);
  // Records that the used `block` now holds the complete KV of the prefix `hash`. When another
  // block already caches the same prefix (two sequences computed it at once), that one stays the
  // findable copy and `block` only remembers its hash, for the chain of its own sequence.
  void Cache(int32_t block, uint64_t hash);
  // Forgets every cached prefix (the KV they named is gone). Requires every block to be free or
  // withdrawn.
  void ForgetCachedPrefixes();
  // Takes the free `block` out of the pool, forgetting the prefix it cached.
  void Withdraw(int32_t block);
  // Makes the withdrawn `block` free again, first to be taken.
  void Restore(int32_t block);

 private:
  // The free list is intrusive: prev_/next_ link free blocks, index num_blocks_ is the sentinel.
  void LinkBefore(int32_t block, int32_t position);
  void Unlink(int32_t block);
  bool IsFindable(int32_t block) const;

  const int32_t num_blocks_;
  int32_t num_free_;
  int32_t num_withdrawn_ = 0;
  std::vector<bool> withdrawn_;
  std::vector<int32_t> refcount_;
  std::vector<uint64_t> hash_;
  std::vector<bool> has_hash_;
  std::vector<int32_t> prev_;
  std::vector<int32_t> next_;
  absl::flat_hash_map<uint64_t, int32_t> cached_;  // prefix hash → the block that serves it
};

}  // namespace gemmaserve::coordinator
