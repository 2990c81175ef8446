// Linear: y = x · Wᵀ with W [out_features, in_features] (the nn.Linear layout Gemma 4 checkpoints
// use; no linear layer in the decoder has a bias).
//
// A weight comes in one of two layouts:
//   - row-major [out, in], run through OpenBLAS (sgemv for one row, else sgemm);
//   - packed [out / 16, in, 16] (PackLinearWeight, once at load): panels of 16 output rows stored
//     k-major, packed[p][k][j] = W[16·p + j][k]. The kernel streams each panel once and keeps it
//     in cache while every row of x passes over it, so a step of many sequences reads each weight
//     from memory once. A BLAS cannot do that: it packs W anew on every call, which for the few
//     rows of a decode step costs more than the arithmetic (see README, "Performance").
// Packed panels are f32 or bf16 (widened in registers, exactly). Weights with a leading expert dimension ([E, out, in] → [E, out / 16, in, 16]) pack per expert.
// Both layouts give the same sums up to f32 rounding (the order of the k loop differs).
//
// Thread-safety: calls may run concurrently on distinct outputs; each uses the process's thread
// count (SetNumThreads).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "common/tensor.h"

namespace gemmaserve::ops {

// Output rows per panel of a packed weight.
inline constexpr int64_t kPanelRows = 16;

// w: [..., out, in] row-major, f32, bf16 or f16 in host memory. Returns it packed as
// `panel_dtype` (f32, or bf16: half the bytes to stream, and the same sums when w's values are
// bf16 already; its k come in pairs, panel_kernel.h, so an odd `in` packs f32),
// [..., out / 16, in, 16], when out is a multiple of kPanelRows; otherwise as f32 row-major
// (small odd shapes such as a router): w itself when it is f32 already, else widened.
Tensor PackLinearWeight(const Tensor& w, DType panel_dtype = DType::kF32);

// True for a packed weight: rank 3 with a last dimension of kPanelRows.
bool IsPackedLinearWeight(const Tensor& w);

// The output features of a weight in either layout: out for [out, in], 16 · P for [P, in, 16].
int64_t LinearOutFeatures(const Tensor& w);
// The input features of a weight in either layout.
int64_t LinearInFeatures(const Tensor& w);

// Row `row` of the weight (W[row, :], [in] values) into `out`, in either layout.
void CopyLinearWeightRow(const Tensor& w, int64_t row, float* out);

// x: [rows, in] f32; w: a weight [out, in] in either layout; y: [rows, out] f32 (overwritten).
// x and y must not alias.
void Linear(const Tensor& x, const Tensor& w, Tensor& y);

// Caps the instruction set of the packed Linear's kernels for every later call in this process:
// "amx", "avx512bf16", "avx512", "avx2", "portable" (fastest first), or empty for no cap (the
// fastest this CPU runs). The cap starts as $GEMMASERVE_MAX_CPU_ISA. The exact tiles all give
// bitwise the same results; this chooses speed, or lets a test compare them. INVALID_ARGUMENT naming the accepted values for another name. Must
// not run while a Linear does.
absl::Status SetMaxCpuIsa(const std::string& max_isa);
// The name of the exact tiles in use: "avx512", "avx2" or "portable".
const char* CpuKernelName();
// The name of the bf16 engine --cpu-precision bf16 uses: "amx", "avx512bf16" or "none".
const char* CpuBf16EngineName();

// The arithmetic of later CPU Linears on bf16 panels. f32 (the default): x stays f32 and every
// product is exact, as the reference computes. bf16 (--cpu-precision bf16): steps of at least
// kBf16MinRows rows round x to bf16 and run on the CPU's bf16 matrix instructions (AMX, else
// AVX512-BF16, within the instruction-set cap), much faster for prefill, at the cost of bf16
// rounding of matmul inputs; smaller steps (decode) stay exact, being bound by memory anyway.
// INVALID_ARGUMENT for another dtype. Must not run while a Linear does.
absl::Status SetCpuPrecision(DType precision);
// SetCpuPrecision of a --cpu-precision value: "f32" or "bf16"; the error names the flag.
absl::Status SetCpuPrecision(const std::string& name);
inline constexpr int64_t kBf16MinRows = 16;

// Threads for every later Linear in this process: OpenBLAS's and the packed kernel's (one
// OpenMP pool; gemmaserve links OpenBLAS's OpenMP build so the two never compete for cores).
void SetNumThreads(int num_threads);

}  // namespace gemmaserve::ops
