// KvPages: how the KV cache's block ids map onto its pages (model/kv_cache.h), as whoever hands
// out block ids needs to know it: group g has num_pages · blocks_per_page[g] block ids, and block b
// of group g lies in page b / blocks_per_page[g]. Two blocks of different groups may be live at
// once only in different pages.
//
// BlockRuns: fixed runs of blocks, one per sequence slot, for callers that own the whole cache and
// need no block manager (SequenceDriver, the forward-pass tests): run r holds `blocks` blocks of
// each group in pages no other run or group touches.
#pragma once

#include <array>
#include <cstdint>

#include "model/config.h"

namespace gemmaserve::model {

struct KvPages {
  int64_t num_pages = 0;
  // 1 for the group whose block fills a page, more for the other (see KvPageLayout).
  std::array<int64_t, kNumKvGroups> blocks_per_page{1, 1};

  int64_t blocks_per(LayerKind group) const { return blocks_per_page[static_cast<int>(group)]; }
  int64_t num_blocks(LayerKind group) const { return num_pages * blocks_per(group); }
  int64_t PageOf(LayerKind group, int64_t block) const { return block / blocks_per(group); }
};

class BlockRuns {
 public:
  BlockRuns(const KvPages& pages, int64_t blocks) : pages_(pages), blocks_(blocks) {}

  // The longest runs `num_runs` of them fit in `pages`.
  static int64_t MaxBlocks(const KvPages& pages, int64_t num_runs) {
    if (num_runs <= 0) return 0;
    // Pages of one run grow with its blocks; the largest fitting count is at most this:
    int64_t blocks = pages.num_pages / num_runs;
    while (blocks > 0 && BlockRuns(pages, blocks).PagesPerRun() * num_runs > pages.num_pages) {
      --blocks;
    }
    return blocks;
  }

  // `layout`'s blocks per page, with the pages `num_runs` runs of `blocks` blocks take.
  static KvPages PagesFor(const KvPages& layout, int64_t blocks, int64_t num_runs) {
    return {BlockRuns(layout, blocks).PagesPerRun() * num_runs, layout.blocks_per_page};
  }

  int64_t blocks() const { return blocks_; }
  // Pages one run takes: its blocks of each group, rounded up to whole pages.
  int64_t PagesPerRun() const {
    int64_t total = 0;
    for (int64_t per_page : pages_.blocks_per_page) total += (blocks_ + per_page - 1) / per_page;
    return total;
  }
  // Block `index` (< blocks()) of `group` in run `run`.
  int32_t Block(int64_t run, LayerKind group, int64_t index) const {
    int64_t page = run * PagesPerRun();
    for (int g = 0; g < static_cast<int>(group); ++g) {
      page += (blocks_ + pages_.blocks_per_page[g] - 1) / pages_.blocks_per_page[g];
    }
    return static_cast<int32_t>(page * pages_.blocks_per(group) + index);
  }

 private:
  KvPages pages_;
  int64_t blocks_;
};

}  // namespace gemmaserve::model
