#include "ops/vector_loops.h"

#include <algorithm>
#include <cmath>

#include "ops/activation.h"
#include "ops/fast_math.h"
#include "ops/panel_kernel.h"

namespace gemmaserve::ops {
namespace {

// The bodies, inlined into each instruction set's function below and vectorised there (with
// fast_math.h's functions, which are always inlined). A target attribute applies to its own
// function only: anything left out of line is built for any x86-64.

[[gnu::always_inline]] inline void SoftcapBody(float* x, int64_t n, float cap) {
  const float inverse = 1.0f / cap;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) x[i] = cap * FastTanh(x[i] * inverse);
}

// Σ term(i) for i < n in kLanes fixed lanes (element i in lane i mod kLanes), the lanes added in
// order at the end: the same float additions at any vector width, so every build gives bitwise
// the same sums (ops/CMakeLists.txt keeps the compiler from fusing multiply-adds in some builds
// only).
constexpr int kLanes = 16;
template <typename Term>
[[gnu::always_inline]] inline float LaneSum(int64_t n, Term term) {
  float lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
#pragma omp simd
    for (int j = 0; j < kLanes; ++j) lanes[j] += term(i + j);
  }
  for (int j = 0; i + j < n; ++j) lanes[j] += term(i + j);
  float sum = 0.0f;
  for (const float lane : lanes) sum += lane;
  return sum;
}

[[gnu::always_inline]] inline double SumExpBody(const float* x, int64_t n, float scale,
                                                float shift) {
  constexpr int64_t kBlock = 256;
  double sum = 0.0;
  for (int64_t begin = 0; begin < n; begin += kBlock) {
    const float* block = x + begin;
    // ≤ 256 terms in (0, 1]: float is exact enough before the double sum
    sum += LaneSum(std::min(kBlock, n - begin), [=](int64_t i) __attribute__((always_inline)) {
      return FastExp(block[i] * scale - shift);
    });
  }
  return sum;
}

// Weights below e^−40 (4e−18) become 0 (vector_loops.h): bench-dense's 16,384-token prefill
// spent 4× as long in the attention's P·V as in its Q·Kᵀ before, on subnormal products.
constexpr float kExpFlush = -40.0f;

[[gnu::always_inline]] inline float ExpShiftBody(float* x, int64_t n, float shift) {
  return LaneSum(n, [=](int64_t i) __attribute__((always_inline)) {
    const float t = x[i] - shift;
    x[i] = t < kExpFlush ? 0.0f : FastExp(t);
    return x[i];
  });
}

[[gnu::always_inline]] inline float MaxBody(const float* x, int64_t n) {
  float best = -INFINITY;
#pragma omp simd reduction(max : best)
  for (int64_t i = 0; i < n; ++i) best = x[i] > best ? x[i] : best;
  return best;
}

[[gnu::always_inline]] inline void GeluTanhGateBody(const float* gate, const float* up, int64_t n,
                                                    float* out) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = GeluTanh(gate[i]) * up[i];
}

[[gnu::always_inline]] inline void KeysFromValuesBody(const float* values, int64_t rows,
                                                      int64_t head_dim, const float* weight,
                                                      const float* rope_rows, int64_t angles,
                                                      float* keys) {
  const int64_t half = head_dim / 2;
  for (int64_t r = 0; r < rows; ++r) {
    const float* v = values + r * head_dim;
    float* k = keys + r * head_dim;
    const float* cos_values = rope_rows + r * 2 * angles;
    const float* sin_values = cos_values + angles;
#pragma omp simd
    for (int64_t e = 0; e < head_dim; ++e) k[e] = v[e] * weight[e];
#pragma omp simd
    for (int64_t j = 0; j < angles; ++j) {
      const float a = k[j];
      const float b = k[j + half];
      k[j] = a * cos_values[j] - b * sin_values[j];
      k[j + half] = b * cos_values[j] + a * sin_values[j];
    }
  }
}

struct VectorLoops {
  void (*softcap)(float*, int64_t, float);
  double (*sum_exp)(const float*, int64_t, float, float);
  float (*exp_shift)(float*, int64_t, float);
  float (*max)(const float*, int64_t);
  void (*gelu_tanh_gate)(const float*, const float*, int64_t, float*);
  void (*keys_from_values)(const float*, int64_t, int64_t, const float*, const float*, int64_t,
                           float*);
  const char* name;
};

#define GS_VECTOR_LOOPS(Isa, attributes, label)                                                \
  attributes void Softcap##Isa(float* x, int64_t n, float cap) { SoftcapBody(x, n, cap); }     \
  attributes double SumExp##Isa(const float* x, int64_t n, float scale, float shift) {         \
    return SumExpBody(x, n, scale, shift);                                                     \
  }                                                                                            \
  attributes float ExpShift##Isa(float* x, int64_t n, float shift) {                          \
    return ExpShiftBody(x, n, shift);                                                          \
  }                                                                                            \
  attributes float Max##Isa(const float* x, int64_t n) { return MaxBody(x, n); }               \
  attributes void GeluTanhGate##Isa(const float* gate, const float* up, int64_t n,             \
                                    float* out) {                                              \
    GeluTanhGateBody(gate, up, n, out);                                                        \
  }                                                                                            \
  attributes void KeysFromValues##Isa(const float* values, int64_t rows, int64_t head_dim,     \
                                      const float* weight, const float* rope_rows,             \
                                      int64_t angles, float* keys) {                           \
    KeysFromValuesBody(values, rows, head_dim, weight, rope_rows, angles, keys);               \
  }                                                                                            \
  constexpr VectorLoops k##Isa##Loops{Softcap##Isa,       SumExp##Isa, ExpShift##Isa,          \
                                      Max##Isa,           GeluTanhGate##Isa,                   \
                                      KeysFromValues##Isa, label};

GS_VECTOR_LOOPS(Portable, , "portable")
GS_VECTOR_LOOPS(Avx2, __attribute__((target("avx2,fma"))), "avx2")
GS_VECTOR_LOOPS(Avx512, __attribute__((target("avx512f,prefer-vector-width=512"))), "avx512")
#undef GS_VECTOR_LOOPS

// The loops of the packed Linear's instruction set (its cap is theirs).
const VectorLoops& Loops() {
  const internal::PanelKernel& kernel = internal::BestPanelKernel();
  if (&kernel == &internal::kAvx512Kernel) return kAvx512Loops;
  if (&kernel == &internal::kAvx2Kernel) return kAvx2Loops;
  return kPortableLoops;
}

}  // namespace

void SoftcapRow(float* x, int64_t n, float cap) { Loops().softcap(x, n, cap); }

double SumExpRow(const float* x, int64_t n, float scale, float shift) {
  return Loops().sum_exp(x, n, scale, shift);
}

float ExpShiftRow(float* x, int64_t n, float shift) { return Loops().exp_shift(x, n, shift); }

float MaxRow(const float* x, int64_t n) { return Loops().max(x, n); }

void GeluTanhGateRow(const float* gate, const float* up, int64_t n, float* out) {
  Loops().gelu_tanh_gate(gate, up, n, out);
}

void KeysFromValuesRows(const float* values, int64_t rows, int64_t head_dim, const float* weight,
                        const float* rope_rows, int64_t angles, float* keys) {
  Loops().keys_from_values(values, rows, head_dim, weight, rope_rows, angles, keys);
}

const char* VectorLoopsName() { return Loops().name; }

}  // namespace gemmaserve::ops
