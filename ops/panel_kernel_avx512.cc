// PanelTileAvx512: panel_kernel.h's tile in AVX-512F. This file alone is compiled with
// -mavx512f; callers reach it only after CpuHasAvx512f().
//
// A 16-wide panel row is one zmm register, so a tile of up to 16 rows keeps one accumulator per
// row (16 of the 32 registers). Each step of k loads the panel's 16 weights once and does one FMA
// per row with x[m][k] broadcast from memory (x is packed k-major, so those reads are one
// stream): per FMA one weight load shared by every row, where the AVX2 tile needs two loads and
// two FMAs per row for the same 16 outputs. Accumulators are named variables (see the AVX2 tile).
// A bf16 panel holds k in pairs (panel_kernel.h): one 64-byte load gives k's 16 weights in the
// low halves of its 32-bit lanes and k + 1's in the high halves, each made a float exactly by a
// shift or a mask.
#include <immintrin.h>

#include "ops/panel_kernel.h"

namespace gemmaserve::ops::internal {
namespace {

// A bf16 panel's weights of k (even) and k + 1, from the 64 bytes at `p`.
inline void LoadPair(const uint16_t* p, __m512& even, __m512& odd) {
  const __m512i bits = _mm512_loadu_si512(p);
  // The masked form with every lane set is the same shift; GCC 12 warns that the unmasked
  // intrinsic's undefined pass-through "may be used uninitialized".
  even = _mm512_castsi512_ps(_mm512_mask_slli_epi32(bits, __mmask16{0xFFFF}, bits, 16));
  odd = _mm512_castsi512_ps(_mm512_and_si512(bits, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
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
  // One line of the panel per step: k for f32, the pair k, k + 1 for bf16.
  constexpr int64_t kPerLine = std::is_same_v<W, float> ? 1 : 2;
#define GS_TILE_ROW(m, w, xk) \
  if constexpr (kRows > m) c##m = _mm512_fmadd_ps(_mm512_set1_ps((xk)[m]), w, c##m);
#define GS_TILE_ROWS(w, xk)                                                                   \
  GS_TILE_ROW(0, w, xk) GS_TILE_ROW(1, w, xk) GS_TILE_ROW(2, w, xk) GS_TILE_ROW(3, w, xk)    \
  GS_TILE_ROW(4, w, xk) GS_TILE_ROW(5, w, xk) GS_TILE_ROW(6, w, xk) GS_TILE_ROW(7, w, xk)    \
  GS_TILE_ROW(8, w, xk) GS_TILE_ROW(9, w, xk) GS_TILE_ROW(10, w, xk) GS_TILE_ROW(11, w, xk)  \
  GS_TILE_ROW(12, w, xk) GS_TILE_ROW(13, w, xk) GS_TILE_ROW(14, w, xk) GS_TILE_ROW(15, w, xk)
#pragma GCC unroll 2
  for (int64_t k = 0; k < depth; k += kPerLine) {
    if (prefetch != nullptr && --until_prefetch == 0) {
      _mm_prefetch(prefetch, _MM_HINT_T0);
      prefetch += 64;
      until_prefetch = prefetch_step;
    }
    const float* xk = x + k * kRows;
    if constexpr (std::is_same_v<W, float>) {
      const __m512 w = _mm512_loadu_ps(panel + 16 * k);
      GS_TILE_ROWS(w, xk)
    } else {
      __m512 even, odd;
      LoadPair(panel + 16 * k, even, odd);
      GS_TILE_ROWS(even, xk)
      GS_TILE_ROWS(odd, xk + kRows)
    }
  }
#undef GS_TILE_ROWS
#undef GS_TILE_ROW
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
  // Each stream fetches the line kAhead bytes ahead of the one it reads.
  constexpr int64_t kAhead = 1024;
  constexpr int64_t kPerLine = std::is_same_v<W, float> ? 1 : 2;
#pragma GCC unroll 2
  for (int64_t k = 0; k < depth; k += kPerLine) {
    const int64_t ahead = 16 * k * static_cast<int64_t>(sizeof(W)) + kAhead;
    _mm_prefetch(reinterpret_cast<const char*>(p0) + ahead, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(p1) + ahead, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(p2) + ahead, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(p3) + ahead, _MM_HINT_T0);
    const __m512 xk = _mm512_set1_ps(x[k]);
    if constexpr (std::is_same_v<W, float>) {
      c0 = _mm512_fmadd_ps(xk, _mm512_loadu_ps(p0 + 16 * k), c0);
      c1 = _mm512_fmadd_ps(xk, _mm512_loadu_ps(p1 + 16 * k), c1);
      c2 = _mm512_fmadd_ps(xk, _mm512_loadu_ps(p2 + 16 * k), c2);
      c3 = _mm512_fmadd_ps(xk, _mm512_loadu_ps(p3 + 16 * k), c3);
    } else {
      const __m512 xk1 = _mm512_set1_ps(x[k + 1]);
      __m512 even, odd;
#define GS_ROW_PAIR(i)                          \
  LoadPair(p##i + 16 * k, even, odd);           \
  c##i = _mm512_fmadd_ps(xk, even, c##i);       \
  c##i = _mm512_fmadd_ps(xk1, odd, c##i);
      GS_ROW_PAIR(0) GS_ROW_PAIR(1) GS_ROW_PAIR(2) GS_ROW_PAIR(3)
#undef GS_ROW_PAIR
    }
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

void PanelTileAvx512Bf16(const float* x, int rows, const void* panel, int64_t depth, float* y,
                         int64_t ldy, bool accumulate, const void* prefetch, int prefetch_step) {
  kBf16Tiles[rows - 1](x, rows, panel, depth, y, ldy, accumulate, prefetch, prefetch_step);
}

void RowTileAvx512(const float* x, const void* panel, int64_t panel_stride, int64_t depth,
                   float* y, bool accumulate) {
  RowTile<float>(x, panel, panel_stride, depth, y, accumulate);
}

void RowTileAvx512Bf16(const float* x, const void* panel, int64_t panel_stride, int64_t depth,
                       float* y, bool accumulate) {
  RowTile<uint16_t>(x, panel, panel_stride, depth, y, accumulate);
}

}  // namespace gemmaserve::ops::internal
