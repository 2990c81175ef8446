#include "coordinator/block_manager.h"

#include <algorithm>
#include <limits>

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

int64_t SequencePages(const model::KvPages& pages, int64_t block_size, int64_t sliding_window,
                      int64_t num_tokens, int64_t max_step_tokens) {
  auto blocks = [block_size](int64_t tokens) { return (tokens + block_size - 1) / block_size; };
  const int64_t full = blocks(num_tokens);
  // A step's first query reads W − 1 keys before it; its blocks may start mid-block.
  const int64_t sliding = std::min(full, blocks(sliding_window - 1 + max_step_tokens) + 1);
  auto pages_of = [&pages](model::LayerKind group, int64_t n) {
    return (n + pages.blocks_per(group) - 1) / pages.blocks_per(group);
  };
  return pages_of(model::LayerKind::kFull, full) + pages_of(model::LayerKind::kSliding, sliding);
}

BlockManager::BlockManager(const model::KvPages& pages, int64_t block_size,
                           int64_t sliding_window, bool enable_prefix_caching)
    : block_size_(block_size),
      sliding_window_(sliding_window),
      enable_prefix_caching_(enable_prefix_caching),
      pages_(pages),
      big_(pages.blocks_per_page[kSliding] == 1 ? kSliding : kFull),
      small_(1 - big_),
      pools_{BlockPool(static_cast<int32_t>(pages.num_blocks(model::LayerKind::kSliding))),
             BlockPool(static_cast<int32_t>(pages.num_blocks(model::LayerKind::kFull)))},
      owner_(pages.num_pages, -1),
      used_(pages.num_pages, 0) {
  CHECK_GT(block_size, 0);
  CHECK_GT(sliding_window, 0);
  CHECK(pages.blocks_per_page[big_] == 1 && pages.blocks_per_page[small_] >= 1)
      << "blocks per page " << pages.blocks_per_page[kSliding] << " and "
      << pages.blocks_per_page[kFull] << ": one group must have one";
  CHECK_LE(pages.num_blocks(model::LayerKind::kFull), std::numeric_limits<int32_t>::max());
  CHECK_LE(pages.num_blocks(model::LayerKind::kSliding), std::numeric_limits<int32_t>::max());
  // Every page starts unowned; the lowest ids are claimed first.
  for (BlockPool& pool : pools_) {
    for (int32_t block = 0; block < pool.num_blocks(); ++block) pool.Withdraw(block);
  }
  for (int64_t page = pages.num_pages - 1; page >= 0; --page) {
    unowned_.push_back(static_cast<int32_t>(page));
  }
}

int32_t BlockManager::TakeBlock(int g) {
  BlockPool& pool = pools_[g];
  if (!pool.HasUncachedFree()) {
    if (!unowned_.empty()) {
      const int32_t page = unowned_.back();
      unowned_.pop_back();
      Claim(g, page);
    } else if (pool.num_free() == 0) {
      const int other = 1 - g;
      CHECK(!idle_pages_[other].empty()) << "no KV block left; ask CanAllocate/CanAppend first";
      const int32_t page = *idle_pages_[other].begin();
      Release(other, page);
      unowned_.pop_back();
      Claim(g, page);
    }
  }
  const int32_t block = pool.Take();
  const int32_t page = PageOf(g, block);
  if (used_[page]++ == 0) {
    idle_pages_[g].erase(page);
    ++used_pages_[g];
  }
  return block;
}

void BlockManager::RefBlock(int g, int32_t block) {
  const bool was_free = pools_[g].refcount(block) == 0;
  pools_[g].Ref(block);
  const int32_t page = PageOf(g, block);
  if (was_free && used_[page]++ == 0) {
    idle_pages_[g].erase(page);
    ++used_pages_[g];
  }
}

void BlockManager::UnrefBlock(int g, int32_t block) {
  BlockPool& pool = pools_[g];
  pool.Unref(block);
  if (pool.refcount(block) > 0) return;
  const int32_t page = PageOf(g, block);
  if (--used_[page] > 0) return;
  --used_pages_[g];
  idle_pages_[g].insert(page);
  const int64_t per_page = pages_.blocks_per_page[g];
  for (int64_t k = 0; k < per_page; ++k) {
    if (pool.IsCachedFree(static_cast<int32_t>(page * per_page + k))) return;
  }
  Release(g, page);  // caches nothing: back to every group
}

void BlockManager::Claim(int g, int32_t page) {
  CHECK_EQ(owner_[page], -1) << "page " << page;
  owner_[page] = static_cast<int8_t>(g);
  const int64_t per_page = pages_.blocks_per_page[g];
  // Back to front, so the page's first block is the first taken.
  for (int64_t k = per_page - 1; k >= 0; --k) {
    pools_[g].Restore(static_cast<int32_t>(page * per_page + k));
  }
}

void BlockManager::Release(int g, int32_t page) {
  CHECK(owner_[page] == g && used_[page] == 0) << "page " << page;
  const int64_t per_page = pages_.blocks_per_page[g];
  for (int64_t k = 0; k < per_page; ++k) {
    pools_[g].Withdraw(static_cast<int32_t>(page * per_page + k));
  }
  idle_pages_[g].erase(page);
  owner_[page] = -1;
  unowned_.push_back(page);
}

bool BlockManager::CanTake(
    int64_t needed,
    const std::array<std::vector<int32_t>, model::kNumKvGroups>* revived) const {
  // Free blocks a hit revives are no longer free, nor are the idle pages they lie in.
  std::array<int64_t, model::kNumKvGroups> free = {pools_[0].num_free(), pools_[1].num_free()};
  int64_t small_idle = static_cast<int64_t>(idle_pages_[small_].size());
  if (revived != nullptr) {
    absl::btree_set<int32_t> revived_pages;
    for (int g = 0; g < model::kNumKvGroups; ++g) {
      for (int32_t block : (*revived)[g]) {
        if (block < 0 || pools_[g].refcount(block) > 0) continue;
        --free[g];
        if (g == small_ && used_[PageOf(g, block)] == 0) revived_pages.insert(PageOf(g, block));
      }
    }
    small_idle -= static_cast<int64_t>(revived_pages.size());
  }
  // Each block the larger group takes costs a page that would hold `per_page` of the smaller
  // group's: one of its own free pages, an unowned one or an idle page of the smaller group.
  const int64_t per_page = pages_.blocks_per_page[small_];
  const int64_t unowned = num_unowned_pages();
  return needed <= free[big_] + unowned + small_idle &&
         needed + per_page * needed <= free[small_] + per_page * (free[big_] + unowned);
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
  return CanTake(num_new_blocks, &hit.tables);
}

void BlockManager::Allocate(Sequence& seq, const PrefixHit& hit, int64_t num_new_tokens) {
  CHECK(seq.block_tables[kSliding].empty() && seq.block_tables[kFull].empty())
      << "sequence " << seq.id << " already holds blocks";
  CHECK(CanAllocate(hit, num_new_tokens)) << "sequence " << seq.id;
  for (int g = 0; g < model::kNumKvGroups; ++g) {
    seq.block_tables[g] = hit.tables[g];
    for (int32_t block : hit.tables[g]) {
      if (block >= 0) RefBlock(g, block);
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
  return num_new_blocks <= 0 || CanTake(num_new_blocks, nullptr);
}

void BlockManager::Append(Sequence& seq, int64_t num_new_tokens) {
  CHECK(CanAppend(seq, num_new_tokens)) << "sequence " << seq.id;
  Extend(seq, seq.num_computed + num_new_tokens);
}

void BlockManager::Extend(Sequence& seq, int64_t num_tokens) {
  const int64_t num_blocks = NumBlocksFor(num_tokens);
  // The larger group first: its blocks need whole pages, which the smaller group's could split.
  for (int g : {big_, small_}) {
    std::vector<int32_t>& table = seq.block_tables[g];
    while (static_cast<int64_t>(table.size()) < num_blocks) table.push_back(TakeBlock(g));
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
    UnrefBlock(kSliding, sliding[b]);
    sliding[b] = -1;
  }
}

void BlockManager::Free(Sequence& seq) {
  for (int g = 0; g < model::kNumKvGroups; ++g) {
    std::vector<int32_t>& table = seq.block_tables[g];
    // Back to front: a prefix's tail is evicted before its head, which more prompts share.
    for (auto it = table.rbegin(); it != table.rend(); ++it) {
      if (*it >= 0) UnrefBlock(g, *it);
    }
    table.clear();
  }
}

void BlockManager::ForgetCachedPrefixes() {
  for (int g = 0; g < model::kNumKvGroups; ++g) {
    CHECK_EQ(pools_[g].num_used(), 0) << "forgetting the prefix cache while blocks are in use";
    while (!idle_pages_[g].empty()) Release(g, *idle_pages_[g].begin());
    pools_[g].ForgetCachedPrefixes();
  }
}

}  // namespace gemmaserve::coordinator
