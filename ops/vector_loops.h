// The element-wise loops over long rows that every step runs: the final softcap and the softmax
// normaliser over 262,144 logits per sequence, the maximum behind both and behind top-k, the
// attention's softmax over a key tile and its keys rebuilt from values, and the GELU gate of the
// MLPs. Each is built three times
// from one body: for AVX-512F, for AVX2 (GCC's target attribute on a function that inlines
// the body) and for any x86-64. The choice follows the packed Linear's kernel (panel_kernel.h), so
// $GEMMASERVE_MAX_CPU_ISA and SetMaxCpuIsa cap both at once. Every build rounds each multiply and
// add on its own and sums in the same 16 lanes, so all three give bitwise the same results: a
// machine's instruction set never changes a logit or a sample (tests/ops/vector_loops_test.cc).
// Pure functions on caller-owned memory; thread-safe.
#pragma once

#include <cstdint>

namespace gemmaserve::ops {

// x[i] = cap · tanh(x[i] / cap) for i < n.
void SoftcapRow(float* x, int64_t n, float cap);
// Σ_{i<n} exp(x[i] · scale − shift), each exp in float (fast_math.h), summed in float over
// blocks of 256 and the blocks in double.
double SumExpRow(const float* x, int64_t n, float scale, float shift);
// x[i] = exp(x[i] − shift) for i < n (fast_math.h's FastExp), or 0 where x[i] − shift < −40;
// returns their sum in float. The online softmax of the tiled attention, one row of a key tile:
// with shift the row's maximum, the zeros change its sums by less than 1e−13 relative and keep
// subnormal products (a microcode assist each) out of the P·V product.
float ExpShiftRow(float* x, int64_t n, float shift);
// max_{i<n} x[i], NaNs skipped; −∞ when n = 0 or every element is NaN.
float MaxRow(const float* x, int64_t n);
// out[i] = gelu_tanh(gate[i]) · up[i] for i < n (activation.h's GeluTanh).
void GeluTanhGateRow(const float* gate, const float* up, int64_t n, float* out);
// Keys of `rows` consecutive positions rebuilt from their values (attention.h: KeysFromValues):
// each row k = v ⊙ weight, then dims j and j + head_dim / 2 for j < angles rotated by the row's
// cos and sin (rope_rows: one rope.h RopeTable row per position), with the products and sums
// Rotary::Apply computes, so the keys are bitwise those it would give.
void KeysFromValuesRows(const float* values, int64_t rows, int64_t head_dim, const float* weight,
                        const float* rope_rows, int64_t angles, float* keys);

// The instruction set the calls above run with now: "avx512", "avx2" or "portable".
const char* VectorLoopsName();

}  // namespace gemmaserve::ops
