// PanelTileAvx512: panel_kernel.h's tile in AVX-512F. This file alone is compiled with
// -mavx512f; callers reach it only after CpuHasAvx512f().
//
// A 16-wide panel row is one zmm register, so a tile of up to 16 rows keeps one accumulator per
// row (16 of the 32 registers). Each step of k loads the panel's 16 weights once and does one FMA
// per row with x[m][k] broadcast from memory (x is packed k-major, so those reads are one
// stream): per FMA one weight load shared by every row, where the AVX2 tile needs two loads and
// two FMAs per row for the same 16 outputs. Accumulators are named variables (see the AVX2 tile).
#include <immintrin.h>

#include "ops/panel_kernel.h"

namespace gemmaserve::ops::internal {
namespace {

// One panel row (16 weights) as 16 floats: a load, or for bf16 a 32-byte load widened exactly
// (zero-extend each 16-bit pattern, shift it into the top half of a float).
inline __m512 LoadPanelRow(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 LoadPanelRow(const uint16_t* p) {
  const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

template <int kRows, typename W>
void Tile(const float* x, int /*rows*/, const void* panel_bytes, int64_t depth, float* y,
          int64_t ldy, bool accumulate, const void* prefetch_bytes, int prefetch_step) {
  static_assert(kRows >= 1 && kRows <= kAvx512TileRows);
  const W* panel = static_cast<const W*>(panel_bytes);
  const char* prefetch = static_cast<const char*>(prefetch_bytes);
  __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0,
         c7 = c0, c8 = c0, c9 = c0, c10 = c0, c11 = c0, c12 = c0, c13 = c0, c14 = c0, c15 = c0;
  int until_prefetch = 1;
#pragma GCC unroll 2
  for (int64_t k = 0; k < depth; ++k) {
    const __m512 w = LoadPanelRow(panel + 16 * k);
    if (prefetch != nullptr && --until_prefetch == 0) {
      _mm_prefetch(prefetch, _MM_HINT_T0);
      prefetch += 64;
      until_prefetch = prefetch_step;
    }
    const float* xk = x + k * kRows;
#define GS_TILE_ROW(m) \
  if constexpr (kRows > m) c##m = _mm512_fmadd_ps(_mm512_set1_ps(xk[m]), w, c##m);
    GS_TILE_ROW(0) GS_TILE_ROW(1) GS_TILE_ROW(2) GS_TILE_ROW(3) GS_TILE_ROW(4) GS_TILE_ROW(5)
    GS_TILE_ROW(6) GS_TILE_ROW(7) GS_TILE_ROW(8) GS_TILE_ROW(9) GS_TILE_ROW(10) GS_TILE_ROW(11)
    GS_TILE_ROW(12) GS_TILE_ROW(13) GS_TILE_ROW(14) GS_TILE_ROW(15)
#undef GS_TILE_ROW
  }
#define GS_TILE_STORE(m)                                                   \
  if constexpr (kRows > m) {                                               \
    float* out = y + m * ldy;                                              \
    if (accumulate) c##m = _mm512_add_ps(c##m, _mm512_loadu_ps(out));      \
    _mm512_storeu_ps(out, c##m);                                           \
  }
  GS_TILE_STORE(0) GS_TILE_STORE(1) GS_TILE_STORE(2) GS_TILE_STORE(3) GS_TILE_STORE(4)
  GS_TILE_STORE(5) GS_TILE_STORE(6) GS_TILE_STORE(7) GS_TILE_STORE(8) GS_TILE_STORE(9)
  GS_TILE_STORE(10) GS_TILE_STORE(11) GS_TILE_STORE(12) GS_TILE_STORE(13) GS_TILE_STORE(14)
  GS_TILE_STORE(15)
#undef GS_TILE_STORE
}

// The one-row kernel (panel_kernel.h, RowTileFn). It prefetches each of its four streams ahead:
// measured on Sapphire Rapids, bf16 panels streamed at 30 GB/s without and 33 GB/s with it.
template <typename W>
void RowTile(const float* x, const void* panel_bytes, int64_t panel_stride, int64_t depth,
             float* y, bool accumulate) {
  const char* base = static_cast<const char*>(panel_bytes);
  const W* p0 = reinterpret_cast<const W*>(base);
  const W* p1 = reinterpret_cast<const W*>(base + panel_stride);
  const W* p2 = reinterpret_cast<const W*>(base + 2 * panel_stride);
  const W* p3 = reinterpret_cast<const W*>(base + 3 * panel_stride);
  __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
  // Each stream fetches a cache line kAhead bytes ahead of where it reads, one per line it reads.
  constexpr int64_t kAhead = 1024;
  constexpr int64_t kStepsPerLine = 64 / (16 * sizeof(W));
#pragma GCC unroll 2
  for (int64_t k = 0; k < depth; ++k) {
    if (k % kStepsPerLine == 0) {
      const int64_t ahead = (16 * k) * static_cast<int64_t>(sizeof(W)) + kAhead;
      _mm_prefetch(reinterpret_cast<const char*>(p0) + ahead, _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p1) + ahead, _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p2) + ahead, _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p3) + ahead, _MM_HINT_T0);
    }
    const __m512 xk = _mm512_set1_ps(x[k]);
    c0 = _mm512_fmadd_ps(xk, LoadPanelRow(p0 + 16 * k), c0);
    c1 = _mm512_fmadd_ps(xk, LoadPanelRow(p1 + 16 * k), c1);
    c2 = _mm512_fmadd_ps(xk, LoadPanelRow(p2 + 16 * k), c2);
    c3 = _mm512_fmadd_ps(xk, LoadPanelRow(p3 + 16 * k), c3);
  }
  if (accumulate) {
    c0 = _mm512_add_ps(c0, _mm512_loadu_ps(y));
    c1 = _mm512_add_ps(c1, _mm512_loadu_ps(y + 16));
    c2 = _mm512_add_ps(c2, _mm512_loadu_ps(y + 32));
    c3 = _mm512_add_ps(c3, _mm512_loadu_ps(y + 48));
  }
  _mm512_storeu_ps(y, c0);
  _mm512_storeu_ps(y + 16, c1);
  _mm512_storeu_ps(y + 32, c2);
  _mm512_storeu_ps(y + 48, c3);
}

constexpr auto kTiles =
    TileTable<kAvx512TileRows>([](auto rows) { return &Tile<rows(), float>; });
constexpr auto kBf16Tiles =
    TileTable<kAvx512TileRows>([](auto rows) { return &Tile<rows(), uint16_t>; });

}  // namespace

void PanelTileAvx512(const float* x, int rows, const void* panel, int64_t depth, float* y,
                     int64_t ldy, bool accumulate, const void* prefetch, int prefetch_step) {
  kTiles[rows - 1](x, rows, panel, depth, y, ldy, accumulate, prefetch, prefetch_step);
}

void RowTileAvx512(const float* x, const void* panel, int64_t panel_stride, int64_t depth,
                   float* y, bool accumulate) {
  RowTile<float>(x, panel, panel_stride, depth, y, accumulate);
}

void RowTileAvx512Bf16(const float* x, const void* panel, int64_t panel_stride, int64_t depth,
                       float* y, bool accumulate) {
  RowTile<uint16_t>(x, panel, panel_stride, depth, y, accumulate);
}

void PanelTileAvx512Bf16(const float* x, int rows, const void* panel, int64_t depth, float* y,
                         int64_t ldy, bool accumulate, const void* prefetch, int prefetch_step) {
  kBf16Tiles[rows - 1](x, rows, panel, depth, y, ldy, accumulate, prefetch, prefetch_step);
}

}  // namespace gemmaserve::ops::internal
