#include "coordinator/block_pool.h"

#include "common/check.h"

namespace gemmaserve::coordinator {

BlockPool::BlockPool(int32_t num_blocks)
    : num_blocks_(num_blocks),
      num_free_(0),
      refcount_(num_blocks, 0),
      hash_(num_blocks, 0),
      has_hash_(num_blocks, false),
      withdrawn_(num_blocks, false),
      prev_(num_blocks + 1, num_blocks),
      next_(num_blocks + 1, num_blocks) {
  CHECK_GT(num_blocks, 0);
  for (int32_t block = 0; block < num_blocks; ++block) LinkBefore(block, num_blocks_);
}

int32_t BlockPool::Take() {
  CHECK_GT(num_free_, 0) << "no free block; ask CanAllocate/CanAppend first";
  const int32_t block = next_[num_blocks_];
  Unlink(block);
  if (IsFindable(block)) cached_.erase(hash_[block]);
  has_hash_[block] = false;
  refcount_[block] = 1;
  return block;
}

int32_t BlockPool::Find(uint64_t hash) const {
  const auto it = cached_.find(hash);
  return it == cached_.end() ? -1 : it->second;
}

void BlockPool::Ref(int32_t block) {
  CHECK(!withdrawn_[block]) << "block " << block << " is withdrawn";
  if (refcount_[block] == 0) Unlink(block);
  ++refcount_[block];
}

void BlockPool::Unref(int32_t block) {
  CHECK_GT(refcount_[block], 0) << "block " << block << " freed twice";
  if (--refcount_[block] > 0) return;
  // Evicted last if someone may still ask for its prefix, first otherwise.
  LinkBefore(block, IsFindable(block) ? num_blocks_ : next_[num_blocks_]);
}

void BlockPool::Cache(int32_t block, uint64_t hash) {
  CHECK_GT(refcount_[block], 0) << "caching free block " << block;
  hash_[block] = hash;
  has_hash_[block] = true;
  cached_.try_emplace(hash, block);
}

void BlockPool::ForgetCachedPrefixes() {
  CHECK_EQ(num_used(), 0) << "forgetting the prefix cache while blocks are in use";
  cached_.clear();
  has_hash_.assign(has_hash_.size(), false);
}

void BlockPool::Withdraw(int32_t block) {
  CHECK(refcount_[block] == 0 && !withdrawn_[block]) << "withdrawing block " << block
                                                     << ", which is not free";
  Unlink(block);
  if (IsFindable(block)) cached_.erase(hash_[block]);
  has_hash_[block] = false;
  withdrawn_[block] = true;
  ++num_withdrawn_;
}

void BlockPool::Restore(int32_t block) {
  CHECK(withdrawn_[block]) << "restoring block " << block << ", which was not withdrawn";
  withdrawn_[block] = false;
  --num_withdrawn_;
  LinkBefore(block, next_[num_blocks_]);
}

bool BlockPool::IsFindable(int32_t block) const {
  return has_hash_[block] && Find(hash_[block]) == block;
}

void BlockPool::LinkBefore(int32_t block, int32_t position) {
  prev_[block] = prev_[position];
  next_[block] = position;
  next_[prev_[position]] = block;
  prev_[position] = block;
  ++num_free_;
}

void BlockPool::Unlink(int32_t block) {
  next_[prev_[block]] = next_[block];
  prev_[next_[block]] = prev_[block];
  --num_free_;
}

}  // namespace gemmaserve::coordinator
