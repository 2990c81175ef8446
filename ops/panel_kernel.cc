#include "ops/panel_kernel.h"

#include <omp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "common/status_macros.h"
#include "ops/ops_util.h"
#include "spdlog/spdlog.h"

namespace gemmaserve::ops::internal {
namespace {

// Cache blocking, measured with tests/ops/linear_bench on Zen 3 (see README): a depth block of
// 2048 is the whole depth of the matrices that read the hidden state of the bench and tiny
// models, so their tiles write y once instead of adding partial sums into it; a panel chunk
// (128 KiB) stays in L2 while every tile of a row block passes over it. Blocks of 256 and 512
// measured the same or slower. A row block's x stays in L2 for decode-sized blocks.
constexpr int64_t kDepthBlock = 2048;
constexpr int64_t kRowBlock = 96;  // 16 AVX2 tiles, 6 AVX-512 tiles
// Floats of x below which packing it stays on one thread.
constexpr int64_t kPackInParallel = 1 << 16;

// One tile of x: `rows` rows from `first_row`, packed k-major at `packed` ([depth][rows]).
struct XTile {
  int64_t first_row = 0;
  int rows = 0;
  const float* packed = nullptr;
};

// Splits the rows into row blocks and each block into tiles as even as possible (a 2-row
// remainder tile would run at a third of the speed of a full one: 32 rows are 6, 6, 5, 5, 5, 5),
// and packs each tile's rows k-major into `buffer`, so that the kernel's broadcasts read one
// contiguous stream instead of one per row. Fills `tiles`, block b's at [starts[b],
// starts[b + 1]).
void PackTiles(const float* x, int64_t rows, int64_t depth, int max_tile_rows,
               std::vector<float>& buffer, std::vector<XTile>& tiles, std::vector<size_t>& starts) {
  tiles.clear();
  starts.clear();
  buffer.resize(static_cast<size_t>(rows * depth));
  for (int64_t r0 = 0; r0 < rows; r0 += kRowBlock) {
    starts.push_back(tiles.size());
    const int64_t block_rows = std::min(kRowBlock, rows - r0);
    const int64_t num_tiles = (block_rows + max_tile_rows - 1) / max_tile_rows;
    int64_t row = r0;
    for (int64_t t = 0; t < num_tiles; ++t) {
      const int64_t left = num_tiles - t;
      const int tile_rows = static_cast<int>((r0 + block_rows - row + left - 1) / left);
      tiles.push_back({row, tile_rows, buffer.data() + row * depth});
      row += tile_rows;
    }
  }
  starts.push_back(tiles.size());
  const int64_t num_tiles = static_cast<int64_t>(tiles.size());
  ParallelRanges(num_tiles, rows * depth > kPackInParallel, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      float* out = buffer.data() + tiles[t].first_row * depth;
      for (int m = 0; m < tiles[t].rows; ++m) {
        const float* in = x + (tiles[t].first_row + m) * depth;
        for (int64_t k = 0; k < depth; ++k) out[k * tiles[t].rows + m] = in[k];
      }
    }
  });
}

}  // namespace

namespace {

// Panel weight (k, j): f32 panels hold 16 per k; bf16 panels hold k in pairs, 32 per pair with
// k's in the even and k + 1's in the odd positions (panel_kernel.h).
inline float PanelWeight(const float* panel, int64_t k, int j) { return panel[16 * k + j]; }
inline float PanelWeight(const uint16_t* panel, int64_t k, int j) {
  return Bf16ToF32(panel[32 * (k / 2) + 2 * j + k % 2]);
}

template <typename W>
void PortableTile(const float* x, int rows, const void* panel_bytes, int64_t depth, float* y,
                  int64_t ldy, bool accumulate) {
  const W* panel = static_cast<const W*>(panel_bytes);
  float acc[kMaxTileRows][16] = {};
  for (int64_t k = 0; k < depth; ++k) {
    float w[16];
    for (int j = 0; j < 16; ++j) w[j] = PanelWeight(panel, k, j);
    for (int m = 0; m < rows; ++m) {
      const float xv = x[k * rows + m];
      for (int j = 0; j < 16; ++j) acc[m][j] += xv * w[j];
    }
  }
  for (int m = 0; m < rows; ++m) {
    for (int j = 0; j < 16; ++j) {
      y[m * ldy + j] = (accumulate ? y[m * ldy + j] : 0.0f) + acc[m][j];
    }
  }
}

}  // namespace

void PanelTilePortable(const float* x, int rows, const void* panel, int64_t depth, float* y,
                       int64_t ldy, bool accumulate, const void* /*prefetch*/, int /*step*/) {
  PortableTile<float>(x, rows, panel, depth, y, ldy, accumulate);
}

void PanelTilePortableBf16(const float* x, int rows, const void* panel, int64_t depth, float* y,
                           int64_t ldy, bool accumulate, const void* /*prefetch*/, int /*step*/) {
  PortableTile<uint16_t>(x, rows, panel, depth, y, ldy, accumulate);
}

bool CpuHasAvx2Fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

bool CpuHasAvx512f() {
  static const bool has = __builtin_cpu_supports("avx512f");
  return has;
}

bool CpuHasAvx512Bf16() {
  static const bool has = CpuHasAvx512f() && __builtin_cpu_supports("avx512bf16");
  return has;
}

bool CpuHasAmxBf16() {
  static const bool has = [] {
    if (!__builtin_cpu_supports("amx-bf16") || !__builtin_cpu_supports("amx-tile")) return false;
    // Linux hands out the tile registers' state only to a process that asks (5.16 and later).
    constexpr long kArchReqXcompPerm = 0x1023;
    constexpr long kXfeatureXtileData = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtileData) == 0;
  }();
  return has;
}

namespace {

// The caps, fastest first; a cap admits its own entry and every later one.
constexpr std::string_view kIsaOrder[] = {"amx", "avx512bf16", "avx512", "avx2", "portable"};

// Whether cap `max_isa` admits instruction set `isa`; INVALID_ARGUMENT for an unknown cap.
absl::StatusOr<bool> Admits(const char* max_isa, std::string_view isa) {
  const std::string_view cap = max_isa == nullptr ? "" : max_isa;
  if (cap.empty()) return true;
  const auto capped = std::find(std::begin(kIsaOrder), std::end(kIsaOrder), cap);
  if (capped == std::end(kIsaOrder)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown instruction set \"", std::string(cap),
        "\"; expected amx, avx512bf16, avx512, avx2 or portable"));
  }
  return std::find(std::begin(kIsaOrder), std::end(kIsaOrder), isa) >= capped;
}

}  // namespace

absl::StatusOr<const PanelKernel*> PanelKernelFor(const char* max_isa) {
  ASSIGN_OR_RETURN(const bool avx512, Admits(max_isa, "avx512"));
  ASSIGN_OR_RETURN(const bool avx2, Admits(max_isa, "avx2"));
  if (avx512 && CpuHasAvx512f()) return &kAvx512Kernel;
  if (avx2 && CpuHasAvx2Fma()) return &kAvx2Kernel;
  return &kPortableKernel;
}

absl::StatusOr<Bf16Engine> Bf16EngineFor(const char* max_isa) {
  ASSIGN_OR_RETURN(const bool amx, Admits(max_isa, "amx"));
  ASSIGN_OR_RETURN(const bool dot, Admits(max_isa, "avx512bf16"));
  if (amx && CpuHasAmxBf16()) return Bf16Engine::kAmx;
  if (dot && CpuHasAvx512Bf16()) return Bf16Engine::kAvx512Bf16;
  return Bf16Engine::kNone;
}

const char* Bf16EngineName(Bf16Engine engine) {
  switch (engine) {
    case Bf16Engine::kAmx:
      return "amx";
    case Bf16Engine::kAvx512Bf16:
      return "avx512bf16";
    case Bf16Engine::kNone:
      break;
  }
  return "none";
}

namespace {

// $GEMMASERVE_MAX_CPU_ISA, or no cap (with a warning) when it names no instruction set.
const char* CapFromEnvironment() {
  const char* cap = std::getenv("GEMMASERVE_MAX_CPU_ISA");
  const absl::StatusOr<const PanelKernel*> kernel = PanelKernelFor(cap);
  if (kernel.ok()) return cap;
  spdlog::warn("GEMMASERVE_MAX_CPU_ISA: {}", std::string(kernel.status().message()));
  return nullptr;
}

// The process's kernel and engine; set once from the environment, then only by SetPanelKernel.
struct Choice {
  std::atomic<const PanelKernel*> kernel;
  std::atomic<Bf16Engine> engine;
};
Choice& Current() {
  static Choice choice{*PanelKernelFor(CapFromEnvironment()), *Bf16EngineFor(CapFromEnvironment())};
  return choice;
}

}  // namespace

const PanelKernel& BestPanelKernel() { return *Current().kernel.load(std::memory_order_relaxed); }

Bf16Engine BestBf16Engine() { return Current().engine.load(std::memory_order_relaxed); }

void SetPanelKernel(const PanelKernel& kernel, Bf16Engine engine) {
  Current().kernel.store(&kernel, std::memory_order_relaxed);
  Current().engine.store(engine, std::memory_order_relaxed);
}

void PackedMatmulBf16(Bf16Engine engine, const float* x, int64_t rows, int64_t depth,
                      const void* panels, int64_t num_panels, float* y, int64_t ldy) {
  CHECK(engine != Bf16Engine::kNone);
  CHECK_EQ(depth % kBf16TileDepth, 0) << "PackedMatmulBf16: depth " << depth;
  // x rounded to bf16, its rows padded with zeros to whole tiles; reused across calls.
  thread_local std::vector<uint16_t> rounded;
  const int64_t padded = (rows + kBf16TileRows - 1) / kBf16TileRows * kBf16TileRows;
  rounded.resize(static_cast<size_t>(padded * depth));
  uint16_t* xb_out = rounded.data();
  ParallelRanges(padded * depth, rows * depth > kPackInParallel, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) xb_out[i] = i < rows * depth ? F32ToBf16(x[i]) : 0;
  });
  const uint16_t* xb = rounded.data();
  const uint16_t* w = static_cast<const uint16_t*>(panels);
  ParallelRanges(num_panels, /*parallel=*/true, [&](int64_t first, int64_t last) {
    if (engine == Bf16Engine::kAmx) {
      AmxTiles(xb, rows, depth, w, first, last, y, ldy);
    } else {
      Bf16DotTiles(xb, rows, depth, w, first, last, y, ldy);
    }
  });
}

void PackedMatmul(const PanelKernel& kernel, const float* x, int64_t rows, int64_t depth,
                  const void* panels, DType panel_dtype, int64_t num_panels, float* y,
                  int64_t ldy) {
  CHECK(kernel.max_rows >= 1 && kernel.max_rows <= kMaxTileRows) << kernel.name;
  CHECK(panel_dtype == DType::kF32 || panel_dtype == DType::kBF16) << DTypeName(panel_dtype);
  // Reused across calls on this thread: the hot path allocates only when a step is larger.
  thread_local std::vector<float> packed_x;
  thread_local std::vector<XTile> x_tiles;
  thread_local std::vector<size_t> tile_starts;
  // Named through locals: inside the parallel region a thread_local would be each thread's own.
  const std::vector<XTile>& tiles = x_tiles;
  const std::vector<size_t>& starts = tile_starts;
  PackTiles(x, rows, depth, kernel.max_rows, packed_x, x_tiles, tile_starts);
  const PanelTileFn tile = panel_dtype == DType::kF32 ? kernel.tile_f32 : kernel.tile_bf16;
  const RowTileFn row_tile = panel_dtype == DType::kF32 ? kernel.row_f32 : kernel.row_bf16;
  const int64_t element = static_cast<int64_t>(DTypeSize(panel_dtype));
  const char* base = static_cast<const char*>(panels);
  constexpr int64_t kLine = 64;
  // Each thread owns a contiguous run of panels (output columns): no two write the same y.
  ParallelRanges(num_panels, /*parallel=*/true, [&](int64_t first, int64_t last) {
    for (size_t block = 0; block + 1 < starts.size(); ++block) {
      for (int64_t k0 = 0; k0 < depth; k0 += kDepthBlock) {
        const int64_t block_depth = std::min(kDepthBlock, depth - k0);
        const int num_tiles = static_cast<int>(starts[block + 1] - starts[block]);
        // Tile i of n fetches lines [i·ceil(lines/n), (i+1)·ceil(lines/n)) of the next chunk,
        // one for every n lines of its own chunk it reads.
        const int64_t chunk_bytes = block_depth * 16 * element;
        const int64_t lines_per_tile = (chunk_bytes / kLine + num_tiles - 1) / num_tiles;
        const int prefetch_step = num_tiles;
        int64_t p = first;
        if (row_tile != nullptr && num_tiles == 1 && tiles[starts[block]].rows == 1) {
          // One row: kRowPanels panels at a time, their sums independent.
          const float* x_row = tiles[starts[block]].packed + k0;
          for (; p + kRowPanels <= last; p += kRowPanels) {
            row_tile(x_row, base + (p * depth + k0) * 16 * element, depth * 16 * element,
                     block_depth, y + tiles[starts[block]].first_row * ldy + p * 16, k0 > 0);
          }
        }
        for (; p < last; ++p) {
          const char* chunk = base + (p * depth + k0) * 16 * element;
          const char* next = p + 1 < last ? base + ((p + 1) * depth + k0) * 16 * element : nullptr;
          for (int i = 0; i < num_tiles; ++i) {
            const XTile& x_tile = tiles[starts[block] + i];
            tile(x_tile.packed + k0 * x_tile.rows, x_tile.rows, chunk, block_depth,
                 y + x_tile.first_row * ldy + p * 16, ldy, /*accumulate=*/k0 > 0,
                 next == nullptr ? nullptr : next + kLine * i * lines_per_tile, prefetch_step);
          }
        }
      }
    }
  });
}

}  // namespace gemmaserve::ops::internal
