// PanelTileAvx2: panel_kernel.h's tile in AVX2 + FMA. This file alone is compiled with
// -mavx2 -mfma; callers reach it only after CpuHasAvx2Fma().
//
// Each step of k loads the panel's 16 weights (two vectors), broadcasts x[m][k] for every row
// (contiguous: x is packed k-major) and does two FMAs per row. The accumulators are named
// variables, not an array: GCC keeps an array of vectors in memory and stores it back on every
// iteration.
#include <immintrin.h>

#include "ops/panel_kernel.h"

namespace gemmaserve::ops::internal {
namespace {

// One panel row (16 weights) as two vectors of 8 floats; bf16 widened exactly (zero-extend each
// 16-bit pattern, shift it into the top half of a float).
inline void LoadPanelRow(const float* p, __m256& w0, __m256& w1) {
  w0 = _mm256_loadu_ps(p);
  w1 = _mm256_loadu_ps(p + 8);
}
inline __m256 Widen8(const uint16_t* p) {
  const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
}
inline void LoadPanelRow(const uint16_t* p, __m256& w0, __m256& w1) {
  w0 = Widen8(p);
  w1 = Widen8(p + 8);
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
#pragma GCC unroll 4
  for (int64_t k = 0; k < depth; ++k) {
    __m256 w0, w1;
    LoadPanelRow(panel + 16 * k, w0, w1);
    if (prefetch != nullptr && --until_prefetch == 0) {
      _mm_prefetch(prefetch, _MM_HINT_T0);
      prefetch += 64;
      until_prefetch = prefetch_step;
    }
    __m256 b;
#define GS_TILE_ROW(m)                                 \
  if constexpr (kRows > m) {                           \
    b = _mm256_broadcast_ss(x + k * kRows + m);        \
    c##m##0 = _mm256_fmadd_ps(b, w0, c##m##0);         \
    c##m##1 = _mm256_fmadd_ps(b, w1, c##m##1);         \
  }
    GS_TILE_ROW(0) GS_TILE_ROW(1) GS_TILE_ROW(2) GS_TILE_ROW(3) GS_TILE_ROW(4) GS_TILE_ROW(5)
#undef GS_TILE_ROW
  }
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

template <typename W>
void RowTile(const float* x, const void* panel_bytes, int64_t panel_stride, int64_t depth,
             float* y, bool accumulate) {
  const char* base = static_cast<const char*>(panel_bytes);
  const W* panels[kRowPanels];
  for (int p = 0; p < kRowPanels; ++p) panels[p] = reinterpret_cast<const W*>(base + p * panel_stride);
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
         c30 = c00, c31 = c00;
  // Each stream fetches a cache line kAhead bytes ahead of where it reads, one per line it reads.
  constexpr int64_t kAhead = 1024;
  constexpr int64_t kStepsPerLine = 64 / (16 * sizeof(W));
#pragma GCC unroll 2
  for (int64_t k = 0; k < depth; ++k) {
    if (k % kStepsPerLine == 0) {
      const int64_t ahead = (16 * k) * static_cast<int64_t>(sizeof(W)) + kAhead;
      for (int p = 0; p < kRowPanels; ++p) {
        _mm_prefetch(reinterpret_cast<const char*>(panels[p]) + ahead, _MM_HINT_T0);
      }
    }
    const __m256 xk = _mm256_broadcast_ss(x + k);
    __m256 w0, w1;
#define GS_ROW_PANEL(p)                                   \
  LoadPanelRow(panels[p] + 16 * k, w0, w1);               \
  c##p##0 = _mm256_fmadd_ps(xk, w0, c##p##0);             \
  c##p##1 = _mm256_fmadd_ps(xk, w1, c##p##1);
    GS_ROW_PANEL(0) GS_ROW_PANEL(1) GS_ROW_PANEL(2) GS_ROW_PANEL(3)
#undef GS_ROW_PANEL
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
