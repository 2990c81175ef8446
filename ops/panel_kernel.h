// The micro-kernel behind the packed Linear (linear.h): one tile of up to kTileRows rows of x
// times one chunk of one 16-row weight panel. Two implementations keep the same contract: AVX2 +
// FMA (panel_kernel_avx2.cc, compiled for those instructions, used when the CPU has them) and
// portable C++ (the reference, and the fallback elsewhere). Internal to ops/; pure functions.
#pragma once

#include <cstdint>

namespace gemmaserve::ops::internal {

// Rows of x per tile: 6 rows × 16 outputs is 12 AVX2 accumulators, which with the two panel
// vectors and a broadcast fits the 16 vector registers.
inline constexpr int kTileRows = 6;

// For m < rows (1 … kTileRows) and j < 16, with x packed k-major ([depth][rows]: x[k·rows + m]
// is row m's element k, so the broadcasts read one contiguous stream):
//   y[m·ldy + j] = (accumulate ? y[m·ldy + j] : 0) + Σ_{k < depth} x[k·rows + m] · panel[16·k + j]
// `prefetch`, when not null, is the next panel chunk (depth × 16 floats): its cache lines are
// fetched while this tile computes, so the next tile does not wait for memory.
using PanelTileFn = void (*)(const float* x, int rows, const float* panel, int64_t depth,
                             float* y, int64_t ldy, bool accumulate, const float* prefetch);

void PanelTilePortable(const float* x, int rows, const float* panel, int64_t depth, float* y,
                       int64_t ldy, bool accumulate, const float* prefetch);
void PanelTileAvx2(const float* x, int rows, const float* panel, int64_t depth, float* y,
                   int64_t ldy, bool accumulate, const float* prefetch);

// The CPU runs AVX2 and FMA instructions.
bool CpuHasAvx2Fma();

// y[r, p·16 + j] = Σ_k x[r, k] · panels[p][k][j] for r < rows, p < num_panels, j < 16, with x
// [rows, depth] row-major and y [rows, ldy]. Packs x into tiles, then runs the tiles blocked for
// the caches, panels split over threads. Not reentrant on one thread (a per-thread buffer).
void PackedMatmul(PanelTileFn tile, const float* x, int64_t rows, int64_t depth,
                  const float* panels, int64_t num_panels, float* y, int64_t ldy);

}  // namespace gemmaserve::ops::internal
