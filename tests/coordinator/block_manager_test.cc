#include "coordinator/block_manager.h"

#include <memory>
#include <numeric>
#include <vector>

#include "gtest/gtest.h"
#include "tests/coordinator/block_invariants.h"

namespace gemmaserve::coordinator {
namespace {

constexpr int64_t kBlockSize = 4;
constexpr int64_t kWindow = 16;
constexpr int kSliding = static_cast<int>(model::LayerKind::kSliding);
constexpr int kFull = static_cast<int>(model::LayerKind::kFull);

std::vector<int32_t> Tokens(int64_t count, int32_t first) {
  std::vector<int32_t> tokens(count);
  std::iota(tokens.begin(), tokens.end(), first);
  return tokens;
}

class BlockManagerTest : public ::testing::Test {
 protected:
  void Make(int32_t num_blocks, bool prefix_caching = true) {
    manager_ = std::make_unique<BlockManager>(num_blocks, kBlockSize, kWindow, prefix_caching);
  }

  Sequence& NewSequence(std::vector<int32_t> tokens, std::string cache_salt = "") {
    Request request;
    request.prompt_ids = std::move(tokens);
    request.cache_salt = std::move(cache_salt);
    sequences_.push_back(std::make_unique<Sequence>(sequences_.size(), std::move(request)));
    return *sequences_.back();
  }

  // Admits `seq` from its cached prefix with blocks for `num_tokens` more and computes them.
  void Admit(Sequence& seq, int64_t num_tokens) {
    const PrefixHit hit = manager_->FindCachedPrefix(seq);
    ASSERT_TRUE(manager_->CanAllocate(hit, num_tokens));
    manager_->Allocate(seq, hit, num_tokens);
    Check();
    Computed(seq, num_tokens);
  }

  // Computes `num_tokens` more tokens of an admitted sequence.
  void Compute(Sequence& seq, int64_t num_tokens) {
    ASSERT_TRUE(manager_->CanAppend(seq, num_tokens));
    manager_->Append(seq, num_tokens);
    Check();
    Computed(seq, num_tokens);
  }

  void Computed(Sequence& seq, int64_t num_tokens) {
    seq.num_computed += num_tokens;
    manager_->OnTokensComputed(seq);
    Check();
  }

  // As the scheduler does when it finishes or preempts a sequence.
  void Free(Sequence& seq) {
    manager_->Free(seq);
    seq.num_computed = 0;
    Check();
  }

  void Check() {
    std::vector<const Sequence*> live;
    for (const auto& seq : sequences_) live.push_back(seq.get());
    ASSERT_TRUE(CheckBlockInvariants(*manager_, live));
  }

  int64_t Used(model::LayerKind group) const { return manager_->num_used(group); }

  std::unique_ptr<BlockManager> manager_;
  std::vector<std::unique_ptr<Sequence>> sequences_;
};

TEST_F(BlockManagerTest, AllocateAndFreeReturnBlocksToBothGroups) {
  Make(8);
  Sequence& seq = NewSequence(Tokens(10, 1));
  Admit(seq, 10);
  EXPECT_EQ(seq.block_tables[kFull].size(), 3u);
  EXPECT_EQ(Used(model::LayerKind::kSliding), 3);
  EXPECT_EQ(Used(model::LayerKind::kFull), 3);
  Free(seq);
  EXPECT_TRUE(seq.block_tables[kSliding].empty() && seq.block_tables[kFull].empty());
  EXPECT_EQ(Used(model::LayerKind::kSliding), 0);
  EXPECT_EQ(Used(model::LayerKind::kFull), 0);
}

TEST_F(BlockManagerTest, AsksBeforeAllocating) {
  Make(4);
  Sequence& a = NewSequence(Tokens(12, 1));
  EXPECT_FALSE(manager_->CanAllocate(PrefixHit{}, 17));
  Admit(a, 12);
  EXPECT_TRUE(manager_->CanAppend(a, 4));  // fills the fourth block exactly
  EXPECT_FALSE(manager_->CanAppend(a, 5));
  Sequence& b = NewSequence(Tokens(4, 100));
  EXPECT_TRUE(manager_->CanAllocate(manager_->FindCachedPrefix(b), 4));
  Admit(b, 4);
  EXPECT_FALSE(manager_->CanAppend(a, 1));  // a's next token opens a fourth block, none is free
}

TEST_F(BlockManagerTest, SlidingBlocksFreedOutsideWindow) {
  Make(64);
  Sequence& seq = NewSequence(Tokens(200, 1));
  Admit(seq, 1);
  for (int64_t n = 1; n < 200; ++n) {
    Compute(seq, 1);
    int64_t held = 0;
    for (int32_t block : seq.block_tables[kSliding]) held += block >= 0;
    // The window of the next token spans at most W − 1 earlier positions plus its own block.
    EXPECT_LE(held, kWindow / kBlockSize + 1) << "after " << seq.num_computed << " tokens";
    EXPECT_EQ(Used(model::LayerKind::kSliding), held);
  }
  EXPECT_EQ(Used(model::LayerKind::kFull), 50);
}

TEST_F(BlockManagerTest, LongChunkHoldsItsWholeSpanUntilComputed) {
  Make(16);
  Sequence& seq = NewSequence(Tokens(40, 1));
  const PrefixHit none;
  manager_->Allocate(seq, none, 40);
  Check();
  // Every position the chunk writes needs a sliding block during the step...
  EXPECT_EQ(Used(model::LayerKind::kSliding), 10);
  Computed(seq, 40);
  // ...and afterwards only the window of position 40 is kept: positions 25 … 39, blocks 6 … 9.
  EXPECT_EQ(Used(model::LayerKind::kSliding), 4);
}

TEST_F(BlockManagerTest, RepeatedPromptReusesFullBlocksAndWindowSlidingBlocks) {
  Make(32);
  Sequence& a = NewSequence(Tokens(40, 1));
  Admit(a, 40);
  const std::vector<int32_t> a_full = a.block_tables[kFull];
  const std::vector<int32_t> a_sliding = a.block_tables[kSliding];
  Free(a);

  std::vector<int32_t> tokens = Tokens(40, 1);
  tokens.push_back(7);
  Sequence& b = NewSequence(tokens);
  const PrefixHit hit = manager_->FindCachedPrefix(b);
  EXPECT_EQ(hit.num_tokens, 40);
  EXPECT_EQ(hit.tables[kFull], a_full);
  // The first uncached position is 40; its window starts at 25, in block 6.
  EXPECT_EQ(hit.tables[kSliding],
            (std::vector<int32_t>{-1, -1, -1, -1, -1, -1, a_sliding[6], a_sliding[7], a_sliding[8],
                                  a_sliding[9]}));
  Admit(b, 1);
  EXPECT_EQ(b.num_cached_tokens, 40);
  EXPECT_EQ(manager_->prefix_queried_tokens(), 40 + 41);
  EXPECT_EQ(manager_->prefix_hit_tokens(), 40);
}

TEST_F(BlockManagerTest, NeverServesTheWholePrompt) {
  Make(32);
  Sequence& a = NewSequence(Tokens(16, 1));
  Admit(a, 16);
  Sequence& b = NewSequence(Tokens(16, 1));
  const PrefixHit hit = manager_->FindCachedPrefix(b);
  EXPECT_EQ(hit.num_tokens, 12);  // the last token must be computed to sample after it
  Admit(b, 4);
  // Shared while both live: blocks 0 … 2 of the full group have refcount 2.
  for (int b_index = 0; b_index < 3; ++b_index) {
    EXPECT_EQ(b.block_tables[kFull][b_index], a.block_tables[kFull][b_index]);
  }
  EXPECT_NE(b.block_tables[kFull][3], a.block_tables[kFull][3]);
}

TEST_F(BlockManagerTest, NoHitWhenTheWindowsSlidingBlocksWereEvicted) {
  Make(16);
  Sequence& a = NewSequence(Tokens(40, 1));
  Admit(a, 4);
  for (int i = 1; i < 10; ++i) Compute(a, 4);  // sliding blocks 0 … 5 freed in that order
  Free(a);  // every block of a is free and cached
  // Six uncached blocks remain per group; taking six more evicts the least recently freed:
  // sliding 0 … 5, full 9 … 4.
  Sequence& c = NewSequence(Tokens(48, 1000));
  Admit(c, 48);
  Sequence& b = NewSequence(Tokens(41, 1));
  // Full blocks 0 … 3 are still cached, but the sliding blocks their window needs are gone.
  EXPECT_EQ(manager_->FindCachedPrefix(b).num_tokens, 0);
}

TEST_F(BlockManagerTest, CachedFreeBlocksAreTakenLast) {
  Make(9);
  Sequence& a = NewSequence(Tokens(16, 1));
  Admit(a, 16);
  Free(a);
  // Five uncached blocks are free besides a's four cached ones: a 16-token sequence fits without
  // evicting them.
  Sequence& c = NewSequence(Tokens(16, 500));
  Admit(c, 16);
  Sequence& b = NewSequence(Tokens(17, 1));
  EXPECT_EQ(manager_->FindCachedPrefix(b).num_tokens, 16);
  Admit(b, 1);  // revives a's four blocks and takes the last uncached one
  EXPECT_EQ(Used(model::LayerKind::kFull), 9);
}

TEST_F(BlockManagerTest, SaltedSequencesShareBlocksOnlyWithTheirOwnSalt) {
  Make(32);
  Sequence& a = NewSequence(Tokens(20, 1), "key-a");
  Admit(a, 20);
  Free(a);
  // The same prompt under another salt, or none, finds nothing cached.
  EXPECT_EQ(manager_->FindCachedPrefix(NewSequence(Tokens(20, 1), "key-b")).num_tokens, 0);
  EXPECT_EQ(manager_->FindCachedPrefix(NewSequence(Tokens(20, 1))).num_tokens, 0);
  // Under its own salt it does, and caching more under that salt keeps the chain.
  Sequence& again = NewSequence(Tokens(24, 1), "key-a");
  EXPECT_EQ(manager_->FindCachedPrefix(again).num_tokens, 20);
  Admit(again, 4);
  Free(again);
  EXPECT_EQ(manager_->FindCachedPrefix(NewSequence(Tokens(25, 1), "key-a")).num_tokens, 24);
  EXPECT_EQ(manager_->FindCachedPrefix(NewSequence(Tokens(25, 1), "key-b")).num_tokens, 0);
}

TEST_F(BlockManagerTest, DisabledPrefixCachingNeverHits) {
  Make(32, /*prefix_caching=*/false);
  Sequence& a = NewSequence(Tokens(20, 1));
  Admit(a, 20);
  Free(a);
  Sequence& b = NewSequence(Tokens(20, 1));
  EXPECT_EQ(manager_->FindCachedPrefix(b).num_tokens, 0);
  Admit(b, 20);
  EXPECT_EQ(manager_->prefix_queried_tokens(), 0);
}

}  // namespace
}  // namespace gemmaserve::coordinator
