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
  // `num_pages` pages of one block of either group, or of `full_per_page` full blocks.
  void Make(int64_t num_pages, bool prefix_caching = true, int64_t full_per_page = 1) {
    manager_ = std::make_unique<BlockManager>(
        model::KvPages{.num_pages = num_pages, .blocks_per_page = {1, full_per_page}}, kBlockSize,
        kWindow, prefix_caching);
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
  Make(16);
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
  Make(8);
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
  Make(128);
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
  Make(32);
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
  Make(64);
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
  Make(64);
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
  Make(20);
  Sequence& a = NewSequence(Tokens(40, 1));
  Admit(a, 4);
  for (int i = 1; i < 10; ++i) Compute(a, 4);  // sliding blocks 0 … 5 freed in that order
  Free(a);  // every block of a is free and cached
  // a's 20 blocks fill the 20 pages; taking six more of each group evicts each group's least
  // recently freed: sliding 0 … 5, full 9 … 4.
  Sequence& c = NewSequence(Tokens(24, 1000));
  Admit(c, 24);
  EXPECT_EQ(manager_->num_unowned_pages(), 0);
  Sequence& b = NewSequence(Tokens(41, 1));
  // Full blocks 0 … 3 are still cached, but the sliding blocks their window needs are gone.
  EXPECT_EQ(manager_->FindCachedPrefix(b).num_tokens, 0);
}

TEST_F(BlockManagerTest, CachedFreeBlocksAreTakenLast) {
  Make(18);
  Sequence& a = NewSequence(Tokens(16, 1));
  Admit(a, 16);
  Free(a);
  // Ten pages are unowned besides a's eight cached blocks: a 16-token sequence (eight pages)
  // fits without evicting them.
  Sequence& c = NewSequence(Tokens(16, 500));
  Admit(c, 16);
  Sequence& b = NewSequence(Tokens(17, 1));
  EXPECT_EQ(manager_->FindCachedPrefix(b).num_tokens, 16);
  Admit(b, 1);  // revives a's eight blocks and takes the last two pages
  EXPECT_EQ(Used(model::LayerKind::kFull), 9);
  EXPECT_EQ(manager_->num_unowned_pages(), 0);
}

TEST_F(BlockManagerTest, APageHoldsSeveralFullBlocksAndGoesBackWhenFree) {
  Make(4, /*prefix_caching=*/false, /*full_per_page=*/3);
  Sequence& seq = NewSequence(Tokens(12, 1));
  EXPECT_FALSE(manager_->CanAllocate(PrefixHit{}, 13));  // four sliding pages and a full one
  Admit(seq, 12);
  EXPECT_EQ(manager_->num_used_pages(model::LayerKind::kSliding), 3);
  EXPECT_EQ(manager_->num_used_pages(model::LayerKind::kFull), 1);
  EXPECT_EQ(seq.block_tables[kFull], (std::vector<int32_t>{9, 10, 11}));  // page 3's three
  Free(seq);
  EXPECT_EQ(manager_->num_unowned_pages(), 4);
}

TEST_F(BlockManagerTest, PastTheWindowASequenceGrowsByFullBlocksAlone) {
  // 200 tokens: 50 full blocks (17 pages of three) and the window's 5 sliding blocks. Separate
  // pools of one block per page would need 100 pages.
  Make(22, /*prefix_caching=*/false, /*full_per_page=*/3);
  EXPECT_EQ(manager_->PagesFor(200, 1), 22);
  Sequence& seq = NewSequence(Tokens(200, 1));
  Admit(seq, 1);
  for (int64_t n = 1; n < 200; ++n) Compute(seq, 1);
  EXPECT_EQ(manager_->num_used_pages(model::LayerKind::kFull), 17);
  EXPECT_LE(manager_->num_used_pages(model::LayerKind::kSliding), 5);
  Free(seq);
  EXPECT_EQ(manager_->num_unowned_pages(), 22);
}

TEST_F(BlockManagerTest, IdlePagesOfTheOtherGroupAreTakenOverLast) {
  Make(8, /*prefix_caching=*/true, /*full_per_page=*/2);
  // a: 8 tokens, two sliding pages and one full page, all cached once freed.
  Sequence& a = NewSequence(Tokens(8, 1));
  Admit(a, 8);
  Free(a);
  EXPECT_EQ(manager_->num_unowned_pages(), 5);
  // b needs 5 blocks of each group: 5 sliding pages and 3 full ones. The 5 unowned pages and a's
  // cached ones are not enough, so the groups take over each other's idle pages and their
  // prefixes are forgotten.
  Sequence& b = NewSequence(Tokens(20, 100));
  Admit(b, 20);
  EXPECT_EQ(manager_->num_unowned_pages(), 0);
  EXPECT_EQ(manager_->FindCachedPrefix(NewSequence(Tokens(9, 1))).num_tokens, 0);
  // What is left: the page of b's first sliding block, out of its window now, and the second
  // half of its third full page. One more block of each group fits, two do not.
  EXPECT_TRUE(manager_->CanAppend(b, 1));
  EXPECT_FALSE(manager_->CanAppend(b, 5));
  Compute(b, 1);
  EXPECT_FALSE(manager_->CanAppend(b, 4));
}

TEST_F(BlockManagerTest, AdmissionCountsPagesBothGroupsNeed) {
  // Pages of one sliding block or four full ones. Sequence a holds one full block in its page,
  // whose three other blocks only the full group can use.
  Make(6, /*prefix_caching=*/false, /*full_per_page=*/4);
  Sequence& a = NewSequence(Tokens(4, 1));
  Admit(a, 4);
  EXPECT_EQ(manager_->num_unowned_pages(), 4);
  // 4 more blocks of each group: 4 sliding pages, and the full blocks fit a's page's three free
  // ones plus one page: 5 pages of 4.
  EXPECT_FALSE(manager_->CanAllocate(PrefixHit{}, 16));
  // 3 of each: 3 sliding pages, the full blocks in a's page.
  EXPECT_TRUE(manager_->CanAllocate(PrefixHit{}, 12));
  Sequence& b = NewSequence(Tokens(12, 100));
  Admit(b, 12);
  EXPECT_EQ(manager_->num_used_pages(model::LayerKind::kFull), 1);
  EXPECT_EQ(manager_->num_unowned_pages(), 1);
  // b's next block of each group needs two pages (the full page is full now); one is left.
  EXPECT_FALSE(manager_->CanAppend(b, 4));
  // Once a is gone, its sliding page and its full block are free: then it fits.
  Free(a);
  EXPECT_TRUE(manager_->CanAppend(b, 4));
  EXPECT_FALSE(manager_->CanAppend(b, 8));
  Compute(b, 4);
  EXPECT_EQ(manager_->num_unowned_pages(), 1);
}

TEST_F(BlockManagerTest, SaltedSequencesShareBlocksOnlyWithTheirOwnSalt) {
  Make(64);
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
  Make(64, /*prefix_caching=*/false);
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
