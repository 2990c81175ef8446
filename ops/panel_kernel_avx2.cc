// PanelTileAvx2: panel_kernel.h's tile in AVX2 + FMA. This file alone is compiled with
// -mavx2 -mfma; callers reach it only after CpuHasAvx2Fma(). A bf16 panel holds k in pairs
// (panel_kernel.h): each 32-bit lane carries k's weight in its low half and k + 1's in its high
// half, each made a float exactly by a shift or a mask.
//
// Each step of k loads the panel's 16 weights (two vectors), broadcasts x[m][k] for every row
// (contiguous: x is packed k-major) and does two FMAs per row. The accumulators are named
// variables, not an array: GCC keeps an array of vectors in memory and stores it back on every
// iteration.
#include <immintrin.h>

#include "ops/panel_kernel.h"

namespace gemmaserve::ops::internal {
namespace {

// A bf16 panel's weights of k (even) and k + 1 for outputs j0 … j0 + 7, from the 32 bytes at `p`
// (low halves of the 32-bit lanes: k; high halves: k + 1), each made a float exactly.
inline void LoadPair8(const uint16_t* p, __m256& even, __m256& odd) {
  const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  even = _mm256_castsi256_ps(_mm256_slli_epi32(bits, 16));
  odd = _mm256_castsi256_ps(_mm256_and_si256(bits, _mm256_set1_epi32(static_cast<int>(0xffff0000u))));
}

template <int kRows, typename W>
void Tile(const float* x, int /*rows*/, const void* panel_bytes, int64_t depth, float* y,
          int64_t ldy, bool accumulate, const void* prefetch_bytes, int prefetch_step) {
  static_assert(kRows >= 1 && kRows <= kTileRows);
  const W* panel = static_cast<const W*>(panel_bytes);
  const char* prefetch = static_cast<const char*>(prefetch_bytes);
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
         c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  int until_prefetch = 1;
  // One line of the panel per step: k for f32, the pair k, k + 1 for bf16.
  constexpr int64_t kPerLine = std::is_same_v<W, float> ? 1 : 2;
  __m256 b;
#define GS_TILE_ROW(m, w0, w1, xk)                     \
  if constexpr (kRows > m) {                           \
    b = _mm256_broadcast_ss((xk) + m);                 \
    c##m##0 = _mm256_fmadd_ps(b, w0, c##m##0);         \
    c##m##1 = _mm256_fmadd_ps(b, w1, c##m##1);         \
  }
#define GS_TILE_ROWS(w0, w1, xk)                                                             \
  GS_TILE_ROW(0, w0, w1, xk) GS_TILE_ROW(1, w0, w1, xk) GS_TILE_ROW(2, w0, w1, xk)          \
  GS_TILE_ROW(3, w0, w1, xk) GS_TILE_ROW(4, w0, w1, xk) GS_TILE_ROW(5, w0, w1, xk)
#pragma GCC unroll 4
  for (int64_t k = 0; k < depth; k += kPerLine) {
    if (prefetch != nullptr && --until_prefetch == 0) {
      _mm_prefetch(prefetch, _MM_HINT_T0);
      prefetch += 64;
      until_prefetch = prefetch_step;
    }
    const float* xk = x + k * kRows;
    if constexpr (std::is_same_v<W, float>) {
      const __m256 w0 = _mm256_loadu_ps(panel + 16 * k);
      const __m256 w1 = _mm256_loadu_ps(panel + 16 * k + 8);
      GS_TILE_ROWS(w0, w1, xk)
    } else {
      __m256 even0, odd0, even1, odd1;
      LoadPair8(panel + 16 * k, even0, odd0);
      LoadPair8(panel + 16 * k + 16, even1, odd1);
      GS_TILE_ROWS(even0, even1, xk)
      GS_TILE_ROWS(odd0, odd1, xk + kRows)
    }
  }
#undef GS_TILE_ROWS
#undef GS_TILE_ROW
#define GS_TILE_STORE(m)                                                                     \
  if constexpr (kRows > m) {                                                                 \
    float* out = y + m * ldy;                                                                \
    if (accumulate) {                                                                        \
      c##m##0 = _mm256_add_ps(c##m##0, _mm256_loadu_ps(out));                                \
      c##m##1 = _mm256_add_ps(c##m##1, _mm256_loadu_ps(out + 8));                            \
    }                                                                                        \
    _mm256_storeu_ps(out, c##m##0);                                                          \
    _mm256_storeu_ps(out + 8, c##m##1);                                                      \
  }
  GS_TILE_STORE(0) GS_TILE_STORE(1) GS_TILE_STORE(2) GS_TILE_STORE(3) GS_TILE_STORE(4)
  GS_TILE_STORE(5)
#undef GS_TILE_STORE
}

// The one-row kernel (panel_kernel.h, RowTileFn), prefetching each of its four streams ahead.
template <typename W>
void RowTile(const float* x, const void* panel_bytes, int64_t panel_stride, int64_t depth,
             float* y, bool accumulate) {
  const char* base = static_cast<const char*>(panel_bytes);
  const W* panels[kRowPanels];
  for (int p = 0; p < kRowPanels; ++p) panels[p] = reinterpret_cast<const W*>(base + p * panel_stride);
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
         c30 = c00, c31 = c00;
  constexpr int64_t kAhead = 1024;
  constexpr int64_t kPerLine = std::is_same_v<W, float> ? 1 : 2;
#pragma GCC unroll 2
  for (int64_t k = 0; k < depth; k += kPerLine) {
    const int64_t ahead = 16 * k * static_cast<int64_t>(sizeof(W)) + kAhead;
    for (int p = 0; p < kRowPanels; ++p) {
      _mm_prefetch(reinterpret_cast<const char*>(panels[p]) + ahead, _MM_HINT_T0);
    }
    const __m256 xk = _mm256_broadcast_ss(x + k);
    if constexpr (std::is_same_v<W, float>) {
#define GS_ROW_PANEL(p)                                                         \
  c##p##0 = _mm256_fmadd_ps(xk, _mm256_loadu_ps(panels[p] + 16 * k), c##p##0);  \
  c##p##1 = _mm256_fmadd_ps(xk, _mm256_loadu_ps(panels[p] + 16 * k + 8), c##p##1);
      GS_ROW_PANEL(0) GS_ROW_PANEL(1) GS_ROW_PANEL(2) GS_ROW_PANEL(3)
#undef GS_ROW_PANEL
    } else {
      const __m256 xk1 = _mm256_broadcast_ss(x + k + 1);
      __m256 even0, odd0, even1, odd1;
#define GS_ROW_PANEL(p)                                   \
  LoadPair8(panels[p] + 16 * k, even0, odd0);             \
  LoadPair8(panels[p] + 16 * k + 16, even1, odd1);        \
  c##p##0 = _mm256_fmadd_ps(xk, even0, c##p##0);          \
  c##p##1 = _mm256_fmadd_ps(xk, even1, c##p##1);          \
  c##p##0 = _mm256_fmadd_ps(xk1, odd0, c##p##0);          \
  c##p##1 = _mm256_fmadd_ps(xk1, odd1, c##p##1);
      GS_ROW_PANEL(0) GS_ROW_PANEL(1) GS_ROW_PANEL(2) GS_ROW_PANEL(3)
#undef GS_ROW_PANEL
    }
  }
#define GS_ROW_STORE(p)                                                      \
  if (accumulate) {                                                          \
    c##p##0 = _mm256_add_ps(c##p##0, _mm256_loadu_ps(y + 16 * p));           \
    c##p##1 = _mm256_add_ps(c##p##1, _mm256_loadu_ps(y + 16 * p + 8));       \
  }                                                                          \
  _mm256_storeu_ps(y + 16 * p, c##p##0);                                     \
  _mm256_storeu_ps(y + 16 * p + 8, c##p##1);
  GS_ROW_STORE(0) GS_ROW_STORE(1) GS_ROW_STORE(2) GS_ROW_STORE(3)
#undef GS_ROW_STORE
}

constexpr auto kTiles = TileTable<kTileRows>([](auto rows) { return &Tile<rows(), float>; });
constexpr auto kBf16Tiles =
    TileTable<kTileRows>([](auto rows) { return &Tile<rows(), uint16_t>; });

}  // namespace

void PanelTileAvx2(const float* x, int rows, const void* panel, int64_t depth, float* y,
                   int64_t ldy, bool accumulate, const void* prefetch, int prefetch_step) {
  kTiles[rows - 1](x, rows, panel, depth, y, ldy, accumulate, prefetch, prefetch_step);
}

void RowTileAvx2(const float* x, const void* panel, int64_t panel_stride, int64_t depth, float* y,
                 bool accumulate) {
  RowTile<float>(x, panel, panel_stride, depth, y, accumulate);
}

void RowTileAvx2Bf16(const float* x, const void* panel, int64_t panel_stride, int64_t depth,
                     float* y, bool accumulate) {
  RowTile<uint16_t>(x, panel, panel_stride, depth, y, accumulate);
}

void PanelTileAvx2Bf16(const float* x, int rows, const void* panel, int64_t depth, float* y,
                       int64_t ldy, bool accumulate, const void* prefetch, int prefetch_step) {
  kBf16Tiles[rows - 1](x, rows, panel, depth, y, ldy, accumulate, prefetch, prefetch_step);
}

}  // namespace gemmaserve::ops::internal
