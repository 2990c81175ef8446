// The micro-kernel behind the packed Linear (linear.h): one tile of up to a kernel's max_rows rows
// of x times one chunk of one 16-row weight panel, whose weights are f32 or bf16 (widened to f32
// in registers, which is exact: a bf16 panel gives the same sums as the f32 panel of its values,
// reading half the bytes). Three implementations keep the same contract:
// AVX-512F (panel_kernel_avx512.cc), AVX2 + FMA (panel_kernel_avx2.cc), each compiled for its
// instructions and used when the CPU has them, and portable C++ (the reference, and the fallback
// elsewhere). Every one sums each output in the same order (k ascending, one fused or separate
// multiply-add per k), so a row's result does not depend on the tile it falls in. Internal to
// ops/; pure functions.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "absl/status/statusor.h"
#include "common/dtype.h"

namespace gemmaserve::ops::internal {

// Rows of x per tile. AVX2: 6 rows × 16 outputs is 12 accumulators, which with the two panel
// vectors and a broadcast fits the 16 vector registers. AVX-512: one zmm accumulator per row, 16
// of the 32 registers.
inline constexpr int kTileRows = 6;
inline constexpr int kAvx512TileRows = 16;
inline constexpr int kMaxTileRows = 16;

// For m < rows (1 … the kernel's max_rows) and j < 16, with x packed k-major ([depth][rows]:
// x[k·rows + m] is row m's element k, so the broadcasts read one contiguous stream):
//   y[m·ldy + j] = (accumulate ? y[m·ldy + j] : 0) + Σ_{k < depth} x[k·rows + m] · panel[16·k + j]
// with `panel` f32 or bf16 (one function per element type). An f32 panel holds 16 weights per k
// (panel[16·k + j]); a bf16 panel holds k in pairs, 32 weights per pair with k's at the even
// positions and k + 1's at the odd ones (panel[32·(k/2) + 2·j + k%2], the pairing the bf16
// dot-product and matrix instructions read), so depth is even. `prefetch`, when not null, points
// into the next panel chunk: the tile fetches one 64-byte cache line for every `prefetch_step`
// lines of its own panel it reads, from there on, so that the next tile does not wait for memory. The tiles that share a
// chunk split the prefetching of the next one (each its slice), which spreads it over all their
// work. A slice may run a few lines past the chunk; prefetches never fault.
using PanelTileFn = void (*)(const float* x, int rows, const void* panel, int64_t depth,
                             float* y, int64_t ldy, bool accumulate, const void* prefetch,
                             int prefetch_step);

#define GS_DECLARE_PANEL_TILE(name)                                                              \
  void name(const float* x, int rows, const void* panel, int64_t depth, float* y, int64_t ldy,  \
            bool accumulate, const void* prefetch, int prefetch_step)
GS_DECLARE_PANEL_TILE(PanelTilePortable);
GS_DECLARE_PANEL_TILE(PanelTilePortableBf16);
GS_DECLARE_PANEL_TILE(PanelTileAvx2);
GS_DECLARE_PANEL_TILE(PanelTileAvx2Bf16);
GS_DECLARE_PANEL_TILE(PanelTileAvx512);
GS_DECLARE_PANEL_TILE(PanelTileAvx512Bf16);
#undef GS_DECLARE_PANEL_TILE

// For a tile template: {tile_of(1), …, tile_of(kMaxRows)}, with tile_of(std::integral_constant
// <int, R>) giving &Tile<R>; the table a kernel's PanelTileFn indexes by rows - 1.
template <int kMaxRows, typename TileOf, size_t... kIndex>
constexpr std::array<PanelTileFn, kMaxRows> TileTable(TileOf tile_of,
                                                      std::index_sequence<kIndex...>) {
  return {tile_of(std::integral_constant<int, static_cast<int>(kIndex) + 1>())...};
}
template <int kMaxRows, typename TileOf>
constexpr std::array<PanelTileFn, kMaxRows> TileTable(TileOf tile_of) {
  return TileTable<kMaxRows>(tile_of, std::make_index_sequence<kMaxRows>());
}

// One row of x against kRowPanels consecutive panels at once, for decode steps of one sequence:
//   y[p·16 + j] = (accumulate ? y[p·16 + j] : 0) + Σ_{k < depth} x[k] · panel_p[16·k + j]
// for p < kRowPanels, with panel p at `panel` + p · panel_stride bytes. Each output is summed in
// the same order as by the tiles (so bitwise the same); the panels' sums are independent chains,
// which a single-row tile's one accumulator chain is not: its multiply-add latency, not memory,
// would bound a one-row step.
inline constexpr int kRowPanels = 4;
using RowTileFn = void (*)(const float* x, const void* panel, int64_t panel_stride, int64_t depth,
                           float* y, bool accumulate);
void RowTileAvx2(const float* x, const void* panel, int64_t panel_stride, int64_t depth, float* y,
                 bool accumulate);
void RowTileAvx2Bf16(const float* x, const void* panel, int64_t panel_stride, int64_t depth,
                     float* y, bool accumulate);
void RowTileAvx512(const float* x, const void* panel, int64_t panel_stride, int64_t depth,
                   float* y, bool accumulate);
void RowTileAvx512Bf16(const float* x, const void* panel, int64_t panel_stride, int64_t depth,
                       float* y, bool accumulate);

// The CPU's bf16 matrix instructions, for --cpu-precision bf16 (ops/linear.h): x rounded to bf16
// and multiplied with bf16 panels, products summed in f32.
enum class Bf16Engine {
  kNone,        // no bf16 compute: the exact tiles run
  kAvx512Bf16,  // VDPBF16PS, 16 rows × one panel at a time
  kAmx,         // AMX TDPBF16PS tiles: 16 rows × two panels at a time
};

struct PanelKernel {
  PanelTileFn tile_f32;   // f32 panels
  PanelTileFn tile_bf16;  // bf16 panels
  RowTileFn row_f32;      // one row × kRowPanels f32 panels; null: the tiles do one row too
  RowTileFn row_bf16;
  int max_rows;
  const char* name;
};
inline constexpr PanelKernel kPortableKernel{PanelTilePortable, PanelTilePortableBf16, nullptr,
                                             nullptr, kTileRows, "portable"};
inline constexpr PanelKernel kAvx2Kernel{PanelTileAvx2, PanelTileAvx2Bf16, RowTileAvx2,
                                         RowTileAvx2Bf16, kTileRows, "avx2"};
inline constexpr PanelKernel kAvx512Kernel{PanelTileAvx512, PanelTileAvx512Bf16, RowTileAvx512,
                                           RowTileAvx512Bf16, kAvx512TileRows, "avx512"};

// The CPU (and the OS, for AVX-512's register state and AMX's tiles) runs these instructions.
bool CpuHasAvx2Fma();
bool CpuHasAvx512f();
bool CpuHasAvx512Bf16();
bool CpuHasAmxBf16();  // asks Linux for the tiles' state once (ARCH_REQ_XCOMP_PERM)
// Instruction-set caps ($GEMMASERVE_MAX_CPU_ISA, SetMaxCpuIsa), fastest first: "amx",
// "avx512bf16", "avx512", "avx2", "portable"; null or empty is no cap. A cap admits its own
// instructions and every slower set's. An unknown name is an error naming the accepted ones.
//
// The fastest exact tiles this CPU runs within `max_isa`: AVX-512, else AVX2, else portable.
absl::StatusOr<const PanelKernel*> PanelKernelFor(const char* max_isa);
// The fastest bf16 engine this CPU runs within `max_isa`: AMX, else AVX512-BF16, else none.
absl::StatusOr<Bf16Engine> Bf16EngineFor(const char* max_isa);
const char* Bf16EngineName(Bf16Engine engine);  // "amx", "avx512bf16", "none"
// The kernel the packed Linear uses: PanelKernelFor($GEMMASERVE_MAX_CPU_ISA) until
// SetMaxCpuIsa (linear.h) changes it. The variable caps the instruction set, to compare kernels
// on one machine or to match a slower one; an unknown value logs a warning and leaves no cap.
const PanelKernel& BestPanelKernel();
// The bf16 engine within the same cap.
Bf16Engine BestBf16Engine();
// Makes `kernel` and `engine` the packed Linear's for every later call in this process.
void SetPanelKernel(const PanelKernel& kernel, Bf16Engine engine);

// The bf16 engines' inner loops (panel_kernel_bf16.cc): x [rows padded to kBf16TileRows, depth]
// bf16 row-major times bf16 panels [first, last) into y.
inline constexpr int64_t kBf16TileRows = 16;
inline constexpr int64_t kBf16TileDepth = 32;
void Bf16DotTiles(const uint16_t* x, int64_t rows, int64_t depth, const uint16_t* panels,
                  int64_t first, int64_t last, float* y, int64_t ldy);
void AmxTiles(const uint16_t* x, int64_t rows, int64_t depth, const uint16_t* panels,
              int64_t first, int64_t last, float* y, int64_t ldy);

// PackedMatmul's result on bf16 panels with x rounded to bf16 first, by `engine` (not kNone);
// depth must be a multiple of kBf16TileDepth.
void PackedMatmulBf16(Bf16Engine engine, const float* x, int64_t rows, int64_t depth,
                      const void* panels, int64_t num_panels, float* y, int64_t ldy);

// y[r, p·16 + j] = Σ_k x[r, k] · panels[p][k][j] for r < rows, p < num_panels, j < 16, with x
// [rows, depth] row-major, panels of `panel_dtype` (f32 or bf16) and y [rows, ldy]. Packs x into
// tiles, then runs the tiles blocked for the caches, panels split over threads. Not reentrant on
// one thread (a per-thread buffer).
void PackedMatmul(const PanelKernel& kernel, const float* x, int64_t rows, int64_t depth,
                  const void* panels, DType panel_dtype, int64_t num_panels, float* y, int64_t ldy);

}  // namespace gemmaserve::ops::internal
