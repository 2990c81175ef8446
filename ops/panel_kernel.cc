#include "ops/panel_kernel.h"

#include <omp.h>

#include <algorithm>

namespace gemmaserve::ops::internal {
namespace {

// Cache blocking, measured with tests/ops/linear_bench on Zen 3 (see README): a depth block of
// 2048 is the whole depth of the matrices that read the hidden state of the bench and tiny
// models, so their tiles write y once instead of adding partial sums into it; a panel chunk
// (128 KiB) stays in L2 while every tile of a row block passes over it. Blocks of 256 and 512
// measured the same or slower. A row block's x stays in L2 for decode-sized blocks.
constexpr int64_t kDepthBlock = 2048;
constexpr int64_t kRowBlock = 16 * kTileRows;

// The tiles of a row block, as even as possible (a 2-row remainder tile would run at a third of
// the speed of a full one): 32 rows are 6, 6, 5, 5, 5, 5.
void RowTiles(PanelTileFn tile, const float* x, int64_t rows, int64_t ldx, const float* panel,
              int64_t depth, float* y, int64_t ldy, bool accumulate, const float* next_panel) {
  const int64_t num_tiles = (rows + kTileRows - 1) / kTileRows;
  int64_t row = 0;
  for (int64_t t = 0; t < num_tiles; ++t) {
    const int64_t left = num_tiles - t;
    const int64_t tile_rows = (rows - row + left - 1) / left;
    // The first tile fetches the next panel's chunk; the later ones find this one in cache.
    tile(x + row * ldx, ldx, static_cast<int>(tile_rows), panel, depth, y + row * ldy, ldy,
         accumulate, t == 0 ? next_panel : nullptr);
    row += tile_rows;
  }
}

}  // namespace

void PanelTilePortable(const float* x, int64_t ldx, int rows, const float* panel, int64_t depth,
                       float* y, int64_t ldy, bool accumulate, const float* /*prefetch*/) {
  float acc[kTileRows][16] = {};
  for (int64_t k = 0; k < depth; ++k) {
    const float* w = panel + 16 * k;
    for (int m = 0; m < rows; ++m) {
      const float xv = x[m * ldx + k];
      for (int j = 0; j < 16; ++j) acc[m][j] += xv * w[j];
    }
  }
  for (int m = 0; m < rows; ++m) {
    for (int j = 0; j < 16; ++j) {
      y[m * ldy + j] = (accumulate ? y[m * ldy + j] : 0.0f) + acc[m][j];
    }
  }
}

bool CpuHasAvx2Fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

void PackedMatmul(PanelTileFn tile, const float* x, int64_t rows, int64_t depth,
                  const float* panels, int64_t num_panels, float* y, int64_t ldy) {
#pragma omp parallel
  {
    // Each thread owns a contiguous run of panels (output columns): no two write the same y.
    const int64_t num_threads = omp_get_num_threads();
    const int64_t thread = omp_get_thread_num();
    const int64_t first = num_panels * thread / num_threads;
    const int64_t last = num_panels * (thread + 1) / num_threads;
    for (int64_t r0 = 0; r0 < rows; r0 += kRowBlock) {
      const int64_t block_rows = std::min(kRowBlock, rows - r0);
      for (int64_t k0 = 0; k0 < depth; k0 += kDepthBlock) {
        const int64_t block_depth = std::min(kDepthBlock, depth - k0);
        for (int64_t p = first; p < last; ++p) {
          const float* chunk = panels + (p * depth + k0) * 16;
          const float* next = p + 1 < last ? panels + ((p + 1) * depth + k0) * 16 : nullptr;
          RowTiles(tile, x + r0 * depth + k0, block_rows, depth, chunk, block_depth,
                   y + r0 * ldy + p * 16, ldy, /*accumulate=*/k0 > 0, next);
        }
      }
    }
  }
}

}  // namespace gemmaserve::ops::internal
