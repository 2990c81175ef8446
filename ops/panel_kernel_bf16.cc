// The inner loops of --cpu-precision bf16 (panel_kernel.h, PackedMatmulBf16, which rounds x to
// bf16 and splits the panels over threads): bf16 x times bf16 panels by the CPU's bf16
// instructions, with f32 accumulation. This file alone is compiled with -mavx512f -mavx512bf16
// -mamx-tile -mamx-bf16, so it holds plain loops over pointers and no library templates (which the
// linker could pick for other files' callers on CPUs without these instructions); callers reach
// an engine only after checking the CPU (and, for AMX, the OS's permission).
//
// Both engines read the bf16 panels as they are: pairs of k in each 32-bit lane are exactly the
// operand layout of VDPBF16PS and of TDPBF16PS's B tile (16 pairs × 16 outputs = 16 rows of 64
// bytes, consecutive in a panel).
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "ops/panel_kernel.h"

namespace gemmaserve::ops::internal {
namespace {

constexpr int64_t kAmxRows = kBf16TileRows;  // rows of x per A tile and per C tile
constexpr int64_t kAmxDepth = kBf16TileDepth;  // k per A tile row (64 bytes), per B tile (16 pairs)

// AVX512-BF16: 16 rows × one panel, one VDPBF16PS per row and pair of k.
void DotTile(const uint16_t* x, int64_t rows, int64_t depth, const uint16_t* panel, float* y,
             int64_t ldy) {
  __m512 acc[kAmxRows];
  for (int64_t m = 0; m < rows; ++m) acc[m] = _mm512_setzero_ps();
  const uint32_t* pairs = reinterpret_cast<const uint32_t*>(x);  // [rows][depth / 2]
  for (int64_t kp = 0; kp < depth / 2; ++kp) {
    const __m512bh w = reinterpret_cast<__m512bh>(_mm512_loadu_si512(panel + 32 * kp));
    for (int64_t m = 0; m < rows; ++m) {
      const __m512bh xm = reinterpret_cast<__m512bh>(_mm512_set1_epi32(
          static_cast<int>(pairs[m * (depth / 2) + kp])));
      acc[m] = _mm512_dpbf16_ps(acc[m], xm, w);
    }
  }
  for (int64_t m = 0; m < rows; ++m) _mm512_storeu_ps(y + m * ldy, acc[m]);
}

struct alignas(64) TileConfig {
  uint8_t palette_id = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// tmm0, tmm1: C (16 rows × 16 f32) for two panels; tmm2: A (16 rows × 32 bf16 of x); tmm3, tmm4:
// B (16 pairs × 16 outputs) of the two panels. Loaded on every thread that multiplies.
void ConfigureTiles() {
  TileConfig config;
  for (int t = 0; t < 5; ++t) {
    config.rows[t] = kAmxRows;
    config.colsb[t] = 64;
  }
  _tile_loadconfig(&config);
}

// 16 rows of x (bf16, row stride depth) × panels p and p + 1, into c[2][16][16].
void AmxPanelPair(const uint16_t* x, int64_t depth, const uint16_t* panel0, const uint16_t* panel1,
                  float* c) {
  _tile_zero(0);
  _tile_zero(1);
  for (int64_t k = 0; k < depth; k += kAmxDepth) {
    _tile_loadd(2, x + k, depth * 2);
    _tile_loadd(3, panel0 + 16 * k, 64);
    _tile_loadd(4, panel1 + 16 * k, 64);
    _tile_dpbf16ps(0, 2, 3);
    _tile_dpbf16ps(1, 2, 4);
  }
  _tile_stored(0, c, 64);
  _tile_stored(1, c + kAmxRows * 16, 64);
}

void AmxPanel(const uint16_t* x, int64_t depth, const uint16_t* panel, float* c) {
  _tile_zero(0);
  for (int64_t k = 0; k < depth; k += kAmxDepth) {
    _tile_loadd(2, x + k, depth * 2);
    _tile_loadd(3, panel + 16 * k, 64);
    _tile_dpbf16ps(0, 2, 3);
  }
  _tile_stored(0, c, 64);
}

// Rows [r0, r0 + rows) of the C tiles at `c` ([panels][16][16]) into y.
void StoreRows(const float* c, int panels, int64_t rows, float* y, int64_t ldy) {
  for (int p = 0; p < panels; ++p) {
    for (int64_t m = 0; m < rows; ++m) {
      std::memcpy(y + m * ldy + 16 * p, c + (p * kAmxRows + m) * 16, 16 * sizeof(float));
    }
  }
}

}  // namespace

void Bf16DotTiles(const uint16_t* x, int64_t rows, int64_t depth, const uint16_t* panels,
                  int64_t first, int64_t last, float* y, int64_t ldy) {
  for (int64_t p = first; p < last; ++p) {
    for (int64_t r0 = 0; r0 < rows; r0 += kAmxRows) {
      const int64_t tile_rows = rows - r0 < kAmxRows ? rows - r0 : kAmxRows;
      DotTile(x + r0 * depth, tile_rows, depth, panels + p * depth * 16, y + r0 * ldy + p * 16,
              ldy);
    }
  }
}

void AmxTiles(const uint16_t* x, int64_t rows, int64_t depth, const uint16_t* panels,
              int64_t first, int64_t last, float* y, int64_t ldy) {
  ConfigureTiles();
  alignas(64) float c[2 * kAmxRows * 16];
  const int64_t panel_size = depth * 16;
  int64_t p = first;
  for (; p + 2 <= last; p += 2) {
    for (int64_t r0 = 0; r0 < rows; r0 += kAmxRows) {
      AmxPanelPair(x + r0 * depth, depth, panels + p * panel_size, panels + (p + 1) * panel_size,
                   c);
      StoreRows(c, 2, rows - r0 < kAmxRows ? rows - r0 : kAmxRows, y + r0 * ldy + p * 16, ldy);
    }
  }
  for (; p < last; ++p) {
    for (int64_t r0 = 0; r0 < rows; r0 += kAmxRows) {
      AmxPanel(x + r0 * depth, depth, panels + p * panel_size, c);
      StoreRows(c, 1, rows - r0 < kAmxRows ? rows - r0 : kAmxRows, y + r0 * ldy + p * 16, ldy);
    }
  }
  _tile_release();
}

}  // namespace gemmaserve::ops::internal
