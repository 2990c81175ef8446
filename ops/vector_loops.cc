#include "ops/vector_loops.h"

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

[[gnu::always_inline]] inline double SumExpBody(const float* x, int64_t n, float scale,
                                                float shift) {
  constexpr int64_t kBlock = 256;
  double sum = 0.0;
  for (int64_t begin = 0; begin < n; begin += kBlock) {
    const int64_t end = begin + kBlock < n ? begin + kBlock : n;
    float block = 0.0f;  // ≤ 256 terms in (0, 1]: float is exact enough before the double sum
#pragma omp simd reduction(+ : block)
    for (int64_t i = begin; i < end; ++i) block += FastExp(x[i] * scale - shift);
    sum += block;
  }
  return sum;
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

struct VectorLoops {
  void (*softcap)(float*, int64_t, float);
  double (*sum_exp)(const float*, int64_t, float, float);
  float (*max)(const float*, int64_t);
  void (*gelu_tanh_gate)(const float*, const float*, int64_t, float*);
  const char* name;
};

#define GS_VECTOR_LOOPS(Isa, attributes, label)                                                \
  attributes void Softcap##Isa(float* x, int64_t n, float cap) { SoftcapBody(x, n, cap); }     \
  attributes double SumExp##Isa(const float* x, int64_t n, float scale, float shift) {         \
    return SumExpBody(x, n, scale, shift);                                                     \
  }                                                                                            \
  attributes float Max##Isa(const float* x, int64_t n) { return MaxBody(x, n); }               \
  attributes void GeluTanhGate##Isa(const float* gate, const float* up, int64_t n,             \
                                    float* out) {                                              \
    GeluTanhGateBody(gate, up, n, out);                                                        \
  }                                                                                            \
  constexpr VectorLoops k##Isa##Loops{Softcap##Isa, SumExp##Isa, Max##Isa, GeluTanhGate##Isa,  \
                                      label};

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

float MaxRow(const float* x, int64_t n) { return Loops().max(x, n); }

void GeluTanhGateRow(const float* gate, const float* up, int64_t n, float* out) {
  Loops().gelu_tanh_gate(gate, up, n, out);
}

const char* VectorLoopsName() { return Loops().name; }

}  // namespace gemmaserve::ops
