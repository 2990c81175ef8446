#include "coordinator/block_manager.h"

#include <algorithm>

#include "absl/hash/hash.h"
#include "common/check.h"

namespace gemmaserve::coordinator {
namespace {

// The name of a complete block: its tokens and, through the parent's name, every token before.
uint64_t ChainHash(uint64_t parent, absl::Span<const int32_t> tokens) {
  return absl::HashOf(parent, tokens);
}

// The parent of a sequence's first block: its cache salt's, so that requests with different
// salts (per-key caching) never name a block alike.
uint64_t RootHash(const Sequence& seq) {
  const std::string& salt = seq.request.cache_salt;
  return salt.empty() ? 0 : absl::HashOf(salt);
}

}  // namespace

BlockManager::BlockManager(int32_t num_blocks, int64_t block_size, int64_t sliding_window,
                           bool enable_prefix_caching)
    : block_size_(block_size),
      sliding_window_(sliding_window),
      enable_prefix_caching_(enable_prefix_caching),
      pools_{BlockPool(num_blocks), BlockPool(num_blocks)} {
  CHECK_GT(block_size, 0);
  CHECK_GT(sliding_window, 0);
}

int64_t BlockManager::NumBlocksFor(int64_t num_tokens) const {
  return (num_tokens + block_size_ - 1) / block_size_;
}

int64_t BlockManager::FirstWindowBlock(int64_t position) const {
  return std::max<int64_t>(0, position - sliding_window_ + 1) / block_size_;
}

absl::Span<const int32_t> BlockManager::BlockTokens(const Sequence& seq, int64_t block) const {
  return absl::MakeConstSpan(seq.token_ids).subspan(block * block_size_, block_size_);
}

PrefixHit BlockManager::FindCachedPrefix(const Sequence& seq) const {
  if (!enable_prefix_caching_) return {};
  // At least one token must be computed: the step that computes it produces the next sample.
  const int64_t max_blocks = (seq.num_tokens() - 1) / block_size_;
  std::vector<uint64_t> hashes;
  std::vector<int32_t> full_blocks;
  for (uint64_t parent = RootHash(seq); static_cast<int64_t>(hashes.size()) < max_blocks;) {
    parent = ChainHash(parent, BlockTokens(seq, static_cast<int64_t>(hashes.size())));
    const int32_t block = pools_[kFull].Find(parent);
    if (block < 0) break;
    hashes.push_back(parent);
    full_blocks.push_back(block);
  }
  int64_t num_blocks = static_cast<int64_t>(hashes.size());
  while (num_blocks > 0 && !SlidingWindowCached(hashes, num_blocks)) --num_blocks;

  PrefixHit hit;
  hit.num_tokens = num_blocks * block_size_;
  hit.tables[kFull].assign(full_blocks.begin(), full_blocks.begin() + num_blocks);
  hit.tables[kSliding].assign(num_blocks, -1);
  for (int64_t b = FirstWindowBlock(hit.num_tokens); b < num_blocks; ++b) {
    hit.tables[kSliding][b] = pools_[kSliding].Find(hashes[b]);
  }
  return hit;
}

bool BlockManager::SlidingWindowCached(const std::vector<uint64_t>& hashes,
                                       int64_t num_blocks) const {
  for (int64_t b = FirstWindowBlock(num_blocks * block_size_); b < num_blocks; ++b) {
    if (pools_[kSliding].Find(hashes[b]) < 0) return false;
  }
  return true;
}

bool BlockManager::CanAllocate(const PrefixHit& hit, int64_t num_new_tokens) const {
  const int64_t num_new_blocks =
      NumBlocksFor(hit.num_tokens + num_new_tokens) - hit.num_tokens / block_size_;
  for (int g = 0; g < model::kNumKvGroups; ++g) {
    // Cached blocks nobody holds come out of the free count too.
    const int64_t num_revived = std::count_if(
        hit.tables[g].begin(), hit.tables[g].end(),
        [&](int32_t block) { return block >= 0 && pools_[g].refcount(block) == 0; });
    if (num_new_blocks + num_revived > pools_[g].num_free()) return false;
  }
  return true;
}

void BlockManager::Allocate(Sequence& seq, const PrefixHit& hit, int64_t num_new_tokens) {
  CHECK(seq.block_tables[kSliding].empty() && seq.block_tables[kFull].empty())
      << "sequence " << seq.id << " already holds blocks";
  CHECK(CanAllocate(hit, num_new_tokens)) << "sequence " << seq.id;
  for (int g = 0; g < model::kNumKvGroups; ++g) {
    seq.block_tables[g] = hit.tables[g];
    for (int32_t block : hit.tables[g]) {
      if (block >= 0) pools_[g].Ref(block);
    }
  }
  seq.num_computed = hit.num_tokens;
  seq.num_cached_tokens = hit.num_tokens;
  if (enable_prefix_caching_) {
    prefix_queried_tokens_ += seq.num_tokens();
    prefix_hit_tokens_ += hit.num_tokens;
  }
  Extend(seq, hit.num_tokens + num_new_tokens);
}

bool BlockManager::CanAppend(const Sequence& seq, int64_t num_new_tokens) const {
  const int64_t num_new_blocks = NumBlocksFor(seq.num_computed + num_new_tokens) -
                                 static_cast<int64_t>(seq.block_tables[kFull].size());
  return num_new_blocks <= pools_[kSliding].num_free() &&
         num_new_blocks <= pools_[kFull].num_free();
}

void BlockManager::Append(Sequence& seq, int64_t num_new_tokens) {
  CHECK(CanAppend(seq, num_new_tokens)) << "sequence " << seq.id;
  Extend(seq, seq.num_computed + num_new_tokens);
}

void BlockManager::Extend(Sequence& seq, int64_t num_tokens) {
  const int64_t num_blocks = NumBlocksFor(num_tokens);
  for (int g = 0; g < model::kNumKvGroups; ++g) {
    std::vector<int32_t>& table = seq.block_tables[g];
    while (static_cast<int64_t>(table.size()) < num_blocks) table.push_back(pools_[g].Take());
  }
}

void BlockManager::OnTokensComputed(Sequence& seq) {
  CHECK_LE(seq.num_computed, static_cast<int64_t>(seq.block_tables[kFull].size()) * block_size_)
      << "sequence " << seq.id << " computed tokens it has no blocks for";
  if (enable_prefix_caching_) CacheCompleteBlocks(seq);
  FreeSlidingOutsideWindow(seq);
}

void BlockManager::CacheCompleteBlocks(Sequence& seq) {
  const std::vector<int32_t>& full = seq.block_tables[kFull];
  const std::vector<int32_t>& sliding = seq.block_tables[kSliding];
  const int64_t num_complete = seq.num_computed / block_size_;
  // Blocks are cached in order, so the uncached complete ones are the last few.
  int64_t first = num_complete;
  while (first > 0 && !pools_[kFull].has_hash(full[first - 1])) --first;
  uint64_t parent = first == 0 ? RootHash(seq) : pools_[kFull].hash(full[first - 1]);
  for (int64_t b = first; b < num_complete; ++b) {
    parent = ChainHash(parent, BlockTokens(seq, b));
    pools_[kFull].Cache(full[b], parent);
    // Completed by the step just computed, so still inside the window: freeing comes after.
    CHECK_GE(sliding[b], 0) << "sequence " << seq.id << " block " << b;
    pools_[kSliding].Cache(sliding[b], parent);
  }
}

void BlockManager::FreeSlidingOutsideWindow(Sequence& seq) {
  std::vector<int32_t>& sliding = seq.block_tables[kSliding];
  const int64_t end = std::min<int64_t>(FirstWindowBlock(seq.num_computed), sliding.size());
  // Freed entries form a prefix of the table, so only the newest ones can still be held.
  for (int64_t b = end - 1; b >= 0 && sliding[b] >= 0; --b) {
    pools_[kSliding].Unref(sliding[b]);
    sliding[b] = -1;
  }
}

void BlockManager::Free(Sequence& seq) {
  for (int g = 0; g < model::kNumKvGroups; ++g) {
    std::vector<int32_t>& table = seq.block_tables[g];
    // Back to front: a prefix's tail is evicted before its head, which more prompts share.
    for (auto it = table.rbegin(); it != table.rend(); ++it) {
      if (*it >= 0) pools_[g].Unref(*it);
    }
    table.clear();
  }
}

void BlockManager::ForgetCachedPrefixes() {
  for (BlockPool& pool : pools_) pool.ForgetCachedPrefixes();
}

}  // namespace gemmaserve::coordinator
